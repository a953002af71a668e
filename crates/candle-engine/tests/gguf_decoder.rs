//! GGUF models through the engine: a tiny random LLaMA written in-test with
//! our GGUF writer, checked against upstream
//! `candle_transformers::models::quantized_llama` (a second, independent
//! decoder reading the same file with upstream's own GGUF reader and
//! kernels), and HIP-19's `test_quantized_load` vector.

use candle_core::{Device, Tensor};
use candle_engine::QuantizedLlama;
use candle_quant::gguf::{GgmlType, GgufWriter};
use candle_quant::QuantType;

const VOCAB: usize = 64;
const HIDDEN: usize = 64;
const FFN: usize = 96;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;

struct Lcg(u64);

impl Lcg {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

/// A llama GGUF whose linear layers (and tied embedding) are stored as `ty`.
fn tiny_llama(ty: QuantType) -> Vec<u8> {
    let mut rng = Lcg(11);
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    for (key, value) in [
        ("llama.block_count", LAYERS),
        ("llama.context_length", 256),
        ("llama.embedding_length", HIDDEN),
        ("llama.feed_forward_length", FFN),
        ("llama.attention.head_count", HEADS),
        ("llama.attention.head_count_kv", KV_HEADS),
        ("llama.rope.dimension_count", HEAD_DIM),
        ("llama.vocab_size", VOCAB),
    ] {
        w.add_metadata(key, value as u32).unwrap();
    }
    // upstream hard-codes eps = 1e-5 in its norms; use the same value.
    w.add_metadata("llama.attention.layer_norm_rms_epsilon", 1e-5f32)
        .unwrap();
    w.add_metadata("llama.rope.freq_base", 10000f32).unwrap();
    let ggml = GgmlType::from_id(ty.ggml_id()).unwrap();
    let mut matrix = |w: &mut GgufWriter, name: &str, rows: usize, cols: usize| {
        let values = rng.values(rows * cols, 0.3);
        let bytes = candle_quant::quant::quantize(ty, &values).unwrap();
        w.add_tensor(name, ggml, &[cols as u64, rows as u64], bytes)
            .unwrap();
    };
    matrix(&mut w, "token_embd.weight", VOCAB, HIDDEN);
    for l in 0..LAYERS {
        matrix(&mut w, &format!("blk.{l}.attn_q.weight"), HIDDEN, HIDDEN);
        matrix(
            &mut w,
            &format!("blk.{l}.attn_k.weight"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
        );
        matrix(
            &mut w,
            &format!("blk.{l}.attn_v.weight"),
            KV_HEADS * HEAD_DIM,
            HIDDEN,
        );
        matrix(
            &mut w,
            &format!("blk.{l}.attn_output.weight"),
            HIDDEN,
            HIDDEN,
        );
        matrix(&mut w, &format!("blk.{l}.ffn_gate.weight"), FFN, HIDDEN);
        matrix(&mut w, &format!("blk.{l}.ffn_up.weight"), FFN, HIDDEN);
        matrix(&mut w, &format!("blk.{l}.ffn_down.weight"), HIDDEN, FFN);
    }
    let mut norm_rng = Lcg(5);
    let mut norm = |w: &mut GgufWriter, name: &str| {
        let values: Vec<u8> = norm_rng
            .values(HIDDEN, 0.2)
            .iter()
            .flat_map(|v| (1.0 + v).to_le_bytes())
            .collect();
        w.add_tensor(name, GgmlType::F32, &[HIDDEN as u64], values)
            .unwrap();
    };
    for l in 0..LAYERS {
        norm(&mut w, &format!("blk.{l}.attn_norm.weight"));
        norm(&mut w, &format!("blk.{l}.ffn_norm.weight"));
    }
    norm(&mut w, "output_norm.weight");
    w.to_bytes().unwrap()
}

fn write_temp(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("hanzo-{}-{name}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

const TOKENS: [u32; 9] = [1, 5, 9, 33, 2, 60, 17, 17, 40];

/// Upstream's logits for each prefix of TOKENS, fed one token at a time.
fn upstream_logits(bytes: &[u8]) -> Vec<Vec<f32>> {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let mut reader = std::io::Cursor::new(bytes);
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
    let mut model = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).unwrap();
    TOKENS
        .iter()
        .enumerate()
        .map(|(p, &t)| {
            let input = Tensor::new(&[[t]], &Device::Cpu).unwrap();
            model
                .forward(&input, p)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn ours(path: &std::path::Path) -> Vec<Vec<f32>> {
    let model = QuantizedLlama::load(path, &Device::Cpu).unwrap();
    let input = Tensor::new(&TOKENS, &Device::Cpu).unwrap();
    model
        .forward(&input, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// Logits are O(1); both sides run f32 arithmetic in different orders over
/// at most 96-term dot products (~1e-6 relative), so 1e-4 leaves margin and
/// still catches any layout, rotation or cache mistake (> 1e-2).
const TOLERANCE: f32 = 1e-4;

#[test]
fn f32_gguf_logits_equal_upstream_quantized_llama() {
    let bytes = tiny_llama(QuantType::F32);
    let path = write_temp("f32", &bytes);
    let diff = max_diff(&ours(&path), &upstream_logits(&bytes));
    std::fs::remove_file(&path).unwrap();
    assert!(diff < TOLERANCE, "max |diff| {diff}");
}

#[test]
fn q8_0_gguf_logits_agree_with_upstream_within_activation_rounding() {
    // With quantized weights both decoders also quantize activations to 8
    // bits before each dot product, with different scale encodings (upstream
    // rounds the block scale to f16), so they agree to the activation
    // rounding, not to 1e-4: each value moves by up to half a step of
    // amax/127 (0.4% of the block maximum), and 2 layers x 4 matmul stages
    // compound that to a few percent of the logits' range.
    let bytes = tiny_llama(QuantType::Q8_0);
    let path = write_temp("q8_0", &bytes);
    let (ours, theirs) = (ours(&path), upstream_logits(&bytes));
    std::fs::remove_file(&path).unwrap();
    let scale = theirs.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_diff(&ours, &theirs);
    assert!(
        diff < 0.05 * scale,
        "max |diff| {diff} for logits up to {scale}"
    );
}

#[test]
fn test_quantized_load() {
    // HIP-19 §Test Vectors, on a GGUF written in-test.
    let path = write_temp("hip19", &tiny_llama(QuantType::Q4_0));
    let model = QuantizedLlama::load(&path, &Device::Cpu).unwrap();
    let input = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    let logits = model.forward(&input, 0).unwrap();
    assert_eq!(logits.dims(), &[1, 3, VOCAB]);
    assert!(logits
        .to_vec3::<f32>()
        .unwrap()
        .iter()
        .all(|batch| batch.iter().all(|seq| seq.iter().all(|v| v.is_finite()))));
    // Continuing the sequence must agree with running it whole.
    let next = model
        .forward(&Tensor::new(&[4u32], &Device::Cpu).unwrap(), 3)
        .unwrap();
    let whole = model
        .forward(&Tensor::new(&[1u32, 2, 3, 4], &Device::Cpu).unwrap(), 0)
        .unwrap();
    let last = whole.narrow(1, 3, 1).unwrap();
    let diff = (next - last)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < TOLERANCE, "{diff}");
    assert!(
        model.forward(&input, 7).is_err(),
        "a gap in positions must be refused"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn malformed_and_missing_files_are_clear_errors() {
    let missing = std::env::temp_dir().join("hanzo-does-not-exist.gguf");
    let err = QuantizedLlama::load(&missing, &Device::Cpu).err().unwrap();
    assert!(
        err.to_string().contains("hanzo-does-not-exist.gguf"),
        "{err}"
    );
    let bytes = tiny_llama(QuantType::F32);
    let path = write_temp("truncated", &bytes[..bytes.len() / 2]);
    let err = QuantizedLlama::load(&path, &Device::Cpu).err().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!err.to_string().is_empty());
}

#[test]
fn loading_from_bytes_equals_loading_from_the_file() {
    // The in-memory form is what a browser build gets; it must be the same model
    // and reject the same malformed input.
    let bytes = tiny_llama(QuantType::Q4_0);
    let path = write_temp("from-bytes", &bytes);
    let input = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    let from_file = QuantizedLlama::load(&path, &Device::Cpu)
        .unwrap()
        .forward(&input, 0)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let from_bytes = QuantizedLlama::from_gguf_bytes(bytes.clone(), &Device::Cpu)
        .unwrap()
        .forward(&input, 0)
        .unwrap();
    assert_eq!(
        from_file.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        from_bytes.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let truncated = bytes[..bytes.len() / 2].to_vec();
    assert!(QuantizedLlama::from_gguf_bytes(truncated, &Device::Cpu).is_err());
}
