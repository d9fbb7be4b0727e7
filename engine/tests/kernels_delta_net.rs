//! The Gated DeltaNet ops on the CPU against a float64 reference written here from the math
//! (llama.cpp's order): the causal convolution with its rolling state, the L2 norm, the gates,
//! the delta rule with both key-head maps, and the z-gated RMS norm, on every instruction set.
//! Shapes are awkward (head sizes that leave vector tails, more value heads than key heads),
//! runs have several tokens, and feeding a run in pieces, the states carried between the calls,
//! must equal one long call.

mod common;

use common::delta_net::{abs_scale, conv_ref, dims, gated_norm_ref};
use common::{Rng, check_close};
use wllm_engine::cpu::Isa;
use wllm_engine::cpu::ops::{conv_silu, delta_rule, gated_rms_norm, gates, l2_norm_heads};
use wllm_loaders::model::{DeltaNetConfig, KeyHeadMap};

const EPS: f32 = 1e-6;

/// (key heads, value heads, head size, taps, map).
const SHAPES: [(u32, u32, u32, u32, KeyHeadMap); 4] = [
    (2, 4, 24, 4, KeyHeadMap::Tiled),
    (2, 6, 19, 4, KeyHeadMap::Grouped),
    (1, 1, 64, 3, KeyHeadMap::Tiled),
    (3, 3, 7, 1, KeyHeadMap::Grouped),
];

/// The delta rule in f64 with S[i][j] (key i, value j); returns (outputs, final state in the
/// engine's layout, row j holding S[·][j]).
#[allow(clippy::too_many_arguments)]
fn delta_ref(
    d: &DeltaNetConfig,
    state: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    g: &[f32],
    beta: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let (nk, nv, hd) = (d.n_k_heads as usize, d.n_v_heads as usize, d.head_dim as usize);
    let n = q.len() / (nk * hd);
    let mut st: Vec<f64> = state.iter().map(|&x| x as f64).collect();
    let mut out = vec![0f64; n * nv * hd];
    for h in 0..nv {
        let kh = match d.key_heads {
            KeyHeadMap::Tiled => h % nk,
            KeyHeadMap::Grouped => h / (nv / nk),
        };
        let s = &mut st[h * hd * hd..(h + 1) * hd * hd];
        for t in 0..n {
            let qt = &q[(t * nk + kh) * hd..][..hd];
            let kt = &k[(t * nk + kh) * hd..][..hd];
            let vt = &v[(t * nv + h) * hd..][..hd];
            let decay = (g[t * nv + h] as f64).exp();
            let b = beta[t * nv + h] as f64;
            s.iter_mut().for_each(|x| *x *= decay);
            // S^T k with the decayed state, then the rank-one write.
            let sk: Vec<f64> = (0..hd).map(|j| (0..hd).map(|i| s[j * hd + i] * kt[i] as f64).sum()).collect();
            for j in 0..hd {
                let delta = (vt[j] as f64 - sk[j]) * b;
                for i in 0..hd {
                    s[j * hd + i] += kt[i] as f64 * delta;
                }
            }
            for j in 0..hd {
                let o: f64 = (0..hd).map(|i| s[j * hd + i] * qt[i] as f64).sum();
                out[(t * nv + h) * hd + j] = o / (hd as f64).sqrt();
            }
        }
    }
    (out, st)
}

fn l2_ref(x: &[f32], hd: usize, eps: f32) -> Vec<f32> {
    x.chunks(hd)
        .flat_map(|r| {
            let ss: f64 = r.iter().map(|&v| v as f64 * v as f64).sum();
            let inv = 1.0 / (ss + eps as f64).sqrt();
            r.iter().map(move |&v| (v as f64 * inv) as f32).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn convolution_matches_the_reference_and_carries_its_state() {
    let mut rng = Rng::new(11);
    for (nk, nv, hd, taps, map) in SHAPES {
        let d = dims(nk, nv, hd, taps, map);
        let ch = d.conv_channels() as usize;
        let n = 9;
        let w = rng.vec(ch * taps as usize, 0.8);
        let state0 = rng.vec(d.conv_state_len(), 1.0);
        let x = rng.vec(n * ch, 1.5);
        let (want, want_state) = conv_ref(&d, &w, &state0, &x);
        // Whole run.
        let mut state = state0.clone();
        let mut out = vec![0f32; n * ch];
        conv_silu(&d, &w, &mut state, &x, &mut out).unwrap();
        let what = format!("conv {nk}/{nv}/{hd}/{taps}");
        check_close(&what, &out, &want, &abs_scale(&want), 1e-5, 1e-6);
        check_close(&format!("{what} state"), &state, &want_state, &abs_scale(&want_state), 0.0, 0.0);
        // In pieces of 1, 3 and 5 tokens: the state carries between the calls.
        let mut state = state0.clone();
        let mut pieces = Vec::new();
        let mut t = 0;
        for len in [1, 3, 5] {
            let mut o = vec![0f32; len * ch];
            conv_silu(&d, &w, &mut state, &x[t * ch..(t + len) * ch], &mut o).unwrap();
            pieces.extend(o);
            t += len;
        }
        assert_eq!(pieces, out, "{what}: pieces differ from one call");
    }
}

#[test]
fn delta_rule_matches_the_reference_on_every_isa_and_in_pieces() {
    let mut rng = Rng::new(7);
    for isa in Isa::available() {
        for (nk, nv, hd, taps, map) in SHAPES {
            let d = dims(nk, nv, hd, taps, map);
            let (nk, nv, hdu) = (nk as usize, nv as usize, hd as usize);
            let n = 11;
            let q = l2_ref(&rng.vec(n * nk * hdu, 1.0), hdu, EPS);
            let k = l2_ref(&rng.vec(n * nk * hdu, 1.0), hdu, EPS);
            let v = rng.vec(n * nv * hdu, 1.0);
            // Log-decays in (-2, 0) and write strengths in (0, 1), as the gates give them.
            let g: Vec<f32> = rng.vec(n * nv, 1.0).iter().map(|x| -(x + 1.0)).collect();
            let beta: Vec<f32> = rng.vec(n * nv, 0.5).iter().map(|x| x + 0.5).collect();
            let state0 = rng.vec(d.state_len(), 0.3);
            let (want, want_state) = delta_ref(&d, &state0, &q, &k, &v, &g, &beta);
            let what = format!("delta rule {isa:?} {nk}/{nv}/{hd} {map:?}");
            let mut state = state0.clone();
            let mut out = vec![0f32; n * nv * hdu];
            delta_rule(isa, &d, &mut state, &q, &k, &v, &g, &beta, &mut out).unwrap();
            check_close(&what, &out, &want, &abs_scale(&want), 2e-5, 2e-6);
            check_close(&format!("{what} state"), &state, &want_state, &abs_scale(&want_state), 2e-5, 2e-6);
            // The same tokens in calls of 4, 1 and 6 tokens, carrying the state.
            let mut state = state0.clone();
            let mut pieces = vec![0f32; n * nv * hdu];
            let (qs, vs, gs) = (nk * hdu, nv * hdu, nv);
            let mut t = 0;
            for len in [4, 1, 6] {
                let r = t..t + len;
                delta_rule(
                    isa,
                    &d,
                    &mut state,
                    &q[r.start * qs..r.end * qs],
                    &k[r.start * qs..r.end * qs],
                    &v[r.start * vs..r.end * vs],
                    &g[r.start * gs..r.end * gs],
                    &beta[r.start * gs..r.end * gs],
                    &mut pieces[r.start * vs..r.end * vs],
                )
                .unwrap();
                t += len;
            }
            assert_eq!(pieces, out, "{what}: calls in pieces differ from one call");
        }
    }
}

#[test]
fn norms_and_gates_match_the_reference() {
    let mut rng = Rng::new(5);
    for isa in Isa::available() {
        for hd in [7usize, 24, 128] {
            let rows = 5;
            let mut x = rng.vec(rows * hd, 2.0);
            let want: Vec<f64> = l2_ref(&x, hd, EPS).iter().map(|&v| v as f64).collect();
            l2_norm_heads(isa, &mut x, hd, EPS).unwrap();
            check_close(&format!("l2 {isa:?} {hd}"), &x, &want, &abs_scale(&want), 1e-6, 1e-7);

            let o = rng.vec(rows * hd, 2.0);
            let z = rng.vec(rows * hd, 3.0);
            let w = rng.vec(hd, 1.0);
            let want = gated_norm_ref(&o, &z, &w, EPS);
            let mut got = o.clone();
            gated_rms_norm(isa, &mut got, &z, &w, EPS).unwrap();
            check_close(&format!("gated norm {isa:?} {hd}"), &got, &want, &abs_scale(&want), 2e-6, 1e-7);
        }
    }
    let nv = 3;
    let mut beta = rng.vec(4 * nv, 6.0);
    // Alphas near and above softplus's linear cut at 20.
    let mut alpha: Vec<f32> = rng.vec(4 * nv, 15.0).iter().map(|x| x + 5.0).collect();
    let (b0, a0) = (beta.clone(), alpha.clone());
    let dt = rng.vec(nv, 1.0);
    let a: Vec<f32> = rng.vec(nv, 1.0).iter().map(|x| -(x.abs() + 0.1)).collect();
    gates(&mut beta, &mut alpha, &dt, &a).unwrap();
    let want_b: Vec<f64> = b0.iter().map(|&b| 1.0 / (1.0 + (-(b as f64)).exp())).collect();
    let want_g: Vec<f64> = a0
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let y = x as f64 + dt[i % nv] as f64;
            (1.0 + y.exp()).ln() * a[i % nv] as f64
        })
        .collect();
    check_close("beta", &beta, &want_b, &abs_scale(&want_b), 1e-6, 1e-7);
    check_close("log-decay", &alpha, &want_g, &abs_scale(&want_g), 2e-6, 1e-7);
    assert!(gates(&mut beta, &mut alpha, &dt[..2], &a).is_err(), "a short dt bias must be refused");
}
