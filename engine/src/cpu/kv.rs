//! The KV cache of the CPU layers, in RAM: per layer `[kv_head][position]` rows for K and V,
//! each side f16 (the default), f32 (exact), or Q8_0/Q4_0 blocks as llama.cpp stores them
//! (`--cache-type-k/-v`).

use crate::cpu::Isa;
use crate::cpu::quant::{Blocks, Q4_0, Q8_0};
use crate::cpu::simd::{Simd, axpy, dispatch, dot};
use crate::kv_type::{CacheTypes, KvType, hadamard_in_place, k_rotation, quantize_cpu_row, v_rotation};

/// How a cache row of one element type is read and written.
pub(crate) trait KvFormat: 'static {
    type Unit: Copy + Send + Sync + 'static;
    /// Units of one row of `dim` elements.
    fn units(dim: usize) -> usize;
    fn dot<S: Simd>(s: S, q: &[f32], row: &[Self::Unit]) -> f32;
    /// `out += a * row`.
    fn axpy<S: Simd>(s: S, a: f32, row: &[Self::Unit], out: &mut [f32]);
    fn store<S: Simd>(s: S, src: &[f32], row: &mut [Self::Unit]);
    /// The row's elements as f32 (`out.len()` of them).
    fn to_f32<S: Simd>(s: S, row: &[Self::Unit], out: &mut [f32]);
}

pub(crate) struct F32Rows;
pub(crate) struct F16Rows;
pub(crate) struct Q8Rows;
pub(crate) struct Q4Rows;

impl KvFormat for F32Rows {
    type Unit = f32;
    fn units(dim: usize) -> usize {
        dim
    }
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
    #[inline(always)]
    fn to_f32<S: Simd>(_s: S, row: &[f32], out: &mut [f32]) {
        out.copy_from_slice(&row[..out.len()])
    }
}

/// IEEE halves as raw bits.
impl KvFormat for F16Rows {
    type Unit = u16;
    fn units(dim: usize) -> usize {
        dim
    }
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
    #[inline(always)]
    fn to_f32<S: Simd>(s: S, row: &[u16], out: &mut [f32]) {
        let n = out.len().min(row.len());
        let mut i = 0;
        while i + S::N <= n {
            // SAFETY: i + N <= row.len().
            let x = unsafe { s.load_f16(row.as_ptr().add(i)) };
            s.st(&mut out[i..], x);
            i += S::N;
        }
        for j in i..n {
            out[j] = s.f16(row[j]);
        }
    }
}

/// Rows of 32-element blocks, unpacked a vector at a time by the weight kernels' decoder.
macro_rules! block_rows {
    ($rows:ty, $blocks:ty, $ty:expr) => {
        impl KvFormat for $rows {
            type Unit = u8;
            fn units(dim: usize) -> usize {
                dim / <$blocks as Blocks>::ELEMS * <$blocks as Blocks>::BYTES
            }
            #[inline(always)]
            fn dot<S: Simd>(s: S, q: &[f32], row: &[u8]) -> f32 {
                const E: usize = <$blocks as Blocks>::ELEMS;
                let mut acc = s.zero();
                for (b, q) in row.chunks_exact(<$blocks as Blocks>::BYTES).zip(q.chunks_exact(E)) {
                    <$blocks as Blocks>::decode(s, b, &mut |off, v| acc = s.fma(v, s.ld(&q[off..]), acc));
                }
                s.sum(acc)
            }
            #[inline(always)]
            fn axpy<S: Simd>(s: S, a: f32, row: &[u8], out: &mut [f32]) {
                const E: usize = <$blocks as Blocks>::ELEMS;
                let va = s.splat(a);
                for (b, o) in row.chunks_exact(<$blocks as Blocks>::BYTES).zip(out.chunks_exact_mut(E)) {
                    <$blocks as Blocks>::decode(s, b, &mut |off, v| {
                        let y = s.fma(va, v, s.ld(&o[off..]));
                        s.st(&mut o[off..], y);
                    });
                }
            }
            #[inline(always)]
            fn to_f32<S: Simd>(s: S, row: &[u8], out: &mut [f32]) {
                const E: usize = <$blocks as Blocks>::ELEMS;
                for (b, o) in row.chunks_exact(<$blocks as Blocks>::BYTES).zip(out.chunks_exact_mut(E)) {
                    <$blocks as Blocks>::decode(s, b, &mut |off, v| s.st(&mut o[off..], v));
                }
            }
            fn store<S: Simd>(_s: S, src: &[f32], row: &mut [u8]) {
                // The sizes come from `units`, and head sizes were checked to be whole blocks.
                quantize_cpu_row($ty, src, row);
            }
        }
    };
}
block_rows!(Q8Rows, Q8_0, KvType::Q8_0);
block_rows!(Q4Rows, Q4_0, KvType::Q4_0);

/// One side (K or V) of a layer's cache, `[kv_head][position]` rows.
#[derive(Copy, Clone, Debug)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    Q8_0(&'a [u8]),
    Q4_0(&'a [u8]),
}

/// Runs `$body` with `$f` the [`KvFormat`] of `$rows` and `$x` its slice.
macro_rules! with_format {
    ($rows:expr, |$x:ident, $f:ident| $body:expr) => {
        match $rows {
            KvRows::F32($x) => {
                type $f = F32Rows;
                $body
            }
            KvRows::F16($x) => {
                type $f = F16Rows;
                $body
            }
            KvRows::Q8_0($x) => {
                type $f = Q8Rows;
                $body
            }
            KvRows::Q4_0($x) => {
                type $f = Q4Rows;
                $body
            }
        }
    };
}

impl<'a> KvRows<'a> {
    pub fn ty(&self) -> KvType {
        match self {
            KvRows::F32(_) => KvType::F32,
            KvRows::F16(_) => KvType::F16,
            KvRows::Q8_0(_) => KvType::Q8_0,
            KvRows::Q4_0(_) => KvType::Q4_0,
        }
    }

    /// Whole rows of `dim` elements held.
    pub fn n_rows(&self, dim: usize) -> usize {
        with_format!(*self, |x, F| x.len() / F::units(dim).max(1))
    }

    /// The rows from `first` on.
    pub fn from_row(self, first: usize, dim: usize) -> KvRows<'a> {
        match self {
            KvRows::F32(x) => KvRows::F32(&x[first * F32Rows::units(dim)..]),
            KvRows::F16(x) => KvRows::F16(&x[first * F16Rows::units(dim)..]),
            KvRows::Q8_0(x) => KvRows::Q8_0(&x[first * Q8Rows::units(dim)..]),
            KvRows::Q4_0(x) => KvRows::Q4_0(&x[first * Q4Rows::units(dim)..]),
        }
    }

    /// `out[i] = q · row(first + i) * scale`.
    #[inline(always)]
    pub(crate) fn scores<S: Simd>(self, s: S, q: &[f32], first: usize, scale: f32, out: &mut [f32]) {
        let dim = q.len();
        with_format!(self, |x, F| {
            let u = F::units(dim);
            for (i, o) in out.iter_mut().enumerate() {
                *o = F::dot(s, q, &x[(first + i) * u..][..u]) * scale;
            }
        })
    }

    /// Rows `first..first + out.len() / dim` as f32, back to back in `out`.
    #[inline(always)]
    pub(crate) fn rows_to_f32<S: Simd>(self, s: S, first: usize, dim: usize, out: &mut [f32]) {
        with_format!(self, |x, F| {
            let u = F::units(dim);
            for (i, o) in out.chunks_exact_mut(dim).enumerate() {
                F::to_f32(s, &x[(first + i) * u..][..u], o);
            }
        })
    }

    /// `out += Σ p[i] · row(first + i)`.
    #[inline(always)]
    pub(crate) fn accumulate<S: Simd>(self, s: S, p: &[f32], first: usize, out: &mut [f32]) {
        let dim = out.len();
        with_format!(self, |x, F| {
            let u = F::units(dim);
            for (i, &a) in p.iter().enumerate() {
                F::axpy(s, a, &x[(first + i) * u..][..u], out);
            }
        })
    }
}

/// One layer's cache.
#[derive(Copy, Clone, Debug)]
pub struct KvLayer<'a> {
    pub k: KvRows<'a>,
    pub v: KvRows<'a>,
}

/// `n` zeros, in memory advised for transparent huge pages before anything touches it. A
/// decode step walks every sequence's rows of every layer, and in 4 KiB pages each walk
/// crossed a page every 32 rows of 128 bytes, where the hardware prefetcher stops. SmolLM2
/// Q4_1, 8 sequences at depth 160 in caches of 4096 positions (2 threads, three interleaved
/// pairs): attention 4.0-4.3 -> 3.1-3.3 ms a step, the whole step 21.5-22.0 -> 20.7. Only
/// whole 2 MiB pages inside the plane are advised. A touched huge page is resident whole, so
/// the cache becomes resident sooner than its rows fill, but never beyond the size the memory
/// plan counted for it.
fn huge_zeroed<T: Clone + Default>(n: usize) -> Vec<T> {
    let v = vec![T::default(); n];
    #[cfg(target_os = "linux")]
    {
        let (start, len) = (v.as_ptr() as usize, std::mem::size_of_val(&v[..]));
        const HUGE: usize = 2 << 20;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + len) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: advice on whole pages inside the vector's own allocation; it changes how
            // the kernel backs them, not their contents. Best effort: an error leaves 4 KiB pages.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
    v
}

/// An owned side of a layer's cache.
enum Plane {
    F32(Vec<f32>),
    F16(Vec<u16>),
    Q8_0(Vec<u8>),
    Q4_0(Vec<u8>),
}

impl Plane {
    fn new(ty: KvType, rows: usize, dim: usize) -> Plane {
        match ty {
            KvType::F32 => Plane::F32(huge_zeroed(rows * F32Rows::units(dim))),
            KvType::F16 => Plane::F16(huge_zeroed(rows * F16Rows::units(dim))),
            KvType::Q8_0 => Plane::Q8_0(huge_zeroed(rows * Q8Rows::units(dim))),
            KvType::Q4_0 => Plane::Q4_0(huge_zeroed(rows * Q4Rows::units(dim))),
        }
    }

    fn rows(&self) -> KvRows<'_> {
        match self {
            Plane::F32(x) => KvRows::F32(x),
            Plane::F16(x) => KvRows::F16(x),
            Plane::Q8_0(x) => KvRows::Q8_0(x),
            Plane::Q4_0(x) => KvRows::Q4_0(x),
        }
    }

    fn bytes(&self) -> u64 {
        (match self {
            Plane::F32(x) => 4 * x.len(),
            Plane::F16(x) => 2 * x.len(),
            Plane::Q8_0(x) | Plane::Q4_0(x) => x.len(),
        }) as u64
    }

    /// Stores each `dim`-element head of `src` at row `h · n_ctx + pos`.
    fn write(&mut self, isa: Isa, src: &[f32], dim: usize, n_ctx: usize, pos: usize) {
        #[inline(always)]
        fn heads<S: Simd, F: KvFormat>(
            s: S,
            x: &mut [F::Unit],
            src: &[f32],
            dim: usize,
            n_ctx: usize,
            pos: usize,
        ) {
            let u = F::units(dim);
            for (h, head) in src.chunks_exact(dim).enumerate() {
                F::store(s, head, &mut x[(h * n_ctx + pos) * u..][..u]);
            }
        }
        match self {
            Plane::F32(x) => dispatch!(isa, |s| heads::<_, F32Rows>(s, x, src, dim, n_ctx, pos)),
            Plane::F16(x) => dispatch!(isa, |s| heads::<_, F16Rows>(s, x, src, dim, n_ctx, pos)),
            Plane::Q8_0(x) => dispatch!(isa, |s| heads::<_, Q8Rows>(s, x, src, dim, n_ctx, pos)),
            Plane::Q4_0(x) => dispatch!(isa, |s| heads::<_, Q4Rows>(s, x, src, dim, n_ctx, pos)),
        }
    }
}

/// K and V of every CPU layer for `n_ctx` positions.
pub(crate) struct KvCache {
    /// Per layer (K, V); empty planes for recurrent layers.
    layers: Vec<(Plane, Plane)>,
    pub n_ctx: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Rotation blocks of a quantized K (q rotates with it) and V (the output rotates back).
    pub k_rotation: Option<usize>,
    pub v_rotation: Option<usize>,
    /// A token's K or V rotated before it is stored.
    rotated: Vec<f32>,
}

impl KvCache {
    /// A cache for each layer where `attends(layer)`; the others (recurrent layers) get none.
    /// Quantized types need head sizes of whole blocks (checked by the caller).
    pub fn new(
        n_layer: usize,
        attends: impl Fn(usize) -> bool,
        n_ctx: usize,
        n_kv: usize,
        head_dim: usize,
        head_dim_v: usize,
        types: CacheTypes,
    ) -> Self {
        let layers = (0..n_layer)
            .map(|il| {
                let rows = if attends(il) { n_kv * n_ctx } else { 0 };
                (Plane::new(types.k, rows, head_dim), Plane::new(types.v, rows, head_dim_v))
            })
            .collect();
        KvCache {
            layers,
            n_ctx,
            head_dim,
            head_dim_v,
            k_rotation: k_rotation(types.k, head_dim as u32).map(|b| b as usize),
            v_rotation: v_rotation(types.v, head_dim_v as u32).map(|b| b as usize),
            rotated: Vec::new(),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(|(k, v)| k.bytes() + v.bytes()).sum()
    }

    pub fn layer(&self, il: usize) -> KvLayer<'_> {
        let (k, v) = &self.layers[il];
        KvLayer { k: k.rows(), v: v.rows() }
    }

    /// Writes K (`n_kv · head_dim`) and V (`n_kv · head_dim_v`) of one token at `pos`,
    /// rotated first where the side is quantized (see [`k_rotation`]).
    pub fn write(&mut self, isa: Isa, il: usize, pos: usize, k_tok: &[f32], v_tok: &[f32]) {
        let (n_ctx, hd, hdv) = (self.n_ctx, self.head_dim, self.head_dim_v);
        let (k, v) = &mut self.layers[il];
        for (plane, src, dim, rotation) in [(k, k_tok, hd, self.k_rotation), (v, v_tok, hdv, self.v_rotation)]
        {
            match rotation {
                Some(block) => {
                    self.rotated.clear();
                    self.rotated.extend_from_slice(src);
                    hadamard_in_place(&mut self.rotated, block);
                    plane.write(isa, &self.rotated, dim, n_ctx, pos);
                }
                None => plane.write(isa, src, dim, n_ctx, pos),
            }
        }
    }
}
