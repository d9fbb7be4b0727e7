//! Element types of the KV cache: float (f32, f16) or quantized in 32-element blocks with an
//! f16 scale (Q8_0, Q4_0, llama.cpp's `-ctk`/`-ctv` types). Quantized caches trade a little
//! accuracy for memory: Q8_0 holds a position in 53% of f16's bytes, Q4_0 in 28%.
//!
//! The CPU stores quantized rows as llama.cpp's blocks (`d` then the quants). The GPU stores
//! a row as its quants, four (Q8_0) or eight (Q4_0) consecutive elements per `u32`, followed
//! by the blocks' f16 scales packed two per `u32`: every row is whole `u32`s, one invocation
//! writes each word, and a row's bytes are those of llama.cpp's blocks when it holds an even
//! number of blocks.

use crate::error::{EngineError, Result};

/// Element type of one side (K or V) of the cache.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    F32,
    #[default]
    F16,
    Q8_0,
    Q4_0,
}

/// Elements per quantization block.
pub const KV_BLOCK: u32 = 32;

impl KvType {
    pub const ALL: [KvType; 4] = [KvType::F32, KvType::F16, KvType::Q8_0, KvType::Q4_0];

    /// llama.cpp's names (`f32`, `f16`, `q8_0`, `q4_0`), case-insensitive.
    pub fn parse(name: &str) -> Result<KvType> {
        match name.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            "q4_0" => Ok(KvType::Q4_0),
            _ => Err(EngineError::InvalidArgument(format!(
                "unknown KV cache type {name:?}: use f16, q8_0, q4_0 or f32"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, KvType::Q8_0 | KvType::Q4_0)
    }

    /// Bits of one quant (quantized types).
    fn quant_bits(self) -> u64 {
        match self {
            KvType::Q4_0 => 4,
            _ => 8,
        }
    }

    /// A quantized cache needs rows of whole blocks.
    pub fn check_dim(self, dim: u32) -> Result<()> {
        if self.is_quantized() && !dim.is_multiple_of(KV_BLOCK) {
            return Err(EngineError::Unsupported(format!(
                "a {} KV cache needs head sizes that are multiples of {KV_BLOCK}, not {dim}",
                self.name()
            )));
        }
        Ok(())
    }

    /// Bytes of one row of `dim` elements in the CPU's cache (llama.cpp's block layout).
    pub fn cpu_row_bytes(self, dim: u32) -> u64 {
        let dim = dim as u64;
        match self {
            KvType::F32 => 4 * dim,
            KvType::F16 => 2 * dim,
            q => dim / KV_BLOCK as u64 * (2 + KV_BLOCK as u64 * q.quant_bits() / 8),
        }
    }

    /// Bytes of one row of `dim` elements in the GPU's cache (see the module comment).
    pub fn gpu_row_bytes(self, dim: u32) -> u64 {
        match self {
            KvType::F32 | KvType::F16 => self.cpu_row_bytes(dim),
            q => 4 * gpu_row_words(q, dim) as u64,
        }
    }
}

/// The block of the Walsh-Hadamard rotation applied to K (and q, so scores do not change)
/// before a quantized K is stored: the largest power of two of at least 64 that divides the
/// head size, as llama.cpp chooses (a rotation spreads a head's outlier channels over the
/// block, so one channel no longer sets a whole block's scale). `None` for a float K or a
/// head size that is not a multiple of 64.
pub fn k_rotation(ty: KvType, head_dim: u32) -> Option<u32> {
    if !ty.is_quantized() || !head_dim.is_multiple_of(64) {
        return None;
    }
    Some(1 << head_dim.trailing_zeros())
}

/// The rotation applied to a quantized V before it is stored, and to the attention output
/// after (the rotation is its own inverse): blocks of 64, llama.cpp's choice for V.
pub fn v_rotation(ty: KvType, head_dim_v: u32) -> Option<u32> {
    (ty.is_quantized() && head_dim_v.is_multiple_of(64)).then_some(64)
}

/// The orthonormal Walsh-Hadamard transform of every `block`-element block of `x` (a power of
/// two dividing `x.len()`), in place: `H = H^T = H^-1`, Sylvester's ordering.
pub fn hadamard_in_place(x: &mut [f32], block: usize) {
    let scale = 1.0 / (block as f32).sqrt();
    for b in x.chunks_exact_mut(block) {
        let mut h = 1;
        while h < block {
            for i in (0..block).filter(|i| i & h == 0) {
                let (a, c) = (b[i], b[i + h]);
                b[i] = a + c;
                b[i + h] = a - c;
            }
            h *= 2;
        }
        for v in b.iter_mut() {
            *v *= scale;
        }
    }
}

/// One Q4_0 block of a cache row: the signed scale `d` and the 32 quants `q` in -8..=7 (an
/// element is `d · q`). llama.cpp's quantizer maps the largest magnitude to -8 and rounds the
/// rest to that grid; this one tries 21 grids around it (the largest magnitude at -7 to -9)
/// and keeps the quants whose least-squares scale leaves the smallest error, at the same
/// storage. The GPU's rope kernel computes the same, operation for operation.
pub fn quantize_q4_0_block(x: &[f32; 32]) -> (f32, [i8; 32]) {
    let mut max = 0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    let mut best = (0f32, [0i8; 32]);
    if max == 0.0 {
        return best;
    }
    let mut best_score = -1f32;
    for step in -10..=10 {
        let inv = -(8.0 + 0.1 * step as f32) / max;
        let (mut sum_xq, mut sum_qq) = (0f32, 0f32);
        let mut q = [0i8; 32];
        for (qj, &v) in q.iter_mut().zip(x) {
            let l = (v * inv).round().clamp(-8.0, 7.0);
            *qj = l as i8;
            sum_xq += v * l;
            sum_qq += l * l;
        }
        // The error at the best scale d = Σxq / Σq² is Σx² - (Σxq)² / Σq².
        let score = sum_xq * sum_xq / sum_qq;
        if sum_qq > 0.0 && score > best_score {
            best_score = score;
            best = (sum_xq / sum_qq, q);
        }
    }
    best
}

/// A row quantized for the CPU's cache: llama.cpp's blocks (f16 `d`, then the quants).
pub fn quantize_cpu_row(ty: KvType, x: &[f32], out: &mut [u8]) {
    match ty {
        KvType::Q4_0 => {
            for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(18)) {
                let (d, q) = quantize_q4_0_block(xb.try_into().expect("32 elements"));
                ob[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
                for j in 0..16 {
                    ob[2 + j] = (q[j] + 8) as u8 | (((q[j + 16] + 8) as u8) << 4);
                }
            }
        }
        KvType::Q8_0 => {
            wllm_loaders::quant::quantize_row_into(wllm_loaders::GgmlType::Q8_0, x, out)
                .expect("a cache row of whole blocks");
        }
        KvType::F32 | KvType::F16 => unreachable!("float rows are not quantized"),
    }
}

/// `u32` words of one quantized GPU row: its quants, then its scales two per word.
pub fn gpu_row_words(ty: KvType, dim: u32) -> u32 {
    let per_word = 32 / ty.quant_bits() as u32;
    dim / per_word + (dim / KV_BLOCK).div_ceil(2)
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The types of K and V.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct CacheTypes {
    pub k: KvType,
    pub v: KvType,
}

impl CacheTypes {
    pub const F32: CacheTypes = CacheTypes { k: KvType::F32, v: KvType::F32 };

    pub fn check_dims(self, head_dim: u32, head_dim_v: u32) -> Result<()> {
        self.k.check_dim(head_dim)?;
        self.v.check_dim(head_dim_v)
    }
}

/// What a user asked for: `None` leaves a side at f16 (f32 on a GPU without f16 storage), as
/// llama.cpp's default; f32 keeps K and V exactly, at twice the memory and attention traffic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct CacheRequest {
    pub k: Option<KvType>,
    pub v: Option<KvType>,
}

impl CacheRequest {
    /// The types a backend uses: its `default` where nothing was asked for, and f32 for f16
    /// where the backend has no f16 storage.
    pub fn resolve(self, default: KvType, has_f16: bool) -> CacheTypes {
        let pick = |t: Option<KvType>| match t.unwrap_or(default) {
            KvType::F16 if !has_f16 => KvType::F32,
            t => t,
        };
        CacheTypes { k: pick(self.k), v: pick(self.v) }
    }

    /// What the GPU uses.
    pub fn for_gpu(self, has_f16: bool) -> CacheTypes {
        self.resolve(KvType::F16, has_f16)
    }

    /// What the CPU layers use.
    pub fn for_cpu(self) -> CacheTypes {
        self.resolve(KvType::F16, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_rows_take_the_bytes_of_llama_cpp_blocks() {
        assert_eq!(KvType::Q8_0.cpu_row_bytes(128), 4 * 34);
        assert_eq!(KvType::Q4_0.cpu_row_bytes(128), 4 * 18);
        assert_eq!(KvType::Q8_0.gpu_row_bytes(128), 4 * 34);
        assert_eq!(KvType::Q4_0.gpu_row_bytes(128), 4 * 18);
        // An odd number of blocks pads its last scale word.
        assert_eq!(KvType::Q8_0.gpu_row_bytes(96), 96 + 8);
        assert_eq!(KvType::F16.gpu_row_bytes(80), 160);
    }

    #[test]
    fn the_rotation_is_orthonormal_and_its_own_inverse() {
        let x: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut y = x.clone();
        hadamard_in_place(&mut y, 128);
        let norm = |v: &[f32]| v.iter().map(|a| (a * a) as f64).sum::<f64>();
        assert!((norm(&x) - norm(&y)).abs() < 1e-3 * norm(&x));
        // Row 1 of H_128 (alternating signs) against the first block.
        let row1: f32 = x[..128].iter().enumerate().map(|(j, v)| if j % 2 == 0 { *v } else { -*v }).sum();
        assert!((y[1] - row1 / 128f32.sqrt()).abs() < 1e-3);
        hadamard_in_place(&mut y, 128);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            assert!((a - b).abs() < 1e-4, "element {i}: {a} came back as {b}");
        }
        assert_eq!(k_rotation(KvType::Q8_0, 192), Some(64));
        assert_eq!(k_rotation(KvType::Q4_0, 256), Some(256));
        assert_eq!(k_rotation(KvType::F16, 128), None);
        assert_eq!(v_rotation(KvType::Q4_0, 96), None);
    }

    #[test]
    fn the_q4_0_search_never_does_worse_than_llama_cpps_grid() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
        };
        let (mut ours, mut grid) = (0f64, 0f64);
        for b in 0..200 {
            let mut x: [f32; 32] = std::array::from_fn(|_| next());
            // Every other block has an outlier channel, as K heads do.
            if b % 2 == 0 {
                x[b % 32] *= 6.0;
            }
            // llama.cpp's grid, through the loaders' reference quantizer.
            let mut blocks = [0u8; 18];
            wllm_loaders::quant::quantize_row_into(wllm_loaders::GgmlType::Q4_0, &x, &mut blocks).unwrap();
            let back = wllm_loaders::quant::dequantize(wllm_loaders::GgmlType::Q4_0, &blocks, 32).unwrap();
            let g: f64 = x.iter().zip(&back).map(|(&v, &b)| ((v - b) as f64).powi(2)).sum();
            let (ds, qs) = quantize_q4_0_block(&x);
            // Both as stored: the scale rounded to f16.
            let ds = half::f16::from_f32(ds).to_f32();
            let o: f64 = x.iter().zip(qs).map(|(&v, q)| ((v - ds * q as f32) as f64).powi(2)).sum();
            assert!(o <= g * (1.0 + 1e-6), "block {b}: {o} > {g}");
            ours += o;
            grid += g;
        }
        // About 6% less squared error on these blocks.
        assert!(ours < 0.97 * grid, "the search gains little: {ours} against {grid}");
        assert_eq!(quantize_q4_0_block(&[0.0; 32]), (0.0, [0; 32]));
    }

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for t in KvType::ALL {
            assert_eq!(KvType::parse(t.name()).unwrap(), t);
        }
        assert!(KvType::parse("q5_1").is_err());
        assert!(KvType::Q4_0.check_dim(80).is_err());
        assert!(KvType::F16.check_dim(80).is_ok());
    }

    #[test]
    fn the_default_is_f16_where_there_is_f16() {
        let none = CacheRequest::default();
        assert_eq!(none.for_gpu(true), CacheTypes { k: KvType::F16, v: KvType::F16 });
        assert_eq!(none.for_gpu(false), CacheTypes::F32);
        assert_eq!(none.for_cpu(), CacheTypes { k: KvType::F16, v: KvType::F16 });
        let q = CacheRequest { k: Some(KvType::Q8_0), v: Some(KvType::F16) };
        assert_eq!(q.for_gpu(false), CacheTypes { k: KvType::Q8_0, v: KvType::F32 });
        assert_eq!(q.for_cpu(), CacheTypes { k: KvType::Q8_0, v: KvType::F16 });
    }
}
