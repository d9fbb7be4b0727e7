//! Prompt attention by tiles: up to thirty-two query rows that read the same keys (the heads of
//! one KV head, for consecutive tokens of one sequence) walk those keys together, one row per
//! vector lane (two vectors of sixteen with AVX-512: each key element broadcast from memory
//! feeds two multiply-adds; sixteen rows a tile had SmolLM2's pp4096 attention 8% slower). Each key and value row is converted to f32 once per tile instead of once per
//! row, a key's scores for all the rows come out of broadcast multiply-adds with no horizontal
//! sums, and the online softmax runs on all the rows at once. A one-token decode step has too
//! few rows to fill the lanes and keeps the per-token kernels.

use super::attention::Attention;
use crate::cpu::kv::{F16Rows, F32Rows, KvFormat, KvLayer, KvRows, Q4Rows, Q8Rows};
use crate::cpu::simd::Simd;
use crate::cpu::simd::math::exp;

/// Query rows per tile.
pub(super) const TILE: usize = 32;
/// Keys per block of the online softmax: each block rescales the tile's outputs once (16 keys
/// had SmolLM2's pp4096 attention about 8% slower, pp128's 5% faster).
const BLOCK: usize = 32;
/// Keys scored at once (independent multiply-add chains per lane vector).
const KEYS: usize = 8;
/// Added to a hidden key's score, so that it never raises a row's running max.
const HIDDEN: f32 = -1e30;

/// One query row of a tile: its q (head_dim values), position, the first key its window
/// shows and its sink logit (gpt-oss).
#[derive(Copy, Clone)]
pub(super) struct TileRow<'a> {
    pub q: &'a [f32],
    pub pos: usize,
    pub lo: usize,
    pub sink: Option<f32>,
}

/// Per-thread working memory of a tile, kept between calls.
#[derive(Default)]
pub(super) struct TileScratch {
    /// q transposed: element `d` of every row, a lane each.
    qt: Vec<f32>,
    /// `KEYS` key rows, then `BLOCK` value rows, in f32.
    rows: Vec<f32>,
    /// A block's scores, then weights: key `j`'s for every row.
    p: Vec<f32>,
    /// The output transposed, as `qt`.
    ot: Vec<f32>,
}

/// The rows' attention over `kv` (one KV head's rows, position 0 first) into `outs`, a row
/// each.
#[inline(always)]
pub(super) fn tile<S: Simd>(
    s: S,
    a: &Attention,
    rows: &[TileRow<'_>],
    kv: KvLayer<'_>,
    scratch: &mut TileScratch,
    outs: &mut [&mut [f32]],
) {
    match kv.k {
        KvRows::F32(k) => with_v::<S, F32Rows>(s, a, rows, k, kv.v, scratch, outs),
        KvRows::F16(k) => with_v::<S, F16Rows>(s, a, rows, k, kv.v, scratch, outs),
        KvRows::Q8_0(k) => with_v::<S, Q8Rows>(s, a, rows, k, kv.v, scratch, outs),
        KvRows::Q4_0(k) => with_v::<S, Q4Rows>(s, a, rows, k, kv.v, scratch, outs),
    }
}

#[inline(always)]
fn with_v<S: Simd, K: KvFormat>(
    s: S,
    a: &Attention,
    rows: &[TileRow<'_>],
    keys: &[K::Unit],
    v: KvRows<'_>,
    scratch: &mut TileScratch,
    outs: &mut [&mut [f32]],
) {
    match v {
        KvRows::F32(v) => walk::<S, K, F32Rows>(s, a, rows, keys, v, scratch, outs),
        KvRows::F16(v) => walk::<S, K, F16Rows>(s, a, rows, keys, v, scratch, outs),
        KvRows::Q8_0(v) => walk::<S, K, Q8Rows>(s, a, rows, keys, v, scratch, outs),
        KvRows::Q4_0(v) => walk::<S, K, Q4Rows>(s, a, rows, keys, v, scratch, outs),
    }
}

/// Lane vectors per tile.
const fn lanes<S: Simd>() -> usize {
    TILE.div_ceil(S::N)
}

/// A value per lane of the tile, `TILE` of them padded to whole vectors.
struct Lanes<S: Simd>([S::F; TILE]);

impl<S: Simd> Lanes<S> {
    #[inline(always)]
    fn load(s: S, x: &[f32]) -> Self {
        let mut v = [s.zero(); TILE];
        for (i, v) in v.iter_mut().enumerate().take(lanes::<S>()) {
            *v = s.ld(&x[i * S::N..]);
        }
        Lanes(v)
    }
    #[inline(always)]
    fn splat(s: S, x: f32) -> Self {
        Lanes([s.splat(x); TILE])
    }
    #[inline(always)]
    fn store(&self, s: S, x: &mut [f32]) {
        for (i, v) in self.0.iter().enumerate().take(lanes::<S>()) {
            s.st(&mut x[i * S::N..], *v);
        }
    }
}

/// `f` of each row, padded with the last row's.
#[inline(always)]
fn per_lane<S: Simd>(s: S, rows: &[TileRow<'_>], f: impl Fn(&TileRow<'_>) -> f32) -> Lanes<S> {
    let x: [f32; TILE] = std::array::from_fn(|r| f(&rows[r.min(rows.len() - 1)]));
    Lanes::load(s, &x)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn walk<S: Simd, K: KvFormat, V: KvFormat>(
    s: S,
    a: &Attention,
    rows: &[TileRow<'_>],
    keys: &[K::Unit],
    values: &[V::Unit],
    sc: &mut TileScratch,
    outs: &mut [&mut [f32]],
) {
    const { assert!(TILE.is_multiple_of(S::N)) };
    let (dk, dv) = (a.head_dim, a.head_dim_v);
    let (ku, vu) = (K::units(dk), V::units(dv));
    // Padding lanes copy the last row (so their softmax stays finite) and are never written out.
    let row = |r: usize| &rows[r.min(rows.len() - 1)];
    sc.qt.clear();
    sc.qt.resize(dk * TILE, 0.0);
    for d in 0..dk {
        for r in 0..TILE {
            sc.qt[d * TILE + r] = row(r).q[d];
        }
    }
    sc.rows.resize((KEYS * dk).max(BLOCK * dv), 0.0);
    sc.p.resize(BLOCK * TILE, 0.0);
    sc.ot.clear();
    sc.ot.resize(dv * TILE, 0.0);
    let pos = per_lane::<S>(s, rows, |r| r.pos as f32);
    let lo = per_lane::<S>(s, rows, |r| r.lo as f32);
    let mut m = per_lane::<S>(s, rows, |r| r.sink.unwrap_or(f32::NEG_INFINITY));
    let mut l = per_lane::<S>(s, rows, |r| if r.sink.is_some() { 1.0 } else { 0.0 });
    let first = rows.iter().map(|r| r.lo).min().unwrap_or(0);
    let last = rows.iter().map(|r| r.pos).max().unwrap_or(0);
    // Keys every row sees need no mask.
    let (all_from, all_to) =
        (rows.iter().map(|r| r.lo).max().unwrap_or(0), rows.iter().map(|r| r.pos).min().unwrap_or(0));
    let mut j0 = first;
    while j0 <= last {
        let n = BLOCK.min(last + 1 - j0);
        let masked = j0 < all_from || j0 + n - 1 > all_to;
        for k0 in (0..n).step_by(KEYS) {
            let nk = KEYS.min(n - k0);
            for k in 0..nk {
                K::to_f32(s, &keys[(j0 + k0 + k) * ku..][..ku], &mut sc.rows[k * dk..(k + 1) * dk]);
            }
            let p = &mut sc.p[k0 * TILE..];
            if nk == KEYS {
                // The usual head sizes as constants: the keys' offsets become immediates.
                match dk {
                    64 => scores::<S, KEYS, 64>(s, a.scale, &sc.qt, &sc.rows, dk, p),
                    128 => scores::<S, KEYS, 128>(s, a.scale, &sc.qt, &sc.rows, dk, p),
                    _ => scores::<S, KEYS, 0>(s, a.scale, &sc.qt, &sc.rows, dk, p),
                }
            } else {
                for k in 0..nk {
                    scores::<S, 1, 0>(s, a.scale, &sc.qt, &sc.rows[k * dk..], dk, &mut p[k * TILE..]);
                }
            }
        }
        if masked {
            for k in 0..n {
                mask::<S>(s, (j0 + k) as f32, &pos, &lo, &mut sc.p[k * TILE..]);
            }
        }
        let corr = softmax_block::<S>(s, &mut sc.p, n, &mut m, &mut l);
        for k in 0..n {
            V::to_f32(s, &values[(j0 + k) * vu..][..vu], &mut sc.rows[k * dv..(k + 1) * dv]);
        }
        accumulate::<S>(s, &sc.p, &sc.rows, dv, n, &corr, &mut sc.ot);
        j0 += n;
    }
    let mut sums = [0f32; TILE];
    l.store(s, &mut sums);
    for (r, o) in outs.iter_mut().enumerate() {
        let inv = if sums[r] > 0.0 { 1.0 / sums[r] } else { 0.0 };
        for (d, o) in o.iter_mut().enumerate().take(dv) {
            *o = sc.ot[d * TILE + r] * inv;
        }
    }
}

/// `p[k]` (every row's score of key `k`) = `scale · q·key_k` for the `NK` keys in `kf`, of `dk`
/// elements (`DK` when it is not 0).
// Lane loops index the lanes of several vectors at once.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn scores<S: Simd, const NK: usize, const DK: usize>(
    s: S,
    scale: f32,
    qt: &[f32],
    kf: &[f32],
    dk: usize,
    p: &mut [f32],
) {
    assert!(DK == 0 || DK == dk);
    let dk = if DK > 0 { DK } else { dk };
    assert!(kf.len() >= NK * dk);
    let mut acc = [[s.zero(); TILE]; NK];
    for d in 0..dk {
        let q = Lanes::<S>::load(s, &qt[d * TILE..]);
        for (k, acc) in acc.iter_mut().enumerate() {
            // Unchecked: a bounds check per multiply-add was two of every three instructions
            // of this loop. SAFETY: k < NK and d < dk, inside the keys asserted above.
            let key = s.splat(unsafe { *kf.get_unchecked(k * dk + d) });
            for i in 0..lanes::<S>() {
                acc[i] = s.fma(q.0[i], key, acc[i]);
            }
        }
    }
    let vs = s.splat(scale);
    for (k, acc) in acc.iter().enumerate() {
        for i in 0..lanes::<S>() {
            s.st(&mut p[k * TILE + i * S::N..], s.mul(acc[i], vs));
        }
    }
}

/// 1 where `lo <= key <= pos`, else 0, per lane.
#[inline(always)]
fn visible<S: Simd>(s: S, key: f32, pos: S::F, lo: S::F) -> S::F {
    let (zero, one, key) = (s.zero(), s.splat(1.0), s.splat(key));
    // Positions are whole numbers: `pos - key + 1` is at least 1 when visible, at most 0 when not.
    let before = s.min(one, s.max(zero, s.add(s.sub(pos, key), one)));
    let after = s.min(one, s.max(zero, s.add(s.sub(key, lo), one)));
    s.mul(before, after)
}

/// Sends a hidden key's score to [`HIDDEN`].
#[inline(always)]
fn mask<S: Simd>(s: S, key: f32, pos: &Lanes<S>, lo: &Lanes<S>, p: &mut [f32]) {
    let mut x = Lanes::<S>::load(s, &p[..TILE]);
    for i in 0..lanes::<S>() {
        let hidden = s.sub(s.splat(1.0), visible(s, key, pos.0[i], lo.0[i]));
        x.0[i] = s.fma(hidden, s.splat(HIDDEN), x.0[i]);
    }
    x.store(s, p);
}

/// Turns the `n` keys' scores in `p` into weights against the rows' new running max, updates
/// the max `m` and the sum `l`, and returns the factor the output so far must be scaled by.
///
/// A key [`mask`] hid weighs exp(HIDDEN - m), which exp's clamped input makes about 1e-38 of a
/// visible key's weight. A row that has seen no visible key yet (its window starts later than
/// another row's) gives its hidden keys weight 1 against a max near HIDDEN; its first visible
/// key then scales that sum by about 1e-38 too.
#[inline(always)]
fn softmax_block<S: Simd>(s: S, p: &mut [f32], n: usize, m: &mut Lanes<S>, l: &mut Lanes<S>) -> Lanes<S> {
    let mut m_new = Lanes::<S>(m.0);
    for k in 0..n {
        let x = Lanes::<S>::load(s, &p[k * TILE..]);
        for i in 0..lanes::<S>() {
            m_new.0[i] = s.max(m_new.0[i], x.0[i]);
        }
    }
    let mut corr = Lanes::<S>::splat(s, 0.0);
    let mut sum = Lanes::<S>::splat(s, 0.0);
    for i in 0..lanes::<S>() {
        // exp clamps its input, so a running max of -inf gives a factor of about 1e-38 on
        // an output and a sum that are still zero.
        corr.0[i] = exp(s, s.sub(m.0[i], m_new.0[i]));
    }
    for k in 0..n {
        let mut x = Lanes::<S>::load(s, &p[k * TILE..]);
        for i in 0..lanes::<S>() {
            x.0[i] = exp(s, s.sub(x.0[i], m_new.0[i]));
            sum.0[i] = s.add(sum.0[i], x.0[i]);
        }
        x.store(s, &mut p[k * TILE..]);
    }
    for i in 0..lanes::<S>() {
        l.0[i] = s.fma(l.0[i], corr.0[i], sum.0[i]);
    }
    *m = m_new;
    corr
}

/// Output columns per pass of [`accumulate`]: as many accumulators as registers allow.
const fn dims<S: Simd>() -> usize {
    if lanes::<S>() == 1 { 16 } else { 8 }
}

/// `ot[d] = ot[d] · corr + Σ_k p[k] · value_k[d]` for every output column `d`.
#[inline(always)]
fn accumulate<S: Simd>(s: S, p: &[f32], vf: &[f32], dv: usize, n: usize, corr: &Lanes<S>, ot: &mut [f32]) {
    let mut d0 = 0;
    while d0 + dims::<S>() <= dv {
        columns::<S, 16>(s, p, vf, dv, n, corr, d0, dims::<S>(), ot);
        d0 += dims::<S>();
    }
    for d in d0..dv {
        columns::<S, 1>(s, p, vf, dv, n, corr, d, 1, ot);
    }
}

/// [`accumulate`] for the `nd` (at most `ND`) columns from `d0`.
// Lane loops index the lanes of several vectors at once.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn columns<S: Simd, const ND: usize>(
    s: S,
    p: &[f32],
    vf: &[f32],
    dv: usize,
    n: usize,
    corr: &Lanes<S>,
    d0: usize,
    nd: usize,
    ot: &mut [f32],
) {
    assert!(nd <= ND && d0 + nd <= dv && vf.len() >= n * dv);
    let mut acc = [[s.zero(); TILE]; ND];
    for (dd, acc) in acc.iter_mut().enumerate().take(nd) {
        for i in 0..lanes::<S>() {
            acc[i] = s.mul(s.ld(&ot[(d0 + dd) * TILE + i * S::N..]), corr.0[i]);
        }
    }
    for k in 0..n {
        let w = Lanes::<S>::load(s, &p[k * TILE..]);
        for (dd, acc) in acc.iter_mut().enumerate().take(nd) {
            // Unchecked, as in `scores`. SAFETY: k < n and d0 + dd < dv (asserted above).
            let x = s.splat(unsafe { *vf.get_unchecked(k * dv + d0 + dd) });
            for i in 0..lanes::<S>() {
                acc[i] = s.fma(w.0[i], x, acc[i]);
            }
        }
    }
    for (dd, acc) in acc.iter().enumerate().take(nd) {
        for i in 0..lanes::<S>() {
            s.st(&mut ot[(d0 + dd) * TILE + i * S::N..], acc[i]);
        }
    }
}
