//! Encoder models (HIP-19 §Model Architectures): BERT, RoBERTa and
//! XLM-RoBERTa with bidirectional attention, for sentence embeddings
//! ([`Embedder`]) and cross-encoder reranking ([`Reranker`]).
//!
//! A model comes from a Hugging Face directory (`config.json`,
//! `tokenizer.json`, memory-mapped `*.safetensors`, and sentence-transformers'
//! `modules.json` / `1_Pooling/config.json` / `sentence_bert_config.json`
//! when present) or from a GGUF file of llama.cpp's `bert` architecture.
//! Texts longer than the model's limit are cut, and every result says so.
//!
//! Not in the wasm32 build: models load from files (memory-mapped).

pub mod config;
mod load;
mod model;
mod text;
mod vocab;

pub use config::{EncoderActivation, EncoderConfig, EncoderFamily, Pooling, PoolingConfig};
pub use load::is_encoder;
pub(crate) use load::{hf_head_names, pooling_of_dir};
pub use model::TokenSeq;
pub(crate) use model::{hf_naming, renames, Naming};

use crate::{Error, Result};
use model::{Encoder, Linear};
use text::EncoderTokenizer;

/// Texts are run through the network in groups of at most this many tokens
/// (but at least one text), which bounds the activations' memory.
const TOKENS_PER_PASS: usize = 8192;

/// One text's embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    pub vector: Vec<f32>,
    /// Tokens the model saw (special tokens included).
    pub tokens: usize,
    /// The text was longer than `max_seq_length` and was cut to it.
    pub truncated: bool,
}

/// A sentence-embedding model: encoder, tokenizer and pooling.
pub struct Embedder {
    encoder: Encoder,
    tokenizer: EncoderTokenizer,
    pooling: PoolingConfig,
}

impl Embedder {
    /// Loads a Hugging Face model directory or a `bert` GGUF file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        Self::from_parts(load::load(path)?)
    }

    fn from_parts(parts: load::Parts) -> Result<Self> {
        Ok(Self {
            tokenizer: EncoderTokenizer::new(parts.tokenizer, parts.pooling.max_seq_length)?,
            encoder: parts.encoder,
            pooling: parts.pooling,
        })
    }

    /// The length of the vectors.
    pub fn dimension(&self) -> usize {
        self.encoder.config().hidden_size
    }

    pub fn config(&self) -> &EncoderConfig {
        self.encoder.config()
    }

    pub fn pooling(&self) -> PoolingConfig {
        self.pooling
    }

    /// Turns L2 normalisation on or off (the model's own setting comes
    /// from its `modules.json`).
    pub fn set_normalize(&mut self, normalize: bool) {
        self.pooling.normalize = normalize;
    }

    /// The vectors of `texts`, in order. Empty input is an error; an empty
    /// string is a text (its special tokens).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self
            .embed_detailed(texts)?
            .into_iter()
            .map(|e| e.vector)
            .collect())
    }

    /// Like [`Embedder::embed`], with each text's token count and whether
    /// it was truncated.
    pub fn embed_detailed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Err(Error::InvalidBatch("no texts to embed".into()));
        }
        let encoded = texts
            .iter()
            .map(|t| self.tokenizer.encode(t))
            .collect::<Result<Vec<_>>>()?;
        let truncated: Vec<bool> = encoded.iter().map(|(_, t)| *t).collect();
        let seqs: Vec<TokenSeq> = encoded.into_iter().map(|(s, _)| s).collect();
        let mut out = self.embed_seqs(&seqs)?;
        for (e, t) in out.iter_mut().zip(truncated) {
            e.truncated = t;
        }
        Ok(out)
    }

    /// Embeds already tokenized texts (special tokens included, segment 0);
    /// sequences beyond `max_seq_length` are cut to it and flagged.
    pub fn embed_tokens(&self, ids: &[Vec<u32>]) -> Result<Vec<Embedding>> {
        if ids.is_empty() {
            return Err(Error::InvalidBatch("no token sequences to embed".into()));
        }
        let max = self.pooling.max_seq_length;
        let mut truncated = Vec::with_capacity(ids.len());
        let seqs: Vec<TokenSeq> = ids
            .iter()
            .map(|s| {
                if s.is_empty() {
                    return Err(Error::InvalidBatch("an empty token sequence".into()));
                }
                truncated.push(s.len() > max);
                let ids = s[..s.len().min(max)].to_vec();
                Ok(TokenSeq {
                    type_ids: vec![0; ids.len()],
                    ids,
                })
            })
            .collect::<Result<_>>()?;
        let mut out = self.embed_seqs(&seqs)?;
        for (e, t) in out.iter_mut().zip(truncated) {
            e.truncated = t;
        }
        Ok(out)
    }

    fn embed_seqs(&self, seqs: &[TokenSeq]) -> Result<Vec<Embedding>> {
        let h = self.dimension();
        let mut out = Vec::with_capacity(seqs.len());
        for group in passes(seqs) {
            let states = self.encoder.forward(group)?;
            let mut start = 0;
            for seq in group {
                let len = seq.ids.len();
                let rows = &states[start * h..(start + len) * h];
                start += len;
                let mut vector = pool(rows, h, self.pooling.pooling);
                if self.pooling.normalize {
                    normalize(&mut vector);
                }
                out.push(Embedding {
                    vector,
                    tokens: len,
                    truncated: false,
                });
            }
        }
        Ok(out)
    }

    /// The last hidden states of one text, `[tokens, hidden]` row-major:
    /// what `transformers` returns as `last_hidden_state`.
    pub fn hidden_states(&self, text: &str) -> Result<Vec<f32>> {
        let (seq, _) = self.tokenizer.encode(text)?;
        self.encoder.forward(&[seq])
    }
}

/// An encoder as its checkpoint describes it: a cross-encoder when it has a
/// sequence-classification head, else a sentence-embedding model.
pub enum Model {
    Embedder(Embedder),
    Reranker(Reranker),
}

impl Model {
    /// Loads a Hugging Face model directory or a `bert` GGUF file, once.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let mut parts = load::load(path)?;
        Ok(match parts.head.take() {
            Some(head) => {
                let max = parts.encoder.config().max_tokens();
                Model::Reranker(Reranker {
                    tokenizer: EncoderTokenizer::new(parts.tokenizer, max)?,
                    encoder: parts.encoder,
                    head,
                })
            }
            None => Model::Embedder(Embedder::from_parts(parts)?),
        })
    }

    /// Whether the checkpoint has a sequence-classification head.
    pub fn has_classifier_head(&self) -> bool {
        matches!(self, Model::Reranker(_))
    }
    pub fn config(&self) -> &EncoderConfig {
        match self {
            Model::Embedder(e) => e.config(),
            Model::Reranker(r) => r.config(),
        }
    }
}

/// Splits `seqs` into consecutive groups of at most [`TOKENS_PER_PASS`]
/// tokens (a longer single text is a group of its own).
fn passes(seqs: &[TokenSeq]) -> Vec<&[TokenSeq]> {
    let mut groups = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, seq) in seqs.iter().enumerate() {
        if i > start && tokens + seq.ids.len() > TOKENS_PER_PASS {
            groups.push(&seqs[start..i]);
            (start, tokens) = (i, 0);
        }
        tokens += seq.ids.len();
    }
    if start < seqs.len() {
        groups.push(&seqs[start..]);
    }
    groups
}

/// One vector from a text's token states `[len, width]`.
fn pool(rows: &[f32], width: usize, pooling: Pooling) -> Vec<f32> {
    let len = rows.len() / width;
    match pooling {
        Pooling::Cls => rows[..width].to_vec(),
        Pooling::LastToken => rows[(len - 1) * width..].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0f32; width];
            for row in rows.chunks(width) {
                crate::rows::add_assign(&mut sum, row);
            }
            sum.iter_mut().for_each(|v| *v /= len as f32);
            sum
        }
    }
}

/// Scales `v` to unit length (PyTorch's `F.normalize`: the norm is at
/// least 1e-12, so a zero vector stays zero).
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// The classifier of a cross-encoder, on the first token's state.
struct ClassifierHead {
    /// BERT's pooler or RoBERTa's `classifier.dense`, followed by tanh.
    dense: Linear,
    /// BERT's `classifier` or RoBERTa's `classifier.out_proj`.
    output: Linear,
}

impl ClassifierHead {
    fn logits(&self, first_token: &[f32]) -> Result<Vec<f32>> {
        let (mut pooled, mut logits) = (Vec::new(), Vec::new());
        self.dense
            .forward(first_token, 1, model::Then::Nothing, &mut pooled)?;
        pooled.iter_mut().for_each(|v| *v = v.tanh());
        self.output
            .forward(&pooled, 1, model::Then::Nothing, &mut logits)?;
        Ok(logits)
    }
}

/// One document's relevance to the query.
#[derive(Clone, Debug, PartialEq)]
pub struct RerankScore {
    /// The first logit of the classifier (apply a sigmoid for a
    /// probability, as sentence-transformers' `CrossEncoder` does for
    /// one-label models).
    pub score: f32,
    /// Tokens of the query–document pair the model saw.
    pub tokens: usize,
    pub truncated: bool,
}

/// A cross-encoder: scores (query, document) pairs with a sequence
/// classification head (`BertForSequenceClassification`,
/// `XLMRobertaForSequenceClassification`, ...).
pub struct Reranker {
    encoder: Encoder,
    tokenizer: EncoderTokenizer,
    head: ClassifierHead,
}

impl Reranker {
    /// Loads a Hugging Face directory or GGUF file holding a classification
    /// head.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        match Model::load(path)? {
            Model::Reranker(reranker) => Ok(reranker),
            Model::Embedder(_) => Err(Error::InvalidModel(format!(
                "{} has no sequence-classification head (classifier.* tensors): it is not a reranker",
                path.display()
            ))),
        }
    }

    pub fn config(&self) -> &EncoderConfig {
        self.encoder.config()
    }

    /// The relevance of each of `docs` to `query` (higher is more
    /// relevant), in the order of `docs`.
    pub fn score(&self, query: &str, docs: &[&str]) -> Result<Vec<RerankScore>> {
        if docs.is_empty() {
            return Err(Error::InvalidBatch("no documents to rerank".into()));
        }
        let encoded = docs
            .iter()
            .map(|d| self.tokenizer.encode_pair(query, d))
            .collect::<Result<Vec<_>>>()?;
        let h = self.encoder.config().hidden_size;
        let seqs: Vec<TokenSeq> = encoded.iter().map(|(s, _)| s.clone()).collect();
        let mut scores = Vec::with_capacity(docs.len());
        let mut done = 0;
        for group in passes(&seqs) {
            let states = self.encoder.forward(group)?;
            let mut start = 0;
            for seq in group {
                let logits = self.head.logits(&states[start * h..(start + 1) * h])?;
                start += seq.ids.len();
                scores.push(RerankScore {
                    score: logits[0],
                    tokens: seq.ids.len(),
                    truncated: encoded[done].1,
                });
                done += 1;
            }
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(len: usize) -> TokenSeq {
        TokenSeq {
            ids: vec![0; len],
            type_ids: vec![0; len],
        }
    }

    #[test]
    fn passes_bound_tokens_and_keep_order() {
        let seqs = vec![seq(5000), seq(5000), seq(10000), seq(1), seq(2)];
        let lens: Vec<usize> = passes(&seqs).iter().map(|g| g.len()).collect();
        assert_eq!(lens, [1, 1, 1, 2]);
    }

    #[test]
    fn pooling_modes() {
        let rows = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(pool(&rows, 2, Pooling::Cls), [1.0, 2.0]);
        assert_eq!(pool(&rows, 2, Pooling::LastToken), [5.0, 6.0]);
        assert_eq!(pool(&rows, 2, Pooling::Mean), [3.0, 4.0]);
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = [0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }
}
