//! The CPU kernels against the scalar oracle (`wllm_loaders::quant`) and plain f64 math, on
//! every instruction set this machine has, over shapes that do not divide the tiles.

mod common;

use common::{Rng, check_close, dequant, random_weights};
use wllm_engine::cpu::{Isa, LinearJob, WeightView, dequantize_rows, linear, linear_multi};
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
                        let (want, scale) = reference(&wf, &x, rows, cols, n_tok);
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
                let (want, scale) = reference(&dequant(t, wb, rows * cols), &x, rows, cols, n_tok);
                check_close(&format!("[{isa}] multi {t} T={n_tok}"), got, &want, &scale, 1e-5, 1e-6);
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
