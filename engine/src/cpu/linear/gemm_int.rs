//! Prefill on AVX-512 VNNI integer dot products, for Q4_K and Q6_K weights.
//!
//! The f32 tiled kernel spends one FMA per 16 multiply-adds. Here the weights of a panel are
//! unpacked to their i16 integers (no scales), the tokens' activations quantized to i16 per
//! 32 elements (the decode path's precision), and `vpdpwssd` takes 32 multiply-adds per
//! instruction: a pair of weights broadcast against a pair of activations of 16 tokens. The
//! i32 sums of each group of weights sharing a scale (32 elements for Q4_K, 16 for Q6_K) then
//! meet the floats: `acc += sum · scale_row · d_token`, plus `offset_row · Σx_token` for
//! Q4_K's minimums.
//!
//! Tiles are 6 rows × 32 tokens: 12 i32 and 12 f32 accumulators.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

use wllm_loaders::GgmlType;

use super::{OutPtr, WeightView};
use crate::cpu::exec::Exec;
use crate::cpu::quant::int::{Groupings, QX, QuantX, f16_at};

/// Rows per panel, tokens per block.
const MR: usize = 6;
const NT: usize = 32;

/// Whether `ty` weights take this kernel.
pub(super) fn reads(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K)
}

/// Weights sharing one scale.
fn group(ty: GgmlType) -> usize {
    if ty == GgmlType::Q6_K { 16 } else { 32 }
}

/// The tokens' activations in blocks of [`NT`] tokens: per pair of elements, the i16 pair of
/// each token as one i32 (`[k / 2][NT]`); per 32 elements each token's scale and `d · Σq`
/// (`[k / 32][NT]`). Tokens past the last are zero.
struct TokenBlock {
    pairs: Vec<i32>,
    d: Vec<f32>,
    sum: Vec<f32>,
}

pub(super) struct PackedX(Vec<TokenBlock>);

impl PackedX {
    /// `None` when an activation is not finite (the f32 kernel then carries it through).
    pub(super) fn new(exec: &dyn Exec, x: &[f32], n_tok: usize, k: usize) -> Option<PackedX> {
        if !k.is_multiple_of(QX) || !x[..n_tok * k].iter().all(|v| v.is_finite()) {
            return None;
        }
        let blocks: Vec<OnceLock<TokenBlock>> = (0..n_tok.div_ceil(NT)).map(|_| OnceLock::new()).collect();
        exec.run(blocks.len(), &|b| {
            let tokens = NT.min(n_tok - b * NT);
            let xq = QuantX::new(
                &x[b * NT * k..(b * NT + tokens) * k],
                tokens,
                k,
                Groupings { fine: true, wide: false },
            )
            .expect("finite, checked above");
            let mut block = TokenBlock {
                pairs: vec![0; k / 2 * NT],
                d: vec![0.0; k / QX * NT],
                sum: vec![0.0; k / QX * NT],
            };
            for j in 0..tokens {
                let xt = xq.token(j);
                for (g, q) in xt.q.iter().enumerate() {
                    for (e, pair) in q.chunks_exact(2).enumerate() {
                        let v = u32::from(pair[0] as u16) | (u32::from(pair[1] as u16) << 16);
                        block.pairs[(g * QX / 2 + e) * NT + j] = v as i32;
                    }
                    block.d[g * NT + j] = xt.d[g];
                    block.sum[g * NT + j] = xt.sum[g];
                }
            }
            let _ = blocks[b].set(block);
        });
        Some(PackedX(blocks.into_iter().map(|b| b.into_inner().expect("every block packed")).collect()))
    }
}

thread_local! {
    /// The unpacked weight panel of the task running on this thread: `MR` rows of i16, and
    /// per group a scale and an offset per row.
    static PANEL: RefCell<(Vec<i16>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// `Y = X Wᵀ` for the jobs whose weights [`reads`] accepts.
///
/// # Safety
/// The CPU must have AVX-512 F/BW/VL/DQ and VNNI.
pub(super) unsafe fn run(exec: &dyn Exec, jobs: &[(WeightView<'_>, OutPtr<'_>)], x: &PackedX, n_tok: usize) {
    let jobs: Vec<_> = jobs.iter().copied().filter(|(w, _)| reads(w.ty)).collect();
    let tasks = super::packed::panel_tasks(&jobs, MR);
    exec.run(tasks.len(), &|ti| {
        let (i, r0, r1) = tasks[ti];
        let (w, out) = jobs[i];
        super::packed::in_row_layout(w, r0, r1, |v, first| {
            let out = out.window(w.rows, first, v.rows);
            for p in (r0..r1).step_by(MR) {
                PANEL.with_borrow_mut(|(q, scale, offset)| {
                    // SAFETY: the caller's guarantee.
                    unsafe {
                        unpack(v, p - first, q, scale, offset);
                        panel(v, p - first, q, scale, offset, x, n_tok, out);
                    }
                });
            }
        });
    });
}

/// Rows `r0..r0 + MR` of `w` (zero past the last) as integers, scales and offsets, so that
/// weight `e` of row `r` is `q · scale[g][r] + offset[g][r]` with `g = e / group`. (Compiled
/// for AVX-512, whose byte-to-word widenings the loops vectorize into.)
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2")]
fn unpack(w: WeightView<'_>, r0: usize, q: &mut Vec<i16>, scale: &mut Vec<f32>, offset: &mut Vec<f32>) {
    let (k, g) = (w.cols, group(w.ty));
    q.clear();
    q.resize(MR * k, 0);
    scale.clear();
    scale.resize(k / g * MR, 0.0);
    offset.clear();
    offset.resize(k / g * MR, 0.0);
    let rb = w.row_bytes();
    for r in 0..MR.min(w.rows - r0) {
        let bytes = &w.bytes[(r0 + r) * rb..(r0 + r + 1) * rb];
        let q = &mut q[r * k..(r + 1) * k];
        if w.ty == GgmlType::Q4_K {
            for (i, b) in bytes.chunks_exact(144).enumerate() {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (scales, mins) =
                    crate::cpu::quant::kquants_scales_mins(b[4..16].try_into().expect("12 bytes"));
                for j in 0..8 {
                    scale[(8 * i + j) * MR + r] = d * f32::from((scales >> (8 * j)) as u8);
                    offset[(8 * i + j) * MR + r] = -dmin * f32::from((mins >> (8 * j)) as u8);
                }
                let out = &mut q[256 * i..256 * (i + 1)];
                for c in 0..4 {
                    let quants = load32(&b[16 + 32 * c..48 + 32 * c]);
                    store32(&mut out[64 * c..64 * c + 32], low(quants), 0);
                    store32(&mut out[64 * c + 32..64 * c + 64], high(quants), 0);
                }
            }
        } else {
            for (i, b) in bytes.chunks_exact(210).enumerate() {
                let d = f16_at(b, 208);
                for s in 0..16 {
                    scale[(16 * i + s) * MR + r] = d * f32::from(b[192 + s] as i8);
                }
                let out = &mut q[256 * i..256 * (i + 1)];
                for n in 0..2 {
                    let (ql_a, ql_b) =
                        (load32(&b[64 * n..64 * n + 32]), load32(&b[64 * n + 32..64 * n + 64]));
                    let qh = load32(&b[128 + 32 * n..160 + 32 * n]);
                    // SAFETY: AVX2 is enabled on this function.
                    let top = |shifted: __m256i| _mm256_and_si256(shifted, _mm256_set1_epi8(0x30));
                    let quarters = [
                        (low(ql_a), top(_mm256_slli_epi16::<4>(qh))),
                        (low(ql_b), top(_mm256_slli_epi16::<2>(qh))),
                        (high(ql_a), top(qh)),
                        (high(ql_b), top(_mm256_srli_epi16::<2>(qh))),
                    ];
                    for (g, (nibbles, bits)) in quarters.into_iter().enumerate() {
                        let at = 128 * n + 32 * g;
                        store32(&mut out[at..at + 32], _mm256_or_si256(nibbles, bits), 32);
                    }
                }
            }
        }
    }
}

/// 32 bytes.
#[inline(always)]
fn load32(b: &[u8]) -> __m256i {
    assert!(b.len() >= 32);
    // SAFETY: 32 bytes, checked above; AVX is enabled wherever this inlines.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// The low and the high nibbles of 32 bytes.
#[inline(always)]
fn low(b: __m256i) -> __m256i {
    // SAFETY: inlined into AVX2 code only.
    unsafe { _mm256_and_si256(b, _mm256_set1_epi8(0x0F)) }
}
#[inline(always)]
fn high(b: __m256i) -> __m256i {
    // SAFETY: as above.
    unsafe { _mm256_and_si256(_mm256_srli_epi16::<4>(b), _mm256_set1_epi8(0x0F)) }
}

/// 32 unsigned bytes less `bias` as i16.
#[inline(always)]
fn store32(out: &mut [i16], b: __m256i, bias: i16) {
    assert!(out.len() >= 32);
    // SAFETY: 32 i16 of room, checked above; inlined into AVX-512 BW code only.
    unsafe {
        let words = _mm512_sub_epi16(_mm512_cvtepu8_epi16(b), _mm512_set1_epi16(bias));
        _mm512_storeu_si512(out.as_mut_ptr().cast(), words);
    }
}

/// Multiplies the panel with every token block and writes its rows' outputs.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")]
fn panel(
    w: WeightView<'_>,
    r0: usize,
    q: &[i16],
    scale: &[f32],
    offset: &[f32],
    x: &PackedX,
    n_tok: usize,
    out: OutPtr<'_>,
) {
    let (k, g) = (w.cols, group(w.ty));
    let rows = MR.min(w.rows - r0);
    let with_offset = w.ty == GgmlType::Q4_K;
    assert!(q.len() >= MR * k && scale.len() >= k / g * MR && offset.len() >= k / g * MR);
    let pairs_per_row = k / 2;
    for (b, xb) in x.0.iter().enumerate() {
        assert!(xb.pairs.len() >= k / 2 * NT && xb.d.len() >= k / QX * NT && xb.sum.len() >= k / QX * NT);
        // SAFETY: the indices below stay inside the lengths asserted above: pair `p < k / 2`
        // of a row `r < MR`, token lanes `0..NT` of block `b`, group `grp < k / g`.
        let tile = unsafe {
            let wq = q.as_ptr().cast::<i32>();
            let (xp, xd, xs) = (xb.pairs.as_ptr(), xb.d.as_ptr(), xb.sum.as_ptr());
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            for grp in 0..k / g {
                let mut dots = [[_mm512_setzero_si512(); 2]; MR];
                for p in grp * g / 2..(grp + 1) * g / 2 {
                    let x0 = _mm512_loadu_si512(xp.add(p * NT).cast());
                    let x1 = _mm512_loadu_si512(xp.add(p * NT + 16).cast());
                    for (r, dots) in dots.iter_mut().enumerate() {
                        let wv = _mm512_set1_epi32(*wq.add(r * pairs_per_row + p));
                        dots[0] = _mm512_dpwssd_epi32(dots[0], wv, x0);
                        dots[1] = _mm512_dpwssd_epi32(dots[1], wv, x1);
                    }
                }
                let g32 = grp * g / QX;
                let d = [_mm512_loadu_ps(xd.add(g32 * NT)), _mm512_loadu_ps(xd.add(g32 * NT + 16))];
                let s = [_mm512_loadu_ps(xs.add(g32 * NT)), _mm512_loadu_ps(xs.add(g32 * NT + 16))];
                for r in 0..MR {
                    let sc = _mm512_set1_ps(*scale.get_unchecked(grp * MR + r));
                    let off = _mm512_set1_ps(*offset.get_unchecked(grp * MR + r));
                    for v in 0..2 {
                        let f = _mm512_mul_ps(_mm512_cvtepi32_ps(dots[r][v]), sc);
                        acc[r][v] = _mm512_fmadd_ps(f, d[v], acc[r][v]);
                        if with_offset {
                            acc[r][v] = _mm512_fmadd_ps(off, s[v], acc[r][v]);
                        }
                    }
                }
            }
            let mut tile = [[0f32; NT]; MR];
            for r in 0..MR {
                _mm512_storeu_ps(tile[r].as_mut_ptr(), acc[r][0]);
                _mm512_storeu_ps(tile[r].as_mut_ptr().add(16), acc[r][1]);
            }
            tile
        };
        let t0 = b * NT;
        for j in 0..NT.min(n_tok - t0) {
            for (r, row) in tile.iter().enumerate().take(rows) {
                out.write((t0 + j) * w.rows + r0 + r, row[j]);
            }
        }
    }
}
