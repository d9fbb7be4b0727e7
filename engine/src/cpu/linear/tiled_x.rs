//! The activations of an AMX GEMM call, quantized straight into the tile unit's layout.
//!
//! Each token is quantized to i16 per 32 elements, the decode path's precision (the very
//! integers of `QuantX`), and each i16 is split into a signed high and an unsigned low byte
//! (see `gemm_amx`). The unit's right operand wants, per 4 elements of the shared dimension,
//! the 16 tokens' 4 bytes side by side; a task quantizes two blocks (64 elements) of a tile's
//! tokens, each token's 16 words of high bytes as one register, and transposes the 16
//! registers into 16 lines. Scattering each block's words to its lines instead, eight
//! scattered stores per block and token, had taken 4% of a batched decode step.

use std::arch::x86_64::*;

use super::WeightView;
use super::gemm_amx::transpose;
use super::kbytes::{group, reads};
use super::out::OutPtr;
use crate::cpu::exec::Exec;
use crate::cpu::quant::int::{QX, block_i16, i16_step};
use crate::finite::all_finite;

/// Tokens per tile.
pub(super) const TOK: usize = 16;
/// Lines of a tile that two blocks fill (64 elements, 4 per line).
const LINES: usize = 2 * QX / 4;

/// 16 tokens' activations: per 4 elements, each token's 4 high bytes as one word
/// (`hi[k / 4][TOK]`, the tile unit's layout for the right operand) and the same of the low
/// bytes; per 32 elements each token's scale and `d · Σq` (`[k / 32][TOK]`). Tokens past the
/// last are zero.
pub(super) struct TokenTile {
    pub(super) hi: Vec<u32>,
    pub(super) lo: Vec<u32>,
    pub(super) d: Vec<f32>,
    pub(super) sum: Vec<f32>,
}

pub(super) struct TiledX {
    pub(super) tiles: Vec<TokenTile>,
    /// Whether two scale groups share each product (see [`pairs`]): odd groups' tokens then
    /// sit in columns 8..16 (their words, scales and sums), even groups' in 0..8.
    pub(super) paired: bool,
}

/// Whether a call of `n_tok` tokens over rows of `k` multiplies two scale groups at once.
/// Up to 8 tokens fill half a tile's columns, and a group of 32 bytes half its depth, so one
/// product of 64 bytes takes group `2p` for the tokens in columns 0..8 and group `2p + 1` for
/// copies of them in columns 8..16 (each copy zero in the other group's half of the depth):
/// half the products, sum tiles and epilogue rows of one group at a time.
pub(super) fn pairs(jobs: &[(WeightView<'_>, OutPtr<'_>)], n_tok: usize, k: usize) -> bool {
    n_tok <= TOK / 2
        && k.is_multiple_of(2 * QX)
        && jobs.iter().filter(|(w, _)| reads(w.ty)).all(|(w, _)| group(w.ty) == QX)
}

impl TokenTile {
    fn zeroed(k: usize) -> TokenTile {
        TokenTile {
            hi: vec![0; k / 4 * TOK],
            lo: vec![0; k / 4 * TOK],
            d: vec![0.0; k / QX * TOK],
            sum: vec![0.0; k / QX * TOK],
        }
    }
}

/// Where the tasks of [`TiledX::new`] write one [`TokenTile`].
#[derive(Clone, Copy)]
struct TilePtrs {
    hi: *mut u32,
    lo: *mut u32,
    d: *mut f32,
    sum: *mut f32,
}

// SAFETY: the pointers are only written through, each pair of blocks of a tile by one task
// (see `TiledX::new`).
unsafe impl Send for TilePtrs {}
unsafe impl Sync for TilePtrs {}

/// Tasks that quantize a call's tokens: a few per thread, so that a decode step's single
/// tile of 8 tokens is not one thread's work while the others wait.
const QUANTIZE_TASKS_PER_THREAD: usize = 2;

impl TiledX {
    /// `None` when an activation is not finite (the f32 kernel then carries it through).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW and VL.
    pub(super) unsafe fn new(
        exec: &dyn Exec,
        x: &[f32],
        n_tok: usize,
        k: usize,
        paired: bool,
    ) -> Option<TiledX> {
        let paired = paired && n_tok <= TOK / 2 && k.is_multiple_of(2 * QX);
        if !k.is_multiple_of(QX) || !all_finite(&x[..n_tok * k]) {
            return None;
        }
        let mut tiles: Vec<TokenTile> = (0..n_tok.div_ceil(TOK)).map(|_| TokenTile::zeroed(k)).collect();
        let ptrs: Vec<TilePtrs> = tiles
            .iter_mut()
            .map(|t| TilePtrs {
                hi: t.hi.as_mut_ptr(),
                lo: t.lo.as_mut_ptr(),
                d: t.d.as_mut_ptr(),
                sum: t.sum.as_mut_ptr(),
            })
            .collect();
        let pairs_per_tile = (k / QX).div_ceil(2);
        let units = tiles.len() * pairs_per_tile;
        let per_task = units.div_ceil(exec.threads() * QUANTIZE_TASKS_PER_THREAD).max(1);
        exec.run(units.div_ceil(per_task), &|task| {
            for unit in task * per_task..((task + 1) * per_task).min(units) {
                let (tile, p) = (unit / pairs_per_tile, unit % pairs_per_tile);
                let tokens = &x[tile * TOK * k..(tile * TOK + TOK).min(n_tok) * k];
                // SAFETY: unit (tile, p) is this task's alone, and its lines, scales and sums
                // are inside the tile (see `pair_of_blocks`); the caller's guarantee for
                // AVX-512.
                unsafe { pair_of_blocks(tokens, k, p, ptrs[tile], paired) };
            }
        });
        Some(TiledX { tiles, paired })
    }
}

/// Blocks `2p` and `2p + 1` (where `k` has it) of a tile's `tokens` (finite, up to [`TOK`]
/// rows of `k`), quantized and split into the tile's lines `16p..16p + 16`, scales and sums.
///
/// # Safety
/// `at` must point at a tile of `k` elements that no other thread writes blocks `2p`,
/// `2p + 1` of; with `paired`, `tokens` must be at most 8 rows and `k` whole pairs of blocks.
/// The CPU must have AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn pair_of_blocks(tokens: &[f32], k: usize, p: usize, at: TilePtrs, paired: bool) {
    let blocks = (2 * p..2 * p + 2).filter(|&b| b < k / QX).count();
    let (mut high, mut low) = ([_mm512_setzero_si512(); TOK], [_mm512_setzero_si512(); TOK]);
    for (j, xt) in tokens.chunks_exact(k).enumerate() {
        for half in 0..blocks {
            let b = 2 * p + half;
            let xb: &[f32; QX] = xt[b * QX..(b + 1) * QX].try_into().expect("32 floats");
            let (d, inv) = i16_step(amax(xb));
            // SAFETY: the caller's guarantee for AVX-512.
            let (words, sum) = unsafe { block_i16(xb, inv) };
            // A paired call's odd blocks are copies of the tokens in columns 8..16.
            let col = if paired && half == 1 { j + TOK / 2 } else { j };
            let (h, l) = (_mm512_cvtepi16_epi8(_mm512_srai_epi16::<8>(words)), _mm512_cvtepi16_epi8(words));
            (high[col], low[col]) = match half {
                0 => (_mm512_inserti64x4::<0>(high[col], h), _mm512_inserti64x4::<0>(low[col], l)),
                _ => (_mm512_inserti64x4::<1>(high[col], h), _mm512_inserti64x4::<1>(low[col], l)),
            };
            // SAFETY: block b < k / 32 and column col < 16: inside the tile's k / 32 · 16
            // scales and sums (the caller's guarantee).
            unsafe {
                *at.d.add(b * TOK + col) = d;
                *at.sum.add(b * TOK + col) = d * sum as f32;
            }
        }
    }
    let (high, low) = (lines(high), lines(low));
    for c in 0..blocks * LINES / 2 {
        let line = (p * LINES + c) * TOK;
        // SAFETY: line p · 16 + c is inside the block pair's lines, within the tile's k / 4.
        unsafe {
            _mm512_storeu_si512(at.hi.add(line).cast(), high[c]);
            _mm512_storeu_si512(at.lo.add(line).cast(), low[c]);
        }
    }
}

/// The largest magnitude of a block.
#[target_feature(enable = "avx512f")]
fn amax(xb: &[f32; QX]) -> f32 {
    // SAFETY: 32 floats.
    let (first, second) = unsafe { (_mm512_loadu_ps(xb.as_ptr()), _mm512_loadu_ps(xb.as_ptr().add(16))) };
    _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(first), _mm512_abs_ps(second)))
}

/// Token rows of 16 words as the tile's 16 lines of 16 tokens.
#[target_feature(enable = "avx512f")]
fn lines(rows: [__m512i; TOK]) -> [__m512i; TOK] {
    let mut floats = [_mm512_setzero_ps(); TOK];
    for (f, r) in floats.iter_mut().zip(rows) {
        *f = _mm512_castsi512_ps(r);
    }
    let mut out = [_mm512_setzero_si512(); TOK];
    for (o, f) in out.iter_mut().zip(transpose(floats)) {
        *o = _mm512_castps_si512(f);
    }
    out
}
