//! The linear kernels against the float64 reference: on the GPU, for every GPU weight type,
//! the matvec, matmul and lane kernels with their epilogues, and get_rows, on every device
//! configuration; on the CPU, for every CPU weight type, dequantization, the matvec and GEMM,
//! and the multi-output product, on every instruction set this machine has. Shapes do not
//! divide the tiles: one row, many rows, one block, a few, past the CPU's 512-element
//! dequantization segment, several tokens.

mod common;

use common::{Rng, check_close, dequant, gpus, random_weights, reference};
use wllm_engine::cpu::ops::Activation;
use wllm_engine::cpu::{
    self, Isa, LinearJob, WeightView, dequantize_rows, int_activation_block, linear_multi,
};
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

/// One product: a random weight of type `t` (`rows` x `cols`, and dequantized) and `n_tok`
/// input rows.
struct LinearCase {
    t: GgmlType,
    rows: usize,
    cols: usize,
    n_tok: usize,
    w: Vec<u8>,
    wf: Vec<f32>,
    x: Vec<f32>,
}

impl LinearCase {
    fn new(t: GgmlType, rows: usize, cols: usize, n_tok: usize, rng: &mut Rng) -> LinearCase {
        let w = random_weights(t, rows, cols, rng);
        let wf = dequant(t, &w, rows * cols);
        let x = rng.vec(cols * n_tok, 1.0);
        LinearCase { t, rows, cols, n_tok, w, wf, x }
    }
}

/// The GPU's matrix-vector cases: every type on one row and row counts that do not divide
/// the tiles, 3 tokens.
fn matvec_cases() -> Vec<LinearCase> {
    let mut rng = Rng::new(1);
    let mut out = Vec::new();
    for &t in GPU_TYPES {
        let bs = (t.block_size() as usize).max(32);
        for (rows, cols) in [(1, bs), (67, bs * 3), (130, bs * 5), (300, bs * 2)] {
            out.push(LinearCase::new(t, rows, cols, 3, &mut rng));
        }
    }
    out
}

/// The GPU's batched cases: every type, 67 rows, 1, 5 and 33 tokens.
fn matmul_cases() -> Vec<LinearCase> {
    let mut rng = Rng::new(2);
    let mut out = Vec::new();
    for &t in GPU_TYPES {
        let (rows, cols) = (67, (t.block_size() as usize).max(32) * 3);
        for n_tok in [1usize, 5, 33] {
            out.push(LinearCase::new(t, rows, cols, n_tok, &mut rng));
        }
    }
    out
}

/// Runs each case through the GPU linear kernel (the batched one when `batched`) on every
/// device configuration.
fn check_gpu_cases(what: &str, cases: &[LinearCase], batched: bool) {
    for (name, gpu) in gpus() {
        for c in cases {
            let (t, rows, cols, n_tok) = (c.t, c.rows, c.cols, c.n_tok);
            let w = upload(&gpu, t, rows, cols, &c.w);
            let xb = gpu.storage_init("x", bytemuck::cast_slice(&c.x));
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
            let ops = linear(&gpu, &w, &io, Epilogue::Store, &step, batched).unwrap();
            gpu.run(&ops, n_tok as u32).unwrap();
            let got = gpu.read_f32(&yb).unwrap();
            let (want, scale) = reference::linear(&c.wf, &c.x, rows, cols, n_tok);
            check_close(
                &format!("[{name}] {what} {t} {rows}x{cols} T={n_tok}"),
                &got[..rows * n_tok],
                &want,
                &scale,
                1e-5,
                1e-6,
            );
        }
    }
}

#[test]
fn gpu_matvec_matches_reference_for_every_type() {
    check_gpu_cases("matvec", &matvec_cases(), false);
}

#[test]
fn gpu_matmul_matches_reference_for_every_type() {
    check_gpu_cases("matmul", &matmul_cases(), true);
}

#[test]
fn gpu_epilogues_bias_add_and_glu() {
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
        let (dot, scale) = reference::linear(&wf, &x, rows, cols, n_tok);
        let step = gpu.uniform("step", &[0u32, n_tok as u32, 0, 0]);
        for batched in [false, true] {
            for epi in
                [Epilogue::Store, Epilogue::Add, Epilogue::GluSilu, Epilogue::GluGelu, Epilogue::GluOai]
            {
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
                    want[i] = match epi {
                        Epilogue::Store => v,
                        Epilogue::Add => v + g,
                        Epilogue::GluSilu => reference::glu(Activation::Silu, g, v),
                        Epilogue::GluGelu => reference::glu(Activation::GeluTanh, g, v),
                        Epilogue::GluOai => reference::glu(Activation::SwigluOai, g, v),
                        Epilogue::PairSilu | Epilogue::PairGelu | Epilogue::PairOai => {
                            unreachable!("tested in gpu_gate_up_pairs")
                        }
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
fn gpu_gate_up_pairs() {
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
                let (dot, scale) = reference::linear(&wf, &x, rows, cols, n_tok);
                for (epi, act) in [
                    (Epilogue::PairSilu, Activation::Silu),
                    (Epilogue::PairGelu, Activation::GeluTanh),
                    (Epilogue::PairOai, Activation::SwigluOai),
                ] {
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
                            want[tk * half + r] = reference::glu(act, g, u);
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
fn gpu_get_rows_dequantizes_and_scales() {
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

/// Adds, where `linear` multiplies `weights` with i16 activations, the most their rounding can
/// move each output: half a quantization step (1/65534 of the largest |x| of the block sharing
/// a scale: 32 elements, or 256 where the decode kernels sum sub-blocks as integers) times
/// sum |w| over the block, expressed in units of `rel` so `check_close` can add it to `scale`.
#[allow(clippy::too_many_arguments)]
fn add_activation_rounding(
    isa: Isa,
    weights: WeightView<'_>,
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n_tok: usize,
    scale: &mut [f64],
    rel: f64,
) {
    let Some(block) = int_activation_block(isa, weights, n_tok) else { return };
    for tok in 0..n_tok {
        let xt = &x[tok * cols..(tok + 1) * cols];
        let half_step: Vec<f64> =
            xt.chunks(block).map(|b| b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) / 65534.0).collect();
        for r in 0..rows {
            let e: f64 = (0..cols).map(|c| (w[r * cols + c] as f64).abs() * half_step[c / block]).sum();
            scale[tok * rows + r] += e * 1.001 / rel;
        }
    }
}

/// The weight types the CPU kernels read.
fn cpu_types() -> Vec<GgmlType> {
    GgmlType::all().filter(|&t| cpu::is_supported(t)).collect()
}

/// Row lengths: one block, a few, past the 512-element dequantization segment; float types
/// also get lengths that leave a vector tail.
fn col_counts(t: GgmlType) -> Vec<usize> {
    let bs = t.block_size() as usize;
    if bs == 1 { vec![1, 37, 64, 600] } else { vec![bs, 3 * bs, 2048_usize.div_ceil(bs) * bs + bs] }
}

#[test]
fn cpu_dequantize_rows_is_bit_exact() {
    let mut rng = Rng::new(7);
    for isa in Isa::available() {
        for t in cpu_types() {
            for cols in col_counts(t) {
                let rows = 5;
                let wb = random_weights(t, rows, cols, &mut rng);
                let want = dequant(t, &wb, rows * cols);
                let w = WeightView::new(t, rows, cols, &wb).unwrap();
                let mut got = vec![0f32; (rows - 1) * cols];
                dequantize_rows(isa, w, 1, rows, &mut got).unwrap();
                for (i, (g, e)) in got.iter().zip(&want[cols..]).enumerate() {
                    assert!(
                        g.to_bits() == e.to_bits(),
                        "[{isa}] {t} cols {cols}: index {i}: got {g} want {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn cpu_linear_matches_reference_for_every_type_and_batch() {
    let mut rng = Rng::new(1);
    for isa in Isa::available() {
        for t in cpu_types() {
            for cols in col_counts(t) {
                for rows in [1usize, 13, 67] {
                    let wb = random_weights(t, rows, cols, &mut rng);
                    let wf = dequant(t, &wb, rows * cols);
                    let w = WeightView::new(t, rows, cols, &wb).unwrap();
                    for n_tok in [1usize, 2, 3, 4, 5, 8, 9, 17, 40] {
                        let x = rng.vec(cols * n_tok, 1.0);
                        let mut got = vec![f32::NAN; rows * n_tok];
                        cpu::linear(isa, w, &x, n_tok, &mut got).unwrap();
                        let (want, mut scale) = reference::linear(&wf, &x, rows, cols, n_tok);
                        add_activation_rounding(isa, w, &wf, &x, rows, cols, n_tok, &mut scale, 1e-5);
                        check_close(
                            &format!("[{isa}] {t} {rows}x{cols} T={n_tok}"),
                            &got,
                            &want,
                            &scale,
                            1e-5,
                            1e-6,
                        );
                    }
                }
            }
        }
    }
}

/// Rows past 8192 elements, which one-token decode multiplies several at a time (tasks of 8
/// rows, then 5: groups of four or eight, and rows left over).
#[test]
fn cpu_long_rows_side_by_side_match_reference() {
    let mut rng = Rng::new(11);
    let (rows, cols) = (13usize, 8192usize + 256);
    for isa in Isa::available() {
        for t in cpu_types().into_iter().filter(|t| cols.is_multiple_of(t.block_size() as usize)) {
            let wb = random_weights(t, rows, cols, &mut rng);
            let wf = dequant(t, &wb, rows * cols);
            let w = WeightView::new(t, rows, cols, &wb).unwrap();
            for n_tok in [1usize, 2] {
                let x = rng.vec(cols * n_tok, 1.0);
                let mut got = vec![f32::NAN; rows * n_tok];
                cpu::linear(isa, w, &x, n_tok, &mut got).unwrap();
                let (want, mut scale) = reference::linear(&wf, &x, rows, cols, n_tok);
                add_activation_rounding(isa, w, &wf, &x, rows, cols, n_tok, &mut scale, 1e-5);
                check_close(&format!("[{isa}] {t} {rows}x{cols} T={n_tok}"), &got, &want, &scale, 1e-5, 1e-6);
            }
        }
    }
}

/// Q4_K and Q6_K in the 16-row packed layout the loader gives the CPU kernels on AVX-512
/// VNNI: one to four tokens (the packed kernels there, the row kernels on unpacked groups
/// elsewhere), more tokens, the GEMM, an expert's rows and the embedding rows, on every
/// instruction set. Rows: one group, several tasks' worth, rows past 8192 elements.
#[test]
fn cpu_packed_rows_match_reference() {
    let mut rng = Rng::new(12);
    for (t, rows, cols) in [GgmlType::Q4_K, GgmlType::Q6_K]
        .into_iter()
        .flat_map(|t| [(16usize, 256usize), (144, 768), (48, 8192 + 256)].map(|(r, c)| (t, r, c)))
    {
        let wb = random_weights(t, rows, cols, &mut rng);
        let wf = dequant(t, &wb, rows * cols);
        let mut pb = vec![0u8; wb.len()];
        cpu::pack(t, cols, &wb, &mut pb).unwrap();
        let w = WeightView::new_packed(t, rows, cols, &pb).unwrap();
        for isa in Isa::available() {
            // Up to 64 tokens take passes of the packed kernels on AVX-512 VNNI, 70 the GEMM.
            for n_tok in [1usize, 2, 3, 4, 5, 9, 40, 70] {
                let x = rng.vec(cols * n_tok, 1.0);
                let mut got = vec![f32::NAN; rows * n_tok];
                cpu::linear(isa, w, &x, n_tok, &mut got).unwrap();
                let (want, mut scale) = reference::linear(&wf, &x, rows, cols, n_tok);
                add_activation_rounding(isa, w, &wf, &x, rows, cols, n_tok, &mut scale, 1e-5);
                let what = format!("[{isa}] packed {t} {rows}x{cols} T={n_tok}");
                check_close(&what, &got, &want, &scale, 1e-5, 1e-6);
            }
            // The last group as an expert of its own.
            let expert = w.rows(rows - 16, rows);
            let x = rng.vec(cols, 1.0);
            let mut got = vec![f32::NAN; 16];
            cpu::linear(isa, expert, &x, 1, &mut got).unwrap();
            let ewf = &wf[(rows - 16) * cols..];
            let (want, mut scale) = reference::linear(ewf, &x, 16, cols, 1);
            add_activation_rounding(isa, expert, ewf, &x, 16, cols, 1, &mut scale, 1e-5);
            check_close(&format!("[{isa}] packed {t} last 16 of {rows}"), &got, &want, &scale, 1e-5, 1e-6);
            // Embedding rows across a group boundary.
            let (r0, r1) = (3, rows.min(21));
            let mut got = vec![f32::NAN; (r1 - r0) * cols];
            dequantize_rows(isa, w, r0, r1, &mut got).unwrap();
            if let Some(i) =
                got.iter().zip(&wf[r0 * cols..r1 * cols]).position(|(g, e)| g.to_bits() != e.to_bits())
            {
                panic!("[{isa}] packed {t} {rows}x{cols}: row {} column {} differs", r0 + i / cols, i % cols);
            }
        }
    }
    let (t, b) = (GgmlType::Q4_K, vec![0u8; 15 * 144]);
    assert!(WeightView::new_packed(t, 15, 256, &b).is_err(), "15 rows are no whole group");
    assert!(WeightView::new_packed(GgmlType::Q4_0, 16, 256, &vec![0u8; 16 * 8 * 18]).is_err());
    assert!(cpu::pack(t, 256, &b, &mut b.clone()).is_err());
}

/// The AMX tiles' prefill GEMM (where the CPU and OS offer them) gives the very floats of the
/// AVX-512 VNNI integer GEMM, for every type they read: the same integer sums, split into high
/// and low bytes, meet the same scales in the same order. Rows and tokens past whole tiles,
/// an odd number of 32-element blocks, several tasks, a packed matrix, long rows, a multi-job call that mixes in an f32 job, and
/// decode steps of 5 and 8 tokens (those up to the order of the groups' sums).
#[test]
fn cpu_amx_prefill_is_bit_exact_with_vnni() {
    let (Some(amx), Some(vnni)) = (find_isa("avx512amx"), find_isa("avx512vnni")) else {
        eprintln!("no AMX tiles on this machine: nothing to compare");
        return;
    };
    let mut rng = Rng::new(21);
    use GgmlType::*;
    for t in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, MXFP4, Q4_K, Q5_K, Q6_K, IQ4_XS] {
        for (rows, cols, packed) in [
            (13usize, 256usize, false),
            (67, 768, false),
            (144, 512, true),
            (80, 8448, false),
            (21, 352, false),
        ] {
            // 11 blocks of 32: a last block without a partner in the activations' tiles.
            if !cols.is_multiple_of(t.block_size() as usize) {
                continue;
            }
            let packed = packed && matches!(t, Q4_K | Q6_K);
            let wb = random_weights(t, rows, cols, &mut rng);
            let mut pb = wb.clone();
            if packed {
                cpu::pack(t, cols, &wb, &mut pb).unwrap();
            }
            let w = match packed {
                true => WeightView::new_packed(t, rows, cols, &pb).unwrap(),
                false => WeightView::new(t, rows, cols, &wb).unwrap(),
            };
            let f32_rows = 24;
            let fb = random_weights(GgmlType::F32, f32_rows, cols, &mut rng);
            let fw = WeightView::new(GgmlType::F32, f32_rows, cols, &fb).unwrap();
            for n_tok in [9usize, 17, 70] {
                let x = rng.vec(cols * n_tok, 1.0);
                let run = |isa: Isa| {
                    let (mut out, mut f32_out) =
                        (vec![f32::NAN; rows * n_tok], vec![f32::NAN; f32_rows * n_tok]);
                    let mut jobs = [LinearJob { w, out: &mut out }, LinearJob { w: fw, out: &mut f32_out }];
                    linear_multi(isa, &mut jobs, &x, n_tok).unwrap();
                    (out, f32_out)
                };
                let ((got, got_f32), (want, want_f32)) = (run(amx), run(vnni));
                let what = format!("{t} {rows}x{cols} packed={packed} T={n_tok}");
                if let Some(i) = got.iter().zip(&want).position(|(g, e)| g.to_bits() != e.to_bits()) {
                    panic!("{what}: token {} row {}: AMX {} VNNI {}", i / rows, i % rows, got[i], want[i]);
                }
                assert!(
                    got_f32.iter().zip(&want_f32).all(|(g, e)| g.to_bits() == e.to_bits()),
                    "{what}: f32 job"
                );
                // Decode steps of a few tokens, which AMX takes in the GEMM too (VNNI takes
                // matvec passes there): each token's outputs are those it gets in the bigger
                // batch, which match VNNI's above. Up to 8 tokens multiply two scale groups
                // per tile product and add the even and the odd groups apart, so there the
                // order of the groups' f32 terms differs: within that reordering's bound.
                let wf = dequant(t, &wb, rows * cols);
                for few in [5usize, 8].into_iter().filter(|_| n_tok == 17 && !packed) {
                    let mut out = vec![f32::NAN; rows * few];
                    cpu::linear(amx, w, &x[..few * cols], few, &mut out).unwrap();
                    let groups = (cols / 16) as f32;
                    for (i, (g, e)) in out.iter().zip(&want).enumerate() {
                        let (tok, row) = (i / rows, i % rows);
                        let terms: f32 =
                            (0..cols).map(|c| (wf[row * cols + c] * x[tok * cols + c]).abs()).sum();
                        let bound = 4.0 * groups * f32::EPSILON * terms;
                        assert!(
                            (g - e).abs() <= bound,
                            "{what}, first {few}: token {tok} row {row}: {g} vs {e} (bound {bound})"
                        );
                    }
                }
            }
        }
    }
}

fn find_isa(name: &str) -> Option<Isa> {
    Isa::available().into_iter().find(|i| i.name() == name)
}

/// The CPU kernels on the very inputs of the GPU's matvec and matmul tests.
#[test]
fn cpu_linear_matches_reference_on_the_gpu_cases() {
    for c in matvec_cases().iter().chain(&matmul_cases()) {
        let (t, rows, cols, n_tok) = (c.t, c.rows, c.cols, c.n_tok);
        let w = WeightView::new(t, rows, cols, &c.w).unwrap();
        let (want, scale) = reference::linear(&c.wf, &c.x, rows, cols, n_tok);
        for isa in Isa::available() {
            let mut got = vec![f32::NAN; rows * n_tok];
            cpu::linear(isa, w, &c.x, n_tok, &mut got).unwrap();
            let mut scale = scale.clone();
            add_activation_rounding(isa, w, &c.wf, &c.x, rows, cols, n_tok, &mut scale, 1e-5);
            check_close(&format!("[{isa}] {t} {rows}x{cols} T={n_tok}"), &got, &want, &scale, 1e-5, 1e-6);
        }
    }
}

#[test]
fn cpu_linear_multi_shares_the_input() {
    let mut rng = Rng::new(3);
    let cols = 96;
    let shapes = [(GgmlType::Q4_0, 40), (GgmlType::Q8_0, 7), (GgmlType::F16, 29)];
    let weights: Vec<Vec<u8>> =
        shapes.iter().map(|&(t, rows)| random_weights(t, rows, cols, &mut rng)).collect();
    for isa in Isa::available() {
        for n_tok in [1usize, 3, 20] {
            let x = rng.vec(cols * n_tok, 1.0);
            let mut outs: Vec<Vec<f32>> =
                shapes.iter().map(|&(_, rows)| vec![f32::NAN; rows * n_tok]).collect();
            let mut jobs: Vec<LinearJob<'_, '_>> = shapes
                .iter()
                .zip(&weights)
                .zip(outs.iter_mut())
                .map(|((&(t, rows), wb), out)| LinearJob {
                    w: WeightView::new(t, rows, cols, wb).unwrap(),
                    out,
                })
                .collect();
            linear_multi(isa, &mut jobs, &x, n_tok).unwrap();
            for ((&(t, rows), wb), got) in shapes.iter().zip(&weights).zip(&outs) {
                let wf = dequant(t, wb, rows * cols);
                let (want, mut scale) = reference::linear(&wf, &x, rows, cols, n_tok);
                add_activation_rounding(
                    isa,
                    WeightView::new(t, rows, cols, wb).unwrap(),
                    &wf,
                    &x,
                    rows,
                    cols,
                    n_tok,
                    &mut scale,
                    1e-5,
                );
                check_close(&format!("[{isa}] multi {t} T={n_tok}"), got, &want, &scale, 1e-5, 1e-6);
            }
        }
    }
}

/// Whether `linear` multiplies `n_tok` tokens of an unpacked `t` matrix on i16 activations.
fn int_path(isa: Isa, t: GgmlType, n_tok: usize) -> bool {
    let block = vec![0u8; t.type_size() as usize];
    let w = WeightView::new(t, 1, t.block_size() as usize, &block).unwrap();
    int_activation_block(isa, w, n_tok).is_some()
}

#[test]
fn cpu_decode_uses_integer_dots_on_x86_and_keeps_non_finite_inputs() {
    let isa = Isa::best();
    if cfg!(target_arch = "x86_64")
        && isa.name().starts_with("avx")
        && std::env::var_os("WLLM_CPU_DOT").is_none()
    {
        for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0] {
            assert!(int_path(isa, t, 1), "{t} should take the integer path on {isa}");
        }
        for t in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::IQ4_XS] {
            assert!(int_path(isa, t, 4), "{t} should take the integer path on {isa}");
        }
        // The codebook formats: grid values with their signs as bytes.
        for t in wllm_loaders::quant::CODEBOOK_TYPES {
            assert!(int_path(isa, t, 1), "{t} should take the integer path on {isa}");
        }
        // The table formats: their codes go through a byte shuffle, not f32.
        for t in [GgmlType::MXFP4, GgmlType::IQ4_NL] {
            assert!(int_path(isa, t, 1), "{t} should take the integer path on {isa}");
        }
        // The decode tokens of several sequences run as integer passes of four, or on AMX in
        // the integer GEMM.
        assert!(int_path(isa, GgmlType::Q4_1, 8), "eight decode tokens take integers");
        // Prefill batches: the integer GEMM on AVX-512 VNNI (and AMX), the f32 GEMM elsewhere.
        let vnni = isa.name().starts_with("avx512vnni") || isa.name().starts_with("avx512amx");
        for t in [
            GgmlType::Q4_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q5_K,
            GgmlType::IQ4_XS,
            GgmlType::MXFP4,
        ] {
            assert_eq!(int_path(isa, t, 9), vnni, "{t} prefill on {isa}");
        }
        assert!(!int_path(isa, GgmlType::IQ2_XS, 9), "the codebook types' prefill stays f32");
        assert!(!int_path(isa, GgmlType::F16, 1));
    }
    assert!(!int_path(Isa::SCALAR, GgmlType::Q8_0, 1), "the scalar oracle stays f32");
    // A NaN or infinity in the activations must reach the output, as on the f32 path.
    let mut rng = Rng::new(11);
    let (rows, cols) = (9, 64);
    for isa in Isa::available() {
        for t in [
            GgmlType::Q8_0,
            GgmlType::Q4_K,
            GgmlType::IQ4_NL,
            GgmlType::MXFP4,
            GgmlType::IQ4_XS,
            GgmlType::IQ2_XS,
            GgmlType::IQ1_M,
        ] {
            let cols = cols.max(t.block_size() as usize);
            let wb = random_weights(t, rows, cols, &mut rng);
            let w = WeightView::new(t, rows, cols, &wb).unwrap();
            for bad in [f32::NAN, f32::INFINITY] {
                // One token, the sixth of seven (the second integer pass), and the last of
                // nine (a GEMM batch; past the first 256 values the finiteness test folds).
                for (n_tok, at) in [(1, 5), (7, 5 * cols + 5), (9, 9 * cols - 1)] {
                    let mut x = rng.vec(cols * n_tok, 1.0);
                    x[at] = bad;
                    let mut y = vec![0f32; rows * n_tok];
                    cpu::linear(isa, w, &x, n_tok, &mut y).unwrap();
                    let row = &y[(at / cols) * rows..][..rows];
                    assert!(
                        row.iter().all(|v| !v.is_finite()),
                        "[{isa}] {t} T={n_tok} with {bad} in x: {y:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn cpu_bad_shapes_are_errors() {
    let isa = Isa::best();
    let b = vec![0u8; 18 * 2];
    assert!(WeightView::new(GgmlType::Q4_0, 2, 33, &b).is_err());
    assert!(WeightView::new(GgmlType::Q4_0, 3, 32, &b).is_err());
    // A type without CPU kernels, in exactly one block's bytes.
    assert!(WeightView::new(GgmlType::TQ2_0, 1, 256, &[0; 66]).is_err());
    let w = WeightView::new(GgmlType::Q4_0, 2, 32, &b).unwrap();
    let mut y = vec![0f32; 3];
    assert!(cpu::linear(isa, w, &[0.0; 32], 1, &mut y).is_err());
    assert!(cpu::linear(isa, w, &[0.0; 31], 1, &mut y[..2]).is_err());
    assert!(dequantize_rows(isa, w, 1, 3, &mut [0.0; 64]).is_err());
}
