//! Quantization presets (`q4_k_m`, `q5_k_m`, `q8_0`, `q4_0`), named as
//! `llama-quantize` names them, and llama.cpp's rules for the type each
//! tensor gets under one: the planning half of `hanzo-candle quantize`
//! (HIP-19: store in safetensors, quantize to GGUF for the target).
//! [`crate::gguf::write_gguf`] then streams the file.
//!
//! Tensor names are llama.cpp's GGUF names (`token_embd.weight`,
//! `blk.N.attn_v.weight`, `output.weight`...); mapping a checkpoint's own
//! names onto them is the caller's job.

use crate::gguf::TensorPlan;
use crate::quant::{QuantType, QK_K};

/// A preset name that is not one of [`Preset::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("quantize: unknown preset `{got}`; expected one of {}", Preset::NAMES)]
pub struct UnknownPreset {
    pub got: String,
}

/// A target mixture, named as `llama-quantize` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Q4_K for most weights, Q6_K for the output and for `attn_v` and
    /// `ffn_down` in the layers that matter most.
    Q4KM,
    /// Q5_K for most weights, Q6_K where `q4_k_m` uses it.
    Q5KM,
    /// Q8_0 everywhere.
    Q8_0,
    /// Q4_0 for most weights, Q6_K (or Q8_0) for the output.
    Q4_0,
}

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::Q4KM, Preset::Q5KM, Preset::Q8_0, Preset::Q4_0];
    const NAMES: &'static str = "q4_k_m, q5_k_m, q8_0, q4_0";

    /// The name on the command line, e.g. `"q4_k_m"`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Q4KM => "q4_k_m",
            Preset::Q5KM => "q5_k_m",
            Preset::Q8_0 => "q8_0",
            Preset::Q4_0 => "q4_0",
        }
    }

    /// The type most weight matrices get.
    pub fn base_type(self) -> QuantType {
        match self {
            Preset::Q4KM => QuantType::Q4K,
            Preset::Q5KM => QuantType::Q5K,
            Preset::Q8_0 => QuantType::Q8_0,
            Preset::Q4_0 => QuantType::Q4_0,
        }
    }

    /// llama.cpp's `llama_ftype` number, stored as `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            Preset::Q4_0 => 2,
            Preset::Q8_0 => 7,
            Preset::Q4KM => 15,
            Preset::Q5KM => 17,
        }
    }

    fn is_k_mixture(self) -> bool {
        matches!(self, Preset::Q4KM | Preset::Q5KM)
    }
}

impl std::str::FromStr for Preset {
    type Err = UnknownPreset;

    fn from_str(s: &str) -> Result<Self, UnknownPreset> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPreset { got: s.to_owned() })
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Chooses each tensor's storage type for `preset`.
///
/// tensors: `(gguf_name, row-major shape)` in file order.
///
/// The rules are llama.cpp's (`llama_tensor_get_type`) for these presets:
/// vectors (norms, biases) stay f32; the output matrix — or the token
/// embedding when the output is tied to it — gets Q6_K (Q8_0 for `q8_0`,
/// or when its rows are not a multiple of 256); with the `_m` presets,
/// `attn_v` and `ffn_down` get Q6_K in the first and last eighth of the
/// layers and in every third layer between, and a fused `attn_qkv` one
/// step up. A K-quant chosen for rows that are not a multiple of 256 falls
/// back to Q5_0 (for Q4_K), Q5_1 (Q5_K) or Q8_0 (Q6_K), and a block type
/// whose block does not divide the rows falls back to F16.
///
/// ```
/// use candle_quant::preset::{plan_types, Preset};
/// use candle_quant::QuantType;
/// let tensors = [
///     ("token_embd.weight".to_string(), vec![1000, 512]),
///     ("blk.0.attn_norm.weight".to_string(), vec![512]),
///     ("blk.0.attn_q.weight".to_string(), vec![512, 512]),
///     ("blk.0.attn_v.weight".to_string(), vec![128, 512]),
///     ("blk.0.ffn_down.weight".to_string(), vec![512, 1376]),
/// ];
/// let plan = plan_types(Preset::Q4KM, &tensors);
/// let types: Vec<QuantType> = plan.iter().map(|t| t.ty).collect();
/// // Tied output: the embedding is quantized as the output matrix; the
/// // 1376-long rows of ffn_down cannot hold Q6_K super-blocks.
/// assert_eq!(types, [QuantType::Q6K, QuantType::F32, QuantType::Q4K, QuantType::Q6K, QuantType::Q8_0]);
/// ```
pub fn plan_types(preset: Preset, tensors: &[(String, Vec<usize>)]) -> Vec<TensorPlan> {
    let has_output = tensors.iter().any(|(name, _)| name == "output.weight");
    let count = |part: &str| tensors.iter().filter(|(n, _)| n.contains(part)).count();
    let n_attn_v = count("attn_v.weight");
    let n_ffn_down = count("ffn_down");
    let (mut i_attn_v, mut i_ffn_down) = (0, 0);
    tensors
        .iter()
        .map(|(name, shape)| {
            let row = shape.last().copied().unwrap_or(0);
            let is_matrix = shape.len() >= 2 && name.ends_with("weight");
            let ty = if !is_matrix {
                QuantType::F32
            } else if name == "output.weight" || (!has_output && name == "token_embd.weight") {
                output_type(preset, row)
            } else if name.contains("attn_v.weight") {
                let i = i_attn_v;
                i_attn_v += 1;
                more_bits_type(preset, i, n_attn_v)
            } else if name.contains("ffn_down") {
                let i = i_ffn_down;
                i_ffn_down += 1;
                more_bits_type(preset, i, n_ffn_down)
            } else if name.contains("attn_qkv.weight") {
                match preset {
                    Preset::Q4KM => QuantType::Q5K,
                    Preset::Q5KM => QuantType::Q6K,
                    _ => preset.base_type(),
                }
            } else {
                preset.base_type()
            };
            TensorPlan {
                name: name.clone(),
                shape: shape.clone(),
                ty: fit_row(ty, row),
            }
        })
        .collect()
}

fn output_type(preset: Preset, row: usize) -> QuantType {
    if preset == Preset::Q8_0 || !row.is_multiple_of(QK_K) {
        QuantType::Q8_0
    } else {
        QuantType::Q6K
    }
}

/// The layers that get more bits: llama.cpp's `use_more_bits`.
fn more_bits_type(preset: Preset, layer: usize, layers: usize) -> QuantType {
    let eighth = layers / 8;
    let more = layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2;
    if preset.is_k_mixture() && more {
        QuantType::Q6K
    } else {
        preset.base_type()
    }
}

fn fit_row(ty: QuantType, row: usize) -> QuantType {
    let ty = if ty.block_elems() == QK_K && !row.is_multiple_of(QK_K) {
        match ty {
            QuantType::Q4K => QuantType::Q5_0,
            QuantType::Q5K => QuantType::Q5_1,
            _ => QuantType::Q8_0,
        }
    } else {
        ty
    };
    if row.is_multiple_of(ty.block_elems()) {
        ty
    } else {
        QuantType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama_like(
        layers: usize,
        hidden: usize,
        ffn: usize,
        tied: bool,
    ) -> Vec<(String, Vec<usize>)> {
        let mut t = vec![("token_embd.weight".to_string(), vec![1000, hidden])];
        for i in 0..layers {
            for (name, shape) in [
                ("attn_norm.weight", vec![hidden]),
                ("attn_q.weight", vec![hidden, hidden]),
                ("attn_k.weight", vec![hidden / 4, hidden]),
                ("attn_v.weight", vec![hidden / 4, hidden]),
                ("attn_output.weight", vec![hidden, hidden]),
                ("ffn_norm.weight", vec![hidden]),
                ("ffn_gate.weight", vec![ffn, hidden]),
                ("ffn_up.weight", vec![ffn, hidden]),
                ("ffn_down.weight", vec![hidden, ffn]),
            ] {
                t.push((format!("blk.{i}.{name}"), shape));
            }
        }
        t.push(("output_norm.weight".to_string(), vec![hidden]));
        if !tied {
            t.push(("output.weight".to_string(), vec![1000, hidden]));
        }
        t
    }

    fn type_of(plan: &[TensorPlan], name: &str) -> QuantType {
        plan.iter().find(|t| t.name == name).unwrap().ty
    }

    #[test]
    fn q4_k_m_gives_more_bits_to_llama_cpps_layers() {
        // 32 layers, as in a 7B llama: llama.cpp's use_more_bits picks
        // 0..4, 28..32 and every third layer from 4 + 2.
        let plan = plan_types(Preset::Q4KM, &llama_like(32, 512, 1024, false));
        let expected: Vec<usize> = (0..32)
            .filter(|&i| !(4..28).contains(&i) || (i - 4) % 3 == 2)
            .collect();
        for i in 0..32 {
            let want = if expected.contains(&i) {
                QuantType::Q6K
            } else {
                QuantType::Q4K
            };
            assert_eq!(type_of(&plan, &format!("blk.{i}.attn_v.weight")), want);
            assert_eq!(type_of(&plan, &format!("blk.{i}.ffn_down.weight")), want);
            assert_eq!(
                type_of(&plan, &format!("blk.{i}.attn_q.weight")),
                QuantType::Q4K
            );
            assert_eq!(
                type_of(&plan, &format!("blk.{i}.ffn_norm.weight")),
                QuantType::F32
            );
        }
        assert_eq!(type_of(&plan, "output.weight"), QuantType::Q6K);
        assert_eq!(type_of(&plan, "token_embd.weight"), QuantType::Q4K);
    }

    #[test]
    fn rows_that_are_not_256_long_fall_back_like_llama_cpp() {
        // SmolLM2-135M: hidden 576 = 18 x 32 but not a multiple of 256;
        // intermediate 1536 = 6 x 256.
        let tensors = llama_like(30, 576, 1536, true);
        let q4 = plan_types(Preset::Q4KM, &tensors);
        assert_eq!(type_of(&q4, "token_embd.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q4, "blk.5.attn_q.weight"), QuantType::Q5_0);
        assert_eq!(type_of(&q4, "blk.0.attn_v.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q4, "blk.4.attn_v.weight"), QuantType::Q5_0);
        assert_eq!(type_of(&q4, "blk.5.attn_v.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q4, "blk.0.ffn_down.weight"), QuantType::Q6K);
        assert_eq!(type_of(&q4, "blk.4.ffn_down.weight"), QuantType::Q4K);
        let q5 = plan_types(Preset::Q5KM, &tensors);
        assert_eq!(type_of(&q5, "blk.5.attn_q.weight"), QuantType::Q5_1);
        assert_eq!(type_of(&q5, "blk.4.ffn_down.weight"), QuantType::Q5K);
        let q40 = plan_types(Preset::Q4_0, &tensors);
        assert_eq!(type_of(&q40, "token_embd.weight"), QuantType::Q8_0);
        assert_eq!(type_of(&q40, "blk.0.ffn_down.weight"), QuantType::Q4_0);
        let odd = plan_types(Preset::Q8_0, &[("w.weight".into(), vec![4, 40])]);
        assert_eq!(odd[0].ty, QuantType::F16);
    }

    #[test]
    fn presets_parse_by_name_and_reject_others() {
        for p in Preset::ALL {
            assert_eq!(p.name().parse::<Preset>().unwrap(), p);
        }
        assert_eq!("Q4_K_M".parse::<Preset>().unwrap(), Preset::Q4KM);
        let err = "q3_k_s".parse::<Preset>().unwrap_err().to_string();
        assert!(err.contains("q3_k_s") && err.contains("q4_k_m"), "{err}");
    }
}
