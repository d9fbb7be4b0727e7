//! Kernel micro-benchmark: repeated linear dispatches in one pass, GB/s of weight bytes.
//! `WLLM_LINEAR=lane|reduce` picks the kernel family.
use std::time::Instant;

use wllm::engine::ops::linear::{Epilogue, LinearIo, linear};
use wllm::engine::tensor::GpuWeight;
use wllm::engine::{DeviceOptions, Gpu};
use wllm::loaders::GgmlType;
use wllm::loaders::model::{TensorBytes, TensorMeta};

fn main() {
    let gpu = Gpu::new(&DeviceOptions::default()).unwrap();
    let cases: &[(GgmlType, usize, usize, u32)] = &[
        (GgmlType::Q4_1, 576, 576, 1),
        (GgmlType::Q4_1, 576, 1536, 1),
        (GgmlType::Q4_1, 1536, 576, 1),
        (GgmlType::Q8_0, 576, 49152, 1),
        (GgmlType::Q4_K, 4096, 4096, 1),
        (GgmlType::Q4_1, 576, 1536, 128),
    ];
    for &(t, cols, rows, ntok) in cases {
        let mut bytes = vec![0x11u8; (t.bytes_for((rows * cols) as u64).unwrap()) as usize];
        // Sane f16 scales for the legacy types: 0x11 bytes are fine for K-quants.
        bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (i * 7 % 251) as u8 & 0x3f);
        let meta = TensorMeta { name: "w".into(), ggml_type: t, dims: vec![cols as u64, rows as u64] };
        let w = GpuWeight::upload(&gpu, &TensorBytes { meta, bytes: bytes.into() }).unwrap();
        let x = gpu.storage("x", (cols * ntok as usize) as u64 * 4);
        let y = gpu.storage("y", (rows * ntok as usize) as u64 * 4);
        let step = gpu.uniform("step", &[0u32, ntok, 0, 0]);
        let io = LinearIo {
            x: &x,
            x_offset: 0,
            x_stride: cols as u32,
            y: &y,
            y_offset: 0,
            y_stride: rows as u32,
            bias: None,
            gate: None,
        };
        let ops = linear(&gpu, &w, &io, Epilogue::Store, &step, ntok > 1).unwrap();
        let reps = if ntok > 1 { 3 } else { 20 };
        let all: Vec<_> = (0..reps).flat_map(|_| ops.iter().cloned()).collect();
        gpu.run(&all, ntok).unwrap();
        let t0 = Instant::now();
        gpu.run(&all, ntok).unwrap();
        let dt = t0.elapsed().as_secs_f64() / reps as f64;
        let flops = 2.0 * rows as f64 * cols as f64 * ntok as f64;
        println!(
            "{t} {cols}x{rows} T={ntok}: {:.1} us/call, {:.2} GB/s, {:.2} GFLOP/s ({})",
            dt * 1e6,
            w.n_bytes() as f64 / dt / 1e9,
            flops / dt / 1e9,
            ops[0].label()
        );
    }
}
