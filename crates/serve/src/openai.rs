//! The OpenAI-compatible HTTP API of the gateway: `POST /v1/chat/completions` (JSON or
//! server-sent events with `stream: true`) and `GET /v1/models`. Errors use OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}`.
#![allow(
    clippy::float_arithmetic,
    reason = "sampling parameters are floats in the OpenAI API; not consensus-visible"
)]

use std::sync::Arc;
use std::time::Duration;

use agora_primitives::Amount;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::gateway::{ChatRequest, Gateway, GatewayError, Piece};
use crate::protocol::{MAX_TOP_LOGPROBS, Message, TokenLogprobs};

/// Largest request body.
pub const MAX_BODY: usize = 1 << 20;
/// Most tokens one request may ask for.
pub const MAX_TOKENS: u32 = 4096;
/// Header with a per-request price cap (decimal AGORA per 1k tokens).
pub const PRICE_HEADER: &str = "x-agora-max-price";

/// An OpenAI-style error answer.
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    param: Option<String>,
}

impl OpenAiError {
    fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: "invalid_request",
            message: message.into(),
            param: param.map(str::to_owned),
        }
    }

    fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

impl From<GatewayError> for OpenAiError {
    fn from(e: GatewayError) -> Self {
        let (status, kind, code) = match &e {
            GatewayError::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "miners_busy",
            ),
            GatewayError::NoMiners(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", "no_miners")
            }
            GatewayError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            GatewayError::MidStream(_) | GatewayError::Unavailable(_) => {
                (StatusCode::BAD_GATEWAY, "server_error", "miner_failed")
            }
        };
        Self {
            status,
            kind,
            code,
            message: e.to_string(),
            param: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message as OpenAI's API sends it: `content` a string or an array of content parts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiMessage {
    role: String,
    content: Value,
}

impl ApiMessage {
    /// The message the miner gets: `developer` (OpenAI's newer name for the system turn) as
    /// `system`, and content parts' texts joined with newlines. Parts other than text, and
    /// content that is neither a string nor parts, are refused by name.
    fn to_message(&self, index: usize) -> Result<Message, OpenAiError> {
        let role = match self.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(OpenAiError::invalid(
                    format!(
                        "messages[{index}]: role {other:?} is not one of system, developer, user, \
                         assistant (this gateway does not take tool messages)"
                    ),
                    Some("messages"),
                ));
            }
        };
        let content = match &self.content {
            Value::String(text) => text.clone(),
            Value::Array(parts) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (k, part) in parts.iter().enumerate() {
                    let kind = part.get("type").and_then(Value::as_str);
                    match (kind, part.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(text)) => texts.push(text),
                        (Some("text"), None) => {
                            return Err(OpenAiError::invalid(
                                format!(
                                    "messages[{index}].content[{k}]: a text part needs a string \
                                     `text`"
                                ),
                                Some("messages"),
                            ));
                        }
                        (Some(other), _) => {
                            return Err(OpenAiError::invalid(
                                format!(
                                    "messages[{index}].content[{k}]: content part type {other:?} \
                                     is not supported; the served model reads text only (send \
                                     `text` parts or a string)"
                                ),
                                Some("messages"),
                            ));
                        }
                        (None, _) => {
                            return Err(OpenAiError::invalid(
                                format!(
                                    "messages[{index}].content[{k}]: a content part is an object \
                                     with a `type`"
                                ),
                                Some("messages"),
                            ));
                        }
                    }
                }
                texts.join("\n")
            }
            _ => {
                return Err(OpenAiError::invalid(
                    format!(
                        "messages[{index}]: content must be a string or an array of text parts"
                    ),
                    Some("messages"),
                ));
            }
        };
        Ok(Message {
            role: role.to_owned(),
            content,
        })
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<ApiMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
}

fn created() -> u64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "the OpenAI `created` field is wall-clock seconds; not consensus-visible"
    )]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn completion_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::getrandom(&mut b);
    format!("chatcmpl-{}", agora_primitives::to_hex(&b))
}

/// The request fields this endpoint reads.
const SUPPORTED: [&str; 13] = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "logprobs",
    "top_logprobs",
];

/// Fields of OpenAI's chat API that this gateway does not implement: accepted at a value that
/// asks for nothing (clients and frameworks send some of them by default), refused otherwise.
/// `Some((neutral, what to send instead))` for such a field, `None` for a field OpenAI's API
/// does not have either.
fn unimplemented(field: &str, v: &Value) -> Option<(bool, &'static str)> {
    let empty_object = v.as_object().is_some_and(|o| o.is_empty());
    let empty_array = v.as_array().is_some_and(|a| a.is_empty());
    Some(match field {
        "presence_penalty" | "frequency_penalty" => (v.as_f64() == Some(0.0), "0"),
        "logit_bias" | "metadata" => (empty_object, "{}"),
        "tools" | "functions" => (empty_array, "[]"),
        "tool_choice" | "function_call" => (
            matches!(v.as_str(), Some("none" | "auto")),
            "\"none\" (no tools are offered)",
        ),
        "parallel_tool_calls" => (v.is_boolean(), "true or false"),
        "response_format" => (
            v.get("type").and_then(Value::as_str) == Some("text")
                && v.as_object().is_some_and(|o| o.len() == 1),
            "{\"type\": \"text\"}",
        ),
        "store" => (v == &Value::Bool(false), "false"),
        // An end-user id for the provider's abuse monitoring; nothing here reads it.
        "user" => (v.is_string(), "a string"),
        _ => return None,
    })
}

/// Refuse fields this endpoint does not read (OpenAI refuses unknown ones too): a field OpenAI
/// does not have, or one of its fields this gateway does not implement asked to do something
/// ([`unimplemented`]). A field set to `null` counts as left out.
fn check_fields(body: &Value) -> Result<(), OpenAiError> {
    let Value::Object(fields) = body else {
        // Not a JSON object: the typed parse says what is wrong.
        return Ok(());
    };
    for (field, v) in fields {
        if v.is_null() || SUPPORTED.contains(&field.as_str()) {
            continue;
        }
        match unimplemented(field, v) {
            Some((true, _)) => {}
            Some((false, neutral)) => {
                return Err(OpenAiError::invalid(
                    format!(
                        "{field} is not supported by this gateway; leave it out or send {neutral}"
                    ),
                    Some(field),
                ));
            }
            None => {
                return Err(OpenAiError::invalid(
                    format!(
                        "unrecognized request argument supplied: {field}; this endpoint reads {}",
                        SUPPORTED.join(", ")
                    ),
                    Some(field),
                ));
            }
        }
    }
    Ok(())
}

fn parse(headers: &HeaderMap, body: &[u8]) -> Result<(ChatRequest, Body), OpenAiError> {
    let invalid = |e: serde_json::Error| {
        OpenAiError::invalid(
            format!("request body is not valid JSON for this endpoint: {e}"),
            None,
        )
    };
    // Parsed once: its fields checked, then read.
    let body: Value = serde_json::from_slice(body).map_err(invalid)?;
    check_fields(&body)?;
    let parsed: Body = serde_json::from_value(body).map_err(invalid)?;
    if parsed.messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages must not be empty",
            Some("messages"),
        ));
    }
    let messages = parsed
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| m.to_message(i))
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::invalid("only n = 1 is supported", Some("n")));
    }
    let max_tokens = parsed
        .max_completion_tokens
        .or(parsed.max_tokens)
        .unwrap_or(256);
    if max_tokens == 0 || max_tokens > MAX_TOKENS {
        return Err(OpenAiError::invalid(
            format!("max_tokens must be 1 to {MAX_TOKENS}"),
            Some("max_tokens"),
        ));
    }
    let temperature = parsed.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(OpenAiError::invalid(
            "temperature must be 0 to 2",
            Some("temperature"),
        ));
    }
    let top_p = parsed.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(OpenAiError::invalid(
            "top_p must be in (0, 1]",
            Some("top_p"),
        ));
    }
    let stop = match &parsed.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) if v.len() <= 4 => v.clone(),
        Some(Stop::Many(_)) => {
            return Err(OpenAiError::invalid(
                "at most 4 stop sequences",
                Some("stop"),
            ));
        }
    };
    let max_price = match headers.get(PRICE_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<Amount>().ok())
                .ok_or_else(|| {
                    OpenAiError::invalid(
                        format!("{PRICE_HEADER} must be a decimal AGORA amount"),
                        None,
                    )
                })?,
        ),
    };
    let top = match parsed.top_logprobs {
        Some(n) if n > 0 && parsed.logprobs != Some(true) => {
            return Err(OpenAiError::invalid(
                format!("top_logprobs ({n}) needs logprobs: true"),
                Some("top_logprobs"),
            ));
        }
        Some(n) => u8::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_TOP_LOGPROBS)
            .ok_or_else(|| {
                OpenAiError::invalid(
                    format!("top_logprobs must be 0 to {MAX_TOP_LOGPROBS}"),
                    Some("top_logprobs"),
                )
            })?,
        None => 0,
    };
    let request = ChatRequest {
        messages,
        max_tokens,
        temperature,
        top_p,
        seed: parsed.seed.unwrap_or(0),
        stop,
        max_price_per_1k: max_price,
        logprobs: (parsed.logprobs == Some(true)).then_some(top),
    };
    Ok((request, parsed))
}

/// A request that names a model no fresh miner advertises gets OpenAI's 404 `model_not_found`
/// (the subnet serves its registered model; answering another name with it would mislabel the
/// answer). Without any fresh miner the request goes on and routing says no miner is available.
fn check_model(gateway: &Gateway, asked: Option<&str>) -> Result<(), OpenAiError> {
    let Some(asked) = asked else { return Ok(()) };
    let served = gateway.models();
    if served.is_empty() || served.iter().any(|m| m == asked) {
        return Ok(());
    }
    Err(OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "model_not_found",
        message: format!(
            "the model `{asked}` is not served here; this gateway's miners serve {}: send that \
             name as `model` (GET /v1/models lists them)",
            served.join(", ")
        ),
        param: Some("model".to_owned()),
    })
}

fn model_name(gateway: &Gateway, asked: Option<&str>) -> String {
    asked
        .map(str::to_owned)
        .or_else(|| gateway.models().into_iter().next())
        .unwrap_or_else(|| "agora".to_owned())
}

async fn chat(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return OpenAiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                kind: "invalid_request_error",
                code: "request_too_large",
                message: format!("request body is above {MAX_BODY} bytes"),
                param: None,
            }
            .into_response();
        }
        Err(e) => return OpenAiError::invalid(e.body_text(), None).into_response(),
    };
    let (request, parsed) = match parse(&headers, &body) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = check_model(&gateway, parsed.model.as_deref()) {
        return e.into_response();
    }
    let model = model_name(&gateway, parsed.model.as_deref());
    let id = completion_id();
    let created = created();
    if !parsed.stream.unwrap_or(false) {
        return match gateway.complete(&request, None).await {
            Ok(c) => axum::Json(json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": c.text},
                    "finish_reason": c.finish_reason,
                    "logprobs": c.logprobs.as_deref().map(logprobs_json),
                }],
                "usage": {
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "total_tokens": c.prompt_tokens + c.completion_tokens,
                },
            }))
            .into_response(),
            Err(e) => OpenAiError::from(e).into_response(),
        };
    }
    let include_usage = parsed.stream_options.is_some_and(|o| o.include_usage);
    // Start the request; fail with a proper HTTP status if no miner takes it before the first
    // piece, otherwise stream.
    let (tx, mut rx) = mpsc::channel::<Piece>(256);
    let g = gateway.clone();
    let task = tokio::spawn(async move { g.complete(&request, Some(tx)).await });
    let first = rx.recv().await;
    let Some(first) = first else {
        return match task.await {
            Ok(Ok(c)) => sse_response(stream_empty(id, created, model, Ok(c), include_usage)),
            Ok(Err(e)) => OpenAiError::from(e).into_response(),
            Err(e) => OpenAiError::from(GatewayError::Unavailable(e.to_string())).into_response(),
        };
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let r = match task.await {
            Ok(r) => r,
            Err(e) => Err(GatewayError::Unavailable(e.to_string())),
        };
        let _ = done_tx.send(r);
    });
    sse_response(stream_from_live(
        id,
        created,
        model,
        first,
        rx,
        done_rx,
        include_usage,
    ))
}

fn chunk(id: &str, created: u64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
    })
}

type Events = Vec<Result<Event, std::convert::Infallible>>;

fn final_events(
    id: &str,
    created: u64,
    model: &str,
    result: Result<crate::gateway::Completion, GatewayError>,
    include_usage: bool,
) -> Events {
    let mut out = Vec::new();
    match result {
        Ok(c) => {
            out.push(Ok(Event::default().data(
                chunk(id, created, model, json!({}), Some(&c.finish_reason)).to_string(),
            )));
            if include_usage {
                let mut u = chunk(id, created, model, json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = json!({
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "total_tokens": c.prompt_tokens + c.completion_tokens,
                });
                out.push(Ok(Event::default().data(u.to_string())));
            }
        }
        Err(e) => {
            out.push(Ok(
                Event::default().data(OpenAiError::from(e).body().to_string())
            ));
        }
    }
    out.push(Ok(Event::default().data("[DONE]")));
    out
}

/// An answer with no text at all: the role chunk, then the end.
fn stream_empty(
    id: String,
    created: u64,
    model: String,
    result: Result<crate::gateway::Completion, GatewayError>,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let mut events: Events = vec![Ok(Event::default().data(
        chunk(
            &id,
            created,
            &model,
            json!({"role": "assistant", "content": ""}),
            None,
        )
        .to_string(),
    ))];
    events.extend(final_events(&id, created, &model, result, include_usage));
    futures::stream::iter(events)
}

fn stream_from_live(
    id: String,
    created: u64,
    model: String,
    first: Piece,
    rx: mpsc::Receiver<Piece>,
    done: tokio::sync::oneshot::Receiver<Result<crate::gateway::Completion, GatewayError>>,
    include_usage: bool,
) -> impl futures::Stream<Item = Result<Event, std::convert::Infallible>> {
    let role = chunk(
        &id,
        created,
        &model,
        json!({"role": "assistant", "content": ""}),
        None,
    );
    let head = futures::stream::iter(vec![
        Ok(Event::default().data(role.to_string())),
        Ok(Event::default().data(piece_chunk(&id, created, &model, first).to_string())),
    ]);
    let (id2, model2) = (id.clone(), model.clone());
    let body = futures::stream::unfold(rx, move |mut rx| {
        let (id, model) = (id2.clone(), model2.clone());
        async move {
            let p = rx.recv().await?;
            Some((
                Ok(Event::default().data(piece_chunk(&id, created, &model, p).to_string())),
                rx,
            ))
        }
    });
    let tail = futures::stream::once(async move {
        let result = done
            .await
            .unwrap_or_else(|_| Err(GatewayError::Unavailable("request task ended".into())));
        futures::stream::iter(final_events(&id, created, &model, result, include_usage))
    });
    use futures::StreamExt;
    head.chain(body).chain(tail.flatten())
}

fn piece_chunk(id: &str, created: u64, model: &str, p: Piece) -> Value {
    let (text, logprobs) = match p {
        Piece::Token { text, logprobs } => (text, logprobs),
        Piece::Text(text) => (text, None),
    };
    let mut c = chunk(id, created, model, json!({"content": text}), None);
    if let Some(l) = logprobs {
        c["choices"][0]["logprobs"] = logprobs_json(std::slice::from_ref(&l));
    }
    c
}

/// OpenAI's `logprobs` object for these tokens: each token's text (its bytes as UTF-8, with
/// U+FFFD for a partial character, as OpenAI writes it), bytes and log-probability, and its
/// most likely alternatives alike.
fn logprobs_json(tokens: &[TokenLogprobs]) -> Value {
    let one = |bytes: &[u8], logprob: f32| {
        json!({
            "token": String::from_utf8_lossy(bytes),
            "logprob": logprob,
            "bytes": bytes,
        })
    };
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut v = one(&t.bytes, t.logprob);
            v["top_logprobs"] = t.top.iter().map(|a| one(&a.bytes, a.logprob)).collect();
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

fn sse_response<S>(stream: S) -> Response
where
    S: futures::Stream<Item = Result<Event, std::convert::Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn models(State(gateway): State<Arc<Gateway>>) -> Response {
    let data: Vec<Value> = gateway
        .models()
        .into_iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "agora"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn not_found() -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        kind: "invalid_request_error",
        code: "unknown_url",
        message: "unknown route; this gateway serves POST /v1/chat/completions and GET /v1/models"
            .into(),
        param: None,
    }
}

/// The gateway's routes, with a 404 in OpenAI's error shape for anything else.
pub fn router(gateway: Arc<Gateway>) -> Router {
    routes(gateway).fallback(not_found)
}

/// The gateway's routes alone (to merge into a node's API, which has its own fallback).
pub fn routes(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(chat).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/v1/models", get(models))
        .with_state(gateway)
}
