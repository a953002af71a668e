use candle_core::{DType, Shape};

/// Everything that can go wrong in this crate, each variant naming the
/// operation, what it expected and what it found.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: {what} must have shape {expected}, got {got:?}")]
    Shape {
        op: &'static str,
        what: &'static str,
        expected: String,
        got: Shape,
    },
    #[error("{op}: {what} must have dtype f32 or f64 matching the other inputs, got {got:?}")]
    DType {
        op: &'static str,
        what: &'static str,
        got: DType,
    },
    #[error("{op}: parameter `{name}` {expected}, got {got}")]
    Parameter {
        op: &'static str,
        name: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("{op}: {what} has length {got}, expected {expected}")]
    Length {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{op}: mass matrix is not symmetric positive definite (pivot {index} is {pivot})")]
    NotPositiveDefinite {
        op: &'static str,
        index: usize,
        pivot: f64,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn parameter(
    op: &'static str,
    name: &'static str,
    expected: &'static str,
    got: impl std::fmt::Display,
) -> Error {
    Error::Parameter {
        op,
        name,
        expected,
        got: got.to_string(),
    }
}
