//! Encoder models behind the server: `POST /v1/embeddings` (OpenAI's
//! shapes) and `POST /v1/rerank` (text-embeddings-inference's shape).
//!
//! Like a decoder, an encoder has one thread that runs all its forward
//! passes. It takes every request waiting when it becomes free and embeds
//! their texts in one batch (the encoder pads nothing: each text attends
//! only to itself, so a text's vector does not depend on its batch).

use crate::api::{ApiError, Fields};
use base64::Engine as _;
use candle_engine::encoder::Model as EncoderModel;
use candle_engine::{Embedding, RerankScore};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// Texts one batch of the encoder thread takes from waiting requests (a
/// single larger request is still one batch).
const BATCH_TEXTS: usize = 256;

/// Inputs one embeddings request may hold, as OpenAI's API allows.
const MAX_INPUTS: usize = 2048;

/// What handlers know of a loaded encoder.
pub struct EncoderHandle {
    pub jobs: mpsc::Sender<Job>,
    /// `Some(width)` for an embedding model, `None` for a reranker.
    pub dimension: Option<usize>,
    pub vocab_size: usize,
}

pub enum Work {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
    Rerank { query: String, docs: Vec<String> },
}

pub enum Done {
    Embeddings(Vec<Embedding>),
    Scores(Vec<RerankScore>),
}

pub struct Job {
    pub work: Work,
    pub reply: oneshot::Sender<Result<Done, String>>,
}

impl EncoderHandle {
    pub fn new(model: &EncoderModel, jobs: mpsc::Sender<Job>) -> Self {
        Self {
            jobs,
            dimension: match model {
                EncoderModel::Embedder(e) => Some(e.dimension()),
                EncoderModel::Reranker(_) => None,
            },
            vocab_size: model.config().vocab_size,
        }
    }
}

/// Runs jobs until every sender is gone.
pub fn run(model: &EncoderModel, mut jobs: mpsc::Receiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        let mut texts = batch_texts(&batch[0].work);
        while texts < BATCH_TEXTS {
            let Ok(job) = jobs.try_recv() else { break };
            texts += batch_texts(&job.work);
            batch.push(job);
        }
        // Requests whose client went away are not computed.
        batch.retain(|job| !job.reply.is_closed());
        run_batch(model, batch);
    }
}

fn batch_texts(work: &Work) -> usize {
    match work {
        Work::Texts(t) => t.len(),
        Work::Tokens(t) => t.len(),
        Work::Rerank { docs, .. } => docs.len(),
    }
}

/// Embeds the batch's texts in one call; when that fails, each request
/// alone, so that one bad request fails alone.
fn run_batch(model: &EncoderModel, batch: Vec<Job>) {
    let EncoderModel::Embedder(embedder) = model else {
        for job in batch {
            let result = run_one(model, &job.work);
            let _ = job.reply.send(result);
        }
        return;
    };
    let (texts, rest): (Vec<Job>, Vec<Job>) = batch
        .into_iter()
        .partition(|job| matches!(job.work, Work::Texts(_)));
    if texts.len() > 1 {
        let all: Vec<&str> = texts
            .iter()
            .flat_map(|job| match &job.work {
                Work::Texts(t) => t.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            })
            .collect();
        if let Ok(mut vectors) = embedder.embed_detailed(&all) {
            for job in texts.into_iter().rev() {
                let n = batch_texts(&job.work);
                let mine = vectors.split_off(vectors.len() - n);
                let _ = job.reply.send(Ok(Done::Embeddings(mine)));
            }
            texts_done(model, rest);
            return;
        }
    }
    texts_done(model, texts.into_iter().chain(rest).collect());
}

fn texts_done(model: &EncoderModel, jobs: Vec<Job>) {
    for job in jobs {
        let result = run_one(model, &job.work);
        let _ = job.reply.send(result);
    }
}

fn run_one(model: &EncoderModel, work: &Work) -> Result<Done, String> {
    let result = match (model, work) {
        (EncoderModel::Embedder(e), Work::Texts(texts)) => {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            e.embed_detailed(&texts).map(Done::Embeddings)
        }
        (EncoderModel::Embedder(e), Work::Tokens(ids)) => e.embed_tokens(ids).map(Done::Embeddings),
        (EncoderModel::Reranker(r), Work::Rerank { query, docs }) => {
            let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
            r.score(query, &docs).map(Done::Scores)
        }
        _ => return Err("the request does not fit the model".into()),
    };
    result.map_err(|e| e.to_string())
}

/// A parsed `POST /v1/embeddings`.
pub struct EmbeddingsRequest {
    pub model: String,
    pub work: Work,
    pub base64: bool,
    pub dimensions: Option<usize>,
    /// `false`: an input beyond the model's limit is a 400, not cut.
    pub truncate: bool,
}

fn token_ids(value: &Value, field: &str) -> Result<Vec<u32>, ApiError> {
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            field,
            format!("`{field}` must be an array of token ids"),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(field, format!("`{field}` is empty")));
    }
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid(field, format!("`{field}` holds {v}, not a token id"))
                })
        })
        .collect()
}

pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    let mut f = Fields::parse(body)?;
    let model = f.required_string("model")?;
    let too_many = |n: usize| {
        ApiError::invalid(
            "input",
            format!("`input` holds {n} items; at most {MAX_INPUTS} per request"),
        )
    };
    let work = match f.take("input") {
        Some(Value::String(s)) => Work::Texts(vec![s]),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(ApiError::invalid("input", "`input` is an empty array"))
        }
        Some(Value::Array(items)) if items.len() > MAX_INPUTS => return Err(too_many(items.len())),
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => Work::Texts(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        v => Err(ApiError::invalid(
                            format!("input[{i}]"),
                            format!("`input[{i}]` must be a string like the first item, got {v}"),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Number(_) => Work::Tokens(vec![token_ids(&Value::Array(items), "input")?]),
            Value::Array(_) => Work::Tokens(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| token_ids(v, &format!("input[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            v => {
                return Err(ApiError::invalid(
                    "input",
                    format!("`input` must be a string, an array of strings, an array of token ids or an array of such arrays; it holds {v}"),
                ))
            }
        },
        Some(v) => {
            return Err(ApiError::invalid(
                "input",
                format!("`input` must be a string or an array, got {v}"),
            ))
        }
        None => return Err(ApiError::invalid("input", "`input` is required")),
    };
    if let Work::Texts(texts) = &work {
        if let Some(i) = texts.iter().position(String::is_empty) {
            return Err(ApiError::invalid(
                format!("input[{i}]"),
                format!("`input[{i}]` is an empty string"),
            ));
        }
    }
    let base64 = match f.take("encoding_format") {
        None => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(v) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got {v}"),
            ))
        }
    };
    let dimensions = match f.take("dimensions") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(d) if d >= 1 => Some(d as usize),
            _ => {
                return Err(ApiError::invalid(
                    "dimensions",
                    format!("`dimensions` must be a positive integer, got {v}"),
                ))
            }
        },
    };
    let truncate = f.boolean_or("truncate", true)?;
    f.take("user");
    f.refuse_unknown()?;
    Ok(EmbeddingsRequest {
        model,
        work,
        base64,
        dimensions,
        truncate,
    })
}

/// A parsed `POST /v1/rerank`.
pub struct RerankRequest {
    pub model: Option<String>,
    pub query: String,
    pub texts: Vec<String>,
    pub raw_scores: bool,
    pub return_text: bool,
    pub truncate: bool,
}

pub fn parse_rerank(body: &[u8]) -> Result<RerankRequest, ApiError> {
    let mut f = Fields::parse(body)?;
    let model = f.string("model")?;
    let query = f.required_string("query")?;
    if query.is_empty() {
        return Err(ApiError::invalid("query", "`query` is empty"));
    }
    let texts = match f.take("texts") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_INPUTS => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.is_empty() => Ok(s),
                v => Err(ApiError::invalid(
                    format!("texts[{i}]"),
                    format!("`texts[{i}]` must be a non-empty string, got {v}"),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::invalid(
                "texts",
                format!("`texts` must be an array of 1 to {MAX_INPUTS} strings, got {v}"),
            ))
        }
        None => return Err(ApiError::invalid("texts", "`texts` is required")),
    };
    let raw_scores = f.boolean("raw_scores")?;
    let return_text = f.boolean("return_text")?;
    let truncate = f.boolean_or("truncate", true)?;
    f.refuse_unknown()?;
    Ok(RerankRequest {
        model,
        query,
        texts,
        raw_scores,
        return_text,
        truncate,
    })
}

/// Checks the request against the model before it runs.
pub fn check_embeddings(
    request: &EmbeddingsRequest,
    handle: &EncoderHandle,
    model: &str,
) -> Result<(), ApiError> {
    let Some(dimension) = handle.dimension else {
        return Err(ApiError::invalid(
            "model",
            format!("`{model}` is a reranker; it scores pairs at /v1/rerank and has no embeddings"),
        ));
    };
    if let Some(d) = request.dimensions.filter(|&d| d != dimension) {
        return Err(ApiError::invalid(
            "dimensions",
            format!("`{model}` gives {dimension}-dimensional vectors and was not trained to be shortened (Matryoshka); `dimensions` {d} is not supported"),
        ));
    }
    if let Work::Tokens(seqs) = &request.work {
        for (i, seq) in seqs.iter().enumerate() {
            if let Some(&bad) = seq.iter().find(|&&t| t as usize >= handle.vocab_size) {
                return Err(ApiError::invalid(
                    format!("input[{i}]"),
                    format!(
                        "token id {bad} is outside the vocabulary of {}",
                        handle.vocab_size
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Errors for inputs that were cut when the request said `truncate: false`.
fn refuse_truncated(truncated: impl Iterator<Item = bool>, field: &str) -> Result<(), ApiError> {
    let cut: Vec<usize> = truncated
        .enumerate()
        .filter_map(|(i, t)| t.then_some(i))
        .collect();
    match cut.first() {
        Some(&first) => Err(ApiError::invalid(
            format!("{field}[{first}]"),
            format!(
                "{} input(s) (first: {field}[{first}]) are longer than the model's limit and `truncate` is false",
                cut.len()
            ),
        )),
        None => Ok(()),
    }
}

pub fn embeddings_body(
    request: &EmbeddingsRequest,
    model: &str,
    embeddings: Vec<Embedding>,
) -> Result<Value, ApiError> {
    if !request.truncate {
        refuse_truncated(embeddings.iter().map(|e| e.truncated), "input")?;
    }
    let tokens: usize = embeddings.iter().map(|e| e.tokens).sum();
    let data: Vec<Value> = embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let vector = if request.base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.vector)
            };
            json!({"object": "embedding", "index": index, "embedding": vector, "truncated": e.truncated})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

pub fn rerank_body(request: &RerankRequest, scores: Vec<RerankScore>) -> Result<Value, ApiError> {
    if !request.truncate {
        refuse_truncated(scores.iter().map(|s| s.truncated), "texts")?;
    }
    let mut ranked: Vec<(usize, f32)> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let score = if request.raw_scores {
                s.score
            } else {
                1.0 / (1.0 + (-s.score).exp())
            };
            (i, score)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Value::Array(
        ranked
            .into_iter()
            .map(|(index, score)| {
                let mut item = json!({"index": index, "score": score});
                if request.return_text {
                    item["text"] = json!(request.texts[index]);
                }
                item
            })
            .collect(),
    ))
}
