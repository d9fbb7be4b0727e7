//! The router: endpoints, the API-key check, the access log, and OpenAI-shaped answers for
//! unknown paths and methods.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use wllm::batch::Usage;

use super::access_log::{Deferred, RequestLog};
use super::completions::{self, body_error};
use super::errors::ApiError;
use super::metrics;
use super::openai::parse_body;
use super::state::AppState;

/// Largest request body: a prompt of a full long context as JSON fits many times over.
const MAX_BODY: usize = 32 << 20;

pub fn router(st: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(one_model))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::text))
        .route("/completions", post(completions::text))
        .route("/v1/embeddings", post(super::embeddings::embeddings))
        .route("/embeddings", post(super::embeddings::embeddings))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(st.clone(), auth))
        .layer(middleware::from_fn_with_state(st.clone(), access_log))
        .with_state(st)
}

/// Writes the log line and counts the response (streams log when they end).
async fn access_log(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let log = RequestLog::of(&req);
    req.extensions_mut().insert(log.clone());
    let r = next.run(req).await;
    st.count_response(r.status().as_u16());
    if r.extensions().get::<Deferred>().is_none() {
        log.write(r.status().as_u16(), r.extensions().get::<Usage>(), "");
    }
    r
}

/// With an API key set, everything but the health check needs `Authorization: Bearer KEY`.
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = st.api_key.as_deref() else { return next.run(req).await };
    let path = req.uri().path();
    if path == "/health" || path == "/v1/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if same(g.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => ApiError::unauthorized().into_response(),
    }
}

/// Compares in time that depends only on the lengths, so the key cannot be guessed byte by
/// byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 503 while the model loads (load balancers keep traffic away), then 200.
async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.ready.get() {
        Some(_) => Json(json!({ "status": "ok" })).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "loading" }))).into_response(),
    }
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics::render(&st))
        .into_response()
}

fn model_object(st: &AppState) -> Value {
    json!({ "id": st.alias, "object": "model", "created": st.started, "owned_by": "wllm" })
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({ "object": "list", "data": [model_object(&st)] })).into_response()
}

async fn one_model(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    match st.check_model(Some(&id)) {
        Ok(()) => Json(model_object(&st)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// llama-server's `/tokenize`.
#[derive(Deserialize)]
struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    /// Special-token text (`<|im_start|>`) becomes those tokens.
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

async fn tokenize(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run = || -> Result<Response, ApiError> {
        let req: TokenizeRequest = parse_body(&body.map_err(body_error)?)?;
        let tok = st.ready()?.model.tokenizer();
        let ids = tok.encode(&req.content, req.add_special, req.parse_special);
        let tokens: Vec<Value> = if req.with_pieces {
            ids.iter()
                .map(|&id| {
                    let bytes = tok.token_to_piece_special(id);
                    // As llama-server: the piece as text when it is UTF-8, else its bytes.
                    let piece = match String::from_utf8(bytes) {
                        Ok(s) => json!(s),
                        Err(e) => json!(e.into_bytes()),
                    };
                    json!({ "id": id, "piece": piece })
                })
                .collect()
        } else {
            ids.iter().map(|&id| json!(id)).collect()
        };
        Ok(Json(json!({ "tokens": tokens })).into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

async fn detokenize(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run = || -> Result<Response, ApiError> {
        let req: DetokenizeRequest = parse_body(&body.map_err(body_error)?)?;
        let model = &st.ready()?.model;
        let n_vocab = model.config().n_vocab;
        if let Some(i) = req.tokens.iter().position(|&t| t >= n_vocab) {
            return Err(ApiError::field(
                format!("tokens[{i}]"),
                format!("token id {} is outside the vocabulary of {n_vocab}", req.tokens[i]),
            ));
        }
        Ok(Json(json!({ "content": model.detokenize(&req.tokens) })).into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn not_found(req: Request) -> Response {
    ApiError::not_found(format!("no endpoint {} {}", req.method(), req.uri().path())).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(format!("{} is not allowed on {}", req.method(), req.uri().path()))
    }
    .into_response()
}
