//! The HTTP endpoints and the OpenAI response shapes.

use crate::api::{self, ApiError, Prompt};
use crate::embeddings::{self, Done, Job};
use crate::engine::{Submission, Update};
use crate::metrics::LatencyClock;
use crate::{Loaded, Served, State};
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State as Shared};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use candle_engine::scheduler::{FinishReason, Generation, GenerationParams, TokenLogprob};
use candle_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;

type Shared_ = Shared<Arc<State>>;

pub fn router(state: Arc<State>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(list_models))
        .route("/v1/embeddings", post(create_embeddings))
        .route("/v1/rerank", post(rerank))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// Counts each answer by endpoint and status (unknown paths as one
/// endpoint, so a scanner cannot grow the label set).
async fn count(Shared(state): Shared_, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state
        .metrics
        .answered(&endpoint, response.status().as_u16());
    response
}

async fn metrics(Shared(state): Shared_) -> Response {
    for served in &state.models {
        state
            .metrics
            .set_in_flight(&served.id, served.in_flight.load(Ordering::SeqCst));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn authorize(Shared(state): Shared_, request: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            let mut e = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "missing or invalid API key; send `Authorization: Bearer <key>`",
            );
            e.code = Some("invalid_api_key");
            return e.into_response();
        }
    }
    next.run(request).await
}

/// 200 once every model is loaded, 503 before.
async fn health(Shared(state): Shared_) -> Response {
    let loading: Vec<&str> = state
        .models
        .iter()
        .filter(|m| m.loaded.get().is_none())
        .map(|m| m.id.as_str())
        .collect();
    if loading.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading", "loading": loading})),
        )
            .into_response()
    }
}

/// The model a request names, once loaded.
fn served<'a>(state: &'a State, id: &str) -> Result<(usize, &'a Loaded), ApiError> {
    let Some(index) = state.models.iter().position(|m| m.id == id) else {
        let names: Vec<String> = state.models.iter().map(|m| format!("`{}`", m.id)).collect();
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{id}` does not exist; this server serves {}",
                names.join(", ")
            ),
        );
        e.param = Some("model".into());
        e.code = Some("model_not_found");
        return Err(e);
    };
    let loaded = state.models[index].loaded.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!("the model `{id}` is still loading"),
        )
    })?;
    Ok((index, loaded))
}

async fn list_models(Shared(state): Shared_) -> Response {
    let data: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": state.created,
                "owned_by": "hanzo-candle",
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn chat_completions(Shared(state): Shared_, body: Bytes) -> Result<Response, ApiError> {
    complete(state, &body, true).await
}

async fn completions(Shared(state): Shared_, body: Bytes) -> Result<Response, ApiError> {
    complete(state, &body, false).await
}

/// Gives back a request's share of the in-flight bound when dropped (its
/// response finished or its client went away).
struct Admission {
    state: Arc<State>,
    model: usize,
    choices: usize,
}

impl Admission {
    fn served(&self) -> &Served {
        &self.state.models[self.model]
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.served()
            .in_flight
            .fetch_sub(self.choices, Ordering::SeqCst);
    }
}

async fn complete(state: Arc<State>, body: &[u8], chat: bool) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let request = api::parse(body, chat)?;
    let common = request.common;
    let (model, loaded) = served(&state, &common.model)?;
    let Loaded::Generator(loaded) = loaded else {
        return Err(ApiError::invalid(
            "model",
            format!(
                "`{}` is an encoder: it answers /v1/embeddings or /v1/rerank, not completions",
                common.model
            ),
        ));
    };
    let prompt_field = if chat { "messages" } else { "prompt" };
    let text = match &request.prompt {
        Prompt::Chat(messages) => loaded
            .chat
            .render(messages, true)
            .map_err(|e| ApiError::invalid("messages", e.to_string()))?,
        Prompt::Text(text) => text.clone(),
    };
    let prompt = loaded
        .tokenizer
        .encode(&text, true)
        .map_err(|e| ApiError::invalid(prompt_field, e.to_string()))?;
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            prompt_field,
            format!("`{prompt_field}` is empty"),
        ));
    }
    // The last generated token is never written to the cache.
    let room = (loaded.max_context + 1).saturating_sub(prompt.len());
    if room < 2 {
        return Err(ApiError::invalid(
            prompt_field,
            format!(
                "the prompt is {} tokens; the context holds {}",
                prompt.len(),
                loaded.max_context
            ),
        ));
    }
    let max_tokens = match common.max_tokens {
        Some(n) if n > room => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "the prompt ({} tokens) and max_tokens ({n}) exceed the context of {} tokens",
                    prompt.len(),
                    loaded.max_context
                ),
            ))
        }
        Some(n) => n,
        None => room,
    };
    common.sampling.validate().map_err(|e| match &e {
        candle_engine::Error::InvalidSamplingParameter { name, .. } => {
            ApiError::invalid(*name, e.to_string())
        }
        _ => ApiError::invalid("temperature", e.to_string()),
    })?;

    let n = common.n;
    let admission = admit(&state, model, n)?;
    let target = &state.models[model];
    let clock = state.metrics.latency_clock(&target.id, n, arrived);
    let (updates_tx, updates) = mpsc::unbounded_channel();
    for choice in 0..n {
        let mut sampling = common.sampling.clone();
        sampling.seed = sampling.seed.wrapping_add(choice as u64);
        let submission = Submission {
            prompt: prompt.clone(),
            params: GenerationParams {
                max_tokens,
                sampling,
                stop: common.stop.clone(),
                logprobs: common.logprobs,
            },
            choice,
            updates: updates_tx.clone(),
        };
        if loaded.submissions.try_send(submission).is_err() {
            return Err(overloaded());
        }
    }
    drop(updates_tx);
    let deadline = tokio::time::Instant::now() + state.timeout;
    let reply = Reply {
        id: format!(
            "{}-{:016x}",
            if chat { "chatcmpl" } else { "cmpl" },
            common.sampling.seed ^ state.created
        ),
        chat,
        model: target.id.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        prompt_tokens: prompt.len(),
        tokenizer: loaded.tokenizer.clone(),
        logprobs: common.logprobs.is_some(),
    };
    if common.stream {
        Ok(stream(
            reply,
            n,
            common.include_usage,
            updates,
            admission,
            deadline,
            clock,
        ))
    } else {
        collect(reply, n, updates, admission, deadline, clock).await
    }
}

/// Counts `choices` against the model's bound, or refuses with 429.
fn admit(state: &Arc<State>, model: usize, choices: usize) -> Result<Admission, ApiError> {
    let target = &state.models[model];
    if target.in_flight.fetch_add(choices, Ordering::SeqCst) + choices > target.max_in_flight {
        target.in_flight.fetch_sub(choices, Ordering::SeqCst);
        return Err(overloaded());
    }
    Ok(Admission {
        state: state.clone(),
        model,
        choices,
    })
}

/// Runs `work` on an encoder's thread, within the server's timeout.
async fn encode(
    state: &Arc<State>,
    model: usize,
    handle: &embeddings::EncoderHandle,
    work: embeddings::Work,
) -> Result<Done, ApiError> {
    let _admission = admit(state, model, 1)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    handle
        .jobs
        .try_send(Job { work, reply })
        .map_err(|_| overloaded())?;
    // Returning early drops `answer`; the encoder then skips the job.
    let answer = tokio::time::timeout(state.timeout, answer)
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| engine_failure("the engine stopped".into()))?;
    answer.map_err(|message| ApiError::invalid("input", message))
}

async fn create_embeddings(Shared(state): Shared_, body: Bytes) -> Result<Response, ApiError> {
    let mut request = embeddings::parse_embeddings(&body)?;
    let (model, loaded) = served(&state, &request.model)?;
    let Loaded::Encoder(handle) = loaded else {
        return Err(ApiError::invalid(
            "model",
            format!(
                "`{}` generates text; /v1/embeddings needs an embedding model",
                request.model
            ),
        ));
    };
    embeddings::check_embeddings(&request, handle, &request.model)?;
    let work = std::mem::replace(&mut request.work, embeddings::Work::Texts(Vec::new()));
    let Done::Embeddings(vectors) = encode(&state, model, handle, work).await? else {
        return Err(engine_failure(
            "the encoder gave scores, not vectors".into(),
        ));
    };
    let tokens = vectors.iter().map(|e| e.tokens).sum();
    state
        .metrics
        .prompt_processed(&state.models[model].id, tokens, 0);
    let body = embeddings::embeddings_body(&request, &state.models[model].id, vectors)?;
    Ok(Json(body).into_response())
}

async fn rerank(Shared(state): Shared_, body: Bytes) -> Result<Response, ApiError> {
    let mut request = embeddings::parse_rerank(&body)?;
    let rerankers =
        |m: &&Served| matches!(m.loaded.get(), Some(Loaded::Encoder(h)) if h.dimension.is_none());
    let id = match &request.model {
        Some(id) => id.clone(),
        None => match state.models.iter().filter(rerankers).collect::<Vec<_>>()[..] {
            [only] => only.id.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "model",
                    "give `model`: this server does not serve exactly one loaded reranker",
                ))
            }
        },
    };
    let (model, loaded) = served(&state, &id)?;
    let handle = match loaded {
        Loaded::Encoder(h) if h.dimension.is_none() => h,
        _ => {
            return Err(ApiError::invalid(
                "model",
                format!("`{id}` is not a reranker (a cross-encoder with a classification head)"),
            ))
        }
    };
    let work = embeddings::Work::Rerank {
        query: std::mem::take(&mut request.query),
        docs: request.texts.clone(),
    };
    let Done::Scores(scores) = encode(&state, model, handle, work).await? else {
        return Err(engine_failure(
            "the reranker gave vectors, not scores".into(),
        ));
    };
    let tokens = scores.iter().map(|s| s.tokens).sum();
    state.metrics.prompt_processed(&id, tokens, 0);
    Ok(Json(embeddings::rerank_body(&request, scores)?).into_response())
}

fn overloaded() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "the server is busy: every slot is in use and the queue is full; retry later",
    )
}

/// What every response of one request shares.
struct Reply {
    id: String,
    chat: bool,
    model: String,
    created: u64,
    prompt_tokens: usize,
    tokenizer: Arc<Tokenizer>,
    /// Whether the request asked for log-probabilities.
    logprobs: bool,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, false) => "chat.completion",
            (true, true) => "chat.completion.chunk",
            (false, _) => "text_completion",
        }
    }

    /// Usage of the whole request: its choices share the prompt, so the
    /// first choice's reused prompt tokens stand for it.
    fn usage(&self, completion_tokens: usize, cached_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        })
    }

    fn body(&self, chunk: bool, choices: Vec<Value>, usage: Option<Value>) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": self.object(chunk),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        body
    }

    /// A streamed choice: new text, the log-probabilities of the tokens it
    /// completes and, at the end, why it finished.
    fn delta(
        &self,
        index: usize,
        text: Option<&str>,
        logprobs: Value,
        finish: Option<FinishReason>,
    ) -> Value {
        let finish = finish.map(finish_reason);
        if self.chat {
            let delta = match text {
                Some(t) => json!({"content": t}),
                None => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        } else {
            json!({"index": index, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish})
        }
    }

    /// The text of one token; a token that is only part of a character reads
    /// as U+FFFD, as in a streamed decode.
    fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    /// `logprobs` of a choice (or chunk) in the endpoint's shape; `offset`
    /// is where the tokens' text starts in the choice's text (completions'
    /// `text_offset`, in characters). `null` when none were asked for.
    fn logprobs(&self, tokens: &[TokenLogprob], offset: &mut usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        if self.chat {
            let entry = |id: u32, logprob: f32| {
                let text = self.token_text(id);
                json!({"token": text, "logprob": logprob, "bytes": text.as_bytes()})
            };
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(t.token, t.logprob);
                    e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
                    e
                })
                .collect();
            json!({"content": content, "refusal": null})
        } else {
            let mut texts = Vec::new();
            let mut offsets = Vec::new();
            for t in tokens {
                let text = self.token_text(t.token);
                offsets.push(*offset);
                *offset += text.chars().count();
                texts.push(text);
            }
            let top: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let alternatives: serde_json::Map<String, Value> = t
                        .top
                        .iter()
                        .map(|&(id, lp)| (self.token_text(id), json!(lp)))
                        .collect();
                    Value::Object(alternatives)
                })
                .collect();
            let token_logprobs: Vec<f32> = tokens.iter().map(|t| t.logprob).collect();
            json!({
                "tokens": texts,
                "token_logprobs": token_logprobs,
                "top_logprobs": top,
                "text_offset": offsets,
            })
        }
    }
}

fn finish_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn timed_out() -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout_error",
        "the request ran past the server's --timeout and was cancelled",
    )
}

/// An error sent inside a stream, whose status line is already sent.
fn error_body(e: &ApiError) -> Value {
    json!({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}})
}

fn engine_failure(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
}

async fn collect(
    reply: Reply,
    n: usize,
    mut updates: mpsc::UnboundedReceiver<(usize, Update)>,
    _admission: Admission,
    deadline: tokio::time::Instant,
    mut clock: LatencyClock,
) -> Result<Response, ApiError> {
    let mut done: Vec<Option<Generation>> = vec![None; n];
    let mut logprobs: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
    while done.iter().any(Option::is_none) {
        let update = tokio::time::timeout_at(deadline, updates.recv()).await;
        // Returning drops `updates`, which cancels the request's sequences.
        let update = update.map_err(|_| timed_out())?;
        match update {
            Some((choice, Update::Logprob(l))) => logprobs[choice].push(l),
            Some((choice, Update::Text(_))) => clock.text(choice),
            Some((choice, Update::Done(generation))) => {
                clock.finished();
                done[choice] = Some(generation);
            }
            Some((_, Update::Failed(message))) => return Err(engine_failure(message)),
            None => return Err(engine_failure("the engine stopped".into())),
        }
    }
    let generations: Vec<Generation> = done.into_iter().flatten().collect();
    let completion_tokens = generations.iter().map(|g| g.tokens.len()).sum();
    let cached_tokens = generations[0].cached_tokens;
    let choices = generations
        .into_iter()
        .zip(&logprobs)
        .enumerate()
        .map(|(index, (g, tokens))| {
            let finish = finish_reason(g.finish);
            let logprobs = reply.logprobs(tokens, &mut 0);
            if reply.chat {
                json!({
                    "index": index,
                    "message": {"role": "assistant", "content": g.text},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                })
            } else {
                json!({"index": index, "text": g.text, "logprobs": logprobs, "finish_reason": finish})
            }
        })
        .collect();
    Ok(Json(reply.body(
        false,
        choices,
        Some(reply.usage(completion_tokens, cached_tokens)),
    ))
    .into_response())
}

fn stream(
    reply: Reply,
    n: usize,
    include_usage: bool,
    mut updates: mpsc::UnboundedReceiver<(usize, Update)>,
    admission: Admission,
    deadline: tokio::time::Instant,
    mut clock: LatencyClock,
) -> Response {
    let (events, body) = mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        let _admission = admission;
        let send = |value: Value| Ok(Event::default().data(value.to_string()));
        if reply.chat {
            // The role comes first, as in OpenAI's streams.
            for index in 0..n {
                let choice = json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                if events
                    .send(send(reply.body(true, vec![choice], None)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        let (mut left, mut completion_tokens, mut cached_tokens) = (n, 0, 0);
        // Per choice: log-probabilities of tokens whose text is not sent yet,
        // and where the next text starts.
        let mut pending: Vec<Vec<TokenLogprob>> = vec![Vec::new(); n];
        let mut offsets = vec![0; n];
        while left > 0 {
            let update = tokio::select! {
                update = updates.recv() => update,
                // The client went away: dropping `updates` cancels the
                // sequences at the engine's next step.
                _ = events.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = events.send(send(error_body(&timed_out()))).await;
                    return;
                }
            };
            let chunk = match update {
                Some((index, Update::Logprob(l))) => {
                    pending[index].push(l);
                    continue;
                }
                Some((index, Update::Text(text))) => {
                    clock.text(index);
                    let tokens = std::mem::take(&mut pending[index]);
                    let logprobs = reply.logprobs(&tokens, &mut offsets[index]);
                    reply.delta(index, Some(&text), logprobs, None)
                }
                Some((index, Update::Done(generation))) => {
                    clock.finished();
                    left -= 1;
                    if index == 0 {
                        cached_tokens = generation.cached_tokens;
                    }
                    completion_tokens += generation.tokens.len();
                    let tokens = std::mem::take(&mut pending[index]);
                    let logprobs = if tokens.is_empty() {
                        Value::Null
                    } else {
                        reply.logprobs(&tokens, &mut offsets[index])
                    };
                    reply.delta(index, None, logprobs, Some(generation.finish))
                }
                Some((_, Update::Failed(message))) => {
                    let _ = events
                        .send(send(error_body(&engine_failure(message))))
                        .await;
                    return;
                }
                None => return,
            };
            if events
                .send(send(reply.body(true, vec![chunk], None)))
                .await
                .is_err()
            {
                return;
            }
        }
        if include_usage {
            let usage = reply.body(
                true,
                vec![],
                Some(reply.usage(completion_tokens, cached_tokens)),
            );
            if events.send(send(usage)).await.is_err() {
                return;
            }
        }
        let _ = events.send(Ok(Event::default().data("[DONE]"))).await;
    });
    let mut response = Sse::new(tokio_stream::wrappers::ReceiverStream::new(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
