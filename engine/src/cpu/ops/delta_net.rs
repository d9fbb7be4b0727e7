//! The Gated DeltaNet block's non-matrix ops (Qwen3.5, Qwen3-Next): the causal depthwise
//! convolution with its rolling state, the per-head L2 norm, the decay and write gates, the
//! delta-rule recurrence over a square state per value head, and the z-gated RMS norm. Every
//! op takes the tokens of one sequence in order; the states are that sequence's.
//!
//! The recurrent state of value head `h` is stored as llama.cpp stores it: row `j` (a value
//! dimension) holds `S[i][j]` for every key dimension `i`, so each row is updated on its own:
//! `row *= exp(g)`, `d = beta·(v_j − row·k)`, `row += d·k`, `o_j = row·q / √d_head`.

use wllm_loaders::model::DeltaNetConfig;

use super::check_len;
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::linear::OutPtr;
use crate::cpu::simd::{Simd, axpy, dispatch, dot, scale};
use crate::error::{EngineError, Result};

/// SiLU in f32 for the few elementwise places here (the matrix work dominates).
fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, linear above 20 where the exponential would only round away (ggml's cut).
fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

/// The causal depthwise convolution and SiLU over `n` tokens of `channels` (row-major `x`,
/// `n × channels`) into `out`. `weight` holds each channel's `kernel` taps, oldest first;
/// `state` (`(kernel − 1) × channels`, oldest position first) holds the inputs before the
/// first token and is left holding the last `kernel − 1` inputs.
pub fn conv_silu(
    d: &DeltaNetConfig,
    weight: &[f32],
    state: &mut [f32],
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let ch = d.conv_channels() as usize;
    let taps = d.conv_kernel as usize;
    let hist = taps - 1;
    check_len("convolution weight", weight.len(), ch * taps)?;
    check_len("convolution state", state.len(), hist * ch)?;
    if !x.len().is_multiple_of(ch) {
        return Err(EngineError::InvalidArgument(format!(
            "convolution input: {} values are not rows of {ch}",
            x.len()
        )));
    }
    check_len("convolution output", out.len(), x.len())?;
    let n = x.len() / ch;
    // Input at time `s` of the window that ends with token `t`: the state before the chunk,
    // then the chunk's own rows.
    let input =
        |state: &[f32], s: usize, c: usize| if s < hist { state[s * ch + c] } else { x[(s - hist) * ch + c] };
    for t in 0..n {
        for c in 0..ch {
            let w = &weight[c * taps..(c + 1) * taps];
            let mut acc = 0f32;
            for (j, wj) in w.iter().enumerate() {
                acc += wj * input(state, t + j, c);
            }
            out[t * ch + c] = silu(acc);
        }
    }
    // The newest `hist` inputs become the state.
    if hist > 0 {
        let mut next = vec![0f32; hist * ch];
        for (s, row) in next.chunks_exact_mut(ch).enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = input(state, n + s, c);
            }
        }
        state.copy_from_slice(&next);
    }
    Ok(())
}

/// Each `head_dim` row of `x` divided by `sqrt(sum of squares + eps)` (llama.cpp's L2 norm
/// for DeltaNet q and k).
pub fn l2_norm_heads(isa: Isa, x: &mut [f32], head_dim: usize, eps: f32) -> Result<()> {
    if head_dim == 0 || !x.len().is_multiple_of(head_dim) {
        return Err(EngineError::InvalidArgument(format!(
            "L2 norm: {} values are not rows of {head_dim}",
            x.len()
        )));
    }
    dispatch!(isa, |s| {
        for row in x.chunks_exact_mut(head_dim) {
            let inv = 1.0 / (dot(s, row, row) + eps).sqrt();
            scale(s, inv, row);
        }
    });
    Ok(())
}

/// Per value head: `beta = sigmoid(b)` in place, and `alpha` becomes the log-decay
/// `g = softplus(alpha + dt_bias) · a` (`a` is negative, so `exp(g)` is in (0, 1)).
pub fn gates(beta: &mut [f32], alpha: &mut [f32], dt_bias: &[f32], a: &[f32]) -> Result<()> {
    let nv = a.len();
    check_len("dt bias", dt_bias.len(), nv)?;
    check_len("alpha", alpha.len(), beta.len())?;
    if nv == 0 || !beta.len().is_multiple_of(nv) {
        return Err(EngineError::InvalidArgument(format!(
            "gates: {} values are not rows of {nv}",
            beta.len()
        )));
    }
    beta.iter_mut().for_each(|b| *b = sigmoid(*b));
    for row in alpha.chunks_exact_mut(nv) {
        for ((g, bias), a) in row.iter_mut().zip(dt_bias).zip(a) {
            *g = softplus(*g + bias) * a;
        }
    }
    Ok(())
}

/// The delta rule over `n` tokens of one sequence. `q`, `k`: `n × n_k_heads × head_dim`
/// (L2-normalised); `v`, `out`: `n × n_v_heads × head_dim`; `g` (log-decay), `beta`:
/// `n × n_v_heads`; `state`: `n_v_heads × head_dim × head_dim`, updated in place. Value heads
/// run in parallel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn delta_rule_on(
    exec: &dyn Exec,
    isa: Isa,
    d: &DeltaNetConfig,
    state: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let (nk, nv, hd) = (d.n_k_heads as usize, d.n_v_heads as usize, d.head_dim as usize);
    check_len("delta-rule state", state.len(), d.state_len())?;
    if !q.len().is_multiple_of(nk * hd) {
        return Err(EngineError::InvalidArgument(format!("delta rule: {} q values", q.len())));
    }
    let n = q.len() / (nk * hd);
    check_len("delta-rule k", k.len(), q.len())?;
    check_len("delta-rule v", v.len(), n * nv * hd)?;
    check_len("delta-rule g", g.len(), n * nv)?;
    check_len("delta-rule beta", beta.len(), n * nv)?;
    check_len("delta-rule output", out.len(), n * nv * hd)?;
    let scale_q = 1.0 / (hd as f32).sqrt();
    let states = OutPtr::new(state);
    let outs = OutPtr::new(out);
    let head = |h: usize| {
        // SAFETY: head `h` owns its state matrix and its output rows (`h·hd..` of every token).
        let s_h = unsafe { states.slice(h * hd * hd, hd * hd) };
        // SAFETY: as above.
        let mut o_h: Vec<&mut [f32]> = (0..n).map(|t| unsafe { outs.slice((t * nv + h) * hd, hd) }).collect();
        let kh = d.key_head(h);
        dispatch!(isa, |s| {
            for (t, ot) in o_h.iter_mut().enumerate() {
                let qt = &q[(t * nk + kh) * hd..][..hd];
                let kt = &k[(t * nk + kh) * hd..][..hd];
                let vt = &v[(t * nv + h) * hd..][..hd];
                let (decay, b) = (g[t * nv + h].exp(), beta[t * nv + h]);
                for (j, row) in s_h.chunks_exact_mut(hd).enumerate() {
                    scale(s, decay, row);
                    let delta = (vt[j] - dot(s, row, kt)) * b;
                    axpy(s, delta, kt, row);
                    ot[j] = dot(s, row, qt) * scale_q;
                }
            }
        });
    };
    exec.run(nv, &head);
    Ok(())
}

/// The delta rule of a Gated DeltaNet layer, on the caller's rayon pool.
#[allow(clippy::too_many_arguments)]
pub fn delta_rule(
    isa: Isa,
    d: &DeltaNetConfig,
    state: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
    out: &mut [f32],
) -> Result<()> {
    delta_rule_on(&crate::cpu::exec::Rayon, isa, d, state, q, k, v, g, beta, out)
}

/// `o = rms_norm(o) · w · silu(z)` per `w.len()`-wide head row, in place.
pub fn gated_rms_norm(isa: Isa, o: &mut [f32], z: &[f32], w: &[f32], eps: f32) -> Result<()> {
    let hd = w.len();
    check_len("gate", z.len(), o.len())?;
    if hd == 0 || !o.len().is_multiple_of(hd) {
        return Err(EngineError::InvalidArgument(format!(
            "gated norm: {} values are not rows of {hd}",
            o.len()
        )));
    }
    dispatch!(isa, |s| gated_rows(s, o, z, w, eps));
    Ok(())
}

#[inline(always)]
fn gated_rows<S: Simd>(s: S, o: &mut [f32], z: &[f32], w: &[f32], eps: f32) {
    let hd = w.len();
    for (row, zr) in o.chunks_exact_mut(hd).zip(z.chunks_exact(hd)) {
        let r = 1.0 / (dot(s, row, row) / hd as f32 + eps).sqrt();
        for ((x, wi), zi) in row.iter_mut().zip(w).zip(zr) {
            *x = *x * r * wi * silu(*zi);
        }
    }
}
