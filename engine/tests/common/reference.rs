//! The float64 references, one per kernel family. A family's GPU test and its CPU test call the
//! same function on the same inputs and hold their kernels to the result, each with its own
//! error budget. Inputs are the kernels' own f32 values (or dequantized weights), so only the
//! kernels' arithmetic is measured.

use std::ops::Range;

use wllm_engine::cpu::ops::Activation;
use wllm_engine::layers::{RopeSpec, RopeTable};
use wllm_loaders::model::RopeLayout;

/// y[t][r] = sum_c w[r][c] x[t][c] for `n_tok` rows of `x`, and sum_c |w[r][c] x[t][c]|, the
/// magnitude rounding errors scale with.
pub fn linear<X: Copy + Into<f64>>(
    w: &[f32],
    x: &[X],
    rows: usize,
    cols: usize,
    n_tok: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; rows * n_tok];
    let mut s = vec![0f64; rows * n_tok];
    for t in 0..n_tok {
        for r in 0..rows {
            for c in 0..cols {
                let p = w[r * cols + c] as f64 * x[t * cols + c].into();
                y[t * rows + r] += p;
                s[t * rows + r] += p.abs();
            }
        }
    }
    (y, s)
}

/// One row: x / sqrt(mean(x²) + eps) · w.
pub fn rms_norm<T: Copy + Into<f64>>(x: &[T], w: &[f32], eps: f32) -> Vec<f64> {
    let x: Vec<f64> = x.iter().map(|&v| v.into()).collect();
    let ss: f64 = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ss + eps as f64).sqrt();
    x.iter().zip(w).map(|(v, &w)| v * r * w as f64).collect()
}

/// The RoPE angle of pair `i` at `pos`: pos · freq_scale · base^(-2i / n_rot) / factor_i, from
/// the spec's parameters (never from its table, which is what the kernels read).
pub fn rope_angle(spec: &RopeSpec, which: RopeTable, pos: usize, i: usize) -> f64 {
    let base = spec.bases[which as usize] as f64;
    let factor = spec.factors.as_ref().map_or(1.0, |f| f[i] as f64);
    let unscaled = base.powf(-2.0 * i as f64 / spec.n_rot as f64) / factor;
    let scaled = spec.freq_scale as f64 * unscaled;
    let freq = match &spec.yarn {
        None => scaled,
        Some(y) => {
            // YaRN: pairs below the fast correction dimension keep their trained frequency,
            // pairs above the slow one are interpolated, a linear ramp between.
            let n = spec.n_rot as f64;
            let dim = |beta: f64| {
                n * (y.orig_ctx as f64 / (beta * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
            };
            let low = dim(y.beta_fast as f64).floor().max(0.0);
            let high = dim(y.beta_slow as f64).ceil().min(n - 1.0);
            let keep = 1.0 - ((i as f64 - low) / (high - low).max(0.001)).clamp(0.0, 1.0);
            scaled * (1.0 - keep) + unscaled * keep
        }
    };
    pos as f64 * freq
}

/// What YaRN multiplies each rotated pair by: `attn_factor · (1 + 0.1 ln(1 / freq_scale))`.
pub fn rope_magnitude(spec: &RopeSpec) -> f64 {
    spec.yarn
        .as_ref()
        .map_or(1.0, |y| y.attn_factor as f64 * (1.0 + 0.1 * (1.0 / spec.freq_scale as f64).ln()))
}

/// One head rotated for position `pos`: pair `i` is (2i, 2i+1) in the normal layout and
/// (i, i + n_rot/2) in NeoX; dimensions past `n_rot` pass through.
pub fn rope<T: Copy + Into<f64>>(x: &[T], pos: usize, spec: &RopeSpec, which: RopeTable) -> Vec<f64> {
    let mut v: Vec<f64> = x.iter().map(|&a| a.into()).collect();
    let half = spec.n_rot as usize / 2;
    for i in 0..half {
        let (s, c) = rope_angle(spec, which, pos, i).sin_cos();
        let (s, c) = (s * rope_magnitude(spec), c * rope_magnitude(spec));
        let (a, b) = match spec.layout {
            RopeLayout::Normal => (2 * i, 2 * i + 1),
            RopeLayout::Neox => (i, i + half),
        };
        let (x0, x1) = (v[a], v[b]);
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
    v
}

/// Positions a query at `pos` sees: itself and the earlier ones, the last `window` of them when
/// `window` is not 0.
pub fn visible(pos: usize, window: usize) -> Range<usize> {
    let lo = if window > 0 && pos + 1 > window { pos + 1 - window } else { 0 };
    lo..pos + 1
}

/// softmax(q·kᵀ · scale) · v over the keys and values a query sees.
pub fn attention(q: &[f64], keys: &[&[f64]], values: &[&[f64]], scale: f64) -> Vec<f64> {
    attention_sink(q, keys, values, scale, None)
}

/// [`attention`] with an attention sink: a logit that joins the softmax's denominator and
/// brings no value.
pub fn attention_sink(
    q: &[f64],
    keys: &[&[f64]],
    values: &[&[f64]],
    scale: f64,
    sink: Option<f64>,
) -> Vec<f64> {
    let scores: Vec<f64> =
        keys.iter().map(|k| q.iter().zip(*k).map(|(a, b)| a * b).sum::<f64>() * scale).collect();
    let m = scores.iter().copied().chain(sink).fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let z: f64 = w.iter().sum::<f64>() + sink.map_or(0.0, |s| (s - m).exp());
    let mut o = vec![0f64; values.first().map_or(0, |v| v.len())];
    for (wi, v) in w.iter().zip(values) {
        for (acc, x) in o.iter_mut().zip(*v) {
            *acc += wi * x;
        }
    }
    o.iter().map(|v| v / z).collect()
}

pub fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// 0.5 g (1 + tanh(sqrt(2/π) (g + 0.044715 g³))).
pub fn gelu_tanh(g: f64) -> f64 {
    0.5 * g * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g)).tanh())
}

pub fn act(a: Activation, g: f64) -> f64 {
    match a {
        Activation::Silu => silu(g),
        Activation::GeluTanh => gelu_tanh(g),
        // gpt-oss: the gate capped at 7, then g · sigmoid(1.702 g).
        Activation::SwigluOai => {
            let g = g.min(7.0);
            g / (1.0 + (-1.702 * g).exp())
        }
    }
}

/// act(gate) · up (gpt-oss: the up value clamped to ±7 and shifted by one).
pub fn glu(a: Activation, gate: f64, up: f64) -> f64 {
    let up = if a == Activation::SwigluOai { up.clamp(-7.0, 7.0) + 1.0 } else { up };
    act(a, gate) * up
}

/// cap · tanh(y / cap).
pub fn softcap(y: f64, cap: f64) -> f64 {
    cap * (y / cap).tanh()
}

/// How router logits become expert weights, written out independently of the engine.
#[derive(Copy, Clone, Debug)]
pub enum Gating {
    /// qwen3moe: softmax over all experts, top k, optionally renormalised over the k.
    SoftmaxThenTopK { renormalize: bool },
    /// mixtral: top k logits, softmax over just those.
    TopKThenSoftmax,
}

/// (expert, weight · scale) per slot for one token's router logits; ties go to the lower
/// expert index.
pub fn route(logits: &[f32], k: usize, gating: Gating, scale: f64) -> Vec<(usize, f64)> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // partial_cmp, not total_cmp: the kernels compare with `>`, for which -0 == +0.
    order.sort_by(|&a, &b| {
        logits[b].partial_cmp(&logits[a]).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    let chosen = &order[..k];
    let max = logits[order[0]] as f64;
    let exp = |e: usize| (logits[e] as f64 - max).exp();
    let weights: Vec<f64> = match gating {
        Gating::SoftmaxThenTopK { renormalize } => {
            let all: f64 = (0..logits.len()).map(exp).sum();
            let picked: f64 = chosen.iter().map(|&e| exp(e)).sum();
            let denom = if renormalize { picked } else { all };
            chosen.iter().map(|&e| exp(e) / denom).collect()
        }
        Gating::TopKThenSoftmax => {
            let sum: f64 = chosen.iter().map(|&e| exp(e)).sum();
            chosen.iter().map(|&e| exp(e) / sum).collect()
        }
    };
    chosen.iter().zip(weights).map(|(&e, w)| (e, w * scale)).collect()
}

/// x + sum over slots of weight · y[slot] for each token (`k` slots of `n_embd`), and the sum
/// of the terms' magnitudes.
pub fn moe_combine(x: &[f32], weights: &[f32], y: &[f32], k: usize, n_embd: usize) -> (Vec<f64>, Vec<f64>) {
    let n_tok = x.len() / n_embd;
    let mut want = vec![0f64; n_tok * n_embd];
    let mut scale = vec![0f64; n_tok * n_embd];
    for t in 0..n_tok {
        for i in 0..n_embd {
            let mut acc = x[t * n_embd + i] as f64;
            let mut s = acc.abs();
            for slot in 0..k {
                let p = weights[t * k + slot] as f64 * y[(t * k + slot) * n_embd + i] as f64;
                acc += p;
                s += p.abs();
            }
            want[t * n_embd + i] = acc;
            scale[t * n_embd + i] = s;
        }
    }
    (want, scale)
}

/// The first index of the largest value (greedy sampling; llama.cpp breaks ties the same way).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `log_softmax(row)[target]` in f64.
pub fn log_softmax_at(row: &[f32], target: usize) -> f64 {
    let max = row.iter().map(|&v| v as f64).fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[target] as f64 - max - sum.ln()
}
