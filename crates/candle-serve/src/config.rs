//! `--config models.toml`: several models in one server.
//!
//! ```toml
//! [[model]]
//! name = "smollm2"                      # the `model` clients send
//! source = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
//! ctx = 2048                            # context per sequence
//! slots = 8
//! kv_cache = "f16"                      # or "f32"
//! step_tokens = 256
//! device = "cpu"
//! ```
//! Only `source` is required (`"default"` is the default model); every other
//! field falls back to the command line's value.

use crate::ModelOptions;
use anyhow::{bail, Context};
use candle_engine::kv_cache::KvPrecision;
use candle_engine::Backend;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    source: String,
    ctx: Option<usize>,
    slots: Option<usize>,
    kv_cache: Option<String>,
    step_tokens: Option<usize>,
    device: Option<String>,
}

/// The models of a config file, each field not given taken from `defaults`.
/// Relative sources are relative to the file's directory.
pub fn read(path: &Path, defaults: &ModelOptions) -> anyhow::Result<Vec<ModelOptions>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")), defaults)
        .with_context(|| format!("in {}", path.display()))
}

fn parse(text: &str, base: &Path, defaults: &ModelOptions) -> anyhow::Result<Vec<ModelOptions>> {
    let file: File = toml::from_str(text)?;
    if file.model.is_empty() {
        bail!("no [[model]] entries");
    }
    file.model
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let which = entry.name.clone().unwrap_or_else(|| format!("#{}", i + 1));
            let source = match entry.source.as_str() {
                "default" => None,
                s if Path::new(s).is_relative() => {
                    Some(base.join(s).to_string_lossy().into_owned())
                }
                s => Some(s.to_string()),
            };
            let precision = match entry.kv_cache.as_deref() {
                None => defaults.precision,
                Some("f16") => KvPrecision::F16,
                Some("f32") => KvPrecision::F32,
                Some(other) => {
                    bail!("model {which}: kv_cache must be \"f16\" or \"f32\", got \"{other}\"")
                }
            };
            let backend = match &entry.device {
                None => defaults.backend.clone(),
                Some(d) => Backend::from_name(d).with_context(|| format!("model {which}"))?,
            };
            Ok(ModelOptions {
                name: entry.name,
                source,
                ctx: entry.ctx.or(defaults.ctx),
                backend,
                precision,
                slots: entry.slots.unwrap_or(defaults.slots),
                step_tokens: entry.step_tokens.unwrap_or(defaults.step_tokens),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ModelOptions {
        ModelOptions {
            name: None,
            source: None,
            ctx: Some(1024),
            backend: Backend::Native,
            precision: KvPrecision::F16,
            slots: 8,
            step_tokens: 256,
        }
    }

    #[test]
    fn entries_take_unset_fields_from_the_command_line() {
        let models = parse(
            "[[model]]\nname = \"a\"\nsource = \"a.gguf\"\nslots = 2\nkv_cache = \"f32\"\n\n\
             [[model]]\nsource = \"/abs/b.gguf\"\nctx = 512\n\n[[model]]\nsource = \"default\"\n",
            Path::new("/etc/models"),
            &defaults(),
        )
        .unwrap();
        assert_eq!(models.len(), 3);
        assert_eq!(models[0].id(), "a");
        assert_eq!(models[0].source.as_deref(), Some("/etc/models/a.gguf"));
        assert_eq!((models[0].slots, models[0].ctx), (2, Some(1024)));
        assert_eq!(models[0].precision, KvPrecision::F32);
        assert_eq!(models[1].id(), "b");
        assert_eq!((models[1].slots, models[1].ctx), (8, Some(512)));
        assert_eq!(models[2].source, None);
        assert_eq!(models[2].id(), "SmolLM2-135M-Instruct.Q4_1");
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| {
            format!(
                "{:#}",
                parse(text, Path::new("."), &defaults()).err().unwrap()
            )
        };
        assert!(error("[[model]]\nsource = \"a\"\nslot = 2\n").contains("unknown field `slot`"));
        assert!(error("[[model]]\nname = \"x\"\n").contains("missing field `source`"));
        assert!(
            error("[[model]]\nname = \"x\"\nsource = \"a\"\nkv_cache = \"q8\"\n")
                .contains("model x: kv_cache must be")
        );
        assert!(error("model = []\n").contains("no [[model]] entries"));
        assert!(error("[[model]]\nsource = \"a\"\ndevice = \"tpu:0\"\n").contains("model #1"));
    }
}
