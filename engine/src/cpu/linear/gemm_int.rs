//! Prefill on AVX-512 VNNI integer dot products, for the weight types `kbytes` unpacks.
//!
//! The f32 tiled kernel spends one FMA per 16 multiply-adds. Here the weights of a panel are
//! unpacked to their i16 integers (no scales), the tokens' activations quantized to i16 per
//! 32 elements (the decode path's precision), and `vpdpwssd` takes 32 multiply-adds per
//! instruction: a pair of weights broadcast against a pair of activations of 16 tokens. The
//! i32 sums of each group of weights sharing a scale (32 elements for Q4_K, 16 for Q6_K) then
//! meet the floats: `acc += sum · scale_row · d_token`, plus `offset_row · Σx_token` for
//! the unsigned types' zero points.
//!
//! Tiles are 6 rows × 32 tokens: 12 i32 and 12 f32 accumulators.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

use super::kbytes::{self, group, reads};
use super::{OutPtr, WeightView};
use crate::cpu::exec::Exec;
use crate::cpu::quant::int::{Groupings, QX, QuantX};
use crate::finite::all_finite;

/// Rows per panel, tokens per block.
const MR: usize = 6;
const NT: usize = 32;

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
        let blocks = token_blocks(exec, x, n_tok, k, NT, &|xq, tokens| {
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
            block
        })?;
        Some(PackedX(blocks))
    }
}

/// `x` (`n_tok` × `k`) quantized to i16 per 32 elements in blocks of `per` tokens, each block
/// laid out by `lay(quantized, tokens)`, in parallel. `None` when an activation is not finite
/// (the f32 kernel then carries it through).
pub(super) fn token_blocks<T: Send + Sync>(
    exec: &dyn Exec,
    x: &[f32],
    n_tok: usize,
    k: usize,
    per: usize,
    lay: &(dyn Fn(&QuantX, usize) -> T + Sync),
) -> Option<Vec<T>> {
    if !k.is_multiple_of(QX) || !all_finite(&x[..n_tok * k]) {
        return None;
    }
    let blocks: Vec<OnceLock<T>> = (0..n_tok.div_ceil(per)).map(|_| OnceLock::new()).collect();
    exec.run(blocks.len(), &|b| {
        let tokens = per.min(n_tok - b * per);
        let xq = QuantX::of_finite(
            &x[b * per * k..(b * per + tokens) * k],
            k,
            Groupings { fine: true, wide: false },
        );
        let _ = blocks[b].set(lay(&xq, tokens));
    });
    Some(blocks.into_iter().map(|b| b.into_inner().expect("every block laid out")).collect())
}

/// An unpacked weight panel: `MR` rows of i16 and per group a scale and an offset per row
/// (`bytes`: one row's bytes on the way).
#[derive(Default)]
struct Panel {
    q: Vec<i16>,
    scale: Vec<f32>,
    offset: Vec<f32>,
    bytes: Vec<u8>,
}

thread_local! {
    /// The panel of the task running on this thread.
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
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
                PANEL.with_borrow_mut(|pn| {
                    // SAFETY: the caller's guarantee.
                    unsafe {
                        unpack(v, p - first, pn);
                        panel(v, p - first, &pn.q, &pn.scale, &pn.offset, x, n_tok, out);
                    }
                });
            }
        });
    });
}

/// Rows `r0..r0 + MR` of `w` (zero past the last) as i16, scales and offsets, so that
/// weight `e` of row `r` is `q · scale[g][r] + offset[g][r]` with `g = e / group`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,f16c")]
fn unpack(w: WeightView<'_>, r0: usize, panel: &mut Panel) {
    let (k, g) = (w.cols, group(w.ty));
    let Panel { q, scale, offset, bytes } = panel;
    q.clear();
    q.resize(MR * k, 0);
    scale.clear();
    scale.resize(k / g * MR, 0.0);
    offset.clear();
    offset.resize(k / g * MR, 0.0);
    bytes.resize(k, 0);
    for r in 0..MR.min(w.rows - r0) {
        kbytes::row(w, r0 + r, bytes, scale, offset, (MR, r));
        for (words, b) in q[r * k..(r + 1) * k].chunks_exact_mut(32).zip(bytes.chunks_exact(32)) {
            // SAFETY: 32 bytes in, 32 i16 of room out; AVX-512 BW is enabled on this function.
            unsafe {
                let b = _mm256_loadu_si256(b.as_ptr().cast());
                _mm512_storeu_si512(words.as_mut_ptr().cast(), _mm512_cvtepi8_epi16(b));
            }
        }
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
    let with_offset = !kbytes::signed(w.ty);
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
