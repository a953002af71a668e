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

    #[error("unsupported architecture `{name}`; supported: {supported}")]
    UnsupportedArchitecture {
        name: String,
        supported: &'static str,
    },

    #[error("invalid model: {0}")]
    InvalidModel(String),

    #[error("the model has no tensor `{0}`")]
    MissingTensor(String),

    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("device `{name}`: {reason}")]
    Device { name: String, reason: String },

    #[error("invalid batch: {0}")]
    InvalidBatch(String),

    #[error("this KV cache was made by another decoder; make one with Decoder::new_cache")]
    ForeignCache,

    #[error("internal error (a bug in hanzo-candle; please report it): {0}")]
    Internal(String),

    /// A forward step failed for every request in it; the message is the
    /// step's error.
    #[error("{0}")]
    StepFailed(String),

    #[error("perplexity: {0}")]
    Perplexity(String),

    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Quant(#[from] candle_quant::QuantError),

    #[error(transparent)]
    Gguf(#[from] candle_quant::gguf::GgufError),

    #[error(transparent)]
    Ops(#[from] candle_ops::Error),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A model path that names nothing.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn no_model_at(path: &std::path::Path) -> Self {
        Self::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such model file or directory",
            ),
        )
    }
}
