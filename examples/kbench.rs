//! Kernel micro-benchmark: repeated matvec dispatches in one pass, GB/s of weight bytes.
use std::time::Instant;

use wllm::engine::ops::matvec::{Epilogue, LinearIo, matvec};
use wllm::engine::tensor::GpuWeight;
use wllm::engine::{DeviceOptions, Gpu};
use wllm::loaders::GgmlType;
use wllm::loaders::model::{TensorBytes, TensorMeta};

fn main() {
    let gpu = Gpu::new(&DeviceOptions::default()).unwrap();
    let cases: &[(GgmlType, usize, usize)] = &[
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q8_0, 576, 49152),
        (GgmlType::Q4_K, 4096, 4096),
        (GgmlType::Q8_0, 640, 65536),
    ];
    for &(t, cols, rows) in cases {
        let bytes = vec![0x11u8; (t.bytes_for((rows * cols) as u64).unwrap()) as usize];
        let meta = TensorMeta { name: "w".into(), ggml_type: t, dims: vec![cols as u64, rows as u64] };
        let w = GpuWeight::upload(&gpu, &TensorBytes { meta, bytes: bytes.into() }).unwrap();
        let x = gpu.storage("x", cols as u64 * 4);
        let y = gpu.storage("y", rows as u64 * 4);
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
        let ops = matvec(&gpu, &w, &io, Epilogue::Store).unwrap();
        let reps = 20;
        let all: Vec<_> = (0..reps).flat_map(|_| ops.iter().cloned()).collect();
        gpu.run(&all, 1).unwrap();
        let t0 = Instant::now();
        gpu.run(&all, 1).unwrap();
        let dt = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{t} {cols}x{rows}: {:.1} us/call, {:.2} GB/s ({})",
            dt * 1e6,
            w.n_bytes() as f64 / dt / 1e9,
            ops[0].label()
        );
    }
}
