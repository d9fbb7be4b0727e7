//! RMSNorm: `x / sqrt(mean(x²) + eps) * w`, the sum of squares in f32.

use super::check_len;
use crate::cpu::Isa;
use crate::cpu::simd::{Simd, dispatch, dot};
use crate::error::{EngineError, Result};

#[inline(always)]
fn inv_rms<S: Simd>(s: S, x: &[f32], eps: f32) -> f32 {
    1.0 / (dot(s, x, x) / x.len() as f32 + eps).sqrt()
}

/// `out[i] = f(out[i], x[i] * r * w[i])`, vectors and the tail rounding alike.
#[inline(always)]
fn apply<S: Simd>(
    s: S,
    x: &[f32],
    r: f32,
    w: &[f32],
    out: &mut [f32],
    f: impl Fn(S::F, S::F) -> S::F,
    f1: impl Fn(f32, f32) -> f32,
) {
    let vr = s.splat(r);
    let n = x.len().min(w.len()).min(out.len());
    let mut i = 0;
    while i + S::N <= n {
        let v = f(s.ld(&out[i..]), s.mul(s.mul(s.ld(&x[i..]), vr), s.ld(&w[i..])));
        s.st(&mut out[i..], v);
        i += S::N;
    }
    for j in i..n {
        out[j] = f1(out[j], x[j] * r * w[j]);
    }
}

#[inline(always)]
fn norm_rows<S: Simd>(s: S, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        apply(s, xr, inv_rms(s, xr, eps), w, or, |_, v| v, |_, v| v);
    }
}

#[inline(always)]
fn norm_rows_in_place<S: Simd>(s: S, x: &mut [f32], w: &[f32], eps: f32) {
    let mut tmp = [0f32; 256];
    for xr in x.chunks_exact_mut(w.len()) {
        let r = inv_rms(s, xr, eps);
        // Through a small copy: the norm reads every element before any is written.
        for (xc, wc) in xr.chunks_mut(256).zip(w.chunks(256)) {
            let t = &mut tmp[..xc.len()];
            t.copy_from_slice(xc);
            apply(s, t, r, wc, xc, |_, v| v, |_, v| v);
        }
    }
}

#[inline(always)]
fn add_normed_rows<S: Simd>(s: S, x: &mut [f32], a: &[f32], w: &[f32], eps: f32) {
    for (xr, ar) in x.chunks_exact_mut(w.len()).zip(a.chunks_exact(w.len())) {
        apply(s, ar, inv_rms(s, ar, eps), w, xr, |o, v| s.add(o, v), |o, v| o + v);
    }
}

fn check(x: usize, w: usize, out: usize) -> Result<()> {
    if w == 0 || !x.is_multiple_of(w) {
        return Err(EngineError::InvalidArgument(format!("rms_norm: {x} values are not rows of {w}")));
    }
    check_len("rms_norm output", out, x)
}

/// Each row of `x` (rows of `w.len()`) normalized and scaled by `w`, into `out`.
pub fn rms_norm(isa: Isa, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) -> Result<()> {
    check(x.len(), w.len(), out.len())?;
    dispatch!(isa, |s| norm_rows(s, x, w, eps, out));
    Ok(())
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(isa: Isa, x: &mut [f32], w: &[f32], eps: f32) -> Result<()> {
    check(x.len(), w.len(), x.len())?;
    dispatch!(isa, |s| norm_rows_in_place(s, x, w, eps));
    Ok(())
}

/// `x += rms_norm(a, w)` row by row: gemma's post-norms before the residual add.
pub fn add_rms_normed(isa: Isa, x: &mut [f32], a: &[f32], w: &[f32], eps: f32) -> Result<()> {
    check(a.len(), w.len(), x.len())?;
    dispatch!(isa, |s| add_normed_rows(s, x, a, w, eps));
    Ok(())
}
