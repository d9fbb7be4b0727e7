//! Decode: each task takes a run of rows; each row's blocks are unpacked into registers and
//! multiplied with every token vector (up to four), so each weight byte is read once per call
//! however many tokens there are.
//!
//! On AVX2 and AVX-512 the integer formats multiply their integers with the activations
//! quantized to i16 ([`int_dot_applies`]); other formats and instruction sets dequantize to f32.
//! With AVX-512 VNNI, one token's Q4_K and Q6_K rows go to `quant::vnni`.

use wllm_loaders::GgmlType;

use super::packed::in_row_layout;
use super::{MAX_MATVEC_TOKENS, MAX_PASSED_TOKENS, OutPtr, WeightView};
use crate::cpu::Isa;
use crate::cpu::exec::Exec;
use crate::cpu::quant::int::{Groupings, QuantX, has_int_dot};
use crate::cpu::quant::packed::GROUP_ROWS;
#[cfg(target_arch = "x86_64")]
use crate::cpu::quant::vnni::{Planes, SplitX, Sums};
#[cfg(target_arch = "x86_64")]
use crate::cpu::quant::vnni_iq;
use crate::cpu::quant::{ACC, Fmt, with_fmt};
use crate::cpu::simd::{Simd, dispatch};

/// Whether the decode matvec of `n_tok` tokens on `ty` weights runs on integer dot products
/// (activations quantized to i16 per 32 elements) with this instruction set. `WLLM_CPU_DOT=f32`
/// turns it off (every product dequantizes to f32).
/// Evaluates `$body` with the const `$t` set to `$n` (1..=3), or to [`MAX_MATVEC_TOKENS`].
macro_rules! by_tokens {
    ($n:expr, |$t:ident| $body:expr) => {
        match $n {
            1 => {
                const $t: usize = 1;
                $body
            }
            2 => {
                const $t: usize = 2;
                $body
            }
            3 => {
                const $t: usize = 3;
                $body
            }
            _ => {
                const $t: usize = MAX_MATVEC_TOKENS;
                $body
            }
        }
    };
}

/// How far ahead of the row being multiplied its bytes are prefetched into L1 in a short run
/// of rows: decode streams every weight once, and the hardware prefetcher alone left a thread
/// well short of the bandwidth it can draw (SmolLM2 decode: 47 -> 57 tokens/s on one thread).
const AHEAD: usize = 4096;

/// How far ahead rows are prefetched into L2 in a long run of rows.
const AHEAD_L2: usize = 9216;

/// The longest run of rows prefetched into L1. The hardware prefetcher ramps up on long
/// sequential runs, and bursts of L1 prefetches there only take the miss buffers from it
/// (7B-shaped Q4_K decode, 2304-byte rows in runs of 256: 4.3 tokens/s with them, 5.0-5.2
/// without); short runs (SmolLM2's 360-byte rows in runs of 36) end before it gets going, and
/// L1 prefetches help them (115-127 -> 135-145 tokens/s). Longer runs prefetch into L2
/// instead, `AHEAD_L2` ahead, which keeps more of the stream in flight without taking L1's
/// miss buffers: 7B-shaped decode on AVX-512 VNNI, interleaved runs, 5.7 -> 6.8 tokens/s
/// (4 KiB ahead: no better than none; 18 and 36 KiB as good as 9).
const PREFETCHED_SPAN: usize = 64 << 10;

/// Prefetches the bytes of the row that starts at `row_start` of `bytes` (rows of `rb`
/// bytes), as far ahead as a run of `run_bytes` wants it (see [`PREFETCHED_SPAN`]).
#[inline(always)]
pub(crate) fn prefetch_ahead(bytes: &[u8], row_start: usize, rb: usize, run_bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
        let short = run_bytes <= PREFETCHED_SPAN;
        let start = row_start + if short { AHEAD } else { AHEAD_L2 };
        let end = (start + rb).min(bytes.len());
        let mut at = start;
        while at < end {
            // SAFETY: SSE is baseline on x86-64; a prefetch of an address inside the slice
            // never faults or writes.
            unsafe {
                let p = bytes.as_ptr().add(at).cast();
                if short { _mm_prefetch::<_MM_HINT_T0>(p) } else { _mm_prefetch::<_MM_HINT_T1>(p) }
            }
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, row_start, rb, run_bytes);
}

pub(super) fn int_dot_applies(isa: Isa, ty: GgmlType, n_tok: usize) -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| !std::env::var("WLLM_CPU_DOT").is_ok_and(|v| v.trim() == "f32"));
    // Up to MAX_PASSED_TOKENS tokens go through matvec passes (see `linear_multi_on`).
    enabled && n_tok <= MAX_PASSED_TOKENS && has_int_dot(ty) && int_isa(isa)
}

fn int_isa(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa.is_avx512() || isa.is_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// Rows per task: enough to amortize scheduling, small enough to balance the threads.
fn chunk_rows(total: usize, threads: usize) -> usize {
    (total / (threads.max(1) * 8)).clamp(8, 512)
}

pub(super) fn run(exec: &dyn Exec, isa: Isa, jobs: &[(WeightView<'_>, OutPtr<'_>)], x: &[f32], n_tok: usize) {
    let total: usize = jobs.iter().map(|(w, _)| w.rows).sum();
    let mut ch = chunk_rows(total, exec.threads());
    if jobs.iter().any(|(w, _)| w.packed) {
        ch = ch.next_multiple_of(GROUP_ROWS);
    }
    let k = jobs.first().map_or(0, |(w, _)| w.cols);
    let int_types = jobs.iter().map(|(w, _)| w.ty).filter(|&ty| int_dot_applies(isa, ty, n_tok));
    let groupings = int_types.clone().fold(Groupings::default(), |g, ty| g.with(isa, ty));
    let xq = int_types.clone().next().is_some().then(|| QuantX::new(x, n_tok, k, groupings)).flatten();
    // One token's Q4_K and Q6_K rows on VNNI byte dot products, from the wide activations.
    #[cfg(target_arch = "x86_64")]
    let split = |ty: GgmlType| {
        xq.as_ref()
            .filter(|_| {
                isa.is_avx512_vnni() && n_tok == 1 && jobs.iter().any(|(w, _)| w.ty == ty && !w.packed)
            })
            .and_then(|xq| crate::cpu::quant::vnni::SplitX::new(xq, ty))
    };
    // The two formats take their activation bytes in different orders.
    #[cfg(target_arch = "x86_64")]
    let splits = [(GgmlType::Q4_K, split(GgmlType::Q4_K)), (GgmlType::Q6_K, split(GgmlType::Q6_K))];
    #[cfg(target_arch = "x86_64")]
    let forms = ByteForms::new(isa, jobs, xq.as_ref(), n_tok);
    // Rows `r0..r1` of a matrix in the file's layout.
    let row_layout = |w: WeightView<'_>, r0: usize, r1: usize, out: OutPtr<'_>| {
        #[cfg(target_arch = "x86_64")]
        if let Some(split) = splits.iter().find(|(ty, _)| *ty == w.ty).and_then(|(_, x)| x.as_ref()) {
            // SAFETY: `split` exists only on an AVX-512 VNNI `Isa`, which proves the features.
            unsafe { crate::cpu::quant::vnni::rows(w, r0, r1, split, out) };
            return;
        }
        if let Some(xq) = xq.as_ref().filter(|_| int_dot_applies(isa, w.ty, n_tok)) {
            int::rows(isa, w, r0, r1, xq, n_tok, out);
            return;
        }
        dispatch!(isa, |s| with_fmt!(
            w.ty,
            |F| by_tokens!(n_tok, |T| rows_t::<_, F, T>(s, w, r0, r1, x, out)),
            ()
        ));
    };
    let tasks: Vec<(usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(i, (w, _))| (0..w.rows).step_by(ch).map(move |r| (i, r)))
        .collect();
    exec.run(tasks.len(), &|ti| {
        let (i, r0) = tasks[ti];
        let (w, out) = jobs[i];
        let r1 = (r0 + ch).min(w.rows);
        #[cfg(target_arch = "x86_64")]
        if forms.run(w, r0, r1, out) {
            return;
        }
        in_row_layout(w, r0, r1, |v, first| {
            row_layout(v, r0 - first, r1 - first, out.window(w.rows, first, v.rows))
        });
    });
}

/// The byte forms of the activations ([`SplitX`]) that kernels over whole 64-weight vectors
/// read on AVX-512 VNNI, each built once per call when some matrix of it reads that form.
#[cfg(target_arch = "x86_64")]
struct ByteForms<'a> {
    isa: Isa,
    /// In element order: packed Q4_K/Q6_K rows and the gathered codebook kernels.
    natural: Option<Vec<SplitX<'a>>>,
    /// In the plane orders of the table kernels (IQ2_XXS's, then the IQ3 types').
    planes: [Option<Vec<SplitX<'a>>>; 2],
}

#[cfg(target_arch = "x86_64")]
const PLANE_ORDERS: [Planes; 2] = [Planes::Eight, Planes::Four];

#[cfg(target_arch = "x86_64")]
impl<'a> ByteForms<'a> {
    fn new(isa: Isa, jobs: &[(WeightView<'_>, OutPtr<'_>)], xq: Option<&'a QuantX>, n_tok: usize) -> Self {
        let none = ByteForms { isa, natural: None, planes: [None, None] };
        let Some(xq) = xq.filter(|_| isa.is_avx512_vnni() && n_tok <= MAX_MATVEC_TOKENS) else { return none };
        let any = |f: &dyn Fn(&WeightView<'_>) -> bool| jobs.iter().any(|(w, _)| f(w));
        let natural = any(&|w| w.packed || none.gathered(w)).then(|| {
            let sums = Sums {
                // Only packed Q6_K reads the 16-element sums.
                of16: any(&|w| w.packed && w.ty == GgmlType::Q6_K),
                of4: any(&|w| none.gathered(w)),
            };
            (0..n_tok).map(|t| SplitX::natural(xq, t, sums)).collect()
        });
        let planes = PLANE_ORDERS.map(|order| {
            any(&|w| none.planes(w) == Some(order))
                .then(|| (0..n_tok).map(|t| SplitX::planes(xq, t, order)).collect())
                .flatten()
        });
        ByteForms { isa, natural: natural.flatten(), planes }
    }

    /// The plane order of `w`'s table kernel, where it runs here.
    fn planes(&self, w: &WeightView<'_>) -> Option<Planes> {
        vnni_iq::plane_order(w.ty).filter(|_| self.isa.is_avx512_vnni() && vnni_iq::planes_available())
    }

    fn gathered(&self, w: &WeightView<'_>) -> bool {
        self.isa.is_avx512_vnni() && vnni_iq::covers(w.ty) && self.planes(w).is_none()
    }

    /// Rows `r0..r1` of `w` into `out` when a kernel of these forms takes them.
    fn run(&self, w: WeightView<'_>, r0: usize, r1: usize, out: OutPtr<'_>) -> bool {
        macro_rules! each_pass {
            ($x:expr, $rows:path) => {
                match $x[..] {
                    [ref a] => $rows(w, r0, r1, [a], out),
                    [ref a, ref b] => $rows(w, r0, r1, [a, b], out),
                    [ref a, ref b, ref c] => $rows(w, r0, r1, [a, b, c], out),
                    [ref a, ref b, ref c, ref d] => $rows(w, r0, r1, [a, b, c, d], out),
                    ref x => unreachable!("{} tokens in one matvec pass", x.len()),
                }
            };
        }
        let planes = self.planes(&w).and_then(|order| {
            let at = PLANE_ORDERS.iter().position(|&o| o == order)?;
            self.planes[at].as_ref()
        });
        // SAFETY: the forms exist only on an AVX-512 VNNI `Isa`, which proves the features
        // (and `planes` checks VBMI).
        unsafe {
            match (&self.natural, planes) {
                (Some(x), _) if w.packed => each_pass!(x, crate::cpu::quant::vnni_packed::rows),
                (_, Some(x)) => each_pass!(x, vnni_iq::rows),
                (Some(x), _) if self.gathered(&w) => each_pass!(x, vnni_iq::rows),
                _ => return false,
            }
        }
        true
    }
}

/// Writes row `r`'s outputs for every token, for `r` in `r0..r1`, from `dot` over the row's bytes,
/// streaming the rows ahead into the cache.
#[inline(always)]
pub(crate) fn each_row<const T: usize>(
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    out: OutPtr<'_>,
    mut dot: impl FnMut(&[u8]) -> [f32; T],
) {
    let rb = w.row_bytes();
    for r in r0..r1 {
        prefetch_ahead(w.bytes, r * rb, rb, (r1 - r0) * rb);
        for (t, y) in dot(&w.bytes[r * rb..(r + 1) * rb]).into_iter().enumerate() {
            out.write(t * w.rows + r, y);
        }
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
    let xs: [&[f32]; T] = std::array::from_fn(|t| &x[t * k..(t + 1) * k]);
    each_row::<T>(w, r0, r1, out, |row| {
        let mut acc = [[s.zero(); ACC]; T];
        let mut tail = [0f32; T];
        F::dot(s, row, &xs, &mut acc, &mut tail);
        std::array::from_fn(|t| {
            let [a0, a1, a2, a3] = acc[t];
            s.sum(s.add(s.add(a0, a1), s.add(a2, a3))) + tail[t]
        })
    });
}

#[cfg(target_arch = "x86_64")]
mod int {
    use super::{MAX_MATVEC_TOKENS, OutPtr, WeightView, each_row, prefetch_ahead};
    use crate::cpu::Isa;
    use crate::cpu::quant::int::{IntFmt, LONG_ROWS_FROM, QuantX, XBlocks, with_int_fmt};
    use crate::cpu::simd::int::IDot;
    use crate::cpu::simd::x86::{with_avx2, with_avx512};

    /// Rows `r0..r1` of `w` (an integer format) on integer dot products.
    pub(super) fn rows(
        isa: Isa,
        w: WeightView<'_>,
        r0: usize,
        r1: usize,
        xq: &QuantX,
        n_tok: usize,
        out: OutPtr<'_>,
    ) {
        if isa.is_avx512() {
            // SAFETY: an `Isa` of this kind exists only when the CPU has these features.
            unsafe {
                with_avx512(
                    #[inline(always)]
                    |s| rows_s(s, w, r0, r1, xq, n_tok, out),
                )
            }
        } else if isa.is_avx2() {
            // SAFETY: as above.
            unsafe {
                with_avx2(
                    #[inline(always)]
                    |s| rows_s(s, w, r0, r1, xq, n_tok, out),
                )
            }
        }
    }

    #[inline(always)]
    fn rows_s<S: IDot>(
        s: S,
        w: WeightView<'_>,
        r0: usize,
        r1: usize,
        xq: &QuantX,
        n_tok: usize,
        out: OutPtr<'_>,
    ) {
        with_int_fmt!(w.ty, |F| by_tokens!(n_tok, |T| rows_t::<_, F, T>(s, w, r0, r1, xq, out)), ())
    }

    /// Rows multiplied side by side when they are long ([`LONG_ROWS_FROM`]).
    const BLOCKED_ROWS: usize = 4;

    #[inline(always)]
    fn rows_t<S: IDot, F: IntFmt, const T: usize>(
        s: S,
        w: WeightView<'_>,
        r0: usize,
        r1: usize,
        xq: &QuantX,
        out: OutPtr<'_>,
    ) {
        let x: [XBlocks<'_>; T] = std::array::from_fn(|t| xq.token(t));
        let mut r = r0;
        if T == 1 && F::ROW_BLOCKS && w.cols >= LONG_ROWS_FROM {
            let rb = w.row_bytes();
            while r + BLOCKED_ROWS <= r1 {
                for i in 0..BLOCKED_ROWS {
                    prefetch_ahead(w.bytes, (r + i) * rb, rb, (r1 - r0) * rb);
                }
                let rows = std::array::from_fn(|i| &w.bytes[(r + i) * rb..(r + i + 1) * rb]);
                for (i, y) in F::rows::<S, BLOCKED_ROWS>(s, rows, &x[0]).into_iter().enumerate() {
                    out.write(r + i, y);
                }
                r += BLOCKED_ROWS;
            }
        }
        each_row(w, r, r1, out, |row| F::row(s, row, &x));
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod int {
    use super::{OutPtr, WeightView};
    use crate::cpu::Isa;
    use crate::cpu::quant::int::QuantX;

    pub(super) fn rows(_: Isa, _: WeightView<'_>, _: usize, _: usize, _: &QuantX, _: usize, _: OutPtr<'_>) {
        unreachable!("int_dot_applies is false off x86-64")
    }
}
