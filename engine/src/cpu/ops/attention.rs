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
use std::ops::Range;

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
    let Plan { tasks, merges, slots } = plan(a, positions, grouped(group), exec.threads());
    let slot_len = group * (a.head_dim_v + 2);
    let mut partial_buf = vec![0f32; slots * slot_len];
    let partials = OutPtr::new(&mut partial_buf);
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
        Task::Group { t, g, part } => {
            let [pos, row0] = positions[t].map(|v| v as usize);
            let first = g * a.n_ctx + row0;
            let head = KvLayer { k: kv.k.from_row(first, a.head_dim), v: kv.v.from_row(first, a.head_dim_v) };
            let heads = g * group..(g + 1) * group;
            let qs = &q[t * q_row + heads.start * a.head_dim..][..group * a.head_dim];
            // The scratch is taken outside `dispatch!`: a closure inside the kernel would be
            // compiled without its instruction set.
            GROUP_SCRATCH.with_borrow_mut(|scratch| match part {
                None => {
                    // SAFETY: the group's output rows are this task's alone.
                    let o = unsafe {
                        out.slice((t * a.n_head + heads.start) * a.head_dim_v, group * a.head_dim_v)
                    };
                    let (mut max, mut sum) = ([f32::NEG_INFINITY; 8], [0f32; 8]);
                    for (h, &sink) in sinks.map_or(&[][..], |s| &s[heads]).iter().enumerate() {
                        (max[h], sum[h]) = (sink, 1.0);
                    }
                    o.fill(0.0);
                    let mut run = Running { max: &mut max[..group], sum: &mut sum[..group] };
                    let keys = first_visible(a, pos)..pos + 1;
                    dispatch!(isa, |s| {
                        run_group(s, a, qs, head, keys, &mut run, scratch, o);
                        for (row, &l) in o.chunks_exact_mut(a.head_dim_v).zip(run.sum.iter()) {
                            if l > 0.0 {
                                scale(s, 1.0 / l, row);
                            }
                        }
                    });
                }
                Some(Part { slot, keys }) => {
                    // SAFETY: each slot is one task's alone.
                    let slot = unsafe { partials.slice(slot * slot_len, slot_len) };
                    let (o, stats) = slot.split_at_mut(group * a.head_dim_v);
                    let (max, sum) = stats.split_at_mut(group);
                    max.fill(f32::NEG_INFINITY);
                    sum.fill(0.0);
                    o.fill(0.0);
                    let mut run = Running { max, sum };
                    dispatch!(isa, |s| run_group(s, a, qs, head, keys.0..keys.1, &mut run, scratch, o));
                }
            })
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
    exec.run(merges.len(), &|i| {
        let Merge { t, g, slots } = merges[i];
        let heads = g * group..(g + 1) * group;
        // SAFETY: the group's output rows are this merge's alone; the parts wrote their slots
        // in the pass before.
        let o = unsafe { out.slice((t * a.n_head + heads.start) * a.head_dim_v, group * a.head_dim_v) };
        let parts = &partial_buf[slots.0 * slot_len..slots.1 * slot_len];
        merge(parts, a.head_dim_v, sinks.map(|s| &s[heads]), o);
    });
    Ok(())
}

/// Combines the partial walks of a group's heads over consecutive key ranges (`parts`: slots
/// of `group · dv` value sums, then `group` maxima and `group` sums) and the heads' sinks
/// into the normalized outputs: each part's sums are rescaled to the largest max.
fn merge(parts: &[f32], dv: usize, sinks: Option<&[f32]>, out: &mut [f32]) {
    let group = out.len() / dv;
    let slot_len = group * (dv + 2);
    for (h, row) in out.chunks_exact_mut(dv).enumerate() {
        let stat = |slot: &[f32], k: usize| slot[group * dv + k * group + h];
        let sink = sinks.map_or(f32::NEG_INFINITY, |s| s[h]);
        let m = parts.chunks_exact(slot_len).map(|slot| stat(slot, 0)).fold(sink, f32::max);
        let mut l = if sink == f32::NEG_INFINITY { 0.0 } else { (sink - m).exp() };
        row.fill(0.0);
        for slot in parts.chunks_exact(slot_len) {
            let (m_p, l_p) = (stat(slot, 0), stat(slot, 1));
            if l_p == 0.0 {
                continue;
            }
            let w = (m_p - m).exp();
            l += l_p * w;
            row.iter_mut().zip(&slot[h * dv..(h + 1) * dv]).for_each(|(o, &p)| *o += p * w);
        }
        if l > 0.0 {
            let inv = 1.0 / l;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
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
    /// Token `t`'s query heads of KV head `g`, walked together: over all the token's keys
    /// (`part` None), or over a part of them into a slot that a [`Merge`] reads.
    Group { t: usize, g: usize, part: Option<Part> },
    /// Token `t`, query head `h`.
    Row { t: usize, h: usize },
}

/// A group walk over keys `keys.0..keys.1` only, its results in slot `slot`.
#[derive(Copy, Clone, Debug, PartialEq)]
struct Part {
    slot: usize,
    keys: (usize, usize),
}

/// The outputs of token `t`'s KV head `g` from the partial walks in `slots.0..slots.1`.
#[derive(Copy, Clone, Debug, PartialEq)]
struct Merge {
    t: usize,
    g: usize,
    slots: (usize, usize),
}

/// The tasks of an attention call, the merges run after them, and the partial result slots
/// they share.
#[derive(Debug, PartialEq)]
struct Plan {
    tasks: Vec<Task>,
    merges: Vec<Merge>,
    slots: usize,
}

/// Tasks an attention call wants per thread before it splits group walks along the keys: a
/// decode step of one sequence has only `n_kv` of them, fewer than the threads on many CPUs
/// (SmolLM2's three on two threads left one thread idle a third of the time).
const TASKS_PER_THREAD: usize = 4;

/// The fewest keys a part of a split walk takes.
const MIN_PART_KEYS: usize = 256;

/// The tasks of an attention call: tiles for runs of at least two tokens of one sequence
/// that fill half a tile or more (prompt chunks), per-token tasks for the rest (decode steps,
/// where each sequence has one token). When those are too few for `threads`, deep group walks
/// are split along the keys and merged after. `WLLM_CPU_ATTENTION_TILES=0` turns tiles off.
fn plan(a: &Attention, positions: &[[u32; 2]], grouped: bool, threads: usize) -> Plan {
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
            tasks.extend((t0..end).flat_map(|t| (0..a.n_kv).map(move |g| Task::Group { t, g, part: None })));
        } else {
            tasks.extend((t0..end).flat_map(|t| (0..a.n_head).map(move |h| Task::Row { t, h })));
        }
        t0 = end;
    }
    split_groups(a, positions, tasks, threads)
}

/// Splits each group walk into parts of at least [`MIN_PART_KEYS`] keys (whole blocks) when
/// the call has fewer than [`TASKS_PER_THREAD`] tasks per thread.
fn split_groups(a: &Attention, positions: &[[u32; 2]], tasks: Vec<Task>, threads: usize) -> Plan {
    let want = threads * TASKS_PER_THREAD;
    let mut plan = Plan { tasks: Vec::with_capacity(want), merges: Vec::new(), slots: 0 };
    if threads < 2 || tasks.len() >= want {
        plan.tasks = tasks;
        return plan;
    }
    let parts_each = want.div_ceil(tasks.len());
    for task in tasks {
        let Task::Group { t, g, part: None } = task else {
            plan.tasks.push(task);
            continue;
        };
        let pos = positions[t][0] as usize;
        let (lo, end) = (first_visible(a, pos), pos + 1);
        let parts = parts_each.min((end - lo) / MIN_PART_KEYS);
        if parts < 2 {
            plan.tasks.push(task);
            continue;
        }
        let step = (end - lo).div_ceil(parts).next_multiple_of(BLOCK);
        let first_slot = plan.slots;
        for start in (lo..end).step_by(step) {
            let keys = (start, (start + step).min(end));
            plan.tasks.push(Task::Group { t, g, part: Some(Part { slot: plan.slots, keys }) });
            plan.slots += 1;
        }
        plan.merges.push(Merge { t, g, slots: (first_slot, plan.slots) });
    }
    plan
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
        let m_new = max_of(s, &sc[..n], m);
        // The first block finds m = -inf and nothing to rescale.
        let corr = if m == f32::NEG_INFINITY { 0.0 } else { (m - m_new).exp() };
        l = l * corr + exp_shifted(s, &mut sc[..n], m_new);
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
    /// What asks the cache for rows ahead of their use, where the rows are read in place.
    #[inline(always)]
    fn ahead(&self) -> Ahead {
        Ahead::default()
    }
}

/// The cache's key and value rows as (start, bytes, bytes per row), for [`Ahead::prefetch`].
#[derive(Copy, Clone, Default)]
struct Ahead {
    rows: Option<[(*const u8, usize, usize); 2]>,
}

impl Ahead {
    /// Asks the cache for the key rows `keys` and the value rows `values`. A batched decode
    /// step walks each sequence's rows once, after the weights and the other sequences' rows
    /// pushed them out: SmolLM2, 8 sequences at depth 160, attention 4.5 -> 3.2 ms a step.
    #[inline(always)]
    fn prefetch(&self, keys: Range<usize>, values: Range<usize>) {
        if let Some([(k, k_len, k_row), (v, v_len, v_row)]) = self.rows {
            prefetch_rows(k, k_len, k_row, keys);
            prefetch_rows(v, v_len, v_row, values);
        }
    }
}

/// Asks for the cache lines of `rows`, rows of `row` bytes from `start`, within `len` bytes.
#[inline(always)]
fn prefetch_rows(start: *const u8, len: usize, row: usize, rows: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let (lo, hi) = (rows.start * row, (rows.end * row).min(len));
        let mut at = lo;
        while at < hi {
            // SAFETY: a prefetch never faults or writes; the address is inside the rows.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(at).cast()) };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len, row, rows);
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
    #[inline(always)]
    fn ahead(&self) -> Ahead {
        let (k, v) = (self.keys, self.values);
        Ahead {
            rows: Some([
                (k.as_ptr().cast(), size_of_val(k), self.dk * size_of::<K>()),
                (v.as_ptr().cast(), size_of_val(v), self.dv * size_of::<V>()),
            ]),
        }
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

/// [`group`] over `keys` for the cache's types and `out.len() / head_dim_v` heads (2..=8).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn run_group<S: Simd>(
    s: S,
    a: &Attention,
    q: &[f32],
    kv: KvLayer<'_>,
    keys: Range<usize>,
    run: &mut Running<'_>,
    scratch: &mut GroupScratch,
    out: &mut [f32],
) {
    macro_rules! go {
        ($rows:expr) => {{
            let rows = &mut $rows;
            match out.len() / a.head_dim_v {
                2 => group::<S, _, 2>(s, a, q, rows, keys, run, out),
                3 => group::<S, _, 3>(s, a, q, rows, keys, run, out),
                4 => group::<S, _, 4>(s, a, q, rows, keys, run, out),
                5 => group::<S, _, 5>(s, a, q, rows, keys, run, out),
                6 => group::<S, _, 6>(s, a, q, rows, keys, run, out),
                7 => group::<S, _, 7>(s, a, q, rows, keys, run, out),
                _ => group::<S, _, 8>(s, a, q, rows, keys, run, out),
            }
        }};
    }
    let (dk, dv) = (a.head_dim, a.head_dim_v);
    match (kv.k, kv.v) {
        (KvRows::F16(keys), KvRows::F16(values)) => go!(InPlace { keys, values, dk, dv }),
        (KvRows::F32(keys), KvRows::F32(values)) => go!(InPlace { keys, values, dk, dv }),
        _ => go!(Converted { kv, dk, dv, scratch }),
    }
}

/// The running softmax of a group's heads over the keys walked so far: per head the largest
/// score and the sum of `exp(score - max)`; the output rows beside it hold the matching
/// unnormalized value sums.
struct Running<'a> {
    max: &'a mut [f32],
    sum: &'a mut [f32],
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
    keys: Range<usize>,
    run: &mut Running<'_>,
    out: &mut [f32],
) {
    let (dk, dv) = (a.head_dim, a.head_dim_v);
    let qs: [&[f32]; H] = std::array::from_fn(|h| &q[h * dk..(h + 1) * dk]);
    let mut sc = [[0f32; BLOCK]; H];
    let mut m: [f32; H] = std::array::from_fn(|h| run.max[h]);
    let mut l: [f32; H] = std::array::from_fn(|h| run.sum[h]);
    let mut j0 = keys.start;
    while j0 < keys.end {
        let n = BLOCK.min(keys.end - j0);
        // The next block's keys and this block's values (read after its scores).
        let next = (j0 + n + BLOCK).min(keys.end);
        let ahead = rows.ahead();
        let (block_keys, values) = rows.block(s, j0, n);
        // Four keys at a time share each load of the queries (up to 4 heads: 16 accumulators),
        // each sum taken as one key at a time takes it, so the scores stay bit for bit.
        let fours = if H <= 4 { n / 4 * 4 } else { 0 };
        for j in (0..fours).step_by(4) {
            // Four rows of each a step, spread over the block: a block's worth at once filled
            // the miss buffers and stalled on them.
            ahead.prefetch((j0 + n + j).min(next)..(j0 + n + j + 4).min(next), j0 + j..j0 + j + 4);
            let keys: [&[R::K]; 4] = std::array::from_fn(|u| &block_keys[(j + u) * dk..][..dk]);
            let mut acc = [[s.zero(); H]; 4];
            let mut i = 0;
            while i + S::N <= dk {
                // SAFETY: i + N <= dk = the length of each key.
                let kx: [S::F; 4] =
                    std::array::from_fn(|u| unsafe { R::K::load(s, keys[u].as_ptr().add(i)) });
                for h in 0..H {
                    let qx = s.ld(&qs[h][i..]);
                    for u in 0..4 {
                        acc[u][h] = s.fma(qx, kx[u], acc[u][h]);
                    }
                }
                i += S::N;
            }
            for h in 0..H {
                let sums: [f32; 4] = std::array::from_fn(|u| s.sum(acc[u][h]));
                for u in 0..4 {
                    let tail: f32 = (i..dk).map(|e| qs[h][e] * R::K::one(s, keys[u][e])).sum();
                    sc[h][j + u] = (sums[u] + tail) * a.scale;
                }
            }
        }
        // What the steps of four did not ask for (all of it when there were none).
        ahead.prefetch((j0 + n + fours).min(next)..next, j0 + fours..j0 + n);
        for j in fours..n {
            let key = &block_keys[j * dk..][..dk];
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
            let m_new = max_of(s, &sc[h][..n], m[h]);
            let corr = if m[h] == f32::NEG_INFINITY { 0.0 } else { (m[h] - m_new).exp() };
            l[h] = l[h] * corr + exp_shifted(s, &mut sc[h][..n], m_new);
            if corr != 1.0 {
                scale(s, corr, &mut out[h * dv..(h + 1) * dv]);
            }
            m[h] = m_new;
        }
        let mut i = 0;
        // Four vectors of each value row at a time where the heads are few: one vector gives
        // only `H` chains of multiply-adds, each waiting on its last (SmolLM2's 3 heads ran at
        // under one a cycle).
        while H <= 4 && i + 4 * S::N <= dv {
            let mut acc: [[S::F; H]; 4] =
                std::array::from_fn(|c| std::array::from_fn(|h| s.ld(&out[h * dv + i + c * S::N..])));
            for j in 0..n {
                // SAFETY: i + 4N <= dv, inside row j of the block's `values` (n rows of dv).
                let vx: [S::F; 4] = std::array::from_fn(|c| unsafe {
                    R::V::load(s, values.as_ptr().add(j * dv + i + c * S::N))
                });
                for h in 0..H {
                    let p = s.splat(sc[h][j]);
                    for c in 0..4 {
                        acc[c][h] = s.fma(p, vx[c], acc[c][h]);
                    }
                }
            }
            for (c, acc) in acc.iter().enumerate() {
                for h in 0..H {
                    s.st(&mut out[h * dv + i + c * S::N..], acc[h]);
                }
            }
            i += 4 * S::N;
        }
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
    run.max.copy_from_slice(&m);
    run.sum.copy_from_slice(&l);
}

/// `x[i] = exp(x[i] - m)`; returns their sum. The sum and [`max_of`] run on vectors: a
/// scalar fold over a block is one chain of dependent adds (or maxes), which held decode at
/// depth to about one instruction per cycle.
#[inline(always)]
fn exp_shifted<S: Simd>(s: S, x: &mut [f32], m: f32) -> f32 {
    let vm = s.splat(m);
    let mut sum = s.zero();
    let mut chunks = x.chunks_exact_mut(S::N);
    for c in &mut chunks {
        let e = exp(s, s.sub(s.ld(c), vm));
        sum = s.add(sum, e);
        s.st(c, e);
    }
    let one = Scalar::token();
    let mut tail = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(one, *x - m);
        tail += *x;
    }
    s.sum(sum) + tail
}

/// The largest of `m` and the elements of `x`.
#[inline(always)]
fn max_of<S: Simd>(s: S, x: &[f32], m: f32) -> f32 {
    let mut acc = s.splat(m);
    let mut chunks = x.chunks_exact(S::N);
    for c in &mut chunks {
        acc = s.max(acc, s.ld(c));
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    s.st(&mut lanes, acc);
    lanes[..S::N].iter().chain(chunks.remainder()).copied().fold(m, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n_head: usize, n_kv: usize, n_ctx: usize) -> Attention {
        let (head_dim, head_dim_v) = (32, 32);
        Attention { n_head, n_kv, head_dim, head_dim_v, n_ctx, scale: 0.2, window: 0, pos0: 0 }
    }

    /// A chunk holding a prompt of 10 tokens (sequence A), one decode token (B) and a prompt of
    /// 4 tokens (C), as the batched server steps them.
    fn mixed_positions() -> Vec<[u32; 2]> {
        let a = (20..30).map(|p| [p, 0]);
        let b = std::iter::once([7, 64]);
        let c = (0..4).map(|p| [p, 128]);
        a.chain(b).chain(c).collect()
    }

    #[test]
    fn prompt_runs_get_tiles_and_decode_tokens_per_token_tasks() {
        let tasks = plan(&shape(8, 2, 192), &mixed_positions(), true, 1).tasks;
        let tile = |g, t0, r0, n| Task::Tile { g, t0, r0, n };
        // A's 40 rows (4 query heads per KV head) in whole tiles and a rest; C's 16, half a
        // tile, in one.
        assert_eq!(TILE, 32);
        let want = vec![
            tile(0, 0, 0, 32),
            tile(0, 0, 32, 8),
            tile(1, 0, 0, 32),
            tile(1, 0, 32, 8),
            Task::Group { t: 10, g: 0, part: None },
            Task::Group { t: 10, g: 1, part: None },
            tile(0, 11, 0, 16),
            tile(1, 11, 0, 16),
        ];
        assert_eq!(tasks, want);
        // One KV head per query head, too few rows for a tile, an uncommon cache type.
        let tasks = plan(&shape(2, 2, 192), &[[3, 0], [4, 0]], false, 1).tasks;
        assert_eq!(tasks, [(0, 0), (0, 1), (1, 0), (1, 1)].map(|(t, h)| Task::Row { t, h }));
    }

    #[test]
    fn a_deep_decode_on_few_heads_is_split_along_the_keys() {
        // Two group tasks for two threads: four parts each, whole blocks, the last one short.
        let got = plan(&shape(8, 2, 4096), &[[2000, 0]], true, 2);
        let part = |g, slot, keys| Task::Group { t: 0, g, part: Some(Part { slot, keys }) };
        let want = Plan {
            tasks: vec![
                part(0, 0, (0, 512)),
                part(0, 1, (512, 1024)),
                part(0, 2, (1024, 1536)),
                part(0, 3, (1536, 2001)),
                part(1, 4, (0, 512)),
                part(1, 5, (512, 1024)),
                part(1, 6, (1024, 1536)),
                part(1, 7, (1536, 2001)),
            ],
            merges: vec![Merge { t: 0, g: 0, slots: (0, 4) }, Merge { t: 0, g: 1, slots: (4, 8) }],
            slots: 8,
        };
        assert_eq!(got, want);
        // A window leaves 300 keys: one part; enough tasks already (four tokens): none split.
        let windowed = Attention { window: 300, ..shape(8, 2, 4096) };
        assert_eq!(plan(&windowed, &[[2000, 0]], true, 2).slots, 0);
        let four = [[2000, 0], [900, 2048], [3000, 0], [1000, 2048]];
        assert_eq!(plan(&shape(8, 2, 4096), &four, true, 2).slots, 0);
    }

    /// Runs tasks one after another but reports `.0` threads, so that plans split as they
    /// would on that many.
    struct Serial(usize);

    impl Exec for Serial {
        fn threads(&self) -> usize {
            self.0
        }
        fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
            (0..n).for_each(f);
        }
    }

    /// A decode token deep in the cache gives the same output with its walks split and whole,
    /// for plain and quantized caches, with and without a window and sinks.
    #[test]
    fn split_walks_match_whole_ones() {
        let a = shape(8, 2, 3000);
        let wave = |i: usize, f: f32| (i as f32 * f).sin();
        let cells = a.n_kv * a.n_ctx * a.head_dim;
        // Keys grow along the cache, so each part of a split walk has its own largest score.
        let ramp = |i: usize| 1.0 + 3.0 * ((i / a.head_dim) % a.n_ctx) as f32 / a.n_ctx as f32;
        let keys: Vec<f32> = (0..cells).map(|i| wave(i, 0.37) * ramp(i)).collect();
        let values: Vec<f32> = (0..cells).map(|i| wave(i, 0.91)).collect();
        let quantized = |x: &[f32]| {
            let mut out = vec![0u8; x.len() / 32 * 34];
            crate::kv_type::quantize_cpu_row(crate::KvType::Q8_0, x, &mut out);
            out
        };
        let (k8, v8) = (quantized(&keys), quantized(&values));
        let q: Vec<f32> = (0..a.n_head * a.head_dim).map(|i| wave(i, 0.53)).collect();
        // Sinks from small to larger than most scores, so that the merge must weigh them.
        let sinks: Vec<f32> = (0..a.n_head).map(|h| h as f32 * 2.0 - 1.0).collect();
        let caches = [
            KvLayer { k: KvRows::F32(&keys), v: KvRows::F32(&values) },
            KvLayer { k: KvRows::Q8_0(&k8), v: KvRows::Q8_0(&v8) },
        ];
        for (kv, (window, sinks)) in caches
            .into_iter()
            .flat_map(|kv| [(0, None), (700, Some(&sinks[..])), (0, Some(&sinks[..]))].map(move |c| (kv, c)))
        {
            let a = Attention { window, ..a };
            let run = |threads| {
                let mut out = vec![0f32; a.n_head * a.head_dim_v];
                let exec = Serial(threads);
                attention_at(&exec, Isa::best(), &a, &q, &[[2900, 50]], kv, sinks, &mut out).unwrap();
                out
            };
            assert_eq!(plan(&a, &[[2900, 50]], true, 8).merges.len(), 2);
            let (whole, split) = (run(1), run(8));
            for (i, (x, y)) in split.iter().zip(&whole).enumerate() {
                assert!((x - y).abs() < 1e-5, "window {window}, element {i}: split {x} vs whole {y}");
            }
        }
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
