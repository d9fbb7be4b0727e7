//! The KV cache of the CPU layers, in RAM: per layer `[kv_head][position][dim]` for K and V,
//! f32 (exact) or f16 (half the memory, the GPU's choice when it has f16).

use crate::cpu::Isa;
use crate::cpu::ops::KvLayer;
use crate::cpu::simd::{Simd, axpy, dispatch, dot};

/// Element type of a cache.
pub(crate) trait KvElem: Copy + Send + Sync + 'static {
    fn dot<S: Simd>(s: S, q: &[f32], k: &[Self]) -> f32;
    /// `out += a * v`.
    fn axpy<S: Simd>(s: S, a: f32, v: &[Self], out: &mut [f32]);
    fn store<S: Simd>(s: S, src: &[f32], dst: &mut [Self]);
}

impl KvElem for f32 {
    #[inline(always)]
    fn dot<S: Simd>(s: S, q: &[f32], k: &[f32]) -> f32 {
        dot(s, q, k)
    }
    #[inline(always)]
    fn axpy<S: Simd>(s: S, a: f32, v: &[f32], out: &mut [f32]) {
        axpy(s, a, v, out)
    }
    #[inline(always)]
    fn store<S: Simd>(_s: S, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
}

/// IEEE halves as raw bits.
impl KvElem for u16 {
    #[inline(always)]
    fn dot<S: Simd>(s: S, q: &[f32], k: &[u16]) -> f32 {
        let n = q.len().min(k.len());
        let (mut a0, mut a1) = (s.zero(), s.zero());
        let mut i = 0;
        while i + 2 * S::N <= n {
            // SAFETY: i + 2N <= k.len().
            let (k0, k1) = unsafe { (s.load_f16(k.as_ptr().add(i)), s.load_f16(k.as_ptr().add(i + S::N))) };
            a0 = s.fma(s.ld(&q[i..]), k0, a0);
            a1 = s.fma(s.ld(&q[i + S::N..]), k1, a1);
            i += 2 * S::N;
        }
        let mut t = s.sum(s.add(a0, a1));
        for j in i..n {
            t += q[j] * s.f16(k[j]);
        }
        t
    }
    #[inline(always)]
    fn axpy<S: Simd>(s: S, a: f32, v: &[u16], out: &mut [f32]) {
        let n = v.len().min(out.len());
        let va = s.splat(a);
        let mut i = 0;
        while i + S::N <= n {
            // SAFETY: i + N <= v.len().
            let x = unsafe { s.load_f16(v.as_ptr().add(i)) };
            let y = s.fma(va, x, s.ld(&out[i..]));
            s.st(&mut out[i..], y);
            i += S::N;
        }
        for j in i..n {
            out[j] = a.mul_add(s.f16(v[j]), out[j]);
        }
    }
    #[inline(always)]
    fn store<S: Simd>(s: S, src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let mut i = 0;
        while i + S::N <= n {
            // SAFETY: i + N <= dst.len().
            unsafe { s.store_f16(dst.as_mut_ptr().add(i), s.ld(&src[i..])) };
            i += S::N;
        }
        for j in i..n {
            dst[j] = half::f16::from_f32(src[j]).to_bits();
        }
    }
}

enum Store {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<u16>, v: Vec<u16> },
}

/// K and V of every CPU layer for `n_ctx` positions.
pub(crate) struct KvCache {
    layers: Vec<Store>,
    pub n_ctx: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
}

impl KvCache {
    /// A cache for each layer where `attends(layer)`; the others (recurrent layers) get none.
    pub fn new(
        n_layer: usize,
        attends: impl Fn(usize) -> bool,
        n_ctx: usize,
        n_kv: usize,
        head_dim: usize,
        head_dim_v: usize,
        f16: bool,
    ) -> Self {
        let (nk, nv) = (n_kv * n_ctx * head_dim, n_kv * n_ctx * head_dim_v);
        let layers = (0..n_layer)
            .map(|il| {
                let (nk, nv) = if attends(il) { (nk, nv) } else { (0, 0) };
                if f16 {
                    Store::F16 { k: vec![0; nk], v: vec![0; nv] }
                } else {
                    Store::F32 { k: vec![0.0; nk], v: vec![0.0; nv] }
                }
            })
            .collect();
        KvCache { layers, n_ctx, head_dim, head_dim_v }
    }

    pub fn bytes(&self) -> u64 {
        let elems = |l: &Store| match l {
            Store::F32 { k, v } => 4 * (k.len() + v.len()) as u64,
            Store::F16 { k, v } => 2 * (k.len() + v.len()) as u64,
        };
        self.layers.iter().map(elems).sum()
    }

    pub fn layer(&self, il: usize) -> KvLayer<'_> {
        match &self.layers[il] {
            Store::F32 { k, v } => KvLayer::F32 { k, v },
            Store::F16 { k, v } => KvLayer::F16 { k, v },
        }
    }

    /// Writes K (`n_kv · head_dim`) and V (`n_kv · head_dim_v`) of one token at `pos`.
    pub fn write(&mut self, isa: Isa, il: usize, pos: usize, k_tok: &[f32], v_tok: &[f32]) {
        let (n_ctx, hd, hdv) = (self.n_ctx, self.head_dim, self.head_dim_v);
        match &mut self.layers[il] {
            Store::F32 { k, v } => {
                dispatch!(isa, |s| write_heads(s, k, v, k_tok, v_tok, n_ctx, pos, hd, hdv))
            }
            Store::F16 { k, v } => {
                dispatch!(isa, |s| write_heads(s, k, v, k_tok, v_tok, n_ctx, pos, hd, hdv))
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn write_heads<S: Simd, E: KvElem>(
    s: S,
    k: &mut [E],
    v: &mut [E],
    k_tok: &[f32],
    v_tok: &[f32],
    n_ctx: usize,
    pos: usize,
    hd: usize,
    hdv: usize,
) {
    for (h, src) in k_tok.chunks_exact(hd).enumerate() {
        E::store(s, src, &mut k[(h * n_ctx + pos) * hd..][..hd]);
    }
    for (h, src) in v_tok.chunks_exact(hdv).enumerate() {
        E::store(s, src, &mut v[(h * n_ctx + pos) * hdv..][..hdv]);
    }
}
