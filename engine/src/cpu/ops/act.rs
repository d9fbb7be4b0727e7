//! Gated feed-forward activations and the residual add.

use super::check_len;
use crate::cpu::Isa;
use crate::cpu::exec::{Exec, Rayon};
use crate::cpu::linear::OutPtr;
use crate::cpu::simd::math::{gelu_tanh, silu, silu_oai, up_oai};
use crate::cpu::simd::{Scalar, Simd, dispatch};
use crate::error::Result;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU: `silu(gate) * up`.
    Silu,
    /// GeGLU with tanh-GELU: `gelu_tanh(gate) * up`.
    GeluTanh,
    /// gpt-oss's clamped SwiGLU: `silu_oai(min(gate, 7)) * (clamp(up, -7, 7) + 1)`.
    SwigluOai,
}

/// Elements per parallel task: below this a fork costs more than it saves.
const CHUNK: usize = 16 * 1024;

/// `up[i] = act(gate[i]) * up[i]` (`gate` is overwritten with `act(gate)`; gpt-oss's variant
/// also clamps and shifts `up[i]` first).
pub fn glu(isa: Isa, act: Activation, gate: &mut [f32], up: &mut [f32]) -> Result<()> {
    glu_on(&Rayon, isa, act, gate, up)
}

pub(crate) fn glu_on(
    exec: &dyn Exec,
    isa: Isa,
    act: Activation,
    gate: &mut [f32],
    up: &mut [f32],
) -> Result<()> {
    check_len("glu up", up.len(), gate.len())?;
    if gate.len() <= CHUNK {
        dispatch!(isa, |s| glu_chunk(s, act, gate, up));
        return Ok(());
    }
    let n = gate.len();
    let (g, u) = (OutPtr::new(gate), OutPtr::new(up));
    exec.run(n.div_ceil(CHUNK), &|c| {
        let len = CHUNK.min(n - c * CHUNK);
        // SAFETY: chunk `c` of both is this task's alone.
        let (g, u) = unsafe { (g.slice(c * CHUNK, len), u.slice(c * CHUNK, len)) };
        dispatch!(isa, |s| glu_chunk(s, act, g, u));
    });
    Ok(())
}

#[inline(always)]
fn glu_chunk<S: Simd>(s: S, act: Activation, gate: &mut [f32], up: &mut [f32]) {
    let one = Scalar::token();
    match act {
        Activation::Silu => glu_with(
            s,
            gate,
            up,
            #[inline(always)]
            |v| silu(s, v),
            |v| silu(one, v),
            |v| v,
            |v| v,
        ),
        Activation::GeluTanh => glu_with(
            s,
            gate,
            up,
            #[inline(always)]
            |v| gelu_tanh(s, v),
            |v| gelu_tanh(one, v),
            |v| v,
            |v| v,
        ),
        Activation::SwigluOai => glu_with(
            s,
            gate,
            up,
            #[inline(always)]
            |v| silu_oai(s, v),
            |v| silu_oai(one, v),
            #[inline(always)]
            |v| up_oai(s, v),
            |v| up_oai(one, v),
        ),
    }
}

/// `gate = act(gate); up = up_fn(up) * gate`, the tail through the one-lane path so every
/// element sees the same formula. (Closures, not fn items: a fn item's call shim is not
/// inlined into the `#[target_feature]` caller, and its vector code then runs as function
/// calls.)
#[inline(always)]
fn glu_with<S: Simd>(
    s: S,
    gate: &mut [f32],
    up: &mut [f32],
    act: impl Fn(S::F) -> S::F,
    act1: impl Fn(f32) -> f32,
    up_fn: impl Fn(S::F) -> S::F,
    up_fn1: impl Fn(f32) -> f32,
) {
    let n = gate.len().min(up.len());
    let mut i = 0;
    while i + S::N <= n {
        let g = act(s.ld(&gate[i..]));
        s.st(&mut gate[i..], g);
        let v = s.mul(g, up_fn(s.ld(&up[i..])));
        s.st(&mut up[i..], v);
        i += S::N;
    }
    for j in i..n {
        gate[j] = act1(gate[j]);
        up[j] = gate[j] * up_fn1(up[j]);
    }
}

/// `x += a`.
pub fn add_in_place(x: &mut [f32], a: &[f32]) -> Result<()> {
    check_len("add", a.len(), x.len())?;
    for (x, a) in x.iter_mut().zip(a) {
        *x += a;
    }
    Ok(())
}
