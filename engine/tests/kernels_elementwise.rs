//! The element-wise ops against the float64 reference: the residual add, the gated
//! activations (SwiGLU, tanh-GeGLU) and the final logit softcap. The GPU kernels run on every
//! device configuration over a prefix of the buffer (the rest must stay as it was); the CPU's
//! `add_in_place`, `glu` (every instruction set, vector tails, the parallel path) and `softcap`
//! get the same inputs.

mod common;

use common::{Rng, check_close, gpus, reference};
use wllm_engine::cpu::Isa;
use wllm_engine::cpu::ops::{Activation, add_in_place, glu};
use wllm_engine::ops::elementwise::{ElementwiseKey, add_gated, elementwise, softcap};

/// Elements the GPU tests write: all but the last few of [`N`].
const N: usize = 1000;
const M: usize = N - 3;

/// (x, y): the addend or gate, and the values updated in place.
fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(9);
    (rng.vec(n, 4.0), rng.vec(n, 2.0))
}

/// Logits far past the caps on both sides, and a few exactly at zero and at huge magnitudes.
fn logits() -> Vec<f32> {
    let mut y = Rng::new(10).vec(777, 120.0);
    y[0] = 0.0;
    y[1] = 1e30;
    y[2] = -1e30;
    y
}

const CAPS: [f32; 2] = [8.0, 30.0];

fn magnitudes(v: &[f64]) -> Vec<f64> {
    v.iter().map(|v| v.abs().max(1.0)).collect()
}

#[test]
fn gpu_elementwise_add_and_glu() {
    for (name, gpu) in gpus() {
        let (x, y) = inputs(N);
        for op in [ElementwiseKey::Add, ElementwiseKey::GluSilu, ElementwiseKey::GluGelu] {
            let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
            let yb = gpu.storage_init("y", bytemuck::cast_slice(&y));
            let o = elementwise(&gpu, op, &xb, &yb, M as u32).unwrap();
            gpu.run(&[o], 1).unwrap();
            let want: Vec<f64> = (0..N)
                .map(|i| {
                    let (a, b) = (x[i] as f64, y[i] as f64);
                    if i >= M {
                        return b;
                    }
                    match op {
                        ElementwiseKey::Add => a + b,
                        ElementwiseKey::GluSilu => reference::glu(Activation::Silu, a, b),
                        ElementwiseKey::GluGelu => reference::glu(Activation::GeluTanh, a, b),
                        ElementwiseKey::Softcap | ElementwiseKey::AddGated => unreachable!("their own tests"),
                    }
                })
                .collect();
            let got = gpu.read_f32(&yb).unwrap();
            check_close(&format!("[{name}] {op:?}"), &got, &want, &magnitudes(&want), 1e-5, 1e-6);
        }
    }
}

/// A shared expert's output added through its per-token gate: the step's rows only (7 of 9
/// rows of 96, so the grid's last workgroup is partial), the rest of the residual untouched.
#[test]
fn gpu_gated_add_scales_each_row_by_its_gate() {
    const ROW: usize = 96;
    const ROWS: usize = 9;
    const STEP: u32 = 7;
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(12);
        let (x, y, gate) = (rng.vec(ROWS * ROW, 2.0), rng.vec(ROWS * ROW, 2.0), rng.vec(ROWS, 6.0));
        let xb = gpu.storage_init("x", bytemuck::cast_slice(&x));
        let yb = gpu.storage_init("y", bytemuck::cast_slice(&y));
        let gb = gpu.storage_init("gate", bytemuck::cast_slice(&gate));
        let step = gpu.uniform("step", &[0u32, STEP, 0, 0]);
        let o = add_gated(&gpu, &xb, &gb, &yb, ROW as u32, &step).unwrap();
        gpu.run(&[o], STEP).unwrap();
        let want: Vec<f64> = (0..ROWS * ROW)
            .map(|i| {
                let t = i / ROW;
                let kept = y[i] as f64;
                if t >= STEP as usize { kept } else { kept + x[i] as f64 / (1.0 + (-(gate[t] as f64)).exp()) }
            })
            .collect();
        let got = gpu.read_f32(&yb).unwrap();
        check_close(&format!("[{name}] add_gated"), &got, &want, &magnitudes(&want), 1e-6, 1e-6);
        assert!(add_gated(&gpu, &xb, &gb, &yb, 0, &step).is_err());
    }
}

#[test]
fn cpu_glu_and_add() {
    // One element, a vector tail, the GPU test's size, and past the 16Ki-element chunks that
    // run in parallel.
    for n in [1usize, 7, N, 40_003] {
        let (x, y) = inputs(n);
        for act in [Activation::Silu, Activation::GeluTanh] {
            let want_gate: Vec<f64> = x.iter().map(|&g| reference::act(act, g as f64)).collect();
            let want: Vec<f64> =
                x.iter().zip(&y).map(|(&g, &u)| reference::glu(act, g as f64, u as f64)).collect();
            for isa in Isa::available() {
                let (mut gate, mut up) = (x.clone(), y.clone());
                glu(isa, act, &mut gate, &mut up).unwrap();
                let what = format!("[{isa}] glu {act:?} n={n}");
                check_close(&format!("{what} up"), &up, &want, &magnitudes(&want), 1e-5, 1e-6);
                check_close(&format!("{what} gate"), &gate, &want_gate, &magnitudes(&want_gate), 1e-5, 1e-6);
            }
        }
        let mut sum = y.clone();
        add_in_place(&mut sum, &x).unwrap();
        let want: Vec<f64> = x.iter().zip(&y).map(|(&a, &b)| a as f64 + b as f64).collect();
        check_close(&format!("add n={n}"), &sum, &want, &magnitudes(&want), 1e-7, 0.0);
    }
    let isa = Isa::best();
    assert!(glu(isa, Activation::Silu, &mut [0.0; 4], &mut [0.0; 5]).is_err());
    assert!(add_in_place(&mut [0.0; 4], &[0.0; 3]).is_err());
}

#[test]
fn gpu_softcap_squashes_logits_into_the_cap() {
    for (name, gpu) in gpus() {
        let y = logits();
        let n = y.len();
        for cap in CAPS {
            let yb = gpu.storage_init("logits", bytemuck::cast_slice(&y));
            let m = n - 5;
            let o = softcap(&gpu, &yb, cap, m as u32).unwrap();
            gpu.run(&[o], 1).unwrap();
            let want: Vec<f64> = (0..n)
                .map(|i| if i >= m { y[i] as f64 } else { reference::softcap(y[i] as f64, cap as f64) })
                .collect();
            let got = gpu.read_f32(&yb).unwrap();
            check_close(&format!("[{name}] softcap {cap}"), &got, &want, &magnitudes(&want), 1e-5, 1e-6);
        }
    }
}

#[test]
fn cpu_softcap_squashes_logits_into_the_cap() {
    let y = logits();
    for cap in CAPS {
        let mut got = y.clone();
        wllm_engine::cpu::softcap(&mut got, cap);
        let want: Vec<f64> = y.iter().map(|&v| reference::softcap(v as f64, cap as f64)).collect();
        check_close(&format!("softcap {cap}"), &got, &want, &magnitudes(&want), 1e-5, 1e-6);
    }
}
