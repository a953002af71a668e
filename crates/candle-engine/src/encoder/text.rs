//! Texts to token sequences for an encoder: the model's own Hugging Face
//! tokenizer with its special-token template, cut to the model's limit the
//! way `transformers` cuts (longest first, before the special tokens are
//! added), and never silently.

use super::model::TokenSeq;
use crate::{Error, Result};
use tokenizers::{Encoding, PaddingParams, Tokenizer, TruncationParams};

pub(crate) struct EncoderTokenizer {
    inner: Tokenizer,
}

fn tokenizer_error(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl EncoderTokenizer {
    /// `inner` with its own padding and truncation settings replaced:
    /// no padding (batches are packed) and a cut at `max_len` tokens.
    pub(crate) fn new(mut inner: Tokenizer, max_len: usize) -> Result<Self> {
        inner.with_padding(None::<PaddingParams>);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(tokenizer_error)?;
        Ok(Self { inner })
    }

    /// One text's tokens and whether it was cut.
    pub(crate) fn encode(&self, text: &str) -> Result<(TokenSeq, bool)> {
        let encoding = self.inner.encode(text, true).map_err(tokenizer_error)?;
        Ok(Self::seq(encoding))
    }

    /// A (query, document) pair as one sequence, segments 0 and 1.
    pub(crate) fn encode_pair(&self, first: &str, second: &str) -> Result<(TokenSeq, bool)> {
        let encoding = self
            .inner
            .encode((first, second), true)
            .map_err(tokenizer_error)?;
        Ok(Self::seq(encoding))
    }

    fn seq(encoding: Encoding) -> (TokenSeq, bool) {
        // With no stride, whatever the cut removed is the overflow.
        let truncated = !encoding.get_overflowing().is_empty();
        let seq = TokenSeq {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        };
        (seq, truncated)
    }
}
