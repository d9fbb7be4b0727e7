//! One log line per request: method, path, status, tokens and time. The middleware writes it
//! when the response is made, except for streams, which write it when they end (only then are
//! the token counts known).

use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use wllm::batch::Usage;

#[derive(Clone)]
pub struct RequestLog {
    method: Method,
    path: String,
    start: Instant,
}

/// A response extension: the body writes the log line itself when it ends.
#[derive(Clone, Copy)]
pub struct Deferred;

impl RequestLog {
    pub fn of(req: &Request) -> RequestLog {
        RequestLog { method: req.method().clone(), path: req.uri().path().to_string(), start: Instant::now() }
    }

    pub fn write(&self, status: u16, usage: Option<&Usage>, note: &str) {
        let tokens = match usage {
            Some(u) if u.cached_tokens > 0 => format!(
                " prompt={} (cached {}) completion={}",
                u.prompt_tokens, u.cached_tokens, u.completion_tokens
            ),
            Some(u) => format!(" prompt={} completion={}", u.prompt_tokens, u.completion_tokens),
            None => String::new(),
        };
        let note = if note.is_empty() { String::new() } else { format!(" ({note})") };
        log::info!(
            "{} {} {status}{tokens} {:.3}s{note}",
            self.method,
            self.path,
            self.start.elapsed().as_secs_f64()
        );
    }
}
