//! The CPU kernels against the scalar oracle (`wllm_loaders::quant`) and plain f64 math, on
//! every instruction set this machine has, over shapes that do not divide the tiles.

mod common;

use common::{Rng, check_close, dequant, random_weights};
use wllm_engine::cpu::{Isa, LinearJob, WeightView, dequantize_rows, int_dot_applies, linear, linear_multi};
use wllm_engine::tensor::GPU_TYPES;
use wllm_loaders::GgmlType;

/// y[t][r] = sum_c w[r][c] x[t][c] in f64, and sum |w x| for the error budget.
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

/// Adds, where the decode matvec runs on i16 activations, the most their rounding can move
/// each output: half a quantization step (1/65534 of the 32-element block's largest |x|) times
/// sum |w| over the block, expressed in units of `rel` so `check_close` can add it to `scale`.
#[allow(clippy::too_many_arguments)]
fn add_activation_rounding(
    isa: Isa,
    t: GgmlType,
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n_tok: usize,
    scale: &mut [f64],
    rel: f64,
) {
    if !int_dot_applies(isa, t, n_tok) {
        return;
    }
    for tok in 0..n_tok {
        let xt = &x[tok * cols..(tok + 1) * cols];
        let half_step: Vec<f64> =
            xt.chunks(32).map(|b| b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)) / 65534.0).collect();
        for r in 0..rows {
            let e: f64 = (0..cols).map(|c| (w[r * cols + c] as f64).abs() * half_step[c / 32]).sum();
            scale[tok * rows + r] += e * 1.001 / rel;
        }
    }
}

/// Row lengths: one block, a few, past the 512-element dequantization segment; float types
/// also get lengths that leave a vector tail.
fn col_counts(t: GgmlType) -> Vec<usize> {
    let bs = t.block_size() as usize;
    if bs == 1 { vec![1, 37, 64, 600] } else { vec![bs, 3 * bs, 2048_usize.div_ceil(bs) * bs + bs] }
}

#[test]
fn dequantize_rows_is_bit_exact() {
    let mut rng = Rng::new(7);
    for isa in Isa::available() {
        for &t in GPU_TYPES {
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
fn linear_matches_reference_for_every_type_and_batch() {
    let mut rng = Rng::new(1);
    for isa in Isa::available() {
        for &t in GPU_TYPES {
            for cols in col_counts(t) {
                for rows in [1usize, 13, 67] {
                    let wb = random_weights(t, rows, cols, &mut rng);
                    let wf = dequant(t, &wb, rows * cols);
                    let w = WeightView::new(t, rows, cols, &wb).unwrap();
                    for n_tok in [1usize, 2, 3, 4, 5, 17, 40] {
                        let x = rng.vec(cols * n_tok, 1.0);
                        let mut got = vec![f32::NAN; rows * n_tok];
                        linear(isa, w, &x, n_tok, &mut got).unwrap();
                        let (want, mut scale) = reference(&wf, &x, rows, cols, n_tok);
                        add_activation_rounding(isa, t, &wf, &x, rows, cols, n_tok, &mut scale, 1e-5);
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

#[test]
fn linear_multi_shares_the_input() {
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
                let (want, mut scale) = reference(&wf, &x, rows, cols, n_tok);
                add_activation_rounding(isa, t, &wf, &x, rows, cols, n_tok, &mut scale, 1e-5);
                check_close(&format!("[{isa}] multi {t} T={n_tok}"), got, &want, &scale, 1e-5, 1e-6);
            }
        }
    }
}

#[test]
fn decode_uses_integer_dots_on_x86_and_keeps_non_finite_inputs() {
    let isa = Isa::best();
    if cfg!(target_arch = "x86_64")
        && isa.name().starts_with("avx")
        && std::env::var_os("WLLM_CPU_DOT").is_none()
    {
        for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0] {
            assert!(int_dot_applies(isa, t, 1), "{t} should take the integer path on {isa}");
        }
        for t in [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K] {
            assert!(int_dot_applies(isa, t, 4), "{t} should take the integer path on {isa}");
        }
        assert!(!int_dot_applies(isa, GgmlType::Q4_1, 5), "prefill batches take the f32 GEMM");
        assert!(!int_dot_applies(isa, GgmlType::F16, 1));
    }
    assert!(!int_dot_applies(Isa::SCALAR, GgmlType::Q8_0, 1), "the scalar oracle stays f32");
    // A NaN or infinity in the activations must reach the output, as on the f32 path.
    let mut rng = Rng::new(11);
    let (rows, cols) = (9, 64);
    for isa in Isa::available() {
        for t in [GgmlType::Q8_0, GgmlType::Q4_K] {
            let cols = cols.max(t.block_size() as usize);
            let wb = random_weights(t, rows, cols, &mut rng);
            let w = WeightView::new(t, rows, cols, &wb).unwrap();
            for bad in [f32::NAN, f32::INFINITY] {
                let mut x = rng.vec(cols, 1.0);
                x[5] = bad;
                let mut y = vec![0f32; rows];
                linear(isa, w, &x, 1, &mut y).unwrap();
                assert!(y.iter().all(|v| !v.is_finite()), "[{isa}] {t} with {bad} in x: {y:?}");
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let isa = Isa::best();
    let b = vec![0u8; 18 * 2];
    assert!(WeightView::new(GgmlType::Q4_0, 2, 33, &b).is_err());
    assert!(WeightView::new(GgmlType::Q4_0, 3, 32, &b).is_err());
    assert!(WeightView::new(GgmlType::IQ2_XXS, 1, 256, &b).is_err());
    let w = WeightView::new(GgmlType::Q4_0, 2, 32, &b).unwrap();
    let mut y = vec![0f32; 3];
    assert!(linear(isa, w, &[0.0; 32], 1, &mut y).is_err());
    assert!(linear(isa, w, &[0.0; 31], 1, &mut y[..2]).is_err());
    assert!(dequantize_rows(isa, w, 1, 3, &mut [0.0; 64]).is_err());
}
