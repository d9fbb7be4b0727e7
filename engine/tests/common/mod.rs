//! Shared test support: GPUs for each feature path, a tiny deterministic RNG, random quantized
//! weights, error checks that name the failing index, and the float64 references
//! ([`reference`]) that the GPU and the CPU kernels are both held to.
#![allow(dead_code)]

pub mod delta_net;
pub mod reference;

use std::sync::Arc;

use wllm_engine::{DeviceOptions, Gpu, Tuning};
use wllm_loaders::GgmlType;

/// The GPUs to run a kernel test on: with all optional features and without (fallback paths),
/// each with both linear-kernel shapes. Empty (with a note) when no adapter exists.
pub fn gpus() -> Vec<(&'static str, Arc<Gpu>)> {
    let mut out = Vec::new();
    let lane = Tuning {
        row_per_lane: true,
        chunked_delta_rule: true,
        split_decode_attention: true,
        tiled_prefill_attention: true,
    };
    let reduce = Tuning {
        row_per_lane: false,
        chunked_delta_rule: false,
        split_decode_attention: false,
        tiled_prefill_attention: false,
    };
    let plain = DeviceOptions {
        disable_f16: true,
        disable_subgroups: true,
        disable_timestamps: true,
        ..Default::default()
    };
    let configs = [
        ("features/lane", DeviceOptions { tuning: Some(lane), ..Default::default() }),
        ("features/reduce", DeviceOptions { tuning: Some(reduce), ..Default::default() }),
        ("plain/lane", DeviceOptions { tuning: Some(lane), ..plain.clone() }),
        ("plain/reduce", DeviceOptions { tuning: Some(reduce), ..plain }),
    ];
    for (name, opts) in configs {
        match Gpu::new(&opts) {
            Ok(g) => out.push((name, g)),
            Err(e) => {
                eprintln!("skipping GPU test: {e}");
                return out;
            }
        }
    }
    out
}

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
}

/// `rows` rows of `cols` random but well-formed elements of type `t` (random quant codes,
/// modest finite scales).
pub fn random_weights(t: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    use GgmlType::*;
    let n = rows * cols;
    match t {
        F32 => return bytemuck::cast_slice(&rng.vec(n, 1.0)).to_vec(),
        F16 => return rng.vec(n, 1.0).iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        BF16 => return rng.vec(n, 1.0).iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        _ => {}
    }
    let bs = t.block_size() as usize;
    let ts = t.type_size() as usize;
    assert_eq!(cols % bs, 0);
    let nblocks = n / bs;
    let mut out = vec![0u8; nblocks * ts];
    for b in out.iter_mut() {
        *b = rng.below(256) as u8;
    }
    for blk in out.chunks_mut(ts) {
        let mut d = || 0.01 + 0.05 * rng.f32().abs();
        match t {
            Q4_0 | Q5_0 | Q8_0 | IQ4_NL => put_f16(blk, 0, d()),
            // Random run scales reach 31 x 113 times d.
            IQ4_XS => put_f16(blk, 0, 0.002 * d()),
            Q4_1 | Q5_1 => {
                put_f16(blk, 0, d());
                put_f16(blk, 2, -0.3 * d());
            }
            Q2_K => {
                put_f16(blk, 80, d());
                put_f16(blk, 82, d());
            }
            Q3_K => put_f16(blk, 108, d()),
            Q4_K | Q5_K => {
                put_f16(blk, 0, 0.1 * d());
                put_f16(blk, 2, 0.1 * d());
            }
            Q6_K => put_f16(blk, 208, 0.1 * d()),
            MXFP4 => blk[0] = 118 + (rng.below(8) as u8),
            // Codebook values times run scales reach several hundred times d.
            IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => put_f16(blk, 0, 0.002 * d()),
            IQ1_S => put_f16(blk, 0, 0.02 * d()),
            // The f16 scale is the top nibbles of the four u16 scale words at byte 48.
            IQ1_M => {
                let bits = half::f16::from_f32(0.02 * d()).to_bits();
                for k in 0..4 {
                    let hi = &mut blk[48 + 2 * k + 1];
                    *hi = (*hi & 0x0F) | ((((bits >> (4 * k)) & 0xF) as u8) << 4);
                }
            }
            other => panic!("no generator for {other}"),
        }
    }
    out
}

pub fn dequant(t: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    wllm_loaders::quant::dequantize_row(t, bytes, &mut v).unwrap();
    v
}

/// Checks `got` against `want` with |d| <= rel * scale[i] + abs, naming the worst index.
pub fn check_close(what: &str, got: &[f32], want: &[f64], scale: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0f64);
    for i in 0..got.len() {
        let d = (got[i] as f64 - want[i]).abs();
        let budget = rel * scale[i] + abs;
        // NaN must fail too, hence not `d > budget`.
        if d.is_nan() || d > budget {
            panic!("{what}: index {i}: got {} want {} (|d| {d:e} > budget {budget:e})", got[i], want[i]);
        }
        if d > worst.1 {
            worst = (i, d);
        }
    }
    eprintln!("{what}: ok, max |d| {:e} at {}", worst.1, worst.0);
}
