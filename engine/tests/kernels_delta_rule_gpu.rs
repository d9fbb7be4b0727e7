//! The delta rule on the GPU, recurrent and chunked, against a float64 reference of the
//! recurrence written here (as `kernels_delta_net.rs` writes it for the CPU): runs of 1, 37, 64,
//! 100 and 150 tokens (one chunk exactly, shorter, longer and not a multiple) from a fresh and a
//! carried state, head sizes 128, 24, 19 and 7 with more value heads than key heads under both
//! key-head maps, several sequences in one step (fresh ones over a NaN-filled slot), decode steps
//! after a prompt, a run split over two steps, and a run whose slot is past the state buffer.
//! Each form is also held to the other.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::delta_net::{abs_scale, dims};
use common::{Rng, check_close, gpus};
use wllm_engine::Gpu;
use wllm_engine::ops::delta_rule::{DeltaRuleArgs, DeltaRuleScratch, delta_rule, scratch_bytes};
use wllm_loaders::model::{DeltaNetConfig, KeyHeadMap};

/// Cache rows per sequence: slot s owns positions from s · N_CTX.
const N_CTX: u32 = 4096;

/// (key heads, value heads, head size, map).
const SHAPES: [(u32, u32, u32, KeyHeadMap); 4] = [
    (2, 4, 128, KeyHeadMap::Tiled),
    (2, 4, 24, KeyHeadMap::Grouped),
    (2, 6, 19, KeyHeadMap::Tiled),
    (3, 6, 7, KeyHeadMap::Grouped),
];

/// One GPU per feature set (the linear-kernel tunings do not change these kernels).
fn devices() -> Vec<(&'static str, Arc<Gpu>)> {
    let mut seen = Vec::new();
    gpus()
        .into_iter()
        .filter(|(_, g)| {
            let new = !seen.contains(&g.caps);
            seen.push(g.caps);
            new
        })
        .collect()
}

/// One sequence's inputs for all its tokens, and where it starts.
struct Seq {
    slot: u32,
    /// Position of its first token; 0 starts from a zero state.
    pos0: u32,
    /// The state before its first token (`None`: fresh, the slot holds NaN).
    state0: Option<Vec<f32>>,
    /// Per token: q | k (L2-normalised) | v, as the conv output holds them.
    conv: Vec<f32>,
    beta: Vec<f32>,
    g: Vec<f32>,
}

fn normalised(rng: &mut Rng, n: usize) -> Vec<f32> {
    let x = rng.vec(n, 1.0);
    let inv = 1.0 / x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
    x.iter().map(|&v| (v as f64 * inv) as f32).collect()
}

impl Seq {
    fn new(d: &DeltaNetConfig, rng: &mut Rng, slot: u32, pos0: u32, len: usize) -> Seq {
        let (nk, nv, hd) = (d.n_k_heads as usize, d.n_v_heads as usize, d.head_dim as usize);
        let mut conv = Vec::new();
        for _ in 0..len {
            for _ in 0..2 * nk {
                conv.extend(normalised(rng, hd));
            }
            conv.extend(rng.vec(nv * hd, 1.0));
        }
        // Write strengths in (0, 1); log-decays in (-2, 0], many close to 0 (long memory).
        let beta = rng.vec(len * nv, 0.5).iter().map(|x| x + 0.5).collect();
        let g = rng.vec(len * nv, 1.0).iter().map(|x| -2.0 * x * x).collect();
        let state0 = (pos0 > 0).then(|| rng.vec(d.state_len(), 0.5));
        Seq { slot, pos0, state0, conv, beta, g }
    }

    fn len(&self, d: &DeltaNetConfig) -> usize {
        self.conv.len() / d.conv_channels() as usize
    }
}

/// The recurrence in f64 over all of `s`'s tokens; returns (outputs, final state), both in the
/// engine's layouts.
fn delta_ref(d: &DeltaNetConfig, s: &Seq) -> (Vec<f64>, Vec<f64>) {
    let (nk, nv, hd) = (d.n_k_heads as usize, d.n_v_heads as usize, d.head_dim as usize);
    let ch = d.conv_channels() as usize;
    let n = s.len(d);
    let mut st: Vec<f64> = match &s.state0 {
        Some(x) => x.iter().map(|&v| v as f64).collect(),
        None => vec![0.0; d.state_len()],
    };
    let mut out = vec![0f64; n * nv * hd];
    for h in 0..nv {
        let kh = match d.key_heads {
            KeyHeadMap::Tiled => h % nk,
            KeyHeadMap::Grouped => h / (nv / nk),
        };
        let m = &mut st[h * hd * hd..(h + 1) * hd * hd];
        for t in 0..n {
            let row = &s.conv[t * ch..(t + 1) * ch];
            let q = &row[kh * hd..][..hd];
            let k = &row[(nk + kh) * hd..][..hd];
            let v = &row[2 * nk * hd + h * hd..][..hd];
            let decay = (s.g[t * nv + h] as f64).exp();
            let b = s.beta[t * nv + h] as f64;
            m.iter_mut().for_each(|x| *x *= decay);
            for j in 0..hd {
                let r = &mut m[j * hd..(j + 1) * hd];
                let sk: f64 = r.iter().zip(k).map(|(a, &b)| a * b as f64).sum();
                let delta = (v[j] as f64 - sk) * b;
                r.iter_mut().zip(k).for_each(|(a, &b)| *a += b as f64 * delta);
                let o: f64 = r.iter().zip(q).map(|(a, &b)| a * b as f64).sum();
                out[(t * nv + h) * hd + j] = o / (hd as f64).sqrt();
            }
        }
    }
    (out, st)
}

/// What a schedule left behind: every sequence's outputs and the whole state buffer.
struct Run {
    outs: Vec<Vec<f32>>,
    state: Vec<f32>,
}

/// Runs `seqs` on the GPU in steps; each step lists (sequence, tokens) pieces in step order.
/// Slots of fresh sequences start as NaN, slots no sequence uses as `spare`.
fn run_gpu(
    gpu: &Gpu,
    d: &DeltaNetConfig,
    seqs: &[Seq],
    n_seq: u32,
    steps: &[Vec<(usize, usize)>],
    chunked: &dyn Fn(usize) -> bool,
    spare: &[f32],
) -> Run {
    let ch = d.conv_channels() as usize;
    let (nv, vd) = (d.n_v_heads as usize, d.value_dim() as usize);
    let n_batch = steps.iter().map(|s| s.iter().map(|p| p.1).sum::<usize>()).max().unwrap();
    let sl = d.state_len();
    let mut state0 = vec![0f32; n_seq as usize * sl];
    for slot in 0..n_seq as usize {
        state0[slot * sl..(slot + 1) * sl].copy_from_slice(spare);
    }
    for s in seqs.iter().filter(|s| s.slot < n_seq) {
        let block = &mut state0[s.slot as usize * sl..][..sl];
        match &s.state0 {
            Some(x) => block.copy_from_slice(x),
            None => block.fill(f32::NAN),
        }
    }
    let state = gpu.storage_init("state", bytemuck::cast_slice(&state0));
    let conv = gpu.storage("conv", (n_batch * ch * 4) as u64);
    let gates = gpu.storage("gates", (n_batch * 2 * nv * 4) as u64);
    let out = gpu.storage("out", (n_batch * vd * 4) as u64);
    let positions = gpu.storage("positions", (n_batch * 8) as u64);
    let step = gpu.uniform("step", &[0u32; 4]);
    let scratch = DeltaRuleScratch::new(gpu, d, n_batch as u32, n_seq);
    assert_eq!(scratch.bytes(), scratch_bytes(d, n_batch as u32, n_seq));
    let args = DeltaRuleArgs {
        dims: d,
        n_ctx: N_CTX,
        n_seq,
        conv_out: &conv,
        gates: &gates,
        state: &state,
        out: &out,
        step: &step,
        positions: &positions,
        scratch: Some(&scratch),
    };
    let mut done = vec![0usize; seqs.len()];
    let mut outs: Vec<Vec<f32>> = seqs.iter().map(|s| Vec::with_capacity(s.len(d) * vd)).collect();
    for (i, pieces) in steps.iter().enumerate() {
        let (mut c, mut gt, mut pos) = (Vec::new(), Vec::new(), Vec::new());
        for &(si, len) in pieces {
            let s = &seqs[si];
            for t in done[si]..done[si] + len {
                c.extend_from_slice(&s.conv[t * ch..(t + 1) * ch]);
                gt.extend_from_slice(&s.beta[t * nv..(t + 1) * nv]);
                gt.extend_from_slice(&s.g[t * nv..(t + 1) * nv]);
                pos.extend([s.pos0 + t as u32, s.slot * N_CTX]);
            }
        }
        let n = pos.len() as u32 / 2;
        gpu.queue.write_buffer(&conv, 0, bytemuck::cast_slice(&c));
        gpu.queue.write_buffer(&gates, 0, bytemuck::cast_slice(&gt));
        gpu.queue.write_buffer(&positions, 0, bytemuck::cast_slice(&pos));
        gpu.queue.write_buffer(&step, 0, bytemuck::cast_slice(&[0, n, 0, 0]));
        let ops = delta_rule(gpu, &args, chunked(i)).unwrap();
        gpu.run(&ops, n).unwrap();
        let o = gpu.read_f32(&out).unwrap();
        let mut row = 0;
        for &(si, len) in pieces {
            outs[si].extend_from_slice(&o[row * vd..(row + len) * vd]);
            done[si] += len;
            row += len;
        }
    }
    Run { outs, state: gpu.read_f32(&state).unwrap() }
}

/// Budgets against the f64 reference (relative to max(|x|, 1)): the recurrent form rounds like
/// the CPU's; the chunked one adds the triangular solve and longer sums. On lavapipe the worst
/// errors seen were 1.5e-7 (recurrent) and 7.8e-7 (chunked).
const RECURRENT_BUDGET: f64 = 1e-6;
const CHUNKED_BUDGET: f64 = 4e-6;

fn budget(chunked: bool) -> f64 {
    if chunked { CHUNKED_BUDGET } else { RECURRENT_BUDGET }
}

/// Holds every sequence's outputs and final state to the reference.
fn check_run(what: &str, d: &DeltaNetConfig, seqs: &[Seq], run: &Run, rel: f64) {
    let sl = d.state_len();
    for (i, s) in seqs.iter().enumerate() {
        let (want, want_state) = delta_ref(d, s);
        check_close(
            &format!("{what} seq {i} output"),
            &run.outs[i],
            &want,
            &abs_scale(&want),
            rel,
            rel / 10.0,
        );
        let got_state = &run.state[s.slot as usize * sl..][..sl];
        check_close(
            &format!("{what} seq {i} state"),
            got_state,
            &want_state,
            &abs_scale(&want_state),
            rel,
            rel / 10.0,
        );
    }
}

/// Holds one run's outputs and states to another's.
fn check_same(what: &str, got: &Run, want: &Run, rel: f64) {
    for (i, (g, w)) in got.outs.iter().zip(&want.outs).enumerate() {
        let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        check_close(&format!("{what} seq {i} output"), g, &w, &abs_scale(&w), rel, rel / 10.0);
    }
    let w: Vec<f64> = want.state.iter().map(|&x| x as f64).collect();
    check_close(&format!("{what} state"), &got.state, &w, &abs_scale(&w), rel, rel / 10.0);
}

#[test]
fn single_runs_match_the_reference_in_both_forms() {
    for (name, gpu) in devices() {
        for (nk, nv, hd, map) in SHAPES {
            let d = dims(nk, nv, hd, 4, map);
            let mut rng = Rng::new(3 + hd as u64);
            for len in [1usize, 37, 64, 100, 150] {
                // Fresh from position 0, and continuing a state from position 70 (its first
                // chunk then ends at position 63 + 64 = 127).
                for pos0 in [0, 70] {
                    let seqs = [Seq::new(&d, &mut rng, 1, pos0, len)];
                    let steps = [vec![(0, len)]];
                    let spare = rng.vec(d.state_len(), 1.0);
                    let mut runs = Vec::new();
                    for chunked in [false, true] {
                        let what =
                            format!("{name} {nk}/{nv}/{hd} {map:?} len {len} from {pos0} chunked {chunked}");
                        let run = run_gpu(&gpu, &d, &seqs, 2, &steps, &|_| chunked, &spare);
                        check_run(&what, &d, &seqs, &run, budget(chunked));
                        // Slot 0 is no sequence's: untouched.
                        assert_eq!(&run.state[..d.state_len()], &spare[..], "{what}: slot 0 changed");
                        runs.push(run);
                    }
                    let what = format!("{name} {nk}/{nv}/{hd} len {len} from {pos0}: chunked vs recurrent");
                    check_same(&what, &runs[1], &runs[0], CHUNKED_BUDGET);
                }
            }
        }
    }
}

#[test]
fn several_sequences_in_one_step_then_decode_steps() {
    for (name, gpu) in devices() {
        for (nk, nv, hd, map) in [SHAPES[0], SHAPES[2]] {
            let d = dims(nk, nv, hd, 4, map);
            let mut rng = Rng::new(17 + hd as u64);
            // A fresh 70-token prompt over a NaN slot, a continuation crossing a chunk border
            // (positions 62..66), a one-token continuation, and a fresh single token.
            let seqs = [
                Seq::new(&d, &mut rng, 2, 0, 72),
                Seq::new(&d, &mut rng, 0, 62, 7),
                Seq::new(&d, &mut rng, 4, 200, 3),
                Seq::new(&d, &mut rng, 1, 0, 3),
            ];
            let steps = [
                vec![(0, 70), (1, 5), (2, 1), (3, 1)],
                // Decode: one token per sequence, in another order.
                vec![(3, 1), (1, 1), (0, 1), (2, 1)],
                vec![(2, 1), (0, 1), (3, 1), (1, 1)],
            ];
            let spare = rng.vec(d.state_len(), 1.0);
            let schedules: [(&str, &dyn Fn(usize) -> bool); 3] = [
                ("recurrent", &|_| false),
                ("chunked prompt, recurrent decode", &|i| i == 0),
                ("chunked", &|_| true),
            ];
            for (label, chunked) in schedules {
                let what = format!("{name} {nk}/{nv}/{hd} {label}");
                let run = run_gpu(&gpu, &d, &seqs, 5, &steps, chunked, &spare);
                check_run(&what, &d, &seqs, &run, CHUNKED_BUDGET);
                assert_eq!(
                    &run.state[3 * d.state_len()..4 * d.state_len()],
                    &spare[..],
                    "{what}: slot 3 changed"
                );
            }
        }
    }
}

#[test]
fn a_state_carried_over_two_steps_equals_one_step() {
    for (name, gpu) in devices() {
        for (nk, nv, hd, map) in [SHAPES[0], SHAPES[3]] {
            let d = dims(nk, nv, hd, 4, map);
            let mut rng = Rng::new(29 + hd as u64);
            let seqs = [Seq::new(&d, &mut rng, 0, 10, 100)];
            let spare = rng.vec(d.state_len(), 1.0);
            for chunked in [false, true] {
                let what = format!("{name} {nk}/{nv}/{hd} chunked {chunked}");
                let one = run_gpu(&gpu, &d, &seqs, 1, &[vec![(0, 100)]], &|_| chunked, &spare);
                let two = run_gpu(&gpu, &d, &seqs, 1, &[vec![(0, 37)], vec![(0, 63)]], &|_| chunked, &spare);
                check_run(&format!("{what} one step"), &d, &seqs, &one, budget(chunked));
                check_run(&format!("{what} two steps"), &d, &seqs, &two, budget(chunked));
                check_same(&format!("{what} two steps vs one"), &two, &one, budget(chunked));
            }
        }
    }
}

/// A run whose slot is past the state buffer (positions are written on the GPU, so the op
/// cannot refuse them) is skipped; the other runs of the step and the buffer are unaffected.
#[test]
fn a_run_past_the_state_buffer_is_skipped() {
    for (name, gpu) in devices() {
        let (nk, nv, hd, map) = SHAPES[1];
        let d = dims(nk, nv, hd, 4, map);
        let mut rng = Rng::new(41);
        let seqs = [Seq::new(&d, &mut rng, 0, 5, 9), Seq::new(&d, &mut rng, 2, 0, 4)];
        let spare = rng.vec(d.state_len(), 1.0);
        for chunked in [false, true] {
            let what = format!("{name} chunked {chunked}");
            let run = run_gpu(&gpu, &d, &seqs, 2, &[vec![(1, 4), (0, 9)]], &|_| chunked, &spare);
            check_run(&what, &d, &seqs[..1], &run, budget(chunked));
            assert_eq!(&run.state[d.state_len()..], &spare[..], "{what}: slot 1 changed");
        }
    }
}

#[test]
fn bad_arguments_are_refused() {
    let Some((_, gpu)) = devices().into_iter().next() else { return };
    let d = dims(2, 4, 16, 4, KeyHeadMap::Tiled);
    let buf = |bytes: usize| gpu.storage("buf", bytes as u64);
    let (conv, gates, out, pos) = (buf(8 * 128 * 4), buf(8 * 8 * 4), buf(8 * 64 * 4), buf(8 * 8));
    let state = buf(2 * d.state_len() * 4);
    let step = gpu.uniform("step", &[0u32; 4]);
    let scratch = DeltaRuleScratch::new(&gpu, &d, 8, 2);
    let args = DeltaRuleArgs {
        dims: &d,
        n_ctx: 16,
        n_seq: 2,
        conv_out: &conv,
        gates: &gates,
        state: &state,
        out: &out,
        step: &step,
        positions: &pos,
        scratch: Some(&scratch),
    };
    delta_rule(&gpu, &args, true).expect("valid arguments");
    delta_rule(&gpu, &args, false).expect("valid arguments");
    let refused = |a: &DeltaRuleArgs<'_>, chunked: bool, what: &str| {
        let e = delta_rule(&gpu, a, chunked).err().unwrap_or_else(|| panic!("{what} was accepted"));
        eprintln!("{what}: {e}");
    };
    refused(&DeltaRuleArgs { scratch: None, ..args }, true, "no scratch");
    refused(&DeltaRuleArgs { n_seq: 3, ..args }, false, "a state buffer of two slots for three");
    refused(&DeltaRuleArgs { n_ctx: 0, ..args }, false, "n_ctx 0");
    let short = buf(4 * 128 * 4);
    refused(&DeltaRuleArgs { conv_out: &short, ..args }, true, "a conv output shorter than the batch");
    let odd = dims(3, 4, 16, 4, KeyHeadMap::Tiled);
    refused(&DeltaRuleArgs { dims: &odd, ..args }, false, "4 value heads over 3 key heads");
    let wide = dims(2, 4, 512, 4, KeyHeadMap::Tiled);
    refused(&DeltaRuleArgs { dims: &wide, ..args }, false, "head size 512");
    let other = dims(2, 4, 32, 4, KeyHeadMap::Tiled);
    let big_state = buf(2 * other.state_len() * 4);
    refused(&DeltaRuleArgs { dims: &other, state: &big_state, ..args }, true, "a scratch for another shape");
}

/// A 512-token prompt of Qwen3.5's shape (16 key heads, 32 value heads of 128): the chunked
/// form against the recurrent one, timed (see `--nocapture`).
#[test]
fn prefill_of_512_tokens_chunked_vs_recurrent() {
    let Some((name, gpu)) = devices().into_iter().next() else { return };
    let d = dims(16, 32, 128, 4, KeyHeadMap::Tiled);
    let n = 512;
    let mut rng = Rng::new(99);
    let seqs = [Seq::new(&d, &mut rng, 0, 0, n)];
    let spare = vec![0f32; d.state_len()];
    let time = |chunked: bool| {
        let run = run_gpu(&gpu, &d, &seqs, 1, &[vec![(0, n)]], &|_| chunked, &spare);
        // The pipelines are built now; time the dispatches alone on fresh inputs.
        let ch = d.conv_channels() as usize;
        let conv = gpu.storage_init("conv", bytemuck::cast_slice(&seqs[0].conv));
        let gates: Vec<f32> = (0..n)
            .flat_map(|t| {
                seqs[0].beta[t * 32..(t + 1) * 32].iter().chain(&seqs[0].g[t * 32..(t + 1) * 32]).copied()
            })
            .collect();
        let gates = gpu.storage_init("gates", bytemuck::cast_slice(&gates));
        let out = gpu.storage("out", (n * d.value_dim() as usize * 4) as u64);
        let pos: Vec<u32> = (0..n as u32).flat_map(|p| [p, 0]).collect();
        let positions = gpu.storage_init("positions", bytemuck::cast_slice(&pos));
        let step = gpu.uniform("step", &[0, n as u32, 0, 0]);
        let state = gpu.storage("state", (d.state_len() * 4) as u64);
        let scratch = DeltaRuleScratch::new(&gpu, &d, n as u32, 1);
        assert_eq!(conv.size() as usize, n * ch * 4);
        let args = DeltaRuleArgs {
            dims: &d,
            n_ctx: N_CTX,
            n_seq: 1,
            conv_out: &conv,
            gates: &gates,
            state: &state,
            out: &out,
            step: &step,
            positions: &positions,
            scratch: Some(&scratch),
        };
        let ops = delta_rule(&gpu, &args, chunked).unwrap();
        let start = Instant::now();
        gpu.run(&ops, n as u32).unwrap();
        (run, start.elapsed().as_secs_f64() * 1e3)
    };
    let (recurrent, t_rec) = time(false);
    let (chunked, t_chunk) = time(true);
    check_same(&format!("{name} 512 tokens: chunked vs recurrent"), &chunked, &recurrent, CHUNKED_BUDGET);
    eprintln!(
        "{name} ({}): delta rule over 512 tokens, 16/32 heads of 128: recurrent {t_rec:.1} ms, chunked {t_chunk:.1} ms",
        gpu.info.name
    );

    // One decode token on the prompt's state: the step every generated token takes per layer.
    let ch = d.conv_channels() as usize;
    let conv = gpu.storage_init("conv", bytemuck::cast_slice(&seqs[0].conv[..ch]));
    let gates: Vec<f32> = seqs[0].beta[..32].iter().chain(&seqs[0].g[..32]).copied().collect();
    let gates = gpu.storage_init("gates", bytemuck::cast_slice(&gates));
    let out = gpu.storage("out", d.value_dim() as u64 * 4);
    let positions = gpu.storage_init("positions", bytemuck::cast_slice(&[n as u32, 0]));
    let step = gpu.uniform("step", &[0u32, 1, 0, 0]);
    let state = gpu.storage_init("state", bytemuck::cast_slice(&chunked.state));
    let args = DeltaRuleArgs {
        dims: &d,
        n_ctx: N_CTX,
        n_seq: 1,
        conv_out: &conv,
        gates: &gates,
        state: &state,
        out: &out,
        step: &step,
        positions: &positions,
        scratch: None,
    };
    let ops = delta_rule(&gpu, &args, false).unwrap();
    gpu.run(&ops, 1).unwrap();
    let reps = 10;
    let start = Instant::now();
    for _ in 0..reps {
        gpu.run(&ops, 1).unwrap();
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / reps as f64;
    let state_bytes = 2.0 * (d.state_len() * 4) as f64;
    eprintln!(
        "{name}: one decode token, recurrent: {ms:.2} ms per step (submit and wait included), state read and written at {:.2} GB/s",
        state_bytes / ms / 1e6
    );
}
