//! Running every kind of step once while loading, so that kernels the driver compiles on first
//! use are built before the application's first request (or frame) needs them.

use std::time::{Duration, Instant};

use wllm_engine::Logits;

use crate::error::Result;
use crate::model::Model;
use crate::session::SessionOptions;

/// Runs a prompt step, a greedy decode step and an all-rows step on a throwaway session;
/// returns how long they took.
pub(crate) fn run(model: &Model) -> Result<Duration> {
    let start = Instant::now();
    let mut s = model.session(&SessionOptions { n_ctx: Some(8), n_batch: 4 })?;
    s.eval(&[0, 0], Logits::Last)?;
    s.eval_greedy(&[0])?;
    s.eval(&[0], Logits::All)?;
    Ok(start.elapsed())
}
