//! Log-softmax and gather: the log-probability of one chosen token under a row of logits, the
//! CPU twin of `shaders/logprob.wgsl`.

use crate::error::{EngineError, Result};

/// The target of a row that has none; its value is 0 (as on the GPU).
pub use crate::gpu::ops::logprob::NO_TARGET;

/// `log_softmax(row)[target]`: `row[target] - max - ln Σ exp(row - max)`. The sum runs in f32
/// over eight interleaved partial sums, as a vector unit would add them.
pub fn log_softmax_at(row: &[f32], target: u32) -> Result<f32> {
    if target == NO_TARGET {
        return Ok(0.0);
    }
    let Some(&chosen) = row.get(target as usize) else {
        return Err(EngineError::InvalidArgument(format!(
            "target id {target} is outside the vocabulary of {}",
            row.len()
        )));
    };
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sums = [0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += (v - max).exp();
        }
    }
    for (s, &v) in sums.iter_mut().zip(chunks.remainder()) {
        *s += (v - max).exp();
    }
    // NaN anywhere in the row: max skips it, but its exp makes the sum NaN.
    Ok(chosen - max - sums.iter().sum::<f32>().ln())
}

/// [`log_softmax_at`] for each row of `logits` (rows of `n_vocab`) and its target.
pub fn log_softmax_gather(logits: &[f32], n_vocab: usize, targets: &[u32], out: &mut Vec<f32>) -> Result<()> {
    if n_vocab == 0 || logits.len() != n_vocab * targets.len() {
        return Err(EngineError::InvalidArgument(format!(
            "{} logits for {} rows of {n_vocab}",
            logits.len(),
            targets.len()
        )));
    }
    for (row, &t) in logits.chunks_exact(n_vocab).zip(targets) {
        out.push(log_softmax_at(row, t)?);
    }
    Ok(())
}
