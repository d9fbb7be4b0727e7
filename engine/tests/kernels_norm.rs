//! RMSNorm against the float64 reference: on the GPU plain, with Gemma's post-norm add into the
//! residual, and of the batch's last row only, on every device configuration; on the CPU out of
//! place, in place and as the post-norm residual add, on every instruction set. Row lengths
//! leave vector tails and cross the CPU's 256-element in-place chunks.

mod common;

use common::{Rng, check_close, gpus, reference};
use wllm_engine::cpu::Isa;
use wllm_engine::cpu::ops::{add_rms_normed, rms_norm_in_place};
use wllm_engine::ops::norm::{NormArgs, rms_norm};

/// (row length, rows).
const SHAPES: [(usize, usize); 4] = [(576, 5), (640, 1), (100, 3), (2048, 2)];
const EPS: f32 = 1e-6;

/// The inputs of one shape, the same for both backends: rows `x`, post-norm input `a`, norm
/// weights `w` and post-norm weights `wp`.
struct Inputs {
    x: Vec<f32>,
    a: Vec<f32>,
    w: Vec<f32>,
    wp: Vec<f32>,
}

fn inputs(rng: &mut Rng, n: usize, rows: usize) -> Inputs {
    Inputs { x: rng.vec(n * rows, 2.0), a: rng.vec(n * rows, 3.0), w: rng.vec(n, 1.0), wp: rng.vec(n, 1.0) }
}

/// The residual after `x += rms_norm(a) · wp`, row by row.
fn post_added(inp: &Inputs, n: usize) -> Vec<f64> {
    inp.x
        .chunks(n)
        .zip(inp.a.chunks(n))
        .flat_map(|(x, a)| {
            let pa = reference::rms_norm(a, &inp.wp, EPS);
            x.iter().zip(pa).map(|(&x, p)| x as f64 + p).collect::<Vec<f64>>()
        })
        .collect()
}

fn magnitudes(v: &[f64]) -> Vec<f64> {
    v.iter().map(|v| v.abs().max(1.0)).collect()
}

#[test]
fn gpu_rms_norm_plain_post_and_last_row() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(3);
        for (n, rows) in SHAPES {
            let inp = inputs(&mut rng, n, rows);
            for (post, last) in [(false, false), (true, false), (false, true), (true, true)] {
                let f32s = |label: &str, v: &[f32]| gpu.storage_init(label, bytemuck::cast_slice(v));
                let xb = f32s("x", &inp.x);
                let ab = f32s("a", &inp.a);
                let wb = f32s("w", &inp.w);
                let wpb = f32s("wp", &inp.wp);
                let out = gpu.storage("out", (n * rows * 4) as u64);
                let step = gpu.uniform("step", &[0u32, rows as u32, 0, 0]);
                let op = rms_norm(
                    &gpu,
                    &NormArgs {
                        n: n as u32,
                        eps: EPS,
                        x: &xb,
                        weight: &wb,
                        out: &out,
                        post: post.then_some((&ab, &wpb)),
                        last_row_of: last.then_some(&step),
                        rows_from: None,
                    },
                )
                .unwrap();
                gpu.run(&[op], rows as u32).unwrap();
                // The residual after the post-norm add (rounded to f32, as the kernel stores
                // it), then its norm.
                let resid: Vec<f32> = if post {
                    post_added(&inp, n).iter().map(|&v| v as f32).collect()
                } else {
                    inp.x.clone()
                };
                let rows_out: Vec<usize> = if last { vec![rows - 1] } else { (0..rows).collect() };
                let mut want = Vec::new();
                for &r in &rows_out {
                    want.extend(reference::rms_norm(&resid[r * n..(r + 1) * n], &inp.w, EPS));
                }
                let got = gpu.read_f32(&out).unwrap();
                let what = format!("{name} rms_norm n={n} rows={rows} post={post} last={last}");
                check_close(&what, &got[..want.len()], &want, &magnitudes(&want), 1e-4, 1e-5);
                if post {
                    // Only the rows it normalises get their residual updated (the head needs
                    // no other).
                    let all_x = gpu.read_f32(&xb).unwrap();
                    let got_x: Vec<f32> =
                        rows_out.iter().flat_map(|&r| all_x[r * n..(r + 1) * n].to_vec()).collect();
                    let want_x: Vec<f64> = rows_out
                        .iter()
                        .flat_map(|&r| resid[r * n..(r + 1) * n].iter().map(|&v| v as f64))
                        .collect();
                    check_close(
                        &format!("{what} residual"),
                        &got_x,
                        &want_x,
                        &magnitudes(&want_x),
                        1e-5,
                        1e-5,
                    );
                }
            }
        }
    }
}

#[test]
fn cpu_rms_norm_in_and_out_of_place_and_post_add() {
    let mut rng = Rng::new(3);
    for (n, rows) in SHAPES {
        let inp = inputs(&mut rng, n, rows);
        let want: Vec<f64> = inp.x.chunks(n).flat_map(|r| reference::rms_norm(r, &inp.w, EPS)).collect();
        let want_post = post_added(&inp, n);
        for isa in Isa::available() {
            let what = format!("[{isa}] rms_norm n={n} rows={rows}");
            let mut out = vec![f32::NAN; n * rows];
            wllm_engine::cpu::ops::rms_norm(isa, &inp.x, &inp.w, EPS, &mut out).unwrap();
            check_close(&what, &out, &want, &magnitudes(&want), 1e-5, 1e-6);

            let mut x = inp.x.clone();
            rms_norm_in_place(isa, &mut x, &inp.w, EPS).unwrap();
            check_close(&format!("{what} in place"), &x, &want, &magnitudes(&want), 1e-5, 1e-6);

            let mut x = inp.x.clone();
            add_rms_normed(isa, &mut x, &inp.a, &inp.wp, EPS).unwrap();
            check_close(&format!("{what} post add"), &x, &want_post, &magnitudes(&want_post), 1e-5, 1e-6);
        }
    }
}

#[test]
fn cpu_rms_norm_refuses_rows_that_do_not_divide() {
    let isa = Isa::best();
    let mut out = vec![0f32; 10];
    assert!(wllm_engine::cpu::ops::rms_norm(isa, &[1.0; 10], &[1.0; 3], EPS, &mut out).is_err());
    assert!(wllm_engine::cpu::ops::rms_norm(isa, &[1.0; 10], &[1.0; 5], EPS, &mut out[..5]).is_err());
    assert!(wllm_engine::cpu::ops::rms_norm(isa, &[1.0; 10], &[], EPS, &mut out).is_err());
}
