//! Prefill: `Y = X Wᵀ` for many tokens.
//!
//! `X` is packed once per call into blocks of NR tokens, transposed (`[block][k][token]`), so
//! a microkernel step loads NR tokens' k-th values as whole vectors. Each task dequantizes a
//! panel of MR weight rows to f32 (`[row][k]`, read back by broadcast) and multiplies it with
//! every token block: an MR × NR tile of accumulators stays in registers over the whole `k`.
//! Tiles are MR = 12 rows × 32 tokens on AVX-512 (24 of its 32 registers), 6 × 16 on AVX2
//! (12 of 16), 8 × 8 on NEON; half as many tokens when the batch is that small. On AVX-512
//! VNNI, the types whose weights are small integers per scale group (`kbytes::reads`: the
//! legacy types, Q4_K to Q6_K, IQ4_NL/IQ4_XS, MXFP4) take the integer kernel of `gemm_int`
//! instead, or where the CPU has AMX tiles the one of `gemm_amx`.

use std::cell::RefCell;

use super::{OutPtr, WeightView};
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::quant::{Fmt, with_fmt};
use crate::cpu::simd::{Simd, dispatch};

/// Largest tile, in f32, of any instruction set (12 × 32).
const TILE: usize = 384;

/// (rows per panel, vectors of tokens per tile) for `isa` and a batch of `n_tok`.
fn shape(isa: Isa, n_tok: usize) -> (usize, usize) {
    let lanes = isa.lanes();
    let nv = if lanes == 1 {
        4
    } else if n_tok > lanes {
        2
    } else {
        1
    };
    let mr = match lanes {
        16 => 12,
        8 => 6,
        4 => 8,
        _ => 4,
    };
    (mr, nv)
}

thread_local! {
    /// The dequantized weight panel of the task running on this thread.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn run(exec: &dyn Exec, isa: Isa, jobs: &[(WeightView<'_>, OutPtr<'_>)], x: &[f32], n_tok: usize) {
    let Some(k) = jobs.first().map(|(w, _)| w.cols) else { return };
    #[cfg(target_arch = "x86_64")]
    if jobs.iter().any(|(w, _)| int_reads(isa, w.ty)) && int_gemm(exec, isa, jobs, x, n_tok, k) {
        let rest: Vec<_> = jobs.iter().copied().filter(|(w, _)| !int_reads(isa, w.ty)).collect();
        if !rest.is_empty() {
            run_f32(exec, isa, &rest, x, n_tok);
        }
        return;
    }
    run_f32(exec, isa, jobs, x, n_tok);
}

/// Whether `ty` weights multiply on integers in the GEMM of `isa` (AVX-512 VNNI or AMX).
pub(super) fn int_reads(isa: Isa, ty: wllm_loaders::GgmlType) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa.is_avx512_vnni() && super::kbytes::reads(ty)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, ty);
        false
    }
}

/// The jobs whose types `kbytes` reads on integers, AMX tiles where the CPU has them; false
/// (nothing done) when an activation is not finite.
#[cfg(target_arch = "x86_64")]
fn int_gemm(
    exec: &dyn Exec,
    isa: Isa,
    jobs: &[(WeightView<'_>, OutPtr<'_>)],
    x: &[f32],
    n_tok: usize,
    k: usize,
) -> bool {
    if isa.is_amx() {
        let paired = super::tiled_x::pairs(jobs, n_tok, k);
        // SAFETY: an AMX `Isa` exists only where the CPU has AVX-512 and the OS granted tiles.
        let Some(xt) = (unsafe { super::tiled_x::TiledX::new(exec, x, n_tok, k, paired) }) else {
            return false;
        };
        // SAFETY: as above.
        unsafe { super::gemm_amx::run(exec, jobs, &xt, n_tok) };
        return true;
    }
    let Some(xi) = super::gemm_int::PackedX::new(exec, x, n_tok, k) else { return false };
    // SAFETY: an AVX-512 VNNI `Isa` exists only on a CPU with these features.
    unsafe { super::gemm_int::run(exec, jobs, &xi, n_tok) };
    true
}

/// [`run`] on f32: every panel dequantized.
fn run_f32(exec: &dyn Exec, isa: Isa, jobs: &[(WeightView<'_>, OutPtr<'_>)], x: &[f32], n_tok: usize) {
    let Some(k) = jobs.first().map(|(w, _)| w.cols) else { return };
    let (mr, nv) = shape(isa, n_tok);
    let nr = nv * isa.lanes();
    let xt = pack(exec, x, n_tok, k, nr);
    let tasks = super::packed::panel_tasks(jobs, mr);
    exec.run(tasks.len(), &|ti| {
        let (i, r0, r1) = tasks[ti];
        let (w, out) = jobs[i];
        super::packed::in_row_layout(w, r0, r1, |v, first| {
            let out = out.window(w.rows, first, v.rows);
            for p in (r0..r1).step_by(mr) {
                PANEL
                    .with_borrow_mut(|wp| dispatch!(isa, |s| panel(s, v, p - first, &xt, n_tok, nv, out, wp)))
            }
        });
    });
}

/// `x` (`n_tok` × `k`) as `[block][k][nr]`, zero past the last token.
fn pack(exec: &dyn Exec, x: &[f32], n_tok: usize, k: usize, nr: usize) -> Vec<f32> {
    let n_blocks = n_tok.div_ceil(nr);
    let mut xt = vec![0f32; n_blocks * k * nr];
    let out = OutPtr::new(&mut xt);
    exec.run(n_blocks, &|b| {
        // SAFETY: block `b` is this task's alone.
        let blk = unsafe { out.slice(b * k * nr, k * nr) };
        for j in 0..nr {
            let t = b * nr + j;
            if t >= n_tok {
                break;
            }
            for (kk, &v) in x[t * k..(t + 1) * k].iter().enumerate() {
                blk[kk * nr + j] = v;
            }
        }
    });
    xt
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn panel<S: Simd>(
    s: S,
    w: WeightView<'_>,
    r0: usize,
    xt: &[f32],
    n_tok: usize,
    nv: usize,
    out: OutPtr<'_>,
    wp: &mut Vec<f32>,
) {
    match (S::N, nv) {
        (16, 2) => panel_k::<S, 12, 2>(s, w, r0, xt, n_tok, out, wp),
        (16, _) => panel_k::<S, 12, 1>(s, w, r0, xt, n_tok, out, wp),
        (8, 2) => panel_k::<S, 6, 2>(s, w, r0, xt, n_tok, out, wp),
        (8, _) => panel_k::<S, 6, 1>(s, w, r0, xt, n_tok, out, wp),
        (4, 2) => panel_k::<S, 8, 2>(s, w, r0, xt, n_tok, out, wp),
        (4, _) => panel_k::<S, 8, 1>(s, w, r0, xt, n_tok, out, wp),
        _ => panel_k::<S, 4, 4>(s, w, r0, xt, n_tok, out, wp),
    }
}

#[inline(always)]
fn panel_k<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    w: WeightView<'_>,
    r0: usize,
    xt: &[f32],
    n_tok: usize,
    out: OutPtr<'_>,
    wp: &mut Vec<f32>,
) {
    let k = w.cols;
    let nr = NV * S::N;
    let mr = MR.min(w.rows - r0);
    let rb = w.row_bytes();
    wp.resize(MR * k, 0.0);
    for r in 0..MR {
        let dst = &mut wp[r * k..(r + 1) * k];
        if r < mr {
            let src = &w.bytes[(r0 + r) * rb..(r0 + r + 1) * rb];
            with_fmt!(w.ty, |F| F::dequant(s, src, dst), ());
        } else {
            dst.fill(0.0);
        }
    }
    let mut tile = [0f32; TILE];
    for (b, xb) in xt.chunks_exact(k * nr).enumerate() {
        micro::<S, MR, NV>(s, wp, k, xb, &mut tile);
        let t0 = b * nr;
        for j in 0..nr.min(n_tok - t0) {
            let row = (t0 + j) * w.rows + r0;
            for r in 0..mr {
                out.write(row + r, tile[r * nr + j]);
            }
        }
    }
}

/// `tile[r][j] = sum_k wp[r][k] * xb[k][j]` for an MR × (NV·N) tile.
#[inline(always)]
fn micro<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    wp: &[f32],
    k: usize,
    xb: &[f32],
    tile: &mut [f32; TILE],
) {
    let nr = NV * S::N;
    assert!(wp.len() >= MR * k && xb.len() >= k * nr && MR * nr <= TILE);
    let mut acc = [[s.zero(); NV]; MR];
    let (wptr, xptr) = (wp.as_ptr(), xb.as_ptr());
    for kk in 0..k {
        let mut xv = [s.zero(); NV];
        for (v, xv) in xv.iter_mut().enumerate() {
            // SAFETY: kk * nr + v * N + N <= k * nr <= xb.len() (asserted above).
            *xv = unsafe { s.load(xptr.add(kk * nr + v * S::N)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: r * k + kk < MR * k <= wp.len() (asserted above).
            let b = s.splat(unsafe { *wptr.add(r * k + kk) });
            for v in 0..NV {
                acc[v] = s.fma(b, xv[v], acc[v]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (v, a) in acc.iter().enumerate() {
            s.st(&mut tile[r * nr + v * S::N..], *a);
        }
    }
}
