//! The Gated DeltaNet's elementwise GPU kernels against float64 references written from the
//! math (the formulas of `kernels_delta_net.rs`), on every device configuration: the causal
//! convolution over steps that carry several sequences (one starting at position 0 over a
//! garbage state slot, some continuing, one shorter than the state), the state carried across
//! steps (decode steps of one token per sequence included) equal to one long step, the q/k L2
//! norm and the gates with both beta/alpha layouts, and the z-gated RMS norm. Head sizes leave
//! tails (7, 19) and the tap counts include 1 (no state).

mod common;

use common::delta_net::{abs_scale, conv_ref, dims, gated_norm_ref};
use common::{Rng, check_close, gpus};
use wllm_engine::Gpu;
use wllm_engine::ops::delta_net::{ConvArgs, GateArgs, conv, gated_norm, qk_norm_gates};
use wllm_loaders::model::{DeltaNetConfig, KeyHeadMap};

const EPS: f32 = 1e-6;

/// (key heads, value heads, head size, taps, map), as the CPU test's.
const SHAPES: [(u32, u32, u32, u32, KeyHeadMap); 5] = [
    (2, 4, 24, 4, KeyHeadMap::Tiled),
    (2, 6, 19, 4, KeyHeadMap::Grouped),
    (1, 1, 64, 3, KeyHeadMap::Tiled),
    (3, 3, 7, 1, KeyHeadMap::Grouped),
    // Real-model head size (Qwen3.5), more channels than a workgroup.
    (2, 4, 128, 4, KeyHeadMap::Tiled),
];

fn f32s(gpu: &Gpu, label: &str, v: &[f32]) -> wgpu::Buffer {
    gpu.storage_init(label, bytemuck::cast_slice(v))
}

/// One sequence's part of a step: its state slot, the position of its first token, its inputs.
struct Run {
    slot: usize,
    pos0: u32,
    x: Vec<f32>,
}

const N_CTX: u32 = 32;

/// Runs one step of `runs` (in this order) through the GPU convolution over `state` (all slots,
/// updated in place); returns the step's outputs.
fn gpu_conv_step(
    gpu: &Gpu,
    d: &DeltaNetConfig,
    n_seq: usize,
    w: &wgpu::Buffer,
    state: &wgpu::Buffer,
    runs: &[Run],
) -> Vec<f32> {
    let ch = d.conv_channels() as usize;
    let x: Vec<f32> = runs.iter().flat_map(|r| r.x.iter().copied()).collect();
    let n = x.len() / ch;
    let positions: Vec<u32> = runs
        .iter()
        .flat_map(|r| (0..r.x.len() / ch).flat_map(move |i| [r.pos0 + i as u32, r.slot as u32 * N_CTX]))
        .collect();
    let input = f32s(gpu, "conv_in", &x);
    let out = gpu.storage("conv_out", (n * ch * 4) as u64);
    let pos = gpu.storage_init("positions", bytemuck::cast_slice(&positions));
    let step = gpu.uniform("step", &[0u32, n as u32, 0, 0]);
    let ops = conv(
        gpu,
        &ConvArgs {
            dims: d,
            n_ctx: N_CTX,
            n_seq: n_seq as u32,
            input: &input,
            weight: w,
            state,
            out: &out,
            step: &step,
            positions: &pos,
        },
    )
    .unwrap();
    assert_eq!(ops.len(), if d.conv_kernel > 1 { 2 } else { 1 });
    gpu.run(&ops, n as u32).unwrap();
    gpu.read_f32(&out).unwrap()[..n * ch].to_vec()
}

#[test]
fn conv_of_several_sequences_in_one_step_matches_the_reference() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(11);
        for (nk, nv, hd, taps, map) in SHAPES {
            let d = dims(nk, nv, hd, taps, map);
            let ch = d.conv_channels() as usize;
            let hist = taps as usize - 1;
            let slot_len = d.conv_state_len();
            let n_seq = 5;
            let w = rng.vec(ch * taps as usize, 0.8);
            // Garbage everywhere, then the slots of continuing sequences hold real states.
            let mut state: Vec<f32> = rng.vec(n_seq * slot_len, 1.0).iter().map(|v| 1e3 * v).collect();
            let mut slot_state = |state: &mut Vec<f32>, slot: usize, pos0: usize| {
                let s = rng.vec(slot_len, 1.0);
                state[slot * slot_len..][..slot_len].copy_from_slice(&s);
                // Rows before position 0 are zeros, as a run from position 0 leaves them.
                let before = hist.saturating_sub(pos0) * ch;
                state[slot * slot_len..][..before].fill(0.0);
            };
            // Slot 2 continues at 5, slot 0 starts afresh over garbage, slot 1 continues at 1
            // with one token (shorter than the state), slot 3 continues at 7; slot 4 is idle.
            let plan = [(2usize, 5u32, 5usize), (0, 0, 3), (1, 1, 1), (3, 7, 2)];
            for &(slot, pos0, _) in &plan {
                if pos0 > 0 {
                    slot_state(&mut state, slot, pos0 as usize);
                }
            }
            let runs: Vec<Run> =
                plan.iter().map(|&(slot, pos0, n)| Run { slot, pos0, x: rng.vec(n * ch, 1.5) }).collect();
            let wb = f32s(&gpu, "w", &w);
            let sb = f32s(&gpu, "state", &state);
            let got = gpu_conv_step(&gpu, &d, n_seq, &wb, &sb, &runs);
            let got_state = gpu.read_f32(&sb).unwrap();
            let what = format!("{name} conv {nk}/{nv}/{hd}/{taps}");
            let mut want = Vec::new();
            let mut want_state: Vec<f64> = state.iter().map(|&v| v as f64).collect();
            for r in &runs {
                let old = if r.pos0 == 0 {
                    vec![0f32; slot_len]
                } else {
                    state[r.slot * slot_len..][..slot_len].to_vec()
                };
                let (o, s) = conv_ref(&d, &w, &old, &r.x);
                want.extend(o);
                want_state[r.slot * slot_len..][..slot_len].copy_from_slice(&s);
            }
            check_close(&what, &got, &want, &abs_scale(&want), 1e-5, 1e-6);
            // The state is copied inputs: exact, and the idle slot keeps its garbage.
            check_close(
                &format!("{what} state"),
                &got_state[..n_seq * slot_len],
                &want_state,
                &abs_scale(&want_state),
                0.0,
                0.0,
            );
        }
    }
}

#[test]
fn conv_state_carried_across_steps_equals_one_long_step() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(23);
        for (nk, nv, hd, taps, map) in SHAPES {
            let d = dims(nk, nv, hd, taps, map);
            let ch = d.conv_channels() as usize;
            let slot_len = d.conv_state_len();
            let w = rng.vec(ch * taps as usize, 0.8);
            let wb = f32s(&gpu, "w", &w);
            // Two sequences from position 0 (slot 1 and slot 0) over garbage slots, fed as a
            // prompt step of both, a decode step of one token each, a mixed step, and another
            // decode step.
            let steps = [(4usize, 3usize), (1, 1), (3, 2), (1, 1)];
            let len_a: usize = steps.iter().map(|s| s.0).sum();
            let len_b: usize = steps.iter().map(|s| s.1).sum();
            let xa = rng.vec(len_a * ch, 1.5);
            let xb = rng.vec(len_b * ch, 1.5);
            let garbage: Vec<f32> = rng.vec(2 * slot_len, 1.0).iter().map(|v| 1e3 * v).collect();
            let sb = f32s(&gpu, "state", &garbage);
            let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
            let (mut ta, mut tb) = (0usize, 0usize);
            for (na, nb) in steps {
                let runs = [
                    Run { slot: 1, pos0: ta as u32, x: xa[ta * ch..(ta + na) * ch].to_vec() },
                    Run { slot: 0, pos0: tb as u32, x: xb[tb * ch..(tb + nb) * ch].to_vec() },
                ];
                let out = gpu_conv_step(&gpu, &d, 2, &wb, &sb, &runs);
                got_a.extend_from_slice(&out[..na * ch]);
                got_b.extend_from_slice(&out[na * ch..]);
                ta += na;
                tb += nb;
            }
            let state = gpu.read_f32(&sb).unwrap();
            let what = format!("{name} conv in steps {nk}/{nv}/{hd}/{taps}");
            let zeros = vec![0f32; slot_len];
            for (seq, slot, x, got) in [("a", 1, &xa, &got_a), ("b", 0, &xb, &got_b)] {
                let (want, want_state) = conv_ref(&d, &w, &zeros, x);
                check_close(&format!("{what} seq {seq}"), got, &want, &abs_scale(&want), 1e-5, 1e-6);
                check_close(
                    &format!("{what} seq {seq} state"),
                    &state[slot * slot_len..][..slot_len],
                    &want_state,
                    &abs_scale(&want_state),
                    0.0,
                    0.0,
                );
            }
            // The same sequence as one step from a fresh slot gives the same bits.
            let fresh = f32s(&gpu, "state", &garbage);
            let whole = gpu_conv_step(&gpu, &d, 2, &wb, &fresh, &[Run { slot: 1, pos0: 0, x: xa.clone() }]);
            assert_eq!(whole, got_a, "{what}: steps differ from one long step");
        }
    }
}

/// The q/k L2 norm and the gates in f64: (conv_out after the norm, gates).
#[allow(clippy::too_many_arguments)]
fn gates_ref(
    d: &DeltaNetConfig,
    conv_out: &[f32],
    ba: &[f32],
    group: usize,
    dt: &[f32],
    a: &[f32],
    n: usize,
    eps: f32,
) -> (Vec<f64>, Vec<f64>) {
    let ch = d.conv_channels() as usize;
    let (hd, nv) = (d.head_dim as usize, d.n_v_heads as usize);
    let qk = 2 * d.key_dim() as usize;
    let mut x: Vec<f64> = conv_out.iter().map(|&v| v as f64).collect();
    for t in 0..n {
        for head in x[t * ch..t * ch + qk].chunks_mut(hd) {
            let ss: f64 = head.iter().map(|v| v * v).sum();
            let inv = 1.0 / (ss + eps as f64).sqrt();
            head.iter_mut().for_each(|v| *v *= inv);
        }
    }
    let mut g = vec![0f64; n * 2 * nv];
    for t in 0..n {
        let row = &ba[t * 2 * nv..][..2 * nv];
        for h in 0..nv {
            let at = (h / group) * 2 * group + h % group;
            let b = row[at] as f64;
            let y = row[at + group] as f64 + dt[h] as f64;
            let softplus = if y > 20.0 { y } else { y.exp().ln_1p() };
            g[t * 2 * nv + h] = 1.0 / (1.0 + (-b).exp());
            g[t * 2 * nv + nv + h] = softplus * a[h] as f64;
        }
    }
    (x, g)
}

#[test]
fn qk_norm_and_gates_match_the_reference_in_both_layouts() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(5);
        for (nk, nv, hd, taps, map) in SHAPES {
            let d = dims(nk, nv, hd, taps, map);
            let ch = d.conv_channels() as usize;
            let nvu = nv as usize;
            let n = 6;
            // Fused ssm_ba groups (one per key head) and separate beta/alpha weights.
            let mut layouts = vec![nvu / nk as usize, nvu];
            layouts.dedup();
            for group in layouts {
                let x = rng.vec(n * ch, 2.0);
                // Betas where the sigmoid saturates; alphas from far below zero (where e^x
                // vanishes next to 1) to above softplus's linear cut at 20.
                let ba: Vec<f32> = (0..n * 2 * nvu)
                    .map(|i| {
                        let is_alpha = (i % (2 * nvu)) % (2 * group) >= group;
                        if is_alpha { 5.0 + 30.0 * rng.f32() } else { 8.0 * rng.f32() }
                    })
                    .collect();
                let dt = rng.vec(nvu, 1.0);
                let a: Vec<f32> = rng.vec(nvu, 1.0).iter().map(|x| -(x.abs() + 0.1)).collect();
                let (want_x, want_g) = gates_ref(&d, &x, &ba, group, &dt, &a, n, EPS);
                let xb = f32s(&gpu, "conv_out", &x);
                let bab = f32s(&gpu, "beta_alpha", &ba);
                let dtb = f32s(&gpu, "dt_bias", &dt);
                let ab = f32s(&gpu, "a", &a);
                let gb = gpu.storage("gates", (n * 2 * nvu * 4) as u64);
                let step = gpu.uniform("step", &[0u32, n as u32, 0, 0]);
                let ops = qk_norm_gates(
                    &gpu,
                    &GateArgs {
                        dims: &d,
                        eps: EPS,
                        conv_out: &xb,
                        beta_alpha: &bab,
                        group: group as u32,
                        dt_bias: &dtb,
                        a: &ab,
                        gates: &gb,
                        step: &step,
                    },
                )
                .unwrap();
                gpu.run(&ops, n as u32).unwrap();
                let what = format!("{name} {nk}/{nv}/{hd} group {group}");
                let got_x = gpu.read_f32(&xb).unwrap();
                check_close(&format!("{what} q/k norm"), &got_x, &want_x, &abs_scale(&want_x), 2e-6, 1e-7);
                // The value channels are not touched.
                let qk = 2 * d.key_dim() as usize;
                for t in 0..n {
                    let (g, w) = (&got_x[t * ch + qk..(t + 1) * ch], &x[t * ch + qk..(t + 1) * ch]);
                    assert_eq!(g, w, "{what}: token {t}'s value channels changed");
                }
                let got_g = gpu.read_f32(&gb).unwrap();
                check_close(&format!("{what} gates"), &got_g, &want_g, &abs_scale(&want_g), 2e-6, 1e-7);
            }
        }
    }
}

#[test]
fn gated_norm_matches_the_reference() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(9);
        for (nk, nv, hd, taps, map) in SHAPES {
            let d = dims(nk, nv, hd, taps, map);
            let hdu = hd as usize;
            let n = 5;
            let rows = n * nv as usize;
            let o = rng.vec(rows * hdu, 2.0);
            let z = rng.vec(rows * hdu, 3.0);
            let w = rng.vec(hdu, 1.0);
            let want = gated_norm_ref(&o, &z, &w, EPS);
            let ob = f32s(&gpu, "o", &o);
            let zb = f32s(&gpu, "z", &z);
            let wb = f32s(&gpu, "w", &w);
            let step = gpu.uniform("step", &[0u32, n as u32, 0, 0]);
            let op = gated_norm(&gpu, &d, EPS, &ob, &zb, &wb, &step).unwrap();
            gpu.run(&[op], n as u32).unwrap();
            let got = gpu.read_f32(&ob).unwrap();
            check_close(&format!("{name} gated norm {nv}x{hd}"), &got, &want, &abs_scale(&want), 4e-6, 1e-7);
        }
    }
}

#[test]
fn bad_shapes_are_refused_with_a_message() {
    let Some((_, gpu)) = gpus().into_iter().next() else { return };
    let d = dims(2, 4, 24, 4, KeyHeadMap::Tiled);
    let ch = d.conv_channels() as u64;
    let buf = |floats: u64| gpu.storage("b", floats * 4);
    let (input, out, w, pos) = (buf(3 * ch), buf(3 * ch), buf(4 * ch), buf(6));
    let step = gpu.uniform("step", &[0u32, 3, 0, 0]);
    let short_state = buf(2 * 3 * ch - 1);
    let args = ConvArgs {
        dims: &d,
        n_ctx: 16,
        n_seq: 2,
        input: &input,
        weight: &w,
        state: &short_state,
        out: &out,
        step: &step,
        positions: &pos,
    };
    let err = conv(&gpu, &args).expect_err("a short state must be refused").to_string();
    assert!(err.contains("state"), "{err}");
    let state = buf(2 * 3 * ch);
    assert!(conv(&gpu, &ConvArgs { state: &state, ..args }).is_ok());
    assert!(conv(&gpu, &ConvArgs { state: &state, out: &input, ..args }).is_err(), "in-place conv");
    let uneven = dims(3, 4, 24, 4, KeyHeadMap::Tiled);
    assert!(
        conv(&gpu, &ConvArgs { dims: &uneven, state: &state, ..args }).is_err(),
        "4 value heads on 3 key heads"
    );

    let (ba, nv_buf, gates) = (buf(8), buf(4), buf(8));
    let gate_args = GateArgs {
        dims: &d,
        eps: EPS,
        conv_out: &out,
        beta_alpha: &ba,
        group: 3,
        dt_bias: &nv_buf,
        a: &nv_buf,
        gates: &gates,
        step: &step,
    };
    let err = qk_norm_gates(&gpu, &gate_args).expect_err("groups of 3 over 4 heads").to_string();
    assert!(err.contains("groups of 3"), "{err}");
    assert!(qk_norm_gates(&gpu, &GateArgs { group: 2, ..gate_args }).is_ok());
    let short = buf(3);
    assert!(qk_norm_gates(&gpu, &GateArgs { group: 2, a: &short, ..gate_args }).is_err(), "short a");

    let (o, z) = (buf(4 * 24), buf(4 * 24));
    assert!(gated_norm(&gpu, &d, EPS, &o, &z, &buf(23), &step).is_err(), "short norm weight");
    assert!(gated_norm(&gpu, &d, EPS, &o, &o, &buf(24), &step).is_err(), "z aliasing o");
    assert!(gated_norm(&gpu, &d, EPS, &o, &z, &buf(24), &step).is_ok());
}
