//! Mixture-of-experts routing: softmax over the router logits, the top k, optionally
//! renormalized to sum to 1, times the model's expert-weight scale (llama.cpp's
//! `build_moe_ffn` with softmax gating).

use wllm_loaders::model::{ExpertGating, MoeConfig};

use crate::error::{EngineError, Result};

/// One chosen expert and its weight.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Route {
    pub expert: usize,
    pub weight: f32,
}

/// The experts for one token from its router logits (`n_expert` of them); ties go to the
/// lower expert index.
pub fn route(cfg: &MoeConfig, logits: &[f32]) -> Result<Vec<Route>> {
    let n = cfg.n_expert as usize;
    let k = cfg.n_expert_used as usize;
    if logits.len() != n || k == 0 || k > n {
        return Err(EngineError::InvalidArgument(format!(
            "moe: {} router logits for {n} experts, {k} used",
            logits.len()
        )));
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let p: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = p.iter().sum();
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal probabilities keep index order.
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut out: Vec<Route> = order[..k].iter().map(|&e| Route { expert: e, weight: p[e] / sum }).collect();
    let ExpertGating::SoftmaxTopK { renormalize } = cfg.gating;
    if renormalize {
        let s: f32 = out.iter().map(|r| r.weight).sum();
        if s > 0.0 {
            for r in &mut out {
                r.weight /= s;
            }
        }
    }
    for r in &mut out {
        r.weight *= cfg.weights_scale;
    }
    Ok(out)
}
