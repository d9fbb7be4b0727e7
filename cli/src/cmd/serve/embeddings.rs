//! `POST /v1/embeddings` in OpenAI's shape: `input` as a string, an array of strings, an array
//! of token ids or an array of such arrays; `encoding_format` `float` or `base64`; `usage`.
//! Each input is embedded alone by the library ([`wllm::Session::embed_normalized`]) with the
//! server's pooling, on a session of its own beside the batcher's sequences (made at the first
//! request: one more `--ctx` of KV cache), one request at a time.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wllm::batch::Usage;

use super::completions::body_error;
use super::errors::ApiError;
use super::openai::parse_body;
use super::state::{AppState, Ready};

#[derive(serde::Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    /// OpenAI's truncation of the vector; only the model's own size is served.
    dimensions: Option<u64>,
    /// Passed by some clients; unused.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<Value>,
}

/// Each input's token ids, tokenized as the completions endpoints do (BOS per the model).
fn inputs(ready: &Ready, input: &Value) -> Result<Vec<Vec<u32>>, ApiError> {
    let ids = |v: &Value, param: &str| -> Result<Vec<u32>, ApiError> {
        let arr = v.as_array().ok_or_else(|| ApiError::field(param, format!("{param} must be token ids")))?;
        arr.iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| {
                    ApiError::field(format!("{param}[{i}]"), format!("{param}[{i}] is not a token id"))
                })
            })
            .collect()
    };
    let text = |s: &str| ready.model.tokenize(s);
    let all = match input {
        Value::String(s) => vec![text(s)],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::field("input", "input must not be empty"));
        }
        Value::Array(items) => match &items[0] {
            Value::Number(_) => vec![ids(input, "input")?],
            Value::String(_) => items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    s.as_str().map(text).ok_or_else(|| {
                        ApiError::field(
                            format!("input[{i}]"),
                            format!("input[{i}] must be a string like input[0]"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .enumerate()
                .map(|(i, v)| ids(v, &format!("input[{i}]")))
                .collect::<Result<_, _>>()?,
            _ => return Err(ApiError::field("input[0]", "input[0] must be a string or token ids")),
        },
        _ => return Err(ApiError::field("input", "input must be a string, strings, or token ids")),
    };
    Ok(all)
}

/// Little-endian f32 bytes in standard base64, what OpenAI's `encoding_format: "base64"` sends.
fn base64_f32(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            // A group of n bytes gives n + 1 characters; '=' pads to four.
            out.push(if k <= group.len() { ALPHABET[(n >> shift & 63) as usize] as char } else { '=' });
        }
    }
    out
}

pub async fn embeddings(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let parsed = (|| -> Result<_, ApiError> {
        let req: EmbeddingsRequest = parse_body(&body.map_err(body_error)?)?;
        st.check_model(req.model.as_deref())?;
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::field(
                    "encoding_format",
                    format!("encoding_format {other:?} is not float or base64"),
                ));
            }
        };
        let ready = st.ready()?;
        let n_embd = ready.model.config().n_embd as u64;
        if let Some(d) = req.dimensions.filter(|&d| d != n_embd) {
            return Err(ApiError::field(
                "dimensions",
                format!("this model's embeddings have {n_embd} dimensions, not {d}"),
            ));
        }
        let all = inputs(ready, &req.input)?;
        let n_vocab = ready.model.config().n_vocab;
        for (i, ids) in all.iter().enumerate() {
            if ids.is_empty() {
                return Err(ApiError::field(format!("input[{i}]"), format!("input[{i}] has no tokens")));
            }
            if let Some(&t) = ids.iter().find(|&&t| t >= n_vocab) {
                return Err(ApiError::field(
                    format!("input[{i}]"),
                    format!("token id {t} is outside the vocabulary of {n_vocab}"),
                ));
            }
            if ids.len() > ready.batcher.n_ctx() as usize {
                return Err(ApiError::field(
                    format!("input[{i}]"),
                    format!(
                        "input[{i}] has {} tokens; the context holds {}",
                        ids.len(),
                        ready.batcher.n_ctx()
                    ),
                )
                .with_code("context_length_exceeded"));
            }
        }
        Ok((all, base64))
    })();
    let (all, base64) = match parsed {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let n_tokens: usize = all.iter().map(Vec::len).sum();
    let st2 = st.clone();
    let work = tokio::task::spawn_blocking(move || -> Result<Vec<Vec<f32>>, ApiError> {
        let ready = st2.ready()?;
        let mut slot =
            ready.embedder.lock().map_err(|_| ApiError::internal("the embedding session failed"))?;
        if slot.is_none() {
            let opts = wllm::SessionOptions { n_ctx: Some(ready.batcher.n_ctx()), n_batch: ready.n_batch };
            *slot = Some(ready.model.session(&opts).map_err(|e| ApiError::internal(e.to_string()))?);
        }
        let Some(session) = slot.as_mut() else { return Err(ApiError::internal("no embedding session")) };
        all.iter()
            .map(|ids| {
                session.embed_normalized(ids, ready.pooling).map_err(|e| ApiError::internal(e.to_string()))
            })
            .collect()
    });
    let vectors = match work.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return ApiError::internal(format!("the embedding task failed: {e}")).into_response(),
    };
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 { json!(base64_f32(v)) } else { json!(v) };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let mut r = Json(json!({
        "object": "list",
        "data": data,
        "model": st.alias,
        "usage": { "prompt_tokens": n_tokens, "total_tokens": n_tokens },
    }))
    .into_response();
    r.extensions_mut().insert(Usage { prompt_tokens: n_tokens, completion_tokens: 0, cached_tokens: 0 });
    r
}
