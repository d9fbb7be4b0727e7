//! Log-softmax and gather (`shaders/logprob.wgsl` and its CPU twin) against the float64
//! reference: vocabularies that are not multiples of the workgroup (1, 7, 255, 257, 1000) and
//! real ones (49 152, 262 144 + 3), logits spread wide enough that the max subtraction
//! matters, the row's own maximum and minimum as targets, rows without a target, and
//! fewer rows launched than the buffers hold.

mod common;

use common::{Rng, check_close, gpus, reference};
use wllm_engine::cpu::ops::log_softmax_gather;
use wllm_engine::ops::logprob::{NO_TARGET, logprob};

/// (vocabulary, rows held, rows launched).
const SHAPES: [(usize, usize, usize); 7] =
    [(1, 3, 3), (7, 4, 2), (255, 5, 5), (257, 3, 3), (1000, 6, 4), (49_152, 3, 3), (262_147, 2, 2)];

/// Rows of logits with values in (-30, 30) and an outlier, and a target per row: the row's
/// largest logit, its smallest, a random one, and no target, in turn.
fn inputs(rng: &mut Rng, v: usize, rows: usize) -> (Vec<f32>, Vec<u32>) {
    let mut logits = rng.vec(v * rows, 30.0);
    let mut targets = Vec::with_capacity(rows);
    for (r, row) in logits.chunks_exact_mut(v).enumerate() {
        let at = rng.below(v as u64) as usize;
        row[at] = 60.0;
        let pick = |f: fn(f32, f32) -> bool| {
            (0..v).fold(0, |best, i| if f(row[i], row[best]) { i } else { best }) as u32
        };
        targets.push(match r % 4 {
            0 => pick(|a, b| a > b),
            1 => pick(|a, b| a < b),
            2 => rng.below(v as u64) as u32,
            _ => NO_TARGET,
        });
    }
    (logits, targets)
}

fn want(logits: &[f32], v: usize, targets: &[u32]) -> Vec<f64> {
    logits
        .chunks_exact(v)
        .zip(targets)
        .map(|(row, &t)| if t == NO_TARGET { 0.0 } else { reference::log_softmax_at(row, t as usize) })
        .collect()
}

#[test]
fn gpu_logprob_matches_reference() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(21);
        for (v, held, launched) in SHAPES {
            let (logits, targets) = inputs(&mut rng, v, held);
            let lb = gpu.storage_init("logits", bytemuck::cast_slice(&logits));
            let tb = gpu.storage_init("targets", bytemuck::cast_slice(&targets));
            // Pre-filled, so a row the kernel skips would show.
            let ob = gpu.storage_init("scores", bytemuck::cast_slice(&vec![7.0f32; held]));
            let op = logprob(&gpu, &lb, v as u32, held as u32, &tb, &ob).unwrap();
            gpu.run(&[op], launched as u32).unwrap();
            let got = gpu.read_f32(&ob).unwrap();
            let w = want(&logits[..launched * v], v, &targets[..launched]);
            // ln of a sum of up to 262k terms in f32: a few ulps of the magnitudes involved.
            let scale: Vec<f64> = w.iter().map(|x| x.abs().max(1.0)).collect();
            check_close(&format!("{name}: logprob v={v}"), &got[..launched], &w, &scale, 1e-5, 1e-5);
            assert!(
                got[launched..].iter().all(|&x| x == 7.0),
                "{name}: v={v}: rows past the launch were written"
            );
        }
    }
}

#[test]
fn cpu_logprob_matches_reference() {
    let mut rng = Rng::new(21);
    for (v, rows, _) in SHAPES {
        let (logits, targets) = inputs(&mut rng, v, rows);
        let mut got = Vec::new();
        log_softmax_gather(&logits, v, &targets, &mut got).unwrap();
        let w = want(&logits, v, &targets);
        let scale: Vec<f64> = w.iter().map(|x| x.abs().max(1.0)).collect();
        check_close(&format!("cpu logprob v={v}"), &got, &w, &scale, 1e-5, 1e-5);
    }
}

#[test]
fn logprob_refuses_bad_targets_and_shapes() {
    let mut got = Vec::new();
    let e = log_softmax_gather(&[0.0; 8], 4, &[1, 4], &mut got).unwrap_err().to_string();
    assert!(e.contains("target id 4"), "{e}");
    assert!(log_softmax_gather(&[0.0; 7], 4, &[1, 2], &mut got).is_err());
    for (name, gpu) in gpus().into_iter().take(1) {
        let small = gpu.storage("small", 16);
        assert!(logprob(&gpu, &small, 8, 2, &small, &small).is_err(), "{name}: 16 bytes for 2 rows of 8");
    }
}

#[test]
fn logprob_marks_non_finite_rows() {
    let mut row = vec![0.5f32; 300];
    row[17] = f32::NAN;
    let mut got = Vec::new();
    log_softmax_gather(&row, 300, &[3], &mut got).unwrap();
    assert!(got[0].is_nan(), "a NaN logit must make the score NaN, got {}", got[0]);
    for (name, gpu) in gpus() {
        let lb = gpu.storage_init("logits", bytemuck::cast_slice(&row));
        let tb = gpu.storage_init("targets", bytemuck::cast_slice(&[3u32]));
        let ob = gpu.storage("scores", 4);
        gpu.run(&[logprob(&gpu, &lb, 300, 1, &tb, &ob).unwrap()], 1).unwrap();
        let v = gpu.read_f32(&ob).unwrap()[0];
        assert!(!v.is_finite(), "{name}: a NaN logit gave the finite score {v}");
    }
}
