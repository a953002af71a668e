//! The HTTP endpoints and the OpenAI response shapes.

use crate::api::{self, ApiError, Prompt};
use crate::engine::{Submission, Update};
use crate::{Loaded, State};
use axum::body::Bytes;
use axum::extract::{Request, State as Shared};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use candle_engine::scheduler::{FinishReason, Generation, GenerationParams};
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
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/health", get(health))
        .merge(v1)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint",
            )
        })
        .with_state(state)
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

async fn health(Shared(state): Shared_) -> Response {
    if state.loaded.get().is_some() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

fn loaded(state: &State) -> Result<&Loaded, ApiError> {
    state.loaded.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the model is still loading",
        )
    })
}

async fn list_models(Shared(state): Shared_) -> Result<Response, ApiError> {
    let loaded = loaded(&state)?;
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": loaded.model_id,
            "object": "model",
            "created": state.created,
            "owned_by": "hanzo-candle",
        }],
    }))
    .into_response())
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
    choices: usize,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.state
            .in_flight
            .fetch_sub(self.choices, Ordering::SeqCst);
    }
}

async fn complete(state: Arc<State>, body: &[u8], chat: bool) -> Result<Response, ApiError> {
    let loaded = loaded(&state)?;
    let request = api::parse(body, chat)?;
    let common = request.common;
    if common.model != loaded.model_id {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!(
                "the model `{}` does not exist; this server serves `{}`",
                common.model, loaded.model_id
            ),
        );
        e.param = Some("model".into());
        e.code = Some("model_not_found");
        return Err(e);
    }
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
    if state.in_flight.fetch_add(n, Ordering::SeqCst) + n > state.max_in_flight {
        state.in_flight.fetch_sub(n, Ordering::SeqCst);
        return Err(overloaded());
    }
    let admission = Admission {
        state: state.clone(),
        choices: n,
    };
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
        model: loaded.model_id.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        prompt_tokens: prompt.len(),
    };
    if common.stream {
        Ok(stream(
            reply,
            n,
            common.include_usage,
            updates,
            admission,
            deadline,
        ))
    } else {
        collect(reply, n, updates, admission, deadline).await
    }
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

    /// A streamed choice: new text and, at the end, why it finished.
    fn delta(&self, index: usize, text: Option<&str>, finish: Option<FinishReason>) -> Value {
        let finish = finish.map(finish_reason);
        if self.chat {
            let delta = match text {
                Some(t) => json!({"content": t}),
                None => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": index, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
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
) -> Result<Response, ApiError> {
    let mut done: Vec<Option<Generation>> = vec![None; n];
    while done.iter().any(Option::is_none) {
        let update = tokio::time::timeout_at(deadline, updates.recv()).await;
        // Returning drops `updates`, which cancels the request's sequences.
        let update = update.map_err(|_| timed_out())?;
        match update {
            Some((_, Update::Text(_))) => {}
            Some((choice, Update::Done(generation))) => done[choice] = Some(generation),
            Some((_, Update::Failed(message))) => return Err(engine_failure(message)),
            None => return Err(engine_failure("the engine stopped".into())),
        }
    }
    let generations: Vec<Generation> = done.into_iter().flatten().collect();
    let completion_tokens = generations.iter().map(|g| g.tokens.len()).sum();
    let cached_tokens = generations[0].cached_tokens;
    let choices = generations
        .into_iter()
        .enumerate()
        .map(|(index, g)| {
            let finish = finish_reason(g.finish);
            if reply.chat {
                json!({
                    "index": index,
                    "message": {"role": "assistant", "content": g.text},
                    "logprobs": null,
                    "finish_reason": finish,
                })
            } else {
                json!({"index": index, "text": g.text, "logprobs": null, "finish_reason": finish})
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
                Some((index, Update::Text(text))) => reply.delta(index, Some(&text), None),
                Some((index, Update::Done(generation))) => {
                    left -= 1;
                    if index == 0 {
                        cached_tokens = generation.cached_tokens;
                    }
                    completion_tokens += generation.tokens.len();
                    reply.delta(index, None, Some(generation.finish))
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
