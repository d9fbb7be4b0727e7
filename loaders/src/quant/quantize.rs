//! Reference quantizers for Q8_0, Q4_0 and Q4_K, following `quantize_row_q8_0_ref`,
//! `quantize_row_q4_0_ref` and `quantize_row_q4_K_ref` (with `make_qkx2_quants`) in `ggml/src/ggml-quants.c` at llama.cpp
//! commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f operation for operation, so that without
//! fused multiply-adds the bytes match llama.cpp's. Used to build test weights and to
//! quantize activations; model files come already quantized.

use half::f16;

use super::error::{Op, QuantError};
use super::kquants::{BlockQ4K, K_SCALE_SIZE, QK_K, get_scale_min_k4};
use super::legacy::{BlockQ4_0, BlockQ8_0, QK};
use crate::ggml_type::GgmlType;

/// Quantizes `x` (a whole number of blocks) to `ty` and appends the blocks to `out`.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) -> Result<(), QuantError> {
    let start = out.len();
    let n_bytes = row_bytes(ty, x.len())?;
    out.resize(start + n_bytes, 0);
    quantize_row_into(ty, x, &mut out[start..])
}

/// Quantizes `x` (a whole number of blocks) to `ty` into `out`, which holds exactly its blocks.
pub fn quantize_row_into(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    let n_bytes = row_bytes(ty, x.len())?;
    if out.len() != n_bytes {
        return Err(QuantError::ByteLength { ty, n_elements: x.len(), expected: n_bytes, actual: out.len() });
    }
    let block_size = ty.block_size() as usize;
    let block_bytes = ty.type_size() as usize;
    for (chunk, dst) in x.chunks_exact(block_size).zip(out.chunks_exact_mut(block_bytes)) {
        match ty {
            GgmlType::Q8_0 => dst.copy_from_slice(bytemuck::bytes_of(&quantize_q8_0(chunk))),
            GgmlType::Q4_0 => dst.copy_from_slice(bytemuck::bytes_of(&quantize_q4_0(chunk))),
            _ => dst.copy_from_slice(bytemuck::bytes_of(&quantize_q4_k(chunk))),
        }
    }
    Ok(())
}

/// Bytes of `n` elements quantized to `ty`, for the types with a quantizer.
fn row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    let block_size = match ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 => QK,
        GgmlType::Q4_K => QK_K,
        _ => return Err(QuantError::Unsupported { ty, op: Op::Quantization }),
    };
    if !n.is_multiple_of(block_size) {
        return Err(QuantError::PartialBlock { ty, n_elements: n, block_size });
    }
    Ok(n / block_size * ty.type_size() as usize)
}

/// Round to nearest, ties to even: what ggml's `nearest_int` float trick computes for the
/// magnitudes it is used on (below 2^22).
pub fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// One Q8_0 block: `d = max|x| / 127`, `q = round(x / d)` with ties away from zero.
fn quantize_q8_0(x: &[f32]) -> BlockQ8_0 {
    // Written as a comparison, like ggml's MAX macro, rather than f32::max: the two differ
    // on NaN and the bytes must match.
    let amax = x.iter().fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    BlockQ8_0 { d: f16::from_f32(d), qs: std::array::from_fn(|j| (x[j] * id).round() as i8) }
}

/// One Q4_0 block: `d = m / -8` for the value `m` of largest magnitude (sign kept), so that
/// `m` lands on quant 0; `q = min(15, trunc(x / d + 8.5))`.
fn quantize_q4_0(x: &[f32]) -> BlockQ4_0 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    BlockQ4_0 { d: f16::from_f32(d), qs: std::array::from_fn(|j| q(x[j]) | (q(x[j + QK / 2]) << 4)) }
}

/// One Q4_K super-block: a weighted min/scale search per 32-element sub-block, then the
/// scales and mins quantized to 6 bits against the block maxima, then the quants recomputed
/// against the scales as they will be decoded.
fn quantize_q4_k(x: &[f32]) -> BlockQ4K {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; QK_K / 32];
    let mut mins = [0f32; QK_K / 32];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for (j, xs) in x.chunks_exact(32).enumerate() {
        let sum_x2 = xs.iter().fold(0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        let search = Qkx2Search { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
        (scales[j], mins[j]) = search.run(xs, &weights, &mut levels[32 * j..32 * (j + 1)]);
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }

    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; K_SCALE_SIZE];
    for j in 0..QK_K / 32 {
        // `as u8` wraps like ggml's int-to-uint8_t store before the clamp.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);

    for (j, xs) in x.chunks_exact(32).enumerate() {
        let (sc, m) = get_scale_min_k4(j, &packed);
        let dl = d.to_f32() * f32::from(sc);
        if dl == 0.0 {
            // ggml keeps the search's levels here; they decode to -dm either way.
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for (l, &v) in levels[32 * j..32 * (j + 1)].iter_mut().zip(xs) {
            *l = nearest_int((v + dm) / dl).clamp(0, 15) as u8;
        }
    }

    let mut qs = [0u8; QK_K / 2];
    for (i, q) in qs.iter_mut().enumerate() {
        let (chunk, l) = (i / 32, i % 32);
        *q = levels[64 * chunk + l] | (levels[64 * chunk + l + 32] << 4);
    }
    BlockQ4K { d, dmin, scales: packed, qs }
}

/// ggml's `make_qkx2_quants`: fits `x ≈ scale * l - min` with `l` in `0..=nmax` by trying
/// `nstep + 1` candidate inverse scales around `nmax / (max - min)`, solving weighted least
/// squares for scale and min at each one's levels, and keeping the lowest weighted error.
struct Qkx2Search {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
}

impl Qkx2Search {
    /// Returns `(scale, min)` with `min >= 0` subtracted, and writes the levels to `levels`.
    fn run(&self, x: &[f32], weights: &[f32], levels: &mut [u8]) -> (f32, f32) {
        let n = x.len();
        let nmax = self.nmax as f32;
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..n {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            sum_w += weights[i];
            sum_x += weights[i] * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            levels.fill(0);
            return (0.0, -min);
        }

        // `min` moves to each accepted fit, and later trials are measured from it, as in ggml.
        let level = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, self.nmax) as u8;
        let error = |d: f32| if self.use_mad { d.abs() } else { d * d };

        let iscale = nmax / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0f32;
        for i in 0..n {
            levels[i] = level(iscale, x[i], min);
            best_error += weights[i] * error(scale * f32::from(levels[i]) + min - x[i]);
        }
        if self.nstep < 1 {
            return (scale, -min);
        }

        let mut trial = [0u8; 32];
        let trial = &mut trial[..n];
        for step in 0..=self.nstep {
            let iscale = (self.rmin + self.rdelta * step as f32 + nmax) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
            for i in 0..n {
                trial[i] = level(iscale, x[i], min);
                let (w, l) = (weights[i], f32::from(trial[i]));
                sum_l += w * l;
                sum_l2 += w * l * l;
                sum_xl += w * l * x[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0f32;
                for i in 0..n {
                    cur_error += weights[i] * error(this_scale * f32::from(trial[i]) + this_min - x[i]);
                }
                if cur_error < best_error {
                    levels.copy_from_slice(trial);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }
}
