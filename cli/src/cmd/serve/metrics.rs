//! `GET /metrics` in Prometheus' text format: the batcher's counters and gauges, plus HTTP
//! responses by status. Every name starts with `wllm_`.

use std::fmt::Write;

use wllm::batch::BatcherStats;

use super::state::AppState;

/// One metric with its help and type lines.
fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP wllm_{name} {help}\n# TYPE wllm_{name} {kind}\nwllm_{name} {value}");
}

pub fn render(st: &AppState) -> String {
    let mut out = String::new();
    let ready = st.ready.get();
    metric(
        &mut out,
        "ready",
        "gauge",
        "1 once the model is loaded and requests are served.",
        u8::from(ready.is_some()),
    );
    if let Some(r) = ready {
        batcher(&mut out, &r.batcher.stats());
    }
    let _ = writeln!(
        out,
        "# HELP wllm_http_responses_total HTTP responses sent, by status code.\n# TYPE wllm_http_responses_total counter"
    );
    if let Ok(m) = st.responses.lock() {
        for (code, n) in m.iter() {
            let _ = writeln!(out, "wllm_http_responses_total{{code=\"{code}\"}} {n}");
        }
    }
    out
}

fn batcher(out: &mut String, s: &BatcherStats) {
    metric(out, "requests_total", "counter", "Requests accepted into the queue.", s.requests_total);
    metric(
        out,
        "requests_rejected_total",
        "counter",
        "Requests refused (queue full, invalid, shutting down).",
        s.requests_rejected,
    );
    metric(
        out,
        "prompt_tokens_total",
        "counter",
        "Prompt tokens of admitted requests.",
        s.prompt_tokens_total,
    );
    metric(
        out,
        "prompt_tokens_cached_total",
        "counter",
        "Prompt tokens reused from a sequence's cache.",
        s.cached_tokens_total,
    );
    metric(out, "generated_tokens_total", "counter", "Tokens generated.", s.generated_tokens_total);
    metric(out, "busy_seconds_total", "counter", "Seconds the step loop spent in steps.", s.busy_seconds);
    let tps = if s.busy_seconds > 0.0 { s.generated_tokens_total as f64 / s.busy_seconds } else { 0.0 };
    metric(
        out,
        "tokens_per_second",
        "gauge",
        "Generated tokens per busy second, since start.",
        format!("{tps:.3}"),
    );
    metric(out, "queue_length", "gauge", "Requests waiting for a free sequence.", s.queue_len);
    metric(out, "busy_sequences", "gauge", "Sequences running a request.", s.busy_sequences);
    metric(out, "parallel", "gauge", "Sequences that can run at once (--parallel).", s.parallel);
    metric(
        out,
        "kv_cache_used_tokens",
        "gauge",
        "KV cache positions in use by running sequences.",
        s.kv_used,
    );
    metric(
        out,
        "kv_cache_capacity_tokens",
        "gauge",
        "KV cache positions across all sequences.",
        s.kv_capacity,
    );
    let ratio = if s.kv_capacity > 0 { s.kv_used as f64 / s.kv_capacity as f64 } else { 0.0 };
    metric(out, "kv_cache_usage_ratio", "gauge", "Fraction of the KV cache in use.", format!("{ratio:.4}"));
}
