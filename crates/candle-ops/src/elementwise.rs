//! Element-wise arithmetic, unary functions and comparisons with NumPy
//! promotion and PyTorch's integer semantics.
//!
//! Integer arithmetic wraps on overflow (as in NumPy and PyTorch) on every
//! build profile: on the CPU it runs in this module's own loops, because
//! upstream's integer kernels panic on overflow when overflow checks are on
//! and have no integer `neg`/`abs` at all.

use crate::check;
use crate::cpu::with_slice;
use crate::dtype::result_type;
use crate::error::InOp;
use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor, WithDType};

trait WrappingInt: WithDType + Copy {
    fn wrap_add(self, rhs: Self) -> Self;
    fn wrap_sub(self, rhs: Self) -> Self;
    fn wrap_mul(self, rhs: Self) -> Self;
    fn wrap_neg(self) -> Self;
    fn wrap_abs(self) -> Self;
    fn wrap_relu(self) -> Self;
}

macro_rules! unsigned_wrapping_int {
    ($t:ty) => {
        impl WrappingInt for $t {
            fn wrap_add(self, rhs: Self) -> Self {
                self.wrapping_add(rhs)
            }
            fn wrap_sub(self, rhs: Self) -> Self {
                self.wrapping_sub(rhs)
            }
            fn wrap_mul(self, rhs: Self) -> Self {
                self.wrapping_mul(rhs)
            }
            fn wrap_neg(self) -> Self {
                self.wrapping_neg()
            }
            fn wrap_abs(self) -> Self {
                self
            }
            fn wrap_relu(self) -> Self {
                self
            }
        }
    };
}
unsigned_wrapping_int!(u8);
unsigned_wrapping_int!(u32);

impl WrappingInt for i64 {
    fn wrap_add(self, rhs: Self) -> Self {
        self.wrapping_add(rhs)
    }
    fn wrap_sub(self, rhs: Self) -> Self {
        self.wrapping_sub(rhs)
    }
    fn wrap_mul(self, rhs: Self) -> Self {
        self.wrapping_mul(rhs)
    }
    fn wrap_neg(self) -> Self {
        self.wrapping_neg()
    }
    fn wrap_abs(self) -> Self {
        self.wrapping_abs()
    }
    fn wrap_relu(self) -> Self {
        self.max(0)
    }
}

/// Promotes both operands to their common dtype after checking that they can
/// be combined at all.
fn promote_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor)> {
    check::hip_dtype(op, a)?;
    check::hip_dtype(op, b)?;
    check::same_device(op, a, b)?;
    let dtype = result_type(a.dtype(), b.dtype())?;
    let a = a.to_dtype(dtype).in_op(op)?;
    let b = b.to_dtype(dtype).in_op(op)?;
    Ok((a, b))
}

fn broadcast_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Shape> {
    a.shape()
        .broadcast_shape_binary_op(b.shape(), op)
        .map_err(|_| Error::ShapeMismatch {
            op,
            expected: format!("a shape broadcast-compatible with {:?}", a.shape()),
            got: b.shape().clone(),
        })
}

fn int_binary_cpu<T: WrappingInt>(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: fn(T, T) -> T,
) -> Result<Tensor> {
    let shape = broadcast_shape(op, a, b)?;
    let a = a.broadcast_as(&shape).in_op(op)?;
    let b = b.broadcast_as(&shape).in_op(op)?;
    let out: Vec<T> = with_slice(op, &a, |xa: &[T]| {
        with_slice(op, &b, |xb: &[T]| {
            xa.iter().zip(xb).map(|(&x, &y)| f(x, y)).collect()
        })
    })??;
    Tensor::from_vec(out, shape, &Device::Cpu).in_op(op)
}

fn int_unary_cpu<T: WrappingInt>(op: &'static str, x: &Tensor, f: fn(T) -> T) -> Result<Tensor> {
    let out: Vec<T> = with_slice(op, x, |xs: &[T]| xs.iter().map(|&v| f(v)).collect())?;
    Tensor::from_vec(out, x.shape(), &Device::Cpu).in_op(op)
}

#[derive(Clone, Copy)]
enum Arith {
    Add,
    Sub,
    Mul,
}

fn arithmetic(op: &'static str, kind: Arith, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = promote_pair(op, a, b)?;
    broadcast_shape(op, &a, &b)?;
    if a.device().is_cpu() && !a.dtype().is_float() {
        return match a.dtype() {
            DType::U8 => int_binary_cpu::<u8>(op, &a, &b, int_fn(kind)),
            DType::U32 => int_binary_cpu::<u32>(op, &a, &b, int_fn(kind)),
            _ => int_binary_cpu::<i64>(op, &a, &b, int_fn(kind)),
        };
    }
    match kind {
        Arith::Add => a.broadcast_add(&b),
        Arith::Sub => a.broadcast_sub(&b),
        Arith::Mul => a.broadcast_mul(&b),
    }
    .in_op(op)
}

fn int_fn<T: WrappingInt>(kind: Arith) -> fn(T, T) -> T {
    match kind {
        Arith::Add => T::wrap_add,
        Arith::Sub => T::wrap_sub,
        Arith::Mul => T::wrap_mul,
    }
}

/// `a + b` with NumPy dtype promotion and broadcasting; integers wrap.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("add", Arith::Add, a, b)
}

/// `a - b` with NumPy dtype promotion and broadcasting; integers wrap.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("sub", Arith::Sub, a, b)
}

/// `a * b` with NumPy dtype promotion and broadcasting; integers wrap.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("mul", Arith::Mul, a, b)
}

/// True division `a / b` with broadcasting. Float operands promote as in
/// NumPy; when both promote to an integer dtype the quotient is computed in
/// f32, PyTorch's default float type (so integer division by zero gives
/// `inf`/`nan` instead of a crash).
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "div";
    let (mut a, mut b) = promote_pair(OP, a, b)?;
    broadcast_shape(OP, &a, &b)?;
    if !a.dtype().is_float() {
        a = a.to_dtype(DType::F32).in_op(OP)?;
        b = b.to_dtype(DType::F32).in_op(OP)?;
    }
    a.broadcast_div(&b).in_op(OP)
}

#[derive(Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Gt,
}

fn compare(op: &'static str, kind: Cmp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a, b) = promote_pair(op, a, b)?;
    broadcast_shape(op, &a, &b)?;
    match kind {
        Cmp::Eq => a.broadcast_eq(&b),
        Cmp::Lt => a.broadcast_lt(&b),
        Cmp::Gt => a.broadcast_gt(&b),
    }
    .in_op(op)
}

/// `a == b` element-wise after promotion; returns a `u8` tensor of 0/1.
pub fn eq(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    compare("eq", Cmp::Eq, a, b)
}

/// `a < b` element-wise after promotion; returns a `u8` tensor of 0/1.
pub fn lt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    compare("lt", Cmp::Lt, a, b)
}

/// `a > b` element-wise after promotion; returns a `u8` tensor of 0/1.
pub fn gt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    compare("gt", Cmp::Gt, a, b)
}

/// Applies an integer-preserving unary function: our own wrapping loops on
/// the CPU, `on_device` elsewhere.
fn int_preserving(
    op: &'static str,
    x: &Tensor,
    f_u8: fn(u8) -> u8,
    f_u32: fn(u32) -> u32,
    f_i64: fn(i64) -> i64,
    on_device: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    check::hip_dtype(op, x)?;
    match x.dtype() {
        DType::U8 if x.device().is_cpu() => int_unary_cpu(op, x, f_u8),
        DType::U32 if x.device().is_cpu() => int_unary_cpu(op, x, f_u32),
        DType::I64 if x.device().is_cpu() => int_unary_cpu(op, x, f_i64),
        _ => on_device(x).in_op(op),
    }
}

/// `-x`; unsigned integers wrap (`-1u8 == 255`), as in NumPy and PyTorch.
pub fn neg(x: &Tensor) -> Result<Tensor> {
    int_preserving("neg", x, u8::wrap_neg, u32::wrap_neg, i64::wrap_neg, |x| {
        if x.dtype().is_float() {
            x.neg()
        } else {
            x.zeros_like()?.sub(x)
        }
    })
}

/// `|x|`; the identity on unsigned integers.
pub fn abs(x: &Tensor) -> Result<Tensor> {
    int_preserving("abs", x, u8::wrap_abs, u32::wrap_abs, i64::wrap_abs, |x| {
        x.abs()
    })
}

/// `max(x, 0)` in the input's dtype.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    int_preserving(
        "relu",
        x,
        u8::wrap_relu,
        u32::wrap_relu,
        i64::wrap_relu,
        |x| x.relu(),
    )
}

/// Integer inputs of the transcendental functions are promoted to f32, as in
/// PyTorch.
fn float_valued(
    op: &'static str,
    x: &Tensor,
    f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    check::hip_dtype(op, x)?;
    if x.dtype().is_float() {
        f(x).in_op(op)
    } else {
        f(&x.to_dtype(DType::F32).in_op(op)?).in_op(op)
    }
}

/// `e^x`; integer inputs give f32.
pub fn exp(x: &Tensor) -> Result<Tensor> {
    float_valued("exp", x, |x| x.exp())
}

/// Natural logarithm; integer inputs give f32.
pub fn log(x: &Tensor) -> Result<Tensor> {
    float_valued("log", x, |x| x.log())
}

/// Square root; integer inputs give f32.
pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    float_valued("sqrt", x, |x| x.sqrt())
}

/// `1 / x`; integer inputs give f32.
pub fn recip(x: &Tensor) -> Result<Tensor> {
    float_valued("recip", x, |x| x.recip())
}

/// Hyperbolic tangent; integer inputs give f32.
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    float_valued("tanh", x, |x| x.tanh())
}

/// GELU with the exact erf formulation (PyTorch's default `F.gelu`); floats
/// only.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    check::float("gelu", x)?;
    x.gelu_erf().in_op("gelu")
}

/// SiLU, `x * sigmoid(x)`; floats only.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    check::float("silu", x)?;
    x.silu().in_op("silu")
}
