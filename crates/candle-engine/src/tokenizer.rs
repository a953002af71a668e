//! Text <-> token ids: Hugging Face `tokenizer.json` files through the
//! `tokenizers` crate, and the tokenizer embedded in GGUF metadata, which is
//! translated into the same representation so both run one implementation.

use crate::{Error, Result};
use serde_json::{json, Value};

// Splitting regexes of the original tokenizers behind the GGUF
// pre-tokenizer names we know (`tokenizer.ggml.pre`); gpt2 and smollm use
// the byte-level pre-tokenizer's built-in GPT-2 regex.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The `tokenizer.ggml.pre` values the GGUF tokenizer supports.
pub const SUPPORTED_GGUF_PRE: &str = "gpt2, default, smollm, llama-bpe, llama3, qwen2";

/// GGUF token types (llama.cpp's numbering).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// The vocabulary of a GGUF file's `tokenizer.ggml.*` keys.
pub struct GgufTokenizerSpec<'a> {
    /// `tokenizer.ggml.model`, e.g. `gpt2`.
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

/// A tokenizer with the special tokens generation needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
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
            inner,
            bos,
            eos,
            add_bos: false,
        })
    }

    /// Builds the byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`)
    /// described by GGUF metadata.
    pub fn from_gguf(spec: &GgufTokenizerSpec<'_>) -> Result<Self> {
        if spec.model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer model `{}` is not supported yet; supported: gpt2 (byte-level BPE)",
                spec.model
            )));
        }
        let pre = spec.pre.unwrap_or("default");
        let split = |regex: &str| json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let pre_tokenizer = match pre {
            "gpt2" | "default" => byte_level(true),
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
            "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
            other => {
                return Err(Error::Tokenizer(format!(
                    "GGUF pre-tokenizer `{other}` is not supported yet; supported: {SUPPORTED_GGUF_PRE}"
                )))
            }
        };
        if !spec.token_types.is_empty() && spec.token_types.len() != spec.tokens.len() {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                spec.token_types.len(),
                spec.tokens.len()
            )));
        }
        let vocab: serde_json::Map<String, Value> = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(id, &t)| (t.to_string(), json!(id)))
            .collect();
        let added: Vec<Value> = spec
            .token_types
            .iter()
            .enumerate()
            .filter(|(_, &ty)| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
            .map(|(id, &ty)| {
                json!({"id": id, "content": spec.tokens[id], "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": ty == TOKEN_TYPE_CONTROL})
            })
            .collect();
        let merges: Vec<Value> = spec.merges.iter().map(|m| json!(m)).collect();
        let document = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": false, "vocab": vocab, "merges": merges},
        });
        let bytes =
            serde_json::to_vec(&document).map_err(|e| tokenizer_error("GGUF vocabulary", e))?;
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| tokenizer_error("GGUF vocabulary", e))?;
        Ok(Self {
            inner,
            bos: spec.bos,
            eos: spec.eos.into_iter().collect(),
            add_bos: spec.add_bos,
        })
    }

    /// Token ids of `text`; special tokens written in the text (e.g.
    /// `<|im_start|>`) become their ids. A BOS token is prepended when the
    /// model asks for it and `add_bos` is set.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| tokenizer_error("encode", e))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens included unless `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| tokenizer_error("decode", e))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Ids that end a generation.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
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
