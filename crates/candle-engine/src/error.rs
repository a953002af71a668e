//! Errors of the engine, each naming what was wrong and the accepted values.

/// Error returned by the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sampling parameter `{name}`: {value} ({expected})")]
    InvalidSamplingParameter {
        name: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("the prompt and generated tokens need {needed} positions but the context holds {max_context}; shorten the prompt or lower max_tokens")]
    ContextExceeded { needed: usize, max_context: usize },

    #[error("invalid KV cache geometry: {0}")]
    InvalidCacheGeometry(String),

    #[error("cannot sample from {what}")]
    EmptyDistribution { what: &'static str },

    #[error(transparent)]
    Ops(#[from] candle_ops::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
