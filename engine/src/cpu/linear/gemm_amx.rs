//! Prefill on AMX tiles for the weight types `kbytes` unpacks: the integer products of
//! `gemm_int`, on a matrix unit that does 16 times the multiply-adds per instruction of
//! `vpdpbusd`.
//!
//! The activations are `gemm_int`'s, i16 per 32 elements (the decode path's precision), but
//! tiles multiply bytes. Each i16 is split into a signed high and an unsigned low byte,
//! `x = 256 · hi + lo`, and a scale group's dot product is two tile products,
//! `256 · (W · hi) + W · lo`: exactly the integer `vpdpwssd` sums. The scales then meet the
//! sums as in `gemm_int`, so the two kernels agree bit for bit.
//!
//! One tile product covers a scale group (32 weights, 16 for Q6_K) of 16 weight rows
//! × 16 tokens. The unit writes the i32 sums to memory and AVX-512 applies the scales there.
//! With groups this short the unit runs far below its peak: a profile spends most of the time
//! on the tile loads and stores around each small product, then on that epilogue. Each task
//! unpacks up to [`PANELS`] panels of 16 rows to bytes and sweeps every token tile over them,
//! so a token tile's activations come from memory once per [`PANELS`] panels.
//!
//! Where the time goes at 8 tokens (Q4_1 1536×576, one thread, 0.18 ms a call): unpacking the
//! rows and quantizing the activations about half, the tile products and the epilogue the
//! rest, and those two add up rather than overlap: issuing each group's product after the
//! previous group's epilogue instead of before it measured the same (0.206 vs 0.203 ms), so
//! the epilogue's loads wait for the unit's stores. Merging the high and low bytes of 8 tokens
//! into one product (half the products and stores, plus a correction of `128 · Σw` per row)
//! was tried and was slower, because of the correction's cost in the unpacking. What did pay
//! at up to 8 tokens is pairing scale groups in one product ([`pairs`]): 0.16 -> 0.14 ms there,
//! and the Q8_0 head 49152×576 6.4 -> 5.5 ms. Then unpacking the 32-weight types a group of
//! 16 rows at a time (`kbytes::panel`): 0.14-0.15 -> 0.12 ms. What is left at 8 tokens is
//! mostly the unit's loads and stores around each product and the epilogue. In a model, where
//! the weights come from memory, each task also prefetches the rows of a task two ahead
//! ([`Ahead`]) while its tiles multiply.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::kbytes::{self, group, reads, signed};
use super::tiled_x::{TOK, TiledX, TokenTile};
use super::{OutPtr, WeightView};
use crate::cpu::amx::{TileConfig, Tiles};
use crate::cpu::exec::Exec;
use crate::cpu::quant::int::QX;

/// Weight rows per tile (tokens: `TOK`).
const ROWS: usize = 16;
/// Weight rows per panel: one tile, whose 16 rows × 16 tokens of accumulators stay in
/// registers (32 rows spilled them to memory: one more load and store per row and group).
const PANEL: usize = ROWS;
/// Panels per task.
const PANELS: usize = 4;
/// Bytes between two i32 rows of a sum tile, and between two rows of an activation tile (16
/// tokens × 4 bytes).
const LINE: usize = 64;

/// Two sets of tiles take turns, one group each: tiles 0 and 1 (or 2 and 3) hold the high
/// and low sums and tile 4 (or 5) the weights; tiles 6 and 7 hold the high and low bytes of
/// the activations. For scale groups of `group` weights.
const fn config(group: usize) -> TileConfig {
    let (sums, weights, activations) =
        ((ROWS as u8, LINE as u16), (ROWS as u8, group as u16), ((group / 4) as u8, LINE as u16));
    TileConfig::new()
        .with(0, sums.0, sums.1)
        .with(1, sums.0, sums.1)
        .with(2, sums.0, sums.1)
        .with(3, sums.0, sums.1)
        .with(4, weights.0, weights.1)
        .with(5, weights.0, weights.1)
        .with(6, activations.0, activations.1)
        .with(7, activations.0, activations.1)
}

/// The unpacked panels of a task: rows of bytes `stride` apart, and per panel, group and row
/// a scale and an offset (`[panel][group][ROWS]`).
#[derive(Default)]
struct Panels {
    bytes: Vec<u8>,
    /// Where the first row starts: the first 64-byte boundary of `bytes`, so that each row's
    /// 64-byte runs are whole cache lines for the tile loads.
    base: usize,
    stride: usize,
    scale: Vec<f32>,
    offset: Vec<f32>,
}

thread_local! {
    static PANELS_OF_TASK: RefCell<Panels> = RefCell::new(Panels::default());
}

/// `Y = X Wᵀ` for the jobs whose weights [`reads`] accepts.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/DQ, and [`crate::cpu::amx::available`] must be true.
pub(super) unsafe fn run(exec: &dyn Exec, jobs: &[(WeightView<'_>, OutPtr<'_>)], x: &TiledX, n_tok: usize) {
    let jobs: Vec<_> = jobs.iter().copied().filter(|(w, _)| reads(w.ty)).collect();
    let mut tasks = Vec::new();
    for (i, (w, _)) in jobs.iter().enumerate() {
        // Whole 16-row groups of a packed matrix's layout, each unpacked once.
        let step = panels_per_task(w.rows.div_ceil(PANEL), exec.threads()) * PANEL;
        tasks.extend((0..w.rows).step_by(step).map(|r| (i, r, (r + step).min(w.rows))));
    }
    exec.run(tasks.len(), &|ti| {
        let (i, r0, r1) = tasks[ti];
        let (w, out) = jobs[i];
        super::packed::in_row_layout(w, r0, r1, |v, first| {
            let out = out.window(w.rows, first, v.rows);
            PANELS_OF_TASK.with_borrow_mut(|panels| {
                // SAFETY: the caller's guarantee.
                unsafe {
                    unpack(v, r0 - first, r1 - first, panels);
                    let mut ahead = Ahead::new(tasks.get(ti + AHEAD_TASKS).map_or(&[], |&(i, r0, r1)| {
                        let w = jobs[i].0;
                        &w.bytes[r0 * w.row_bytes()..r1 * w.row_bytes()]
                    }));
                    task(v, r0 - first, r1 - first, panels, x, n_tok, out, &mut ahead);
                }
            });
        });
    });
}

/// Panels per task for a matrix of `panels` panels: the most, up to [`PANELS`], that cut it
/// into a multiple of `threads` tasks, so that no thread is left with one task more than the
/// others (SmolLM2's 576-row matrices made 9 tasks of 4 panels, 5 and 4 on two threads);
/// [`PANELS`] when no count does.
fn panels_per_task(panels: usize, threads: usize) -> usize {
    (1..=PANELS).rev().find(|&per| panels.div_ceil(per).is_multiple_of(threads.max(1))).unwrap_or(PANELS)
}

/// How many tasks past its own a thread prefetches: the other thread holds the next one.
const AHEAD_TASKS: usize = 2;

/// The weight bytes of a task a thread will likely take next, prefetched into L2 while its
/// own tiles multiply (the unit's products leave the memory idle otherwise), a few lines per
/// product so that no burst fills the miss buffers.
struct Ahead<'a> {
    bytes: &'a [u8],
    at: usize,
    per_step: usize,
}

impl<'a> Ahead<'a> {
    fn new(bytes: &'a [u8]) -> Ahead<'a> {
        Ahead { bytes, at: 0, per_step: 0 }
    }

    /// Spreads what is left over `steps` calls of [`Ahead::step`].
    fn spread(&mut self, steps: usize) {
        self.per_step = (self.bytes.len() - self.at).div_ceil(steps.max(1)).next_multiple_of(64);
    }

    #[inline(always)]
    fn step(&mut self) {
        let end = (self.at + self.per_step).min(self.bytes.len());
        while self.at < end {
            // SAFETY: SSE is baseline on x86-64; a prefetch inside the slice never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(self.bytes.as_ptr().add(self.at).cast()) };
            self.at += 64;
        }
    }
}

/// Rows `r0..r1` of `w` in panels of [`PANEL`] rows.
#[target_feature(enable = "avx2,f16c")]
fn unpack(w: WeightView<'_>, r0: usize, r1: usize, panels: &mut Panels) {
    let (k, g) = (w.cols, group(w.ty));
    let n = (r1 - r0).div_ceil(PANEL);
    // Rows 4 KiB apart would all fall in one set of the L1 cache, and a tile load reads 16.
    panels.stride = k + 64;
    // Not cleared (that was 4% of a batched decode step), and never shrunk: every row up to
    // `r1` is written below, and the last panel's rows past it are never written out, whatever
    // they hold. A resize to each call's length zeroed the growth whenever a step's matrices
    // alternated between row lengths (SmolLM2: 576 and 1536).
    grow(&mut panels.bytes, n * PANEL * panels.stride + 64);
    panels.base = panels.bytes.as_ptr().align_offset(64);
    grow(&mut panels.scale, n * k / g * PANEL);
    grow(&mut panels.offset, n * k / g * PANEL);
    let per_panel = k / g * PANEL;
    let rb = w.row_bytes();
    if kbytes::by_panel(w.ty) {
        for p in 0..n {
            let (first, rows) = (r0 + p * PANEL, PANEL.min(r1 - r0 - p * PANEL));
            // The panel's bytes, a share before each group: a burst of the whole panel's
            // prefetches filled the miss buffers and stalled on them.
            let share = (rows * rb).div_ceil(k / g).next_multiple_of(64);
            let prefetch = |grp: usize| {
                let start = first * rb + grp * share;
                if start < (first + rows) * rb {
                    super::prefetch_ahead(w.bytes, start, share, (r1 - r0) * rb)
                }
            };
            let at = panels.base + p * PANEL * panels.stride;
            let (scale, offset) = (&mut panels.scale[p * per_panel..], &mut panels.offset[p * per_panel..]);
            // SAFETY: an AMX `Isa` implies AVX-512 F/BW/VL (the caller's guarantee).
            unsafe {
                kbytes::panel(w, first, rows, &mut panels.bytes[at..], panels.stride, scale, offset, prefetch)
            };
        }
        return;
    }
    for r in 0..r1 - r0 {
        let (p, lane) = (r / PANEL, r % PANEL);
        // The task's rows are one run of memory, read once per call: a decode step of a few
        // tokens waits on it (SmolLM2 Q4_1, 8 tokens: 429 -> 490 tokens/s).
        super::prefetch_ahead(w.bytes, (r0 + r) * rb, rb, (r1 - r0) * rb);
        let at = panels.base + r * panels.stride;
        let q = &mut panels.bytes[at..at + k];
        let (scale, offset) = (&mut panels.scale[p * per_panel..], &mut panels.offset[p * per_panel..]);
        kbytes::row(w, r0 + r, q, scale, offset, (PANEL, lane));
    }
}

/// `v` with at least `len` elements.
fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// Multiplies the task's panels with every token tile and writes their outputs.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
fn task(
    w: WeightView<'_>,
    r0: usize,
    r1: usize,
    panels: &Panels,
    x: &TiledX,
    n_tok: usize,
    out: OutPtr<'_>,
    ahead: &mut Ahead<'_>,
) {
    let depth = if x.paired { 2 * group(w.ty) } else { group(w.ty) };
    ahead.spread(x.tiles.len() * (r1 - r0).div_ceil(PANEL) * (w.cols / depth));
    // SAFETY: the caller of `run` checked that tiles are available.
    let _tiles = unsafe { Tiles::load(&config(depth)) };
    let mut sums = Box::new([Sums([[0; TOK]; 2 * ROWS]), Sums([[0; TOK]; 2 * ROWS])]);
    for (t, xt) in x.tiles.iter().enumerate() {
        for p in 0..(r1 - r0).div_ceil(PANEL) {
            let tokens = transpose(panel_tile(w, panels, p, xt, x.paired, &mut sums, ahead));
            let rows = PANEL.min(r1 - (r0 + p * PANEL));
            for (j, &token) in tokens.iter().enumerate().take(n_tok - t * TOK) {
                let at = (t * TOK + j) * w.rows + r0 + p * PANEL;
                let mut run = [0f32; PANEL];
                // SAFETY: 16 floats of room.
                unsafe { _mm512_storeu_ps(run.as_mut_ptr(), token) };
                // A whole panel's run has a constant length, which copies without a call.
                match rows {
                    PANEL => out.write_run(at, &run),
                    _ => out.write_run(at, &run[..rows]),
                }
            }
        }
    }
}

/// Rows of 16 as columns: `out[j]` lane `i` is `rows[i]` lane `j` (a panel's rows of token
/// sums as each token's run of rows), in registers. It replaced a scalar transpose through
/// memory: Q4_1 1536×576 on one thread, 128 tokens 1.05-1.10 -> 0.89-0.90 ms, 8 tokens
/// 0.159-0.164 -> 0.148-0.161 ms (three interleaved pairs).
#[target_feature(enable = "avx512f")]
pub(super) fn transpose(rows: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved by element, then by pairs of elements: `quads[4k + m]` holds,
    // in 128-bit lane L, element 4L + m of rows 4k..4k + 4.
    let mut pairs = [_mm512_setzero_ps(); 16];
    for i in (0..16).step_by(2) {
        pairs[i] = _mm512_unpacklo_ps(rows[i], rows[i + 1]);
        pairs[i + 1] = _mm512_unpackhi_ps(rows[i], rows[i + 1]);
    }
    let mut quads = [_mm512_setzero_ps(); 16];
    for k in (0..16).step_by(4) {
        for half in 0..2 {
            let (a, b) = (_mm512_castps_pd(pairs[k + half]), _mm512_castps_pd(pairs[k + half + 2]));
            quads[k + 2 * half] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
            quads[k + 2 * half + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        }
    }
    // Column 4L + m is lane L of quads m, 4 + m, 8 + m and 12 + m.
    let mut out = [_mm512_setzero_ps(); 16];
    for m in 0..4 {
        let (v0, v1, v2, v3) = (quads[m], quads[4 + m], quads[8 + m], quads[12 + m]);
        let (even, odd) =
            (_mm512_shuffle_f32x4::<0b10_00_10_00>(v0, v1), _mm512_shuffle_f32x4::<0b11_01_11_01>(v0, v1));
        let (even2, odd2) =
            (_mm512_shuffle_f32x4::<0b10_00_10_00>(v2, v3), _mm512_shuffle_f32x4::<0b11_01_11_01>(v2, v3));
        out[m] = _mm512_shuffle_f32x4::<0b10_00_10_00>(even, even2);
        out[8 + m] = _mm512_shuffle_f32x4::<0b11_01_11_01>(even, even2);
        out[4 + m] = _mm512_shuffle_f32x4::<0b10_00_10_00>(odd, odd2);
        out[12 + m] = _mm512_shuffle_f32x4::<0b11_01_11_01>(odd, odd2);
    }
    out
}

/// The high and low sums of one scale group of a panel into `sums` through one set of tiles:
/// the weights (`$weights`) against the activations' high bytes (tile 6, signed) with `$high`
/// into `$high_sums`, and their low bytes (tile 7, unsigned) with `$low` into `$low_sums`.
macro_rules! tile_product {
    ($high:literal, $low:literal, [$high_sums:literal, $low_sums:literal, $weights:literal], $a:expr, $stride:expr, $hi:expr, $lo:expr, $sums:expr) => {
        asm!(
            concat!("tileloadd ", $weights, ", [{a} + {stride}]"),
            "tileloadd tmm6, [{hi} + {line}]",
            "tileloadd tmm7, [{lo} + {line}]",
            concat!("tilezero ", $high_sums),
            concat!("tilezero ", $low_sums),
            concat!($high, " ", $high_sums, ", ", $weights, ", tmm6"),
            concat!($low, " ", $low_sums, ", ", $weights, ", tmm7"),
            concat!("tilestored [{sums} + {line}], ", $high_sums),
            concat!("tilestored [{sums} + {line} + 1024], ", $low_sums),
            a = in(reg) $a,
            stride = in(reg) $stride,
            hi = in(reg) $hi,
            lo = in(reg) $lo,
            line = in(reg) LINE,
            sums = in(reg) $sums,
            options(nostack),
        )
    };
}

/// The i32 sums of one tile product as the unit stores them: the high bytes' rows, then the
/// low bytes'.
#[repr(C, align(64))]
struct Sums([[i32; TOK]; 2 * ROWS]);

/// Panel `p` times token tile `xt`: `[row][token]`. The unit's products are issued one group
/// ahead of the epilogue, on the other set of tiles and into the other of the two `sums`
/// (which measured no faster than one after the other; see the module's notes). `paired`: the
/// tile's layout of [`pairs`], each product two groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
fn panel_tile(
    w: WeightView<'_>,
    panels: &Panels,
    p: usize,
    xt: &TokenTile,
    paired: bool,
    sums: &mut [Sums; 2],
    ahead: &mut Ahead<'_>,
) -> [__m512; PANEL] {
    let (k, g) = (w.cols, group(w.ty));
    let groups = k / g;
    let per_panel = groups * PANEL;
    let (scale, offset) = (&panels.scale[p * per_panel..], &panels.offset[p * per_panel..]);
    let rows = &panels.bytes[panels.base + p * PANEL * panels.stride..];
    assert!(scale.len() >= per_panel && offset.len() >= per_panel);
    assert!(rows.len() >= (PANEL - 1) * panels.stride + k);
    assert!(xt.hi.len() >= k / 4 * TOK && xt.lo.len() >= k / 4 * TOK && xt.d.len() >= k / QX * TOK);
    assert!(xt.sum.len() >= k / QX * TOK);
    assert!(!paired || (g == QX && groups.is_multiple_of(2)));
    let (signed, stride) = (signed(w.ty), panels.stride);
    // Bytes of each row per product: one group, or two when paired.
    let depth = if paired { 2 * g } else { g };
    let product = |at: usize, sums: &mut Sums| {
        // SAFETY: the weight tile reads 16 rows of `depth` bytes from element `at · depth`,
        // `stride` apart (inside `rows`, asserted above); tiles 6 and 7 read `depth / 4` lines
        // of 64 bytes from line `at · depth / 4` of the activations (`k / 4` lines, asserted);
        // the sums are stored to `sums`. The tiles were configured by `task`.
        unsafe {
            let a = rows.as_ptr().add(at * depth);
            let line = at * depth / 4 * TOK;
            let (hi, lo) = (xt.hi.as_ptr().add(line), xt.lo.as_ptr().add(line));
            let out = sums.0.as_mut_ptr();
            match (signed, at % 2) {
                (true, 0) => {
                    tile_product!("tdpbssd", "tdpbsud", ["tmm0", "tmm1", "tmm4"], a, stride, hi, lo, out)
                }
                (true, _) => {
                    tile_product!("tdpbssd", "tdpbsud", ["tmm2", "tmm3", "tmm5"], a, stride, hi, lo, out)
                }
                (false, 0) => {
                    tile_product!("tdpbusd", "tdpbuud", ["tmm0", "tmm1", "tmm4"], a, stride, hi, lo, out)
                }
                (false, _) => {
                    tile_product!("tdpbusd", "tdpbuud", ["tmm2", "tmm3", "tmm5"], a, stride, hi, lo, out)
                }
            }
        }
    };
    let products = k / depth;
    let mut acc = [_mm512_setzero_ps(); PANEL];
    product(0, &mut sums[0]);
    for at in 0..products {
        let (now, next) = sums.split_at_mut(1);
        let (now, next) = if at % 2 == 0 { (&now[0], &mut next[0]) } else { (&next[0], &mut now[0]) };
        ahead.step();
        if at + 1 < products {
            product(at + 1, next);
        }
        // SAFETY: product `at < k / depth` covers groups inside the lengths asserted above.
        unsafe {
            match paired {
                false => epilogue(now, xt, scale, offset, at, g, signed, &mut acc),
                true => epilogue_paired(now, xt, scale, offset, at, signed, &mut acc),
            }
        }
    }
    if paired {
        // Each token's even groups summed in lanes 0..8, its odd ones in 8..16.
        for acc in acc.iter_mut() {
            *acc = _mm512_add_ps(*acc, _mm512_shuffle_f32x4::<0b01_00_11_10>(*acc, *acc));
        }
    }
    acc
}

/// Adds group `grp`'s sums (`now`), scaled, to the rows' accumulators.
///
/// # Safety
/// Group `grp` must be inside the panel's scales and offsets and the tile's scales and sums.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn epilogue(
    now: &Sums,
    xt: &TokenTile,
    scale: &[f32],
    offset: &[f32],
    grp: usize,
    g: usize,
    signed: bool,
    acc: &mut [__m512; PANEL],
) {
    let g32 = grp * g / QX;
    // SAFETY: the caller's guarantee.
    unsafe {
        let d = _mm512_loadu_ps(xt.d.as_ptr().add(g32 * TOK));
        let s = _mm512_loadu_ps(xt.sum.as_ptr().add(g32 * TOK));
        let (scale, offset) = (scale.as_ptr().add(grp * PANEL), offset.as_ptr().add(grp * PANEL));
        macro_rules! apply {
            ($($r:literal)*) => {$(
                let dot = _mm512_add_epi32(
                    _mm512_slli_epi32::<8>(_mm512_load_si512(now.0[$r].as_ptr().cast())),
                    _mm512_load_si512(now.0[ROWS + $r].as_ptr().cast()),
                );
                let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(*scale.add($r)));
                acc[$r] = _mm512_fmadd_ps(scaled, d, acc[$r]);
                if !signed {
                    acc[$r] = _mm512_fmadd_ps(_mm512_set1_ps(*offset.add($r)), s, acc[$r]);
                }
            )*};
        }
        // Written out per row so the accumulators stay in registers.
        apply!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
}

/// [`epilogue`] of a paired product `pair`: groups `2 · pair` (columns 0..8) and
/// `2 · pair + 1` (columns 8..16), each row's two scales spread over their halves.
///
/// # Safety
/// As [`epilogue`], for both groups.
#[inline(always)]
unsafe fn epilogue_paired(
    now: &Sums,
    xt: &TokenTile,
    scale: &[f32],
    offset: &[f32],
    pair: usize,
    signed: bool,
    acc: &mut [__m512; PANEL],
) {
    let (even, odd) = (2 * pair * TOK, (2 * pair + 1) * TOK);
    let halves = |v: &[f32]| {
        // SAFETY: the caller's guarantee (both groups' 16 columns).
        unsafe { _mm512_mask_loadu_ps(_mm512_loadu_ps(v.as_ptr().add(even)), 0xFF00, v.as_ptr().add(odd)) }
    };
    let (d, s) = (halves(&xt.d), halves(&xt.sum));
    // SAFETY: the caller's guarantee (both groups' 16 rows).
    unsafe {
        let (even, odd) = (2 * pair * PANEL, (2 * pair + 1) * PANEL);
        let (scale_even, scale_odd) =
            (_mm512_loadu_ps(scale.as_ptr().add(even)), _mm512_loadu_ps(scale.as_ptr().add(odd)));
        let (offset_even, offset_odd) =
            (_mm512_loadu_ps(offset.as_ptr().add(even)), _mm512_loadu_ps(offset.as_ptr().add(odd)));
        // Lane j of row r's spread: the even group's entry r for j < 8, the odd one's after.
        let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16, 16);
        macro_rules! apply {
            ($($r:literal)*) => {$(
                let dot = _mm512_add_epi32(
                    _mm512_slli_epi32::<8>(_mm512_load_si512(now.0[$r].as_ptr().cast())),
                    _mm512_load_si512(now.0[ROWS + $r].as_ptr().cast()),
                );
                let at = _mm512_add_epi32(spread, _mm512_set1_epi32($r));
                let row_scale = _mm512_permutex2var_ps(scale_even, at, scale_odd);
                acc[$r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), row_scale), d, acc[$r]);
                if !signed {
                    let row_offset = _mm512_permutex2var_ps(offset_even, at, offset_odd);
                    acc[$r] = _mm512_fmadd_ps(row_offset, s, acc[$r]);
                }
            )*};
        }
        apply!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
}
