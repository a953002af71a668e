//! Text <-> token ids: Hugging Face `tokenizer.json` files through the
//! `tokenizers` crate, and the tokenizer embedded in GGUF metadata: byte-level
//! BPE (`gpt2`) is translated into the same representation so both run one
//! implementation; SentencePiece (`llama`: llama-2, Gemma) runs `spm`, which
//! reproduces llama.cpp's merge order.

use crate::spm::{SpmTokenizer, SpmVocab};
use crate::{Error, Result};
use serde_json::{json, Value};

// Splitting regexes of the original tokenizers behind the GGUF
// pre-tokenizer names we know (`tokenizer.ggml.pre`); gpt2, roberta-bpe and
// smollm use the byte-level pre-tokenizer's built-in GPT-2 regex.
pub(crate) const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub(crate) const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The `tokenizer.ggml.pre` values the GGUF tokenizer supports.
pub const SUPPORTED_GGUF_PRE: &str = "gpt2, default, roberta-bpe, smollm, llama-bpe, llama3, qwen2";

/// GGUF token types (llama.cpp's numbering).
pub(crate) const TOKEN_TYPE_CONTROL: i32 = 3;
pub(crate) const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The `tokenizers` document of a GGUF byte-level BPE vocabulary, its
/// `tokenizer.ggml.pre` name mapped to that pre-tokenizer: what
/// [`Tokenizer`] loads for a `gpt2` GGUF model and what `export` writes as
/// `tokenizer.json`. Control and user-defined tokens become added tokens
/// (control ones special). `Err(pre)` for a pre-tokenizer we do not know.
pub(crate) fn gguf_bpe_document(
    tokens: &[&str],
    token_types: &[i32],
    merges: &[&str],
    pre: &str,
) -> std::result::Result<Value, String> {
    let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match pre {
        "gpt2" | "default" | "roberta-bpe" => byte_level(true),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" => {
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]})
        }
        "qwen2" => {
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]})
        }
        other => return Err(other.to_string()),
    };
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(id, &t)| (t.to_string(), json!(id)))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": gguf_added_tokens(tokens, token_types),
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    }))
}

/// The `added_tokens` of a `tokenizers` document for a GGUF vocabulary:
/// control tokens (special) and user-defined ones, matched whole in text
/// before the model splits it.
pub(crate) fn gguf_added_tokens(tokens: &[&str], token_types: &[i32]) -> Vec<Value> {
    tokens
        .iter()
        .zip(token_types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, (&content, &ty))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": ty == TOKEN_TYPE_CONTROL})
        })
        .collect()
}

/// [`gguf_bpe_document`] for a file's `tokenizer.ggml.pre` (absent:
/// `default`); a name we do not know is an error that lists those we do.
pub(crate) fn gguf_bpe_pipeline(
    tokens: &[&str],
    token_types: &[i32],
    merges: &[&str],
    pre: Option<&str>,
) -> Result<Value> {
    gguf_bpe_document(tokens, token_types, merges, pre.unwrap_or("default")).map_err(|other| {
        Error::Tokenizer(format!(
            "tokenizer.ggml.pre `{other}` is not supported yet; supported: {SUPPORTED_GGUF_PRE}"
        ))
    })
}

/// The vocabulary of a GGUF file's `tokenizer.ggml.*` keys.
#[derive(Clone, Debug, Default)]
pub struct GgufTokenizerSpec<'a> {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: &'a str,
    /// `tokenizer.ggml.pre`, e.g. `smollm`.
    pub pre: Option<&'a str>,
    pub tokens: Vec<&'a str>,
    pub token_types: Vec<i32>,
    pub merges: Vec<&'a str>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
}

/// The `tokenizer.ggml.*` keys SentencePiece vocabularies use beyond
/// [`GgufTokenizerSpec`]; the defaults are llama.cpp's for a file without
/// them.
#[derive(Clone, Debug, Default)]
pub struct GgufTokenizerOptions {
    /// `tokenizer.ggml.scores`, one per token (empty: all 0).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix` (absent: true for SentencePiece):
    /// a space is put before text that starts the input or follows a
    /// special token.
    pub add_space_prefix: Option<bool>,
}

/// A tokenizer with the special tokens generation needs.
pub struct Tokenizer {
    backend: Backend,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
}

enum Backend {
    HuggingFace(Box<tokenizers::Tokenizer>),
    SentencePiece(Box<SpmTokenizer>),
}

fn tokenizer_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. `eos` lists the ids that end a
    /// generation (from `config.json`/`generation_config.json`).
    pub fn from_json(bytes: &[u8], bos: Option<u32>, eos: Vec<u32>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| tokenizer_error("tokenizer.json", e))?;
        Ok(Self {
            backend: Backend::HuggingFace(Box::new(inner)),
            bos,
            eos,
            add_bos: false,
            add_eos: false,
        })
    }

    /// Builds the tokenizer described by GGUF metadata, with llama.cpp's
    /// defaults for the keys of [`GgufTokenizerOptions`].
    pub fn from_gguf(spec: &GgufTokenizerSpec<'_>) -> Result<Self> {
        Self::from_gguf_with(spec, &GgufTokenizerOptions::default())
    }

    /// Builds the byte-level BPE (`tokenizer.ggml.model = gpt2`) or
    /// SentencePiece (`llama`) tokenizer described by GGUF metadata.
    ///
    /// ```
    /// use candle_engine::tokenizer::{GgufTokenizerOptions, GgufTokenizerSpec, Tokenizer};
    /// // A SentencePiece vocabulary: ids 3 and 4 are special (control) tokens.
    /// let tokens = vec!["\u{2581}", "h", "i", "<start>", "<end>", "\u{2581}h", "\u{2581}hi"];
    /// let spec = GgufTokenizerSpec {
    ///     model: "llama",
    ///     token_types: vec![1, 1, 1, 3, 3, 1, 1],
    ///     tokens,
    ///     ..GgufTokenizerSpec::default()
    /// };
    /// let options = GgufTokenizerOptions {
    ///     scores: vec![0.0, 0.0, 0.0, 0.0, 0.0, -2.0, -1.0],
    ///     ..GgufTokenizerOptions::default()
    /// };
    /// let tokenizer = Tokenizer::from_gguf_with(&spec, &options)?;
    /// // The space prefix makes "hi" "▁hi"; it comes back without it.
    /// assert_eq!(tokenizer.encode("hi<end>", false)?, vec![6, 4]);
    /// assert_eq!(tokenizer.decode(&[6, 4], false)?, "hi<end>");
    /// assert_eq!(tokenizer.decode(&[6, 4], true)?, "hi");
    /// # Ok::<(), candle_engine::Error>(())
    /// ```
    pub fn from_gguf_with(
        spec: &GgufTokenizerSpec<'_>,
        options: &GgufTokenizerOptions,
    ) -> Result<Self> {
        match spec.model {
            "gpt2" => Self::from_gguf_bpe(spec),
            "llama" => {
                let spm = SpmTokenizer::new(&SpmVocab {
                    tokens: &spec.tokens,
                    scores: &options.scores,
                    token_types: &spec.token_types,
                    add_space_prefix: options.add_space_prefix.unwrap_or(true),
                })?;
                for (key, id) in [
                    ("tokenizer.ggml.bos_token_id", spec.bos),
                    ("tokenizer.ggml.eos_token_id", spec.eos),
                ] {
                    if let Some(id) = id.filter(|&id| id as usize >= spm.len()) {
                        return Err(Error::Tokenizer(format!(
                            "{key} is {id}, expected an id below the vocabulary size {}",
                            spm.len()
                        )));
                    }
                }
                Ok(Self {
                    backend: Backend::SentencePiece(Box::new(spm)),
                    bos: spec.bos,
                    eos: spec.eos.into_iter().collect(),
                    add_bos: spec.add_bos,
                    add_eos: options.add_eos,
                })
            }
            other => Err(Error::Tokenizer(format!(
                "tokenizer.ggml.model `{other}` is not supported; supported: gpt2 (byte-level BPE), llama (SentencePiece)"
            ))),
        }
    }

    fn from_gguf_bpe(spec: &GgufTokenizerSpec<'_>) -> Result<Self> {
        if !spec.token_types.is_empty() && spec.token_types.len() != spec.tokens.len() {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                spec.token_types.len(),
                spec.tokens.len()
            )));
        }
        let document = gguf_bpe_pipeline(&spec.tokens, &spec.token_types, &spec.merges, spec.pre)?;
        let bytes =
            serde_json::to_vec(&document).map_err(|e| tokenizer_error("GGUF vocabulary", e))?;
        // The BPE model checks that every merge is two tokens whose
        // concatenation is a token too; its errors quote the merge, not
        // where it came from.
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| {
            tokenizer_error(
                "the BPE model of tokenizer.ggml.tokens and tokenizer.ggml.merges",
                e,
            )
        })?;
        Ok(Self {
            backend: Backend::HuggingFace(Box::new(inner)),
            bos: spec.bos,
            eos: spec.eos.into_iter().collect(),
            add_bos: spec.add_bos,
            add_eos: false,
        })
    }

    /// Token ids of `text`; special tokens written in the text (e.g.
    /// `<|im_start|>`, `<start_of_turn>`) become their ids. With
    /// `add_special`, the BOS/EOS tokens the model asks for are added; a BOS
    /// is not added twice when the text already starts with it (chat
    /// templates often write it).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let body = match &self.backend {
            Backend::HuggingFace(inner) => inner
                .encode(text, false)
                .map_err(|e| tokenizer_error("encode", e))?
                .get_ids()
                .to_vec(),
            Backend::SentencePiece(spm) => spm.encode(text)?,
        };
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_special && self.add_bos && body.first().copied() != self.bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(&body);
        if add_special && self.add_eos {
            ids.extend(self.eos.first());
        }
        Ok(ids)
    }

    /// The text of `ids`, special tokens included unless `skip_special`.
    /// For SentencePiece this is llama.cpp's `llama_detokenize` with
    /// `remove_special = skip_special` and `unparse_special = !skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &self.backend {
            Backend::HuggingFace(inner) => inner
                .decode(ids, skip_special)
                .map_err(|e| tokenizer_error("decode", e)),
            Backend::SentencePiece(spm) => {
                let added = |add: bool, id: Option<u32>| id.filter(|_| add && skip_special);
                spm.decode(
                    ids,
                    !skip_special,
                    added(self.add_bos, self.bos),
                    added(self.add_eos, self.eos.first().copied()),
                )
            }
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.backend {
            Backend::HuggingFace(inner) => inner.get_vocab_size(true),
            Backend::SentencePiece(spm) => spm.len(),
        }
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Whether `encode` with `add_special` starts the text with BOS (the
    /// model's `add_bos_token`).
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Ids that end a generation.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.backend {
            Backend::HuggingFace(inner) => inner.token_to_id(token),
            Backend::SentencePiece(spm) => spm.token_to_id(token),
        }
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &self.backend {
            Backend::HuggingFace(inner) => inner.id_to_token(id),
            Backend::SentencePiece(spm) => spm.id_to_token(id).map(str::to_string),
        }
    }

    /// Adds `id` to the tokens that end a generation (e.g. a chat
    /// template's end-of-turn token).
    pub fn add_eos(&mut self, id: u32) {
        if !self.eos.contains(&id) {
            self.eos.push(id);
        }
    }
}

/// Turns a growing list of generated ids into text increments, holding
/// back bytes that do not yet form complete characters.
#[derive(Default)]
pub struct TextStream {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl TextStream {
    /// Appends `id` and returns the text it completes (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tokenizer.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let text = tokenizer.decode(&self.ids[self.prefix_offset..], true)?;
        if text.len() > prefix.len()
            && !text.ends_with('\u{FFFD}')
            && text.is_char_boundary(prefix.len())
        {
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(text[prefix.len()..].to_string())
        } else {
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_models_and_out_of_range_special_ids_are_reported() {
        let tokens = vec!["a", "b"];
        let spec = GgufTokenizerSpec {
            model: "bert",
            tokens: tokens.clone(),
            ..GgufTokenizerSpec::default()
        };
        let err = Tokenizer::from_gguf(&spec).err().unwrap().to_string();
        assert!(
            err.contains("`bert`") && err.contains("llama (SentencePiece)"),
            "{err}"
        );
        let spec = GgufTokenizerSpec {
            model: "llama",
            tokens,
            bos: Some(2),
            ..GgufTokenizerSpec::default()
        };
        let err = Tokenizer::from_gguf(&spec).err().unwrap().to_string();
        assert!(
            err.contains("tokenizer.ggml.bos_token_id is 2") && err.contains("size 2"),
            "{err}"
        );
    }

    #[test]
    fn sentencepiece_adds_bos_and_eos_once_when_asked() {
        let spec = GgufTokenizerSpec {
            model: "llama",
            tokens: vec!["<s>", "</s>", "\u{2581}a"],
            token_types: vec![3, 3, 1],
            bos: Some(0),
            eos: Some(1),
            add_bos: true,
            ..GgufTokenizerSpec::default()
        };
        let options = GgufTokenizerOptions {
            add_eos: true,
            ..GgufTokenizerOptions::default()
        };
        let t = Tokenizer::from_gguf_with(&spec, &options).unwrap();
        assert_eq!(t.encode("a", true).unwrap(), vec![0, 2, 1]);
        assert_eq!(t.encode("<s>a", true).unwrap(), vec![0, 2, 1]);
        assert_eq!(t.encode("a", false).unwrap(), vec![2]);
        // Dropping the model's own BOS keeps the space it was followed by,
        // as llama.cpp's detokenizer does.
        assert_eq!(t.decode(&[0, 2, 1], true).unwrap(), " a");
        assert_eq!(t.decode(&[2], true).unwrap(), "a");
        assert_eq!(t.decode(&[0, 2, 1], false).unwrap(), "<s> a</s>");
    }
}
