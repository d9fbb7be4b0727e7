//! What every handler shares: the model once it is loaded, the served name, the API key, and
//! the per-status response counts for `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use wllm::Model;
use wllm::batch::Batcher;

use super::errors::ApiError;

pub struct AppState {
    /// Set once the model is loaded and the batcher runs; until then `/health` says loading.
    pub ready: OnceLock<Ready>,
    /// The model id reported by `/v1/models` and in responses.
    pub alias: String,
    /// Other names a request's `model` may use for this model (the file name and stem).
    pub other_names: Vec<String>,
    pub api_key: Option<String>,
    /// When the server started (seconds since the epoch), the models' `created`.
    pub started: u64,
    /// Responses sent, by status code.
    pub responses: Mutex<BTreeMap<u16, u64>>,
}

pub struct Ready {
    pub model: Model,
    pub batcher: Batcher,
    /// Text a template writes after a reply, a stop string for chat requests (a model whose
    /// vocabulary lacks it as one token spells it out).
    pub end_of_turn: Option<String>,
    /// How `/v1/embeddings` pools hidden states (`--pooling`, else the model's own, else last).
    pub pooling: wllm::Pooling,
    /// `/v1/embeddings`' own session, made at its first request.
    pub embedder: Mutex<Option<wllm::Session>>,
    /// Tokens per step, for the embedding session.
    pub n_batch: u32,
}

impl AppState {
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready
            .get()
            .ok_or_else(|| ApiError::unavailable("the model is still loading; retry when /health says ok"))
    }

    /// Whether a request's `model` names this server's model. Absent is fine (llama-server
    /// clients often leave it out).
    pub fn check_model(&self, asked: Option<&str>) -> Result<(), ApiError> {
        match asked {
            None => Ok(()),
            Some(m) if m == self.alias || self.other_names.iter().any(|n| n == m) => Ok(()),
            Some(m) => Err(ApiError::model_not_found(m, &self.alias)),
        }
    }

    pub fn count_response(&self, status: u16) {
        if let Ok(mut m) = self.responses.lock() {
            *m.entry(status).or_default() += 1;
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random id with a prefix (`chatcmpl-`, `cmpl-`): std's hasher keys are random per process
/// and step per use, which is all an id needs.
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{prefix}{:016x}", h.finish())
}
