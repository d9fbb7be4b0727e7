//! Decode: each task takes a run of rows; each row's blocks are unpacked into registers and
//! multiplied with every token vector (up to four), so each weight byte is read once per call
//! however many tokens there are.

use super::{MAX_MATVEC_TOKENS, OutPtr, WeightView};
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::quant::{ACC, Fmt, with_fmt};
use crate::cpu::simd::{Simd, dispatch};

/// Rows per task: enough to amortize scheduling, small enough to balance the threads.
fn chunk_rows(total: usize, threads: usize) -> usize {
    (total / (threads.max(1) * 8)).clamp(8, 512)
}

pub(super) fn run(exec: &dyn Exec, isa: Isa, jobs: &[(WeightView<'_>, OutPtr<'_>)], x: &[f32], n_tok: usize) {
    let total: usize = jobs.iter().map(|(w, _)| w.rows).sum();
    let ch = chunk_rows(total, exec.threads());
    let tasks: Vec<(usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(i, (w, _))| (0..w.rows).step_by(ch).map(move |r| (i, r)))
        .collect();
    exec.run(tasks.len(), &|ti| {
        let (i, r0) = tasks[ti];
        let (w, out) = jobs[i];
        let r1 = (r0 + ch).min(w.rows);
        dispatch!(isa, |s| with_fmt!(w.ty, |F| rows::<_, F>(s, w, r0, r1, x, n_tok, out), ()));
    });
}

#[inline(always)]
fn rows<S: Simd, F: Fmt>(
    s: S,
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    x: &[f32],
    n_tok: usize,
    out: OutPtr<'_>,
) {
    match n_tok {
        1 => rows_t::<S, F, 1>(s, w, r0, r1, x, out),
        2 => rows_t::<S, F, 2>(s, w, r0, r1, x, out),
        3 => rows_t::<S, F, 3>(s, w, r0, r1, x, out),
        _ => rows_t::<S, F, MAX_MATVEC_TOKENS>(s, w, r0, r1, x, out),
    }
}

#[inline(always)]
fn rows_t<S: Simd, F: Fmt, const T: usize>(
    s: S,
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    x: &[f32],
    out: OutPtr<'_>,
) {
    let k = w.cols;
    let rb = w.row_bytes();
    let xs: [&[f32]; T] = std::array::from_fn(|t| &x[t * k..(t + 1) * k]);
    for r in r0..r1 {
        let mut acc = [[s.zero(); ACC]; T];
        let mut tail = [0f32; T];
        F::dot(s, &w.bytes[r * rb..(r + 1) * rb], &xs, &mut acc, &mut tail);
        for t in 0..T {
            let [a0, a1, a2, a3] = acc[t];
            out.write(t * w.rows + r, s.sum(s.add(s.add(a0, a1), s.add(a2, a3))) + tail[t]);
        }
    }
}
