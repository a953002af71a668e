//! `hanzo-candle demo`: a short tour of the HIP-19 operations.

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Sequence length of the causal attention example.
    #[arg(long, default_value_t = 2048)]
    seq: usize,
    /// Query heads of the attention example (must be a multiple of --kv-heads).
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Key/value heads (grouped-query attention).
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let cpu = Device::Cpu;

    println!("NumPy dtype promotion (HIP-19 §Tensor Types):");
    for (a, b) in [
        (DType::U8, DType::F32),
        (DType::F16, DType::F32),
        (DType::BF16, DType::F16),
        (DType::U32, DType::F32),
    ] {
        println!("  {a:?} + {b:?} -> {:?}", candle_ops::result_type(a, b)?);
    }
    let bytes = Tensor::new(&[250u8, 3, 7], &cpu)?;
    let floats = Tensor::new(&[0.5f32, 0.25, 0.125], &cpu)?;
    let sum = candle_ops::add(&bytes, &floats)?;
    println!(
        "  [250u8, 3, 7] + [0.5f32, 0.25, 0.125] = {:?}",
        sum.to_vec1::<f32>()?
    );
    let wrapped = candle_ops::add(&bytes, &Tensor::new(&[10u8, 10, 10], &cpu)?)?;
    println!(
        "  [250u8, 3, 7] + 10u8 wraps like NumPy: {:?}",
        wrapped.to_vec1::<u8>()?
    );

    let logits = Tensor::new(&[1f32, 2., 3.], &cpu)?;
    println!(
        "\nsoftmax([1, 2, 3]) = {:?}",
        candle_ops::softmax(&logits, 0)?.to_vec1::<f32>()?
    );

    let (b, h, hk, s, d) = (1, args.heads, args.kv_heads, args.seq, args.head_dim);
    anyhow::ensure!(
        hk > 0 && h % hk == 0,
        "--heads ({h}) must be a multiple of --kv-heads ({hk})"
    );
    anyhow::ensure!(
        d % 2 == 0 && d > 0,
        "--head-dim must be a positive even number, got {d}"
    );
    let q = Tensor::randn(0f32, 1., (b, h, s, d), &cpu)?;
    let k = Tensor::randn(0f32, 1., (b, hk, s, d), &cpu)?;
    let v = Tensor::randn(0f32, 1., (b, hk, s, d), &cpu)?;
    let (cos, sin) = rope_tables(s, d)?;
    let started = Instant::now();
    let q = candle_ops::apply_rotary_emb(&q, &cos, &sin)?;
    let k = candle_ops::apply_rotary_emb(&k, &cos, &sin)?;
    let rope_time = started.elapsed();
    let started = Instant::now();
    let out = candle_ops::scaled_dot_product_attention_causal(&q, &k, &v, (d as f64).powf(-0.5))
        .context("causal attention")?;
    let attn_time = started.elapsed();
    let score_matrix_mib = (b * h * s * s * 4) as f64 / (1 << 20) as f64;
    println!(
        "\nRoPE on q [{b}, {h}, {s}, {d}] and k [{b}, {hk}, {s}, {d}]: {:.1} ms",
        rope_time.as_secs_f64() * 1e3
    );
    println!(
        "Causal GQA attention -> {:?}: {:.1} ms, without materialising the {score_matrix_mib:.0} MiB score matrix",
        out.dims(),
        attn_time.as_secs_f64() * 1e3
    );
    let normed = candle_ops::rms_norm(
        &out.flatten_to(2)?,
        &Tensor::ones(d, DType::F32, &cpu)?,
        1e-6,
    )?;
    let rms = normed.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
    println!("rms_norm of the output: root-mean-square {rms:.4} (1 by construction)");
    Ok(())
}

/// Standard RoPE tables, `[seq, head_dim]`, base 10000, rotate-half layout.
fn rope_tables(seq: usize, head_dim: usize) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let angles: Vec<f32> = (0..seq)
        .flat_map(|p| {
            (0..head_dim).map(move |i| {
                p as f32 * 10000f32.powf(-((i % half) as f32) * 2.0 / head_dim as f32)
            })
        })
        .collect();
    let angles = Tensor::from_vec(angles, (seq, head_dim), &Device::Cpu)?;
    Ok((angles.cos()?, angles.sin()?))
}
