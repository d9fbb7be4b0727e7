//! matvec, matmul and get_rows against the CPU reference, for every GPU weight type, on shapes
//! that do not divide the tiles, one row, many rows and several tokens.

mod common;

use common::{Rng, check_close, dequant, gpus, random_weights};
use wllm_engine::ops::get_rows::get_rows;
use wllm_engine::ops::linear::{Epilogue, LinearIo, linear};
use wllm_engine::tensor::GPU_TYPES;
use wllm_engine::tensor::GpuWeight;
use wllm_loaders::GgmlType;
use wllm_loaders::model::{TensorBytes, TensorMeta};

fn upload(gpu: &wllm_engine::Gpu, t: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> GpuWeight {
    let meta = TensorMeta { name: format!("w.{t}"), ggml_type: t, dims: vec![cols as u64, rows as u64] };
    GpuWeight::upload(gpu, &TensorBytes { meta, bytes: bytes.into() }).unwrap()
}

/// Reference y[t][r] = sum_c w[r][c] x[t][c] in f64, and the scale sum |w x| for the budget.
fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize, n_tok: usize) -> (Vec<f64>, Vec<f64>) {
    let mut y = vec![0f64; rows * n_tok];
    let mut s = vec![0f64; rows * n_tok];
    for t in 0..n_tok {
        for r in 0..rows {
            for c in 0..cols {
                let p = w[r * cols + c] as f64 * x[t * cols + c] as f64;
                y[t * rows + r] += p;
                s[t * rows + r] += p.abs();
            }
        }
    }
    (y, s)
}

fn shapes(t: GgmlType) -> Vec<(usize, usize)> {
    let bs = (t.block_size() as usize).max(32);
    vec![(1, bs), (67, bs * 3), (130, bs * 5), (300, bs * 2)]
}

#[test]
fn matvec_matches_cpu_for_every_type() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(1);
        for &t in GPU_TYPES {
            for (rows, cols) in shapes(t) {
                let n_tok = 3;
                let wb = random_weights(t, rows, cols, &mut rng);
                let wf = dequant(t, &wb, rows * cols);
                let x = rng.vec(cols * n_tok, 1.0);
                let w = upload(&gpu, t, rows, cols, &wb);
                let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
                let yb = gpu.storage("y", (rows * n_tok * 4) as u64);
                let io = LinearIo {
                    x: &xb,
                    x_offset: 0,
                    x_stride: cols as u32,
                    y: &yb,
                    y_offset: 0,
                    y_stride: rows as u32,
                    bias: None,
                    gate: None,
                };
                let step = gpu.uniform("step", &[0u32, n_tok as u32, 0, 0]);
                let ops = linear(&gpu, &w, &io, Epilogue::Store, &step, false).unwrap();
                gpu.run(&ops, n_tok as u32).unwrap();
                let got = gpu.read_f32(&yb).unwrap();
                let (want, scale) = reference(&wf, &x, rows, cols, n_tok);
                check_close(
                    &format!("[{name}] matvec {t} {rows}x{cols}"),
                    &got[..rows * n_tok],
                    &want,
                    &scale,
                    1e-5,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn matmul_matches_cpu_for_every_type() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(2);
        for &t in GPU_TYPES {
            let (rows, cols) = (67, (t.block_size() as usize).max(32) * 3);
            for n_tok in [1usize, 5, 33] {
                let wb = random_weights(t, rows, cols, &mut rng);
                let wf = dequant(t, &wb, rows * cols);
                let x = rng.vec(cols * n_tok, 1.0);
                let w = upload(&gpu, t, rows, cols, &wb);
                let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
                let yb = gpu.storage("y", (rows * n_tok * 4) as u64);
                let step = gpu.uniform("step", &[0u32, n_tok as u32, 0, 0]);
                let io = LinearIo {
                    x: &xb,
                    x_offset: 0,
                    x_stride: cols as u32,
                    y: &yb,
                    y_offset: 0,
                    y_stride: rows as u32,
                    bias: None,
                    gate: None,
                };
                let ops = linear(&gpu, &w, &io, Epilogue::Store, &step, true).unwrap();
                gpu.run(&ops, n_tok as u32).unwrap();
                let got = gpu.read_f32(&yb).unwrap();
                let (want, scale) = reference(&wf, &x, rows, cols, n_tok);
                check_close(
                    &format!("[{name}] matmul {t} {rows}x{cols} T={n_tok}"),
                    &got[..rows * n_tok],
                    &want,
                    &scale,
                    1e-5,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn epilogues_bias_add_and_glu() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(3);
        let t = GgmlType::Q4_K;
        let (rows, cols, n_tok) = (45usize, 512usize, 2usize);
        let wb = random_weights(t, rows, cols, &mut rng);
        let wf = dequant(t, &wb, rows * cols);
        let x = rng.vec(cols * n_tok, 1.0);
        let bias = rng.vec(rows, 1.0);
        let y0 = rng.vec(rows * n_tok, 1.0);
        let w = upload(&gpu, t, rows, cols, &wb);
        let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
        let bb = gpu.storage_init("b", bytemuck::cast_slice(&bias));
        let gb = gpu.storage_init("g", bytemuck::cast_slice(&y0));
        let (dot, scale) = reference(&wf, &x, rows, cols, n_tok);
        let step = gpu.uniform("step", &[0u32, n_tok as u32, 0, 0]);
        for batched in [false, true] {
            for epi in [Epilogue::Store, Epilogue::Add, Epilogue::GluSilu, Epilogue::GluGelu] {
                let yb = gpu.storage_init("y", bytemuck::cast_slice(&y0));
                let glu = epi.is_glu();
                let io = LinearIo {
                    x: &xb,
                    x_offset: 0,
                    x_stride: cols as u32,
                    y: &yb,
                    y_offset: 0,
                    y_stride: rows as u32,
                    bias: Some(&bb),
                    gate: glu.then_some(&gb),
                };
                let ops = linear(&gpu, &w, &io, epi, &step, batched).unwrap();
                gpu.run(&ops, n_tok as u32).unwrap();
                let got = gpu.read_f32(&yb).unwrap();
                let mut want = vec![0f64; rows * n_tok];
                let mut sc = vec![0f64; rows * n_tok];
                for i in 0..rows * n_tok {
                    let v = dot[i] + bias[i % rows] as f64;
                    let g = y0[i] as f64;
                    let silu = g / (1.0 + (-g).exp());
                    let gelu = 0.5
                        * g
                        * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g)).tanh());
                    want[i] = match epi {
                        Epilogue::Store => v,
                        Epilogue::Add => v + g,
                        Epilogue::GluSilu => silu * v,
                        Epilogue::GluGelu => gelu * v,
                        Epilogue::PairSilu | Epilogue::PairGelu => unreachable!("tested in gate_up_pairs"),
                    };
                    sc[i] = (scale[i] + 1.0) * (1.0 + g.abs());
                }
                check_close(
                    &format!("[{name}] {epi:?} batched={batched}"),
                    &got[..rows * n_tok],
                    &want,
                    &sc,
                    1e-5,
                    1e-6,
                );
            }
        }
    }
}

#[test]
fn gate_up_pairs() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(5);
        for &t in &[GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q8_0] {
            let (half, cols) = (37usize, (t.block_size() as usize).max(32) * 2);
            let rows = 2 * half;
            let wb = random_weights(t, rows, cols, &mut rng);
            let wf = dequant(t, &wb, rows * cols);
            let w = upload(&gpu, t, rows, cols, &wb);
            for n_tok in [1usize, 11] {
                let x = rng.vec(cols * n_tok, 1.0);
                let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
                let yb = gpu.storage("y", (half * n_tok * 4) as u64);
                let step = gpu.uniform("step", &[0u32, n_tok as u32, 0, 0]);
                let (dot, scale) = reference(&wf, &x, rows, cols, n_tok);
                for (epi, silu) in [(Epilogue::PairSilu, true), (Epilogue::PairGelu, false)] {
                    let io = LinearIo {
                        x: &xb,
                        x_offset: 0,
                        x_stride: cols as u32,
                        y: &yb,
                        y_offset: 0,
                        y_stride: half as u32,
                        bias: None,
                        gate: None,
                    };
                    let ops = linear(&gpu, &w, &io, epi, &step, n_tok > 1).unwrap();
                    gpu.run(&ops, n_tok as u32).unwrap();
                    let got = gpu.read_f32(&yb).unwrap();
                    let mut want = vec![0f64; half * n_tok];
                    let mut sc = vec![0f64; half * n_tok];
                    for tk in 0..n_tok {
                        for r in 0..half {
                            let g = dot[tk * rows + r];
                            let u = dot[tk * rows + half + r];
                            let act = if silu {
                                g / (1.0 + (-g).exp())
                            } else {
                                0.5 * g
                                    * (1.0
                                        + ((2.0 / std::f64::consts::PI).sqrt() * (g + 0.044715 * g * g * g))
                                            .tanh())
                            };
                            want[tk * half + r] = act * u;
                            sc[tk * half + r] =
                                (scale[tk * rows + r] + 1.0) * (scale[tk * rows + half + r] + 1.0);
                        }
                    }
                    check_close(
                        &format!("[{name}] {epi:?} {t} T={n_tok}"),
                        &got[..half * n_tok],
                        &want,
                        &sc,
                        1e-5,
                        1e-6,
                    );
                }
            }
        }
    }
}

#[test]
fn get_rows_dequantizes_and_scales() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(4);
        for &t in GPU_TYPES {
            let (rows, cols) = (19usize, (t.block_size() as usize).max(32) * 2);
            let wb = random_weights(t, rows, cols, &mut rng);
            let wf = dequant(t, &wb, rows * cols);
            let w = upload(&gpu, t, rows, cols, &wb);
            let ids: Vec<u32> = vec![3, 0, 18, 3, 7];
            let idb = gpu.storage_init("ids", bytemuck::cast_slice(&ids));
            let out = gpu.storage("out", (ids.len() * cols * 4) as u64);
            let ops = get_rows(&gpu, &w, &idb, &out, cols as u32, 2.5).unwrap();
            gpu.run(&ops, ids.len() as u32).unwrap();
            let got = gpu.read_f32(&out).unwrap();
            let want: Vec<f64> = ids
                .iter()
                .flat_map(|&i| wf[i as usize * cols..(i as usize + 1) * cols].iter().map(|v| *v as f64 * 2.5))
                .collect();
            let scale: Vec<f64> = want.iter().map(|v| v.abs()).collect();
            check_close(&format!("[{name}] get_rows {t}"), &got, &want, &scale, 1e-6, 0.0);
        }
    }
}
