//! The vocabulary stored in `tokenizer.ggml.*` metadata, read and checked
//! for consistency, borrowed from the file. The engine's tokenizer builds on
//! this.

use super::error::{GgufError, Result};
use super::reader::GgufFile;

/// Tokenizer data from GGUF metadata: the token strings and, when present,
/// per-token scores and types, BPE merges and special token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab<'f> {
    /// `tokenizer.ggml.model`, e.g. `"gpt2"` (BPE) or `"llama"` (SentencePiece).
    pub model: &'f str,
    pub tokens: Vec<&'f str>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    pub merges: Option<Vec<&'f str>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub unknown_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
}

const SPECIAL_IDS: [&str; 4] = [
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
];

impl<'f> GgufVocab<'f> {
    /// Reads the vocabulary, checking that tokens are distinct, that
    /// per-token arrays have one entry per token and that special token ids
    /// index the vocabulary.
    ///
    /// ```
    /// use candle_quant::gguf::{GgufFile, GgufVocab, GgufWriter, Value};
    /// let mut writer = GgufWriter::new();
    /// writer.add_metadata("tokenizer.ggml.model", "gpt2")?;
    /// writer.add_metadata("tokenizer.ggml.tokens", Value::string_array(["<s>", "a", "b", "ab"]))?;
    /// writer.add_metadata("tokenizer.ggml.merges", Value::string_array(["a b"]))?;
    /// writer.add_metadata("tokenizer.ggml.bos_token_id", 0u32)?;
    /// let file = GgufFile::from_vec(writer.to_bytes()?)?;
    /// let vocab = GgufVocab::from_gguf(&file)?;
    /// assert_eq!(vocab.tokens[3], "ab");
    /// assert_eq!(vocab.merges.as_deref(), Some(&["a b"][..]));
    /// assert_eq!(vocab.bos_token_id, Some(0));
    /// # Ok::<(), candle_quant::gguf::GgufError>(())
    /// ```
    pub fn from_gguf(file: &'f GgufFile<'_>) -> Result<Self> {
        let model = file.get_str("tokenizer.ggml.model")?;
        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let optional = |key: &str| file.get(key).is_some();
        let scores = optional("tokenizer.ggml.scores")
            .then(|| file.get_f32_array("tokenizer.ggml.scores"))
            .transpose()?;
        let token_types = optional("tokenizer.ggml.token_type")
            .then(|| file.get_i32_array("tokenizer.ggml.token_type"))
            .transpose()?;
        let merges = optional("tokenizer.ggml.merges")
            .then(|| file.get_str_array("tokenizer.ggml.merges"))
            .transpose()?;
        for (key, len) in [
            ("tokenizer.ggml.scores", scores.as_ref().map(Vec::len)),
            (
                "tokenizer.ggml.token_type",
                token_types.as_ref().map(Vec::len),
            ),
        ] {
            if let Some(len) = len.filter(|&len| len != tokens.len()) {
                return Err(GgufError::InconsistentMetadata {
                    key: key.to_owned(),
                    expected: format!("{} entries, one per token", tokens.len()),
                    found: format!("{len} entries"),
                });
            }
        }
        // llama.cpp asserts the same: an id per distinct token text, or
        // text-to-id lookups would disagree with id-to-text ones.
        let mut seen = std::collections::HashMap::with_capacity(tokens.len());
        for (id, &token) in tokens.iter().enumerate() {
            if let Some(first) = seen.insert(token, id) {
                return Err(GgufError::InconsistentMetadata {
                    key: "tokenizer.ggml.tokens".to_owned(),
                    expected: "distinct tokens".to_owned(),
                    found: format!("{token:?} at ids {first} and {id}"),
                });
            }
        }
        let mut special = [None; SPECIAL_IDS.len()];
        for (slot, key) in special.iter_mut().zip(SPECIAL_IDS) {
            if !optional(key) {
                continue;
            }
            let id = file.get_u32(key)?;
            if id as usize >= tokens.len() {
                return Err(GgufError::InconsistentMetadata {
                    key: key.to_owned(),
                    expected: format!("a token id below the vocabulary size {}", tokens.len()),
                    found: id.to_string(),
                });
            }
            *slot = Some(id);
        }
        let [bos_token_id, eos_token_id, unknown_token_id, padding_token_id] = special;
        Ok(Self {
            model,
            tokens,
            scores,
            token_types,
            merges,
            bos_token_id,
            eos_token_id,
            unknown_token_id,
            padding_token_id,
        })
    }
}
