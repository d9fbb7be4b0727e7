//! Shared pieces of the Gated DeltaNet kernel tests (CPU ops, GPU ops, the GPU delta rule):
//! shapes and the float64 convolution reference.

use wllm_loaders::model::{DeltaNetConfig, KeyHeadMap};

use super::reference::silu;

pub fn dims(n_k: u32, n_v: u32, head_dim: u32, conv_kernel: u32, key_heads: KeyHeadMap) -> DeltaNetConfig {
    DeltaNetConfig {
        conv_kernel,
        n_k_heads: n_k,
        n_v_heads: n_v,
        head_dim,
        key_heads,
        fused_beta_alpha: false,
    }
}

/// The convolution over `state ++ x` and SiLU; returns (outputs, new state).
pub fn conv_ref(d: &DeltaNetConfig, w: &[f32], state: &[f32], x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let ch = d.conv_channels() as usize;
    let taps = d.conv_kernel as usize;
    let all: Vec<f64> = state.iter().chain(x).map(|&v| v as f64).collect();
    let n = x.len() / ch;
    let mut out = vec![0f64; n * ch];
    for t in 0..n {
        for c in 0..ch {
            let s: f64 = (0..taps).map(|j| w[c * taps + j] as f64 * all[(t + j) * ch + c]).sum();
            out[t * ch + c] = silu(s);
        }
    }
    (out, all[n * ch..].to_vec())
}

/// Error scale: max(|x|, 1) per element.
pub fn abs_scale(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| x.abs().max(1.0)).collect()
}

/// `rms_norm(o) · w · silu(z)` per `w.len()`-wide head row.
pub fn gated_norm_ref(o: &[f32], z: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
    let hd = w.len();
    o.chunks(hd)
        .zip(z.chunks(hd))
        .flat_map(|(or, zr)| {
            let ms: f64 = or.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / hd as f64;
            let r = 1.0 / (ms + eps as f64).sqrt();
            or.iter().zip(zr).zip(w).map(move |((&v, &zv), &wi)| v as f64 * r * wi as f64 * silu(zv as f64))
        })
        .collect()
}
