//! `y = W x` for quantized `W`: a dequantizing matvec for a few tokens (decode is memory
//! bound: every weight byte is read once and `x` stays in L1), and for a batch a GEMM that
//! dequantizes each panel of weight rows once and runs a register-blocked f32 microkernel
//! over all tokens (prefill is compute bound). Activations stay f32 throughout.

mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_amx;
#[cfg(target_arch = "x86_64")]
mod gemm_int;
#[cfg(target_arch = "x86_64")]
mod kbytes;
mod matvec;
mod out;
mod packed;
#[cfg(target_arch = "x86_64")]
mod tiled_x;

use wllm_loaders::GgmlType;

pub(crate) use matvec::{each_row, prefetch_ahead};
pub(crate) use out::OutPtr;
pub use packed::{pack, packs};

use super::Isa;
use super::exec::{Exec, Rayon};
use super::quant::{Fmt, is_supported, with_fmt};
use super::simd::dispatch;
use crate::error::{EngineError, Result};

/// Up to this many tokens go through the matvec (weights read once per token group,
/// dequantized once per row); more take the GEMM.
pub(crate) const MAX_MATVEC_TOKENS: usize = 4;
/// Up to this many tokens run as matvec passes of [`MAX_MATVEC_TOKENS`]; more take the tiled
/// kernel (SmolLM2 Q4_1 on AVX-512: 16 tokens in passes 246 tokens/s, tiled 259; 8 in passes
/// 215-259, tiled 144).
pub(crate) const MAX_PASSED_TOKENS: usize = 8;

/// A matrix of `rows` × `cols` weights of one ggml type; each row is whole blocks, stored one
/// after another as in the file or, when `packed`, in groups of 16 interleaved rows
/// ([`pack`]).
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
    pub(crate) packed: bool,
}

impl<'a> WeightView<'a> {
    /// Checks that the CPU kernels read `ty`, that rows are whole blocks and that `bytes`
    /// holds exactly `rows` of them.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, bytes: &'a [u8]) -> Result<Self> {
        if !is_supported(ty) {
            return Err(EngineError::Unsupported(format!("{ty} weights on the CPU")));
        }
        let bs = ty.block_size() as usize;
        if bs == 0 || !cols.is_multiple_of(bs) {
            return Err(EngineError::InvalidArgument(format!(
                "{ty} rows of {cols} elements are not whole {bs}-element blocks"
            )));
        }
        let want = (cols / bs)
            .checked_mul(ty.type_size() as usize)
            .and_then(|rb| rb.checked_mul(rows))
            .ok_or_else(|| EngineError::InvalidArgument(format!("{rows} x {cols} {ty} is too large")))?;
        if want != bytes.len() {
            return Err(EngineError::InvalidArgument(format!(
                "{rows} x {cols} {ty} takes {want} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(WeightView { ty, rows, cols, bytes, packed: false })
    }

    /// [`WeightView::new`] for bytes that [`pack`] rewrote.
    pub fn new_packed(ty: GgmlType, rows: usize, cols: usize, bytes: &'a [u8]) -> Result<Self> {
        if !packed::layout_fits(ty, rows) {
            return Err(EngineError::InvalidArgument(format!("{rows} rows of {ty} have no packed layout")));
        }
        Ok(WeightView { packed: true, ..WeightView::new(ty, rows, cols, bytes)? })
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() as usize * self.ty.type_size() as usize
    }

    /// Rows `r0..r1` (clamped) as a matrix of their own: one expert of a stacked tensor. A
    /// packed matrix is cut at whole groups only (the loader packs experts of whole groups).
    pub fn rows(&self, r0: usize, r1: usize) -> WeightView<'a> {
        let (r0, r1) = (r0.min(self.rows), r1.min(self.rows).max(r0.min(self.rows)));
        assert!(!self.packed || packed::cuts_groups(r0, r1), "packed rows cut at {r0}..{r1}");
        let rb = self.row_bytes();
        WeightView { rows: r1 - r0, bytes: &self.bytes[r0 * rb..r1 * rb], ..*self }
    }
}

/// One product of a [`linear_multi`] call: `out` (`n_tok` × `w.rows`) = x Wᵀ.
pub struct LinearJob<'a, 'o> {
    pub w: WeightView<'a>,
    pub out: &'o mut [f32],
}

/// `y = x Wᵀ` for `n_tok` rows of `x` (`n_tok` × `w.cols`), into `y` (`n_tok` × `w.rows`),
/// parallel on the current rayon pool.
pub fn linear(isa: Isa, w: WeightView<'_>, x: &[f32], n_tok: usize, y: &mut [f32]) -> Result<()> {
    linear_multi_on(&Rayon, isa, &mut [LinearJob { w, out: y }], x, n_tok)
}

/// Several products of the same `x` in one parallel region (q/k/v, gate/up): the GEMM packs
/// `x` once, and decode pays for one fork-join instead of one per matrix.
pub fn linear_multi(isa: Isa, jobs: &mut [LinearJob<'_, '_>], x: &[f32], n_tok: usize) -> Result<()> {
    linear_multi_on(&Rayon, isa, jobs, x, n_tok)
}

pub(crate) fn linear_multi_on(
    exec: &dyn Exec,
    isa: Isa,
    jobs: &mut [LinearJob<'_, '_>],
    x: &[f32],
    n_tok: usize,
) -> Result<()> {
    let Some(k) = jobs.first().map(|j| j.w.cols) else { return Ok(()) };
    for j in jobs.iter() {
        if j.w.cols != k {
            return Err(EngineError::InvalidArgument(format!("linear: {} columns, expected {k}", j.w.cols)));
        }
        if j.out.len() != n_tok * j.w.rows {
            return Err(EngineError::InvalidArgument(format!(
                "linear: output of {} for {n_tok} x {} rows",
                j.out.len(),
                j.w.rows
            )));
        }
    }
    if x.len() != n_tok * k {
        return Err(EngineError::InvalidArgument(format!("linear: input of {} for {n_tok} x {k}", x.len())));
    }
    if n_tok == 0 || k == 0 {
        for j in jobs.iter_mut() {
            j.out.fill(0.0);
        }
        return Ok(());
    }
    let pass = MAX_MATVEC_TOKENS;
    if takes_passes(isa, jobs.iter().map(|j| j.w), n_tok) {
        let passes = n_tok.div_ceil(pass);
        let mut t0 = 0;
        for g in 0..passes {
            let m = (n_tok - t0) / (passes - g);
            let outs: Vec<(WeightView<'_>, OutPtr<'_>)> = jobs
                .iter_mut()
                .map(|j| (j.w, OutPtr::new(&mut j.out[t0 * j.w.rows..(t0 + m) * j.w.rows])))
                .collect();
            matvec::run(exec, isa, &outs, &x[t0 * k..(t0 + m) * k], m);
            t0 += m;
        }
        return Ok(());
    }
    let outs: Vec<(WeightView<'_>, OutPtr<'_>)> =
        jobs.iter_mut().map(|j| (j.w, OutPtr::new(j.out))).collect();
    gemm::run(exec, isa, &outs, x, n_tok);
    Ok(())
}

/// Whether `n_tok` tokens multiply the matrices `ws` in matvec passes of [`MAX_MATVEC_TOKENS`]
/// rather than in the GEMM. A few tokens (the decode tokens of several sequences) read the
/// weights once per pass, which beats dequantizing panels for the f32 GEMM (AVX-512, SmolLM2
/// Q4_1, 8 tokens: two 4-token passes 205 tokens/s, one f32 GEMM call 144); passes of eight
/// measured no faster than two of four, the integer kernel being bound by its multiplies. The
/// AMX GEMM multiplies rows in the file's layout faster than a second pass from five tokens on
/// (Q4_1 1536×576, 2 threads: 8 tokens in passes 0.18 ms, 9 in the GEMM 0.12 ms).
fn takes_passes<'a>(isa: Isa, ws: impl Iterator<Item = WeightView<'a>> + Clone, n_tok: usize) -> bool {
    if n_tok <= MAX_MATVEC_TOKENS {
        return true;
    }
    if ws.clone().all(|w| packed::passes(isa, w)) {
        return n_tok <= packed::passed_tokens(isa);
    }
    if isa.is_amx() && ws.clone().all(|w| !w.packed && gemm::int_reads(isa, w.ty)) {
        return false;
    }
    n_tok <= MAX_PASSED_TOKENS
}

/// How [`linear`] quantizes the activations of `n_tok` tokens for `w`: the elements of a row
/// that share one i16 scale, or `None` where the activations stay f32 (for tests' rounding
/// bounds).
pub fn int_activation_block(isa: Isa, w: WeightView<'_>, n_tok: usize) -> Option<usize> {
    if takes_passes(isa, std::iter::once(w), n_tok) {
        matvec::int_dot_applies(isa, w.ty, n_tok).then(|| crate::cpu::quant::int::activation_block(isa, w.ty))
    } else {
        gemm::int_reads(isa, w.ty).then_some(crate::cpu::quant::int::QX)
    }
}

/// Dequantizes rows `r0..r1` of `w` into `out` (`(r1 - r0)` × `w.cols`), the embedding
/// lookup's building block.
pub fn dequantize_rows(isa: Isa, w: WeightView<'_>, r0: usize, r1: usize, out: &mut [f32]) -> Result<()> {
    if r0 > r1 || r1 > w.rows || out.len() != (r1 - r0) * w.cols {
        return Err(EngineError::InvalidArgument(format!(
            "dequantize rows {r0}..{r1} of {} into {} values",
            w.rows,
            out.len()
        )));
    }
    let (rb, k) = (w.row_bytes(), w.cols);
    let out = OutPtr::new(out);
    Rayon.run(r1 - r0, &|i| {
        // SAFETY: row `i` of the output is this task's alone.
        let o = unsafe { out.slice(i * k, k) };
        packed::in_row_layout(w, r0 + i, r0 + i + 1, |w, first| {
            let r = r0 + i - first;
            let b = &w.bytes[r * rb..(r + 1) * rb];
            dispatch!(isa, |s| with_fmt!(w.ty, |F| F::dequant(s, b, o), ()))
        });
    });
    Ok(())
}
