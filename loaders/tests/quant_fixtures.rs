//! The CPU reference against fixtures from independent implementations
//! (`tests/data/quant/`, made by `scripts/gen-quant-fixtures.py`; provenance in its manifest):
//!
//! * dequantization must be bit-exact against gguf-py's `gguf.quants.dequantize`. Both compute
//!   each value with the same f32 operations in the same order as ggml, so there is no
//!   rounding slack to allow for;
//! * `dot_row` must agree with a float64 dot product of the dequantized weights within the
//!   f32 summation bound `(block_size + n_blocks) * eps * sum |w_i x_i|`;
//! * the quantizers must reproduce llama.cpp's reference quantizers byte for byte.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use wllm_loaders::GgmlType;
use wllm_loaders::quant::{dequantize, dot_row, quantize_row};

#[derive(Deserialize)]
struct Manifest {
    provenance: String,
    fixtures: Vec<Fixture>,
}

#[derive(Deserialize)]
struct Fixture {
    name: String,
    kind: String,
    #[serde(rename = "type")]
    ty: String,
    n_elements: usize,
    blocks: String,
    values: Option<String>,
    input: Option<String>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/quant")
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn ty(f: &Fixture) -> GgmlType {
    GgmlType::from_name(&f.ty).unwrap_or_else(|| panic!("{}: unknown type {}", f.name, f.ty))
}

/// Deterministic activations in [-1, 1) (splitmix64).
fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[test]
fn dequantize_matches_gguf_py_bit_exactly() {
    let m = manifest();
    assert!(m.provenance.contains("gguf 0.19.0"), "{}", m.provenance);
    let mut covered = BTreeSet::new();
    for f in m.fixtures.iter().filter(|f| f.kind == "dequantize") {
        let ty = ty(f);
        let want = read_f32(f.values.as_deref().unwrap());
        assert_eq!(want.len(), f.n_elements, "{}", f.name);
        let got =
            dequantize(ty, &read(&f.blocks), f.n_elements).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let mut max_err = 0f32;
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits(),
                "{}: element {i} (block {}, index {} in it): got {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
                f.name,
                i as u64 / ty.block_size(),
                i as u64 % ty.block_size(),
                g.to_bits(),
                w.to_bits()
            );
            if w.is_finite() {
                max_err = max_err.max((g - w).abs());
            }
        }
        println!("{:>18}  {:>5} elements  max |err| vs gguf-py {max_err:e}", f.name, f.n_elements);
        covered.insert(ty);
    }
    use GgmlType::*;
    let required = [
        F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4, IQ4_NL, IQ4_XS,
        IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M,
    ];
    for t in required {
        assert!(covered.contains(&t), "no dequantization fixture for {t}");
    }
}

#[test]
fn dot_row_matches_float64_dot_of_dequantized_weights() {
    for (k, f) in manifest().fixtures.iter().filter(|f| f.kind == "dequantize").enumerate() {
        let ty = ty(f);
        let bytes = read(&f.blocks);
        let w = dequantize(ty, &bytes, f.n_elements).unwrap();
        if w.iter().any(|v| !v.is_finite()) {
            // The special-value fixtures (inf, huge MXFP4 exponents) have no finite dot.
            continue;
        }
        let x = activations(f.n_elements, k as u64 + 1);
        let exact: f64 = w.iter().zip(&x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
        let magnitude: f64 = w.iter().zip(&x).map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs()).sum();
        let n_blocks = f.n_elements as u64 / ty.block_size();
        let bound = (ty.block_size() + n_blocks) as f64 * f64::from(f32::EPSILON) * magnitude;
        let got = dot_row(ty, &bytes, &x).unwrap();
        let err = (f64::from(got) - exact).abs();
        assert!(
            err <= bound,
            "{}: dot {got:e} vs float64 {exact:e}: error {err:e} > bound {bound:e}",
            f.name
        );
        println!("{:>18}  dot error {err:.3e} (bound {bound:.3e}, relative {:.2e})", f.name, err / magnitude);
    }
}

#[test]
fn quantizers_match_llama_cpp_reference_bytes() {
    let m = manifest();
    let mut checked = BTreeSet::new();
    for f in m.fixtures.iter().filter(|f| f.kind == "quantize") {
        let ty = ty(f);
        let x = read_f32(f.input.as_deref().unwrap());
        let want = read(&f.blocks);
        let mut got = Vec::new();
        quantize_row(ty, &x, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{}", f.name);
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            let ts = ty.type_size() as usize;
            panic!(
                "{}: byte {i} (block {}, offset {} in it) is {:#04x}, llama.cpp wrote {:#04x}",
                f.name,
                i / ts,
                i % ts,
                got[i],
                want[i]
            );
        }
        checked.insert(ty);
    }
    assert_eq!(checked, BTreeSet::from([GgmlType::Q8_0, GgmlType::Q4_K]));
}
