//! The truncation stages and temperature, each a pass over the candidate list. Their cut rules
//! follow llama.cpp's `src/llama-sampler.cpp` at commit 0c1e570.

use super::candidates::{Candidates, TokenProb, by_logit_desc};

/// Keeps the `k` highest logits, sorted; `k == 0` disables.
pub(crate) fn top_k(cands: &mut Candidates, k: usize) {
    if k == 0 {
        return;
    }
    if k < cands.items.len() {
        cands.items.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.items.truncate(k);
        cands.sorted = false;
    }
    cands.sort();
}

/// Locally typical sampling: order tokens by how far their surprisal is from the entropy and
/// keep that order until the mass first exceeds `p`. The result is in that order, not by logit.
pub(crate) fn typical(cands: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 {
        return;
    }
    cands.sort();
    cands.softmax();
    let ln = |x: f32| libm::logf(x);
    // A probability that underflowed to 0 contributes 0 to the entropy, not 0 * -inf = NaN.
    let entropy: f32 = cands.items.iter().filter(|c| c.p > 0.0).map(|c| -c.p * ln(c.p)).sum();
    let mut order: Vec<(f32, TokenProb)> =
        cands.items.iter().map(|c| ((-ln(c.p) - entropy).abs(), *c)).collect();
    // Stable on input sorted by logit, so equal scores keep the more likely token first.
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cum = 0.0f32;
    let mut keep = order.len();
    for (i, (_, c)) in order.iter().enumerate() {
        cum += c.p;
        if cum > p && i + 1 >= min_keep {
            keep = i + 1;
            break;
        }
    }
    cands.items = order.into_iter().take(keep).map(|(_, c)| c).collect();
    cands.sorted = false;
}

/// Nucleus sampling: the most likely tokens until their probability reaches `p`.
pub(crate) fn top_p(cands: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 {
        return;
    }
    cands.softmax();
    cands.sort();
    let mut cum = 0.0f32;
    let mut keep = cands.items.len();
    for (i, c) in cands.items.iter().enumerate() {
        cum += c.p;
        if cum >= p && i + 1 >= min_keep {
            keep = i + 1;
            break;
        }
    }
    cands.items.truncate(keep);
}

/// Drops tokens whose probability is below `p` times the top token's, compared in logit space
/// (`logit >= max + ln p`) as llama.cpp does.
pub(crate) fn min_p(cands: &mut Candidates, p: f32, min_keep: usize) {
    if p <= 0.0 || cands.items.is_empty() {
        return;
    }
    let threshold = cands.max_logit() + libm::logf(p);
    // At least one token survives even when p > 1 puts the threshold above every logit.
    let min_keep = min_keep.max(1);
    let passing = cands.items.iter().filter(|c| c.logit >= threshold).count();
    if passing >= min_keep {
        cands.items.retain(|c| c.logit >= threshold);
    } else {
        cands.sort();
        cands.items.truncate(min_keep);
    }
}

/// Divides logits by `temp`; `temp <= 0` keeps only the most likely token (lowest id on ties).
pub(crate) fn temperature(cands: &mut Candidates, temp: f32) {
    if temp <= 0.0 {
        if let Some(best) = cands.items.iter().copied().min_by(by_logit_desc) {
            cands.items.clear();
            cands.items.push(best);
            cands.sorted = true;
        }
        return;
    }
    for c in &mut cands.items {
        c.logit /= temp;
    }
}
