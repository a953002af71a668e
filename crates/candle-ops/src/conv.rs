//! 2-D convolution and pooling with HIP-19's signatures (square kernels,
//! symmetric padding, one stride for both axes) and PyTorch's semantics.

use crate::check;
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// Upstream's CPU convolution has no bf16 or integer kernels. Half precision
/// runs in f32 and is rounded once; integers run in f64, where every sum of
/// products below 2^53 is exact, and wrap back through i64 like PyTorch's
/// integer kernels.
fn in_exact_dtype(
    op: &'static str,
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    match x.dtype() {
        DType::F16 | DType::BF16 => x
            .to_dtype(DType::F32)
            .and_then(|t| f(&t))
            .and_then(|t| t.to_dtype(x.dtype())),
        DType::U8 | DType::U32 | DType::I64 => x
            .to_dtype(DType::F64)
            .and_then(|t| f(&t))
            .and_then(|t| t.to_dtype(DType::I64))
            .and_then(|t| t.to_dtype(x.dtype())),
        _ => f(x),
    }
    .in_op(op)
}

fn positive(op: &'static str, name: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::InvalidArgument {
            op,
            message: format!("{name} must be at least 1"),
        });
    }
    Ok(())
}

/// 2-D cross-correlation (PyTorch's `F.conv2d` with dilation 1, groups 1).
///
/// input: [batch, in_ch, height, width]; kernel: [out_ch, in_ch, kh, kw];
/// bias: [out_ch]; returns [batch, out_ch, (h + 2p - kh) / s + 1, (w + 2p - kw) / s + 1].
pub fn conv2d(
    input: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    padding: usize,
    stride: usize,
) -> Result<Tensor> {
    const OP: &str = "conv2d";
    check::hip_dtype(OP, input)?;
    check::rank(OP, input, 4)?;
    check::rank(OP, kernel, 4)?;
    check::same_device(OP, input, kernel)?;
    check::same_dtype(OP, input, kernel)?;
    positive(OP, "stride", stride)?;
    let (_, in_ch, h, w) = input.dims4().in_op(OP)?;
    let (out_ch, k_in_ch, kh, kw) = kernel.dims4().in_op(OP)?;
    if k_in_ch != in_ch {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: format!(
                "kernel: [out_ch, {in_ch}, kh, kw] to match input {:?}",
                input.shape()
            ),
            got: kernel.shape().clone(),
        });
    }
    if kh > h + 2 * padding || kw > w + 2 * padding || kh == 0 || kw == 0 {
        return Err(Error::InvalidArgument {
            op: OP,
            message: format!(
                "kernel {kh}x{kw} does not fit the padded input {}x{}",
                h + 2 * padding,
                w + 2 * padding
            ),
        });
    }
    let out = in_exact_dtype(OP, input, |x| {
        x.conv2d(&kernel.to_dtype(x.dtype())?, padding, stride, 1, 1)
    })?;
    let Some(bias) = bias else {
        return Ok(out);
    };
    check::same_device(OP, input, bias)?;
    check::same_dtype(OP, input, bias)?;
    if bias.dims() != [out_ch] {
        return Err(Error::ShapeMismatch {
            op: OP,
            expected: format!("bias: [{out_ch}]"),
            got: bias.shape().clone(),
        });
    }
    // The element-wise `add` wraps integer overflow instead of panicking.
    crate::add(&out, &bias.reshape((1, out_ch, 1, 1)).in_op(OP)?)
}

fn check_pool(op: &'static str, input: &Tensor, kernel_size: usize, stride: usize) -> Result<()> {
    check::hip_dtype(op, input)?;
    check::rank(op, input, 4)?;
    positive(op, "kernel_size", kernel_size)?;
    positive(op, "stride", stride)?;
    let (_, _, h, w) = input.dims4().in_op(op)?;
    if kernel_size > h || kernel_size > w {
        return Err(Error::InvalidArgument {
            op,
            message: format!("kernel_size {kernel_size} exceeds the input's spatial size {h}x{w}"),
        });
    }
    Ok(())
}

/// Average of each `kernel_size`² window, windows `stride` apart, no padding.
///
/// input: [batch, channels, height, width]; returns
/// [batch, channels, (h - k) / s + 1, (w - k) / s + 1].
pub fn avg_pool2d(input: &Tensor, kernel_size: usize, stride: usize) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    check_pool(OP, input, kernel_size, stride)?;
    if input.dtype() == DType::U8 {
        return Err(Error::UnsupportedDTypeForOp {
            op: OP,
            dtype: DType::U8,
            reason: "PyTorch defines no u8 average pooling, and HIP-19 follows it",
        });
    }
    // Integer averages truncate toward zero, as PyTorch's integer kernels do;
    // the f64 quotient never crosses an integer it does not equal.
    in_exact_dtype(OP, input, |x| x.avg_pool2d_with_stride(kernel_size, stride))
}

/// Maximum of each `kernel_size`² window, windows `stride` apart, no padding.
///
/// input: [batch, channels, height, width]; returns
/// [batch, channels, (h - k) / s + 1, (w - k) / s + 1].
pub fn max_pool2d(input: &Tensor, kernel_size: usize, stride: usize) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    check_pool(OP, input, kernel_size, stride)?;
    input.max_pool2d_with_stride(kernel_size, stride).in_op(OP)
}
