//! Round-trip error of the reference quantizers against llama.cpp's budgets.
//!
//! `tests/test-quantize-fns.cpp` (llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f) quantizes
//! 4096 values `0.1 + 2 cos(i)` and requires `sqrt(sum (x - x')^2) / n` (its "total
//! quantization error"; note this is the RMSE divided by sqrt(n)) below
//! MAX_QUANTIZATION_TOTAL_ERROR = 0.002 for Q8_0 and Q4_K, and a dot-product error
//! `|dot(q(x1), x2) - dot(x1, x2)| / n` below MAX_DOT_PRODUCT_ERROR = 0.02. The same checks run
//! here, plus the plain RMSE on unit Gaussian data, where the budgets are the expected error of
//! each format with some headroom: Q8_0's step is about max|x| / 127 ≈ 2.1 / 127 per 32
//! values, so RMSE ≈ step / sqrt(12) ≈ 0.005; Q4_K's 16 levels per 32 values give ≈ 0.07.

use wllm_loaders::GgmlType;
use wllm_loaders::quant::{dequantize, dot_row, quantize_row};

const TEST_SIZE: usize = 32 * 128;
const MAX_QUANTIZATION_TOTAL_ERROR: f64 = 0.002;
const MAX_DOT_PRODUCT_ERROR: f64 = 0.02;

/// llama.cpp's `generate_data`.
fn cosine_data(offset: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.1 + f64::from(2.0 * (i as f32 + offset).cos())) as f32).collect()
}

/// N(0, 1) by Box-Muller over splitmix64, so the test needs no RNG crate.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uniform = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) + 1) as f64 / (1u64 << 53) as f64 // (0, 1]
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

fn round_trip(ty: GgmlType, x: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let mut q = Vec::new();
    quantize_row(ty, x, &mut q).unwrap();
    assert_eq!(q.len() as u64, ty.bytes_for(x.len() as u64).unwrap());
    let y = dequantize(ty, &q, x.len()).unwrap();
    (q, y)
}

fn sum_sq_err(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2)).sum()
}

/// test-quantize-fns' `array_rmse`: sqrt of the summed squares over n.
fn llama_total_error(x: &[f32], y: &[f32]) -> f64 {
    sum_sq_err(x, y).sqrt() / x.len() as f64
}

fn check_llama_budgets(ty: GgmlType) {
    let x1 = cosine_data(0.0, TEST_SIZE);
    let x2 = cosine_data(1.0, TEST_SIZE);
    let (q, y) = round_trip(ty, &x1);
    let total = llama_total_error(&x1, &y);
    let exact: f64 = x1.iter().zip(&x2).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    let dot_err = (f64::from(dot_row(ty, &q, &x2).unwrap()) - exact).abs() / TEST_SIZE as f64;
    println!(
        "{ty}: llama.cpp total quantization error {total:.6} (budget {MAX_QUANTIZATION_TOTAL_ERROR}), dot error {dot_err:.6} (budget {MAX_DOT_PRODUCT_ERROR})"
    );
    assert!(total < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: total quantization error {total}");
    assert!(dot_err < MAX_DOT_PRODUCT_ERROR, "{ty}: dot product error {dot_err}");
}

fn check_gaussian(ty: GgmlType, rmse_budget: f64) {
    let x = gaussian(16 * TEST_SIZE, 42);
    let (_, y) = round_trip(ty, &x);
    let rmse = (sum_sq_err(&x, &y) / x.len() as f64).sqrt();
    let worst_chunk = x
        .chunks(TEST_SIZE)
        .zip(y.chunks(TEST_SIZE))
        .map(|(a, b)| llama_total_error(a, b))
        .fold(0.0, f64::max);
    println!(
        "{ty}: N(0,1) RMSE {rmse:.5} (budget {rmse_budget}), worst llama.cpp total error per {TEST_SIZE} {worst_chunk:.6}"
    );
    assert!(rmse < rmse_budget, "{ty}: Gaussian RMSE {rmse}");
    assert!(worst_chunk < MAX_QUANTIZATION_TOTAL_ERROR, "{ty}: Gaussian total error {worst_chunk}");
}

#[test]
fn q8_0_within_llama_cpp_budgets() {
    check_llama_budgets(GgmlType::Q8_0);
    check_gaussian(GgmlType::Q8_0, 0.006);
}

#[test]
fn q4_k_within_llama_cpp_budgets() {
    check_llama_budgets(GgmlType::Q4_K);
    check_gaussian(GgmlType::Q4_K, 0.085);
}

#[test]
fn zeros_and_constants_round_trip() {
    for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
        let zeros = vec![0.0; 256];
        assert_eq!(round_trip(ty, &zeros).1, zeros, "{ty}");
        // A constant row is exact in Q8_0 (127 * d = c) and within one step in Q4_K.
        let c = vec![0.75f32; 256];
        let y = round_trip(ty, &c).1;
        let err = y.iter().map(|v| (v - 0.75).abs()).fold(0.0, f32::max);
        assert!(err < 1e-3, "{ty}: constant row off by {err}");
    }
}

/// Quantize-on-load goes through `quantize_tensor` from whatever float type the file holds;
/// from F16 and BF16 inputs it must meet the same budgets (measured against the values as
/// stored, since that is what the model holds).
#[test]
fn tensor_quantizer_from_half_precision_within_budgets() {
    use half::{bf16, f16};
    use wllm_loaders::model::quantizing::quantize_tensor;
    use wllm_loaders::model::{TensorBytes, TensorMeta};

    let x = cosine_data(0.0, TEST_SIZE);
    for src in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        let bytes: Vec<u8> = match src {
            GgmlType::F16 => x.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
            GgmlType::BF16 => x.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
            _ => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let stored = dequantize(src, &bytes, x.len()).unwrap();
        let meta = TensorMeta { name: "w".into(), ggml_type: src, dims: vec![256, (TEST_SIZE / 256) as u64] };
        for ty in [GgmlType::Q8_0, GgmlType::Q4_K] {
            let q = quantize_tensor(&TensorBytes { meta: meta.clone(), bytes: bytes.as_slice().into() }, ty)
                .unwrap();
            let y = dequantize(ty, &q, x.len()).unwrap();
            let total = llama_total_error(&stored, &y);
            println!("{src} -> {ty}: llama.cpp total quantization error {total:.6}");
            assert!(total < MAX_QUANTIZATION_TOTAL_ERROR, "{src} -> {ty}: total quantization error {total}");
        }
    }
}
