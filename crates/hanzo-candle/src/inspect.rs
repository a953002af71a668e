//! `hanzo-candle inspect`: a GGUF file's metadata and tensor table.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// The .gguf file. It is validated completely before anything is printed;
    /// a malformed file gives an error naming the offending field.
    pub file: PathBuf,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let file = candle_quant::gguf::GgufFile::open(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    print!("{}", candle_quant::gguf::describe(&file));
    Ok(())
}
