//! Causal attention of a batch of query rows over a layer's KV cache, optionally limited to a
//! sliding window, with grouped KV heads. Each (token, head) row walks its keys in blocks of
//! 64 with an online softmax: block scores, then the running max, sum and output are rescaled
//! when the max grows, so memory stays one block of scores whatever the context length.

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
/// keys up to its own position; `sinks` as in [`attention_at`].
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
    let n_rows = n_tok * a.n_head;
    let out = OutPtr::new(out);
    exec.run(n_rows, &|i| {
        // SAFETY: output row `i` is this task's alone.
        let o = unsafe { out.slice(i * a.head_dim_v, a.head_dim_v) };
        let (t, h) = (i / a.n_head, i % a.n_head);
        let g = h / (a.n_head / a.n_kv);
        let qh = &q[t * q_row + h * a.head_dim..][..a.head_dim];
        let [pos, row0] = positions[t].map(|v| v as usize);
        let first = g * a.n_ctx + row0;
        let head = KvLayer { k: kv.k.from_row(first, a.head_dim), v: kv.v.from_row(first, a.head_dim_v) };
        let sink = sinks.map(|s| s[h]);
        dispatch!(isa, |s| row(s, a, qh, head, pos, sink, o))
    });
    Ok(())
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
    let lo = if a.window > 0 && pos + 1 > a.window { pos + 1 - a.window } else { 0 };
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
