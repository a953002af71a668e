//! GGUF -> Hugging Face directory: the inverse of [`super::quantize_hf_dir`],
//! for checking a GGUF file against `transformers` on the same weights.

use super::layout::{deinterleave_rope_rows, expected_tensors};
use super::vocab::tokenizer_json;
use super::{ConvertError, Result};
use crate::config::Family;
use crate::gguf::GgufModel;
use crate::tokenizer::SUPPORTED_GGUF_PRE;
use crate::weights::{LayerTensor, TensorName};
use candle_quant::gguf::{GgufFile, GgufVocab};
use candle_quant::quant::dequantize;
use candle_quant::QuantType;
use serde_json::{json, Value as Json};
use std::io::Write;
use std::path::Path;

/// Writes the llama GGUF file `gguf` as a Hugging Face directory `out_dir`:
/// `config.json`, `generation_config.json`, `tokenizer.json`,
/// `tokenizer_config.json` (chat template) and one f32
/// `model.safetensors`, dequantized and with the query/key rows put back in
/// rotate-half order. Tensors are written one at a time.
///
/// ```no_run
/// use candle_engine::convert::gguf_to_hf_dir;
/// use std::path::Path;
/// gguf_to_hf_dir(Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"), Path::new("smollm2-f32"))?;
/// # Ok::<(), candle_engine::convert::ConvertError>(())
/// ```
pub fn gguf_to_hf_dir(gguf: &Path, out_dir: &Path) -> Result<()> {
    let model = GgufModel::new(GgufFile::open(gguf)?);
    let architecture = model.file().get_str("general.architecture")?;
    if architecture != "llama" {
        return Err(ConvertError::UnsupportedArchitecture {
            path: gguf.to_path_buf(),
            found: architecture.to_string(),
            supported: "llama (general.architecture)",
        });
    }
    let config = model.config()?;
    let file = model.file();
    let vocab = GgufVocab::from_gguf(file)?;
    let pre = match file.get("tokenizer.ggml.pre") {
        Some(_) => file.get_str("tokenizer.ggml.pre")?,
        None => "default",
    };
    let add_bos = match file.get("tokenizer.ggml.add_bos_token") {
        Some(_) => file.get_bool("tokenizer.ggml.add_bos_token")?,
        None => false,
    };
    std::fs::create_dir_all(out_dir).map_err(|source| ConvertError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let write_json = |name: &str, value: &Json| -> Result<()> {
        let path = out_dir.join(name);
        let text = serde_json::to_string_pretty(value).map_err(|source| ConvertError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| ConvertError::Io { path, source })
    };
    // Shortest decimal that reads back as the stored f32 (1e-5, not
    // 9.999999747378752e-6).
    let f32_decimal = |v: f64| -> f64 { (v as f32).to_string().parse().unwrap_or(v) };
    let ids = json!({"bos_token_id": vocab.bos_token_id, "eos_token_id": vocab.eos_token_id});
    let c = &config;
    write_json(
        "config.json",
        &json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": "silu",
            "rope_theta": f32_decimal(c.rope_theta),
            "rms_norm_eps": f32_decimal(c.rms_norm_eps),
            "max_position_embeddings": c.max_position_embeddings,
            "tie_word_embeddings": c.tie_word_embeddings,
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
            "bos_token_id": vocab.bos_token_id,
            "eos_token_id": vocab.eos_token_id,
        }),
    )?;
    write_json("generation_config.json", &ids)?;
    write_json(
        "tokenizer.json",
        &tokenizer_json(&vocab, pre).map_err(|found| ConvertError::Field {
            path: gguf.to_path_buf(),
            field: "tokenizer.ggml.pre".into(),
            expected: SUPPORTED_GGUF_PRE.into(),
            found,
        })?,
    )?;
    let token = |id: Option<u32>| id.and_then(|i| vocab.tokens.get(i as usize).copied());
    let mut tokenizer_config = json!({
        "add_bos_token": add_bos,
        "bos_token": token(vocab.bos_token_id),
        "eos_token": token(vocab.eos_token_id),
        "tokenizer_class": "GPT2Tokenizer",
    });
    if let Some(template) = model.chat_template()? {
        tokenizer_config["chat_template"] = json!(template);
    }
    write_json("tokenizer_config.json", &tokenizer_config)?;

    let tensors = expected_tensors(&config, file.tensor("output.weight").is_ok());
    write_f32_safetensors(&out_dir.join("model.safetensors"), &tensors, |name, n| {
        let key = name.gguf();
        let view = file.tensor(&key)?;
        let ty = QuantType::from_ggml_id(view.info.ggml_type.id()).ok_or_else(|| {
            ConvertError::Field {
                path: gguf.to_path_buf(),
                field: key.clone(),
                expected: "a type with a dequantizer".into(),
                found: view.info.ggml_type.name().into(),
            }
        })?;
        let values = dequantize(ty, view.data, n).map_err(crate::Error::from)?;
        Ok(match name {
            TensorName::Layer(_, LayerTensor::Query) => {
                deinterleave_rope_rows(&values, c.num_heads, c.hidden_size)
            }
            TensorName::Layer(_, LayerTensor::Key) => {
                deinterleave_rope_rows(&values, c.num_kv_heads, c.hidden_size)
            }
            _ => values,
        })
    })
}

/// Streams an f32 safetensors file: the header (names, shapes, offsets)
/// first, then each tensor as `values(name, element_count)` produces it.
fn write_f32_safetensors(
    path: &Path,
    tensors: &[(TensorName, Vec<usize>)],
    mut values: impl FnMut(&TensorName, usize) -> Result<Vec<f32>>,
) -> Result<()> {
    let io = |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.hf(Family::Llama),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut header =
        serde_json::to_vec(&Json::Object(header)).map_err(|source| ConvertError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    // The format pads the header with spaces so the data starts 8-aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    for (name, shape) in tensors {
        let data = values(name, shape.iter().product())?;
        out.write_all(bytemuck::cast_slice(&data)).map_err(io)?;
    }
    out.flush().map_err(io)
}
