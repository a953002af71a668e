//! The typed error of HIP-19 §Error Handling: every variant names the
//! operation that failed together with what it expected and what it got.

use candle_core::{DType, DeviceLocation, Shape};

/// Error returned by every operation of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch, expected {expected}, got {got:?}")]
    ShapeMismatch {
        op: &'static str,
        /// Human-readable description of the accepted shapes, e.g. `[batch, heads, seq, 64]`.
        expected: String,
        got: Shape,
    },

    #[error("{op}: expected a tensor of rank {expected}, got rank {got} (shape {shape:?})")]
    UnexpectedNumberOfDims {
        op: &'static str,
        expected: usize,
        got: usize,
        shape: Shape,
    },

    #[error("{op}: dimension {dim} is out of range for a tensor of shape {shape:?}")]
    DimOutOfRange {
        op: &'static str,
        dim: usize,
        shape: Shape,
    },

    #[error("{op}: tensors are on different devices, lhs on {lhs:?}, rhs on {rhs:?}; move one with `to_device`")]
    DeviceMismatch {
        op: &'static str,
        lhs: DeviceLocation,
        rhs: DeviceLocation,
    },

    #[error("{op}: expected dtype {expected:?}, got {got:?}")]
    DTypeMismatch {
        op: &'static str,
        expected: DType,
        got: DType,
    },

    #[error("{op}: dtype {dtype:?} is not supported ({reason})")]
    UnsupportedDTypeForOp {
        op: &'static str,
        dtype: DType,
        reason: &'static str,
    },

    #[error("{op}: invalid argument: {message}")]
    InvalidArgument { op: &'static str, message: String },

    #[error("{what} is not available: {reason}")]
    NotAvailable { what: String, reason: String },

    /// An error raised inside upstream candle that has no more specific
    /// variant here; `op` is the HIP-19 operation that was running.
    #[error("{op}: {source}")]
    Candle {
        op: &'static str,
        #[source]
        source: candle_core::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Translates an upstream error raised while running `op` into the most
    /// specific variant, so that callers can match on it.
    pub fn from_candle(op: &'static str, err: candle_core::Error) -> Self {
        use candle_core::Error as C;
        match err {
            C::WithBacktrace { inner, .. } | C::Context { inner, .. } => {
                Self::from_candle(op, *inner)
            }
            C::ShapeMismatchBinaryOp { lhs, rhs, .. } => Self::ShapeMismatch {
                op,
                expected: format!("a shape broadcast-compatible with {lhs:?}"),
                got: rhs,
            },
            C::BroadcastIncompatibleShapes {
                src_shape,
                dst_shape,
            } => Self::ShapeMismatch {
                op,
                expected: format!("a shape that broadcasts to {dst_shape:?}"),
                got: src_shape,
            },
            C::UnexpectedNumberOfDims {
                expected,
                got,
                shape,
            } => Self::UnexpectedNumberOfDims {
                op,
                expected,
                got,
                shape,
            },
            C::DimOutOfRange { shape, dim, .. } => Self::DimOutOfRange {
                op,
                dim: dim.max(0) as usize,
                shape,
            },
            C::DeviceMismatchBinaryOp { lhs, rhs, .. } => Self::DeviceMismatch { op, lhs, rhs },
            C::DTypeMismatchBinaryOp { lhs, rhs, .. } => Self::DTypeMismatch {
                op,
                expected: lhs,
                got: rhs,
            },
            C::UnsupportedDTypeForOp(dtype, _) => Self::UnsupportedDTypeForOp {
                op,
                dtype,
                reason: "the backend has no kernel for it",
            },
            C::NotCompiledWithCudaSupport => Self::NotAvailable {
                what: "CUDA".into(),
                reason: "this build was compiled without the `cuda` feature".into(),
            },
            C::NotCompiledWithMetalSupport => Self::NotAvailable {
                what: "Metal".into(),
                reason: "this build was compiled without the `metal` feature".into(),
            },
            source => Self::Candle { op, source },
        }
    }
}

/// Attaches the HIP-19 operation name to upstream results.
pub(crate) trait InOp<T> {
    fn in_op(self, op: &'static str) -> Result<T>;
}

impl<T> InOp<T> for candle_core::Result<T> {
    fn in_op(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::from_candle(op, e))
    }
}
