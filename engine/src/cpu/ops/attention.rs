//! Causal attention of a batch of query rows over a layer's KV cache, optionally limited to a
//! sliding window, with grouped KV heads. Each (token, head) row walks its keys in blocks of
//! 64 with an online softmax: block scores, then the running max, sum and output are rescaled
//! when the max grows, so memory stays one block of scores whatever the context length. Two to
//! eight query heads sharing a KV head walk its keys together (`group`), each block of a
//! quantized cache converted to f32 once for all of them.
//! Prompt runs (two or more tokens of one sequence) go by tiles of query rows instead
//! ([`attention_tile`](super::attention_tile)).

use super::attention_tile::{TILE, TileRow, TileScratch, tile};
use super::check_len;
use crate::cpu::Isa;
use crate::cpu::exec::{Exec, Rayon};
pub use crate::cpu::kv::{KvLayer, KvRows};
use crate::cpu::linear::OutPtr;
use crate::cpu::simd::math::exp;
use crate::cpu::simd::{Scalar, Simd, dispatch, scale};
use crate::error::{EngineError, Result};

/// Shapes and masking of one attention call.
#[derive(Copy, Clone, Debug)]
pub struct Attention {
    pub n_head: usize,
    pub n_kv: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Positions per KV head in the cache.
    pub n_ctx: usize,
    /// Multiplier on q·k.
    pub scale: f32,
    /// Keys older than this many positions are hidden; 0 = no window.
    pub window: usize,
    /// Position of the first query row.
    pub pos0: usize,
}

const BLOCK: usize = 64;

/// `out` (`n_tok` × `n_head·head_dim_v`) = softmax(q kᵀ · scale + mask) v for the `n_tok`
/// query rows of `q` (`n_tok` × `n_head·head_dim`), query `t` at position `pos0 + t` seeing
/// keys up to its own position; `sinks`: one logit per head that joins each softmax's
/// denominator with no value (gpt-oss).
pub fn attention(
    isa: Isa,
    a: &Attention,
    q: &[f32],
    kv: KvLayer<'_>,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    let n_tok = q.len() / (a.n_head * a.head_dim).max(1);
    let positions: Vec<[u32; 2]> = (0..n_tok).map(|t| [(a.pos0 + t) as u32, 0]).collect();
    attention_at(&Rayon, isa, a, q, &positions, kv, sinks, out)
}

/// Attention of query rows that each carry (position in its sequence, cache row of the
/// sequence's position 0), so one call serves tokens of many sequences; `a.pos0` is unused.
/// `sinks` (one logit per head, gpt-oss) join each row's softmax denominator.
#[allow(clippy::too_many_arguments)]
pub fn attention_at(
    exec: &dyn Exec,
    isa: Isa,
    a: &Attention,
    q: &[f32],
    positions: &[[u32; 2]],
    kv: KvLayer<'_>,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    if a.n_head == 0
        || a.n_kv == 0
        || !a.n_head.is_multiple_of(a.n_kv)
        || a.head_dim == 0
        || a.head_dim_v == 0
    {
        return Err(EngineError::InvalidArgument(format!(
            "attention: {} heads over {} kv heads of {}/{}",
            a.n_head, a.n_kv, a.head_dim, a.head_dim_v
        )));
    }
    let q_row = a.n_head * a.head_dim;
    if !q.len().is_multiple_of(q_row) {
        return Err(EngineError::InvalidArgument(format!(
            "attention: {} q values are not rows of {q_row}",
            q.len()
        )));
    }
    let n_tok = q.len() / q_row;
    check_len("attention output", out.len(), n_tok * a.n_head * a.head_dim_v)?;
    check_len("attention positions", positions.len(), n_tok)?;
    if let Some(sinks) = sinks {
        check_len("attention sinks", sinks.len(), a.n_head)?;
    }
    if let Some(&[pos, row0]) = positions.iter().find(|&&[p, r]| (p + r) as usize >= a.n_ctx) {
        return Err(EngineError::ContextOverflow { n_tokens: (pos + row0) as usize + 1, n_ctx: a.n_ctx });
    }
    for (side, rows, dim) in [("k", kv.k, a.head_dim), ("v", kv.v, a.head_dim_v)] {
        rows.ty().check_dim(dim as u32)?;
        check_len(&format!("attention {side} cache rows"), rows.n_rows(dim), a.n_kv * a.n_ctx)?;
    }
    let group = a.n_head / a.n_kv;
    let out = OutPtr::new(out);
    let tasks = plan(a, positions, grouped(group));
    exec.run(tasks.len(), &|i| match tasks[i] {
        Task::Tile { g, t0, r0, n } => {
            let (rows, mut outs): (Vec<TileRow<'_>>, Vec<&mut [f32]>) = (r0..r0 + n)
                .map(|r| {
                    let (t, h) = (t0 + r / group, g * group + r % group);
                    let pos = positions[t][0] as usize;
                    let row = TileRow {
                        q: &q[t * q_row + h * a.head_dim..][..a.head_dim],
                        pos,
                        lo: first_visible(a, pos),
                        sink: sinks.map(|s| s[h]),
                    };
                    // SAFETY: output row (t, h) is this task's alone.
                    (row, unsafe { out.slice((t * a.n_head + h) * a.head_dim_v, a.head_dim_v) })
                })
                .unzip();
            let first = g * a.n_ctx + positions[t0][1] as usize;
            let head = KvLayer { k: kv.k.from_row(first, a.head_dim), v: kv.v.from_row(first, a.head_dim_v) };
            TILE_SCRATCH
                .with_borrow_mut(|scratch| dispatch!(isa, |s| tile(s, a, &rows, head, scratch, &mut outs)));
        }
        Task::Group { t, g } => {
            let [pos, row0] = positions[t].map(|v| v as usize);
            let first = g * a.n_ctx + row0;
            let head = KvLayer { k: kv.k.from_row(first, a.head_dim), v: kv.v.from_row(first, a.head_dim_v) };
            let heads = g * group..(g + 1) * group;
            let qs = &q[t * q_row + heads.start * a.head_dim..][..group * a.head_dim];
            // SAFETY: the group's output rows are this task's alone.
            let o = unsafe { out.slice((t * a.n_head + heads.start) * a.head_dim_v, group * a.head_dim_v) };
            let sinks = sinks.map(|s| &s[heads]);
            dispatch!(isa, |s| run_group(s, a, qs, head, pos, sinks, o))
        }
        Task::Row { t, h } => {
            // SAFETY: output row (t, h) is this task's alone.
            let o = unsafe { out.slice((t * a.n_head + h) * a.head_dim_v, a.head_dim_v) };
            let g = h / group;
            let qh = &q[t * q_row + h * a.head_dim..][..a.head_dim];
            let [pos, row0] = positions[t].map(|v| v as usize);
            let first = g * a.n_ctx + row0;
            let head = KvLayer { k: kv.k.from_row(first, a.head_dim), v: kv.v.from_row(first, a.head_dim_v) };
            let sink = sinks.map(|s| s[h]);
            dispatch!(isa, |s| row(s, a, qh, head, pos, sink, o))
        }
    });
    Ok(())
}

thread_local! {
    static TILE_SCRATCH: std::cell::RefCell<TileScratch> = std::cell::RefCell::default();
}

/// One task of an attention call.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Task {
    /// Rows `r0..r0 + n` of the tokens from `t0` on (consecutive tokens of one sequence) for
    /// KV head `g`: row `r` is token `t0 + r / group`, query head `g · group + r % group`.
    Tile { g: usize, t0: usize, r0: usize, n: usize },
    /// Token `t`'s query heads of KV head `g`, walked together.
    Group { t: usize, g: usize },
    /// Token `t`, query head `h`.
    Row { t: usize, h: usize },
}

/// The tasks of an attention call: tiles for runs of at least two tokens of one sequence
/// that fill half a tile or more (prompt chunks), per-token tasks for the rest (decode steps,
/// where each sequence has one token). `WLLM_CPU_ATTENTION_TILES=0` turns tiles off.
fn plan(a: &Attention, positions: &[[u32; 2]], grouped: bool) -> Vec<Task> {
    let group = a.n_head / a.n_kv;
    let mut tasks = Vec::new();
    let mut t0 = 0;
    while t0 < positions.len() {
        let row0 = positions[t0][1];
        let end = t0 + positions[t0..].iter().take_while(|p| p[1] == row0).count();
        let rows = (end - t0) * group;
        if tiles_enabled() && end - t0 >= 2 && rows >= TILE / 2 {
            for g in 0..a.n_kv {
                tasks.extend((0..rows).step_by(TILE).map(|r0| Task::Tile {
                    g,
                    t0,
                    r0,
                    n: TILE.min(rows - r0),
                }));
            }
        } else if grouped {
            tasks.extend((t0..end).flat_map(|t| (0..a.n_kv).map(move |g| Task::Group { t, g })));
        } else {
            tasks.extend((t0..end).flat_map(|t| (0..a.n_head).map(move |h| Task::Row { t, h })));
        }
        t0 = end;
    }
    tasks
}

fn tiles_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("WLLM_CPU_ATTENTION_TILES").map_or(true, |v| v.trim() != "0"))
}

/// The first key a query at `pos` sees.
fn first_visible(a: &Attention, pos: usize) -> usize {
    if a.window > 0 && pos + 1 > a.window { pos + 1 - a.window } else { 0 }
}

/// One (token, head) row. A sink starts the running softmax as a key of score `sink` whose
/// value is zero: it adds `exp(sink - max)` to the denominator and nothing to the output.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn row<S: Simd>(
    s: S,
    a: &Attention,
    q: &[f32],
    kv: KvLayer<'_>,
    pos: usize,
    sink: Option<f32>,
    out: &mut [f32],
) {
    let lo = first_visible(a, pos);
    let mut sc = [0f32; BLOCK];
    let (mut m, mut l) = match sink {
        Some(sink) => (sink, 1f32),
        None => (f32::NEG_INFINITY, 0f32),
    };
    out.fill(0.0);
    let mut j0 = lo;
    while j0 <= pos {
        let n = BLOCK.min(pos + 1 - j0);
        kv.k.scores(s, q, j0, a.scale, &mut sc[..n]);
        let m_new = sc[..n].iter().copied().fold(m, f32::max);
        // The first block finds m = -inf and nothing to rescale.
        let corr = if m == f32::NEG_INFINITY { 0.0 } else { (m - m_new).exp() };
        exp_shifted(s, &mut sc[..n], m_new);
        l = l * corr + sc[..n].iter().sum::<f32>();
        if corr != 1.0 {
            scale(s, corr, out);
        }
        kv.v.accumulate(s, &sc[..n], j0, out);
        m = m_new;
        j0 += n;
    }
    if l > 0.0 {
        scale(s, 1.0 / l, out);
    }
}

/// Whether the query heads of a KV head walk its keys together ([`group`]): with 2 to 8 of
/// them. f32 and f16 caches are read in place, any other (quantized, or mixed) by converting
/// each block of rows to f32 first.
fn grouped(group: usize) -> bool {
    (2..=8).contains(&group)
}

/// Plain cache elements, read a vector at a time.
trait Plain: Copy + 'static {
    /// # Safety
    /// `p` must be valid for reading `S::N` elements.
    unsafe fn load<S: Simd>(s: S, p: *const Self) -> S::F;
    fn one<S: Simd>(s: S, v: Self) -> f32;
}

impl Plain for f32 {
    #[inline(always)]
    unsafe fn load<S: Simd>(s: S, p: *const f32) -> S::F {
        // SAFETY: the caller's guarantee.
        unsafe { s.load(p) }
    }
    #[inline(always)]
    fn one<S: Simd>(_s: S, v: f32) -> f32 {
        v
    }
}

impl Plain for u16 {
    #[inline(always)]
    unsafe fn load<S: Simd>(s: S, p: *const u16) -> S::F {
        // SAFETY: the caller's guarantee.
        unsafe { s.load_f16(p) }
    }
    #[inline(always)]
    fn one<S: Simd>(s: S, v: u16) -> f32 {
        s.f16(v)
    }
}

/// Where [`group`] gets each block of key and value rows: `n` rows from `j0` on, back to
/// back.
trait GroupRows {
    type K: Plain;
    type V: Plain;
    fn block<S: Simd>(&mut self, s: S, j0: usize, n: usize) -> (&[Self::K], &[Self::V]);
}

/// A cache of plain elements, read in place.
struct InPlace<'a, K, V> {
    keys: &'a [K],
    values: &'a [V],
    dk: usize,
    dv: usize,
}

impl<K: Plain, V: Plain> GroupRows for InPlace<'_, K, V> {
    type K = K;
    type V = V;
    #[inline(always)]
    fn block<S: Simd>(&mut self, _s: S, j0: usize, n: usize) -> (&[K], &[V]) {
        (&self.keys[j0 * self.dk..(j0 + n) * self.dk], &self.values[j0 * self.dv..(j0 + n) * self.dv])
    }
}

/// Any cache, each block converted to f32 once for all the group's heads (a quantized row
/// is decoded once instead of once per head).
struct Converted<'a> {
    kv: KvLayer<'a>,
    dk: usize,
    dv: usize,
    scratch: &'a mut GroupScratch,
}

/// Per-thread f32 copies of a block of key and value rows, kept between calls.
#[derive(Default)]
struct GroupScratch {
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl GroupRows for Converted<'_> {
    type K = f32;
    type V = f32;
    #[inline(always)]
    fn block<S: Simd>(&mut self, s: S, j0: usize, n: usize) -> (&[f32], &[f32]) {
        let (keys, values) = (&mut self.scratch.keys, &mut self.scratch.values);
        keys.resize(n * self.dk, 0.0);
        values.resize(n * self.dv, 0.0);
        self.kv.k.rows_to_f32(s, j0, self.dk, keys);
        self.kv.v.rows_to_f32(s, j0, self.dv, values);
        (keys, values)
    }
}

thread_local! {
    static GROUP_SCRATCH: std::cell::RefCell<GroupScratch> = std::cell::RefCell::default();
}

/// [`group`] for the cache's types and `out.len() / head_dim_v` heads (2..=8).
#[inline(always)]
fn run_group<S: Simd>(
    s: S,
    a: &Attention,
    q: &[f32],
    kv: KvLayer<'_>,
    pos: usize,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    macro_rules! go {
        ($rows:expr) => {{
            let rows = &mut $rows;
            match out.len() / a.head_dim_v {
                2 => group::<S, _, 2>(s, a, q, rows, pos, sinks, out),
                3 => group::<S, _, 3>(s, a, q, rows, pos, sinks, out),
                4 => group::<S, _, 4>(s, a, q, rows, pos, sinks, out),
                5 => group::<S, _, 5>(s, a, q, rows, pos, sinks, out),
                6 => group::<S, _, 6>(s, a, q, rows, pos, sinks, out),
                7 => group::<S, _, 7>(s, a, q, rows, pos, sinks, out),
                _ => group::<S, _, 8>(s, a, q, rows, pos, sinks, out),
            }
        }};
    }
    let (dk, dv) = (a.head_dim, a.head_dim_v);
    match (kv.k, kv.v) {
        (KvRows::F16(keys), KvRows::F16(values)) => go!(InPlace { keys, values, dk, dv }),
        (KvRows::F32(keys), KvRows::F32(values)) => go!(InPlace { keys, values, dk, dv }),
        _ => GROUP_SCRATCH.with_borrow_mut(|scratch| go!(Converted { kv, dk, dv, scratch })),
    }
}

/// `H` query heads of one KV head at one position (`q`: their rows back to back, `out` likewise),
/// as `H` calls of [`row`] would compute them, but each key and value row is loaded (and
/// converted) once for all `H`, and a block's value sums stay in registers: per vector of a
/// value row, `H` multiply-adds instead of `H` loads, multiply-adds and stores.
// Indexed loops: each walks the scores by key and head at once.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
fn group<S: Simd, R: GroupRows, const H: usize>(
    s: S,
    a: &Attention,
    q: &[f32],
    rows: &mut R,
    pos: usize,
    sinks: Option<&[f32]>,
    out: &mut [f32],
) {
    let (dk, dv) = (a.head_dim, a.head_dim_v);
    let qs: [&[f32]; H] = std::array::from_fn(|h| &q[h * dk..(h + 1) * dk]);
    let lo = first_visible(a, pos);
    let mut sc = [[0f32; BLOCK]; H];
    let mut m = [f32::NEG_INFINITY; H];
    let mut l = [0f32; H];
    if let Some(sinks) = sinks {
        for h in 0..H {
            (m[h], l[h]) = (sinks[h], 1.0);
        }
    }
    out.fill(0.0);
    let mut j0 = lo;
    while j0 <= pos {
        let n = BLOCK.min(pos + 1 - j0);
        let (keys, values) = rows.block(s, j0, n);
        for j in 0..n {
            let key = &keys[j * dk..][..dk];
            let mut acc = [s.zero(); H];
            let mut i = 0;
            while i + S::N <= dk {
                // SAFETY: i + N <= dk = key.len().
                let kx = unsafe { R::K::load(s, key.as_ptr().add(i)) };
                for h in 0..H {
                    acc[h] = s.fma(s.ld(&qs[h][i..]), kx, acc[h]);
                }
                i += S::N;
            }
            for h in 0..H {
                let tail: f32 = (i..dk).map(|e| qs[h][e] * R::K::one(s, key[e])).sum();
                sc[h][j] = (s.sum(acc[h]) + tail) * a.scale;
            }
        }
        for h in 0..H {
            let m_new = sc[h][..n].iter().copied().fold(m[h], f32::max);
            let corr = if m[h] == f32::NEG_INFINITY { 0.0 } else { (m[h] - m_new).exp() };
            exp_shifted(s, &mut sc[h][..n], m_new);
            l[h] = l[h] * corr + sc[h][..n].iter().sum::<f32>();
            if corr != 1.0 {
                scale(s, corr, &mut out[h * dv..(h + 1) * dv]);
            }
            m[h] = m_new;
        }
        let mut i = 0;
        while i + S::N <= dv {
            let mut acc: [S::F; H] = std::array::from_fn(|h| s.ld(&out[h * dv + i..]));
            for j in 0..n {
                // SAFETY: i + N <= dv, inside row j of the block's `values` (n rows of dv).
                let vx = unsafe { R::V::load(s, values.as_ptr().add(j * dv + i)) };
                for h in 0..H {
                    acc[h] = s.fma(s.splat(sc[h][j]), vx, acc[h]);
                }
            }
            for h in 0..H {
                s.st(&mut out[h * dv + i..], acc[h]);
            }
            i += S::N;
        }
        for e in i..dv {
            for j in 0..n {
                let vx = R::V::one(s, values[j * dv + e]);
                for h in 0..H {
                    out[h * dv + e] = sc[h][j].mul_add(vx, out[h * dv + e]);
                }
            }
        }
        j0 += n;
    }
    for h in 0..H {
        if l[h] > 0.0 {
            scale(s, 1.0 / l[h], &mut out[h * dv..(h + 1) * dv]);
        }
    }
}

/// `x[i] = exp(x[i] - m)`.
#[inline(always)]
fn exp_shifted<S: Simd>(s: S, x: &mut [f32], m: f32) {
    let vm = s.splat(m);
    let mut chunks = x.chunks_exact_mut(S::N);
    for c in &mut chunks {
        let e = exp(s, s.sub(s.ld(c), vm));
        s.st(c, e);
    }
    let one = Scalar::token();
    for x in chunks.into_remainder() {
        *x = exp(one, *x - m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n_head: usize, n_kv: usize, n_ctx: usize) -> Attention {
        let (head_dim, head_dim_v) = (32, 32);
        Attention { n_head, n_kv, head_dim, head_dim_v, n_ctx, scale: 0.2, window: 0, pos0: 0 }
    }

    /// A chunk holding a prompt of 10 tokens (sequence A), one decode token (B) and a prompt of
    /// 3 tokens (C), as the batched server steps them.
    fn mixed_positions() -> Vec<[u32; 2]> {
        let a = (20..30).map(|p| [p, 0]);
        let b = std::iter::once([7, 64]);
        let c = (0..3).map(|p| [p, 128]);
        a.chain(b).chain(c).collect()
    }

    #[test]
    fn prompt_runs_get_tiles_and_decode_tokens_per_token_tasks() {
        let tasks = plan(&shape(8, 2, 192), &mixed_positions(), true);
        let tile = |g, t0, r0, n| Task::Tile { g, t0, r0, n };
        let want = vec![
            tile(0, 0, 0, 16),
            tile(0, 0, 16, 16),
            tile(0, 0, 32, 8),
            tile(1, 0, 0, 16),
            tile(1, 0, 16, 16),
            tile(1, 0, 32, 8),
            Task::Group { t: 10, g: 0 },
            Task::Group { t: 10, g: 1 },
            tile(0, 11, 0, 12),
            tile(1, 11, 0, 12),
        ];
        assert_eq!(tasks, want);
        // One KV head per query head, too few rows for a tile, an uncommon cache type.
        let tasks = plan(&shape(2, 2, 192), &[[3, 0], [4, 0]], false);
        assert_eq!(tasks, [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(t, h)| Task::Row { t, h }));
    }

    /// Each sequence's tokens in one call, tiled where they form runs, give what each token
    /// gives alone (the per-token kernels) to float rounding.
    #[test]
    fn a_mixed_chunk_matches_its_tokens_one_at_a_time() {
        let a = shape(8, 2, 192);
        let positions = mixed_positions();
        let cells = a.n_kv * a.n_ctx * a.head_dim;
        let wave = |i: usize, f: f32| (i as f32 * f).sin();
        let keys: Vec<f32> = (0..cells).map(|i| wave(i, 0.37)).collect();
        let values: Vec<f32> = (0..cells).map(|i| wave(i, 0.91)).collect();
        let kv = KvLayer { k: KvRows::F32(&keys), v: KvRows::F32(&values) };
        let q_row = a.n_head * a.head_dim;
        let q: Vec<f32> = (0..positions.len() * q_row).map(|i| wave(i, 0.53)).collect();
        let sinks: Vec<f32> = (0..a.n_head).map(|h| h as f32 * 0.3 - 1.0).collect();
        for window in [0, 5] {
            let a = Attention { window, ..a };
            let mut together = vec![0f32; positions.len() * q_row];
            attention_at(&Rayon, Isa::best(), &a, &q, &positions, kv, Some(&sinks), &mut together).unwrap();
            for (t, &p) in positions.iter().enumerate() {
                let mut alone = vec![0f32; q_row];
                let q_t = &q[t * q_row..(t + 1) * q_row];
                attention_at(&Rayon, Isa::best(), &a, q_t, &[p], kv, Some(&sinks), &mut alone).unwrap();
                for (i, (x, y)) in together[t * q_row..].iter().zip(&alone).enumerate() {
                    assert!((x - y).abs() < 1e-5, "window {window}, token {t}, element {i}: {x} vs {y}");
                }
            }
        }
    }
}
