//! Greedy sampling on the GPU against the reference argmax: one logit, fewer than a chunk,
//! exactly one chunk, one past it, a vocabulary-sized row, ties across chunks (the first wins),
//! and a row read at an offset into the logits, on every device configuration; and the markers
//! it writes for a row holding NaN or infinity.

mod common;

use common::{Rng, gpus, reference};
use wllm_engine::ops::argmax::argmax;

#[test]
fn gpu_argmax_finds_the_first_largest_logit() {
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(5);
        for n in [1usize, 7, 4096, 4097, 262_144 + 7] {
            let mut v = rng.vec(n, 10.0);
            let at = rng.below(n as u64) as usize;
            v[at] = 50.0;
            // The same value later, in another chunk when there is one: the first must win.
            let later = at + (n - at) / 2;
            v[later] = 50.0;
            // The row starts `offset` logits into the buffer, after larger values that must
            // not be seen.
            let offset = 3;
            let mut buf = vec![99.0f32; offset];
            buf.extend(&v);
            let logits = gpu.storage_init("logits", bytemuck::cast_slice(&buf));
            let tokens = gpu.storage("tokens", 16);
            let ops = argmax(&gpu, &logits, offset as u32, n as u32, &tokens, 1).unwrap();
            gpu.run(&ops.ops, 1).unwrap();
            let got = gpu.read_f32(&tokens).unwrap()[1].to_bits() as usize;
            let want = reference::argmax(&v);
            assert_eq!(got, want, "{name}: argmax of {n} logits, the largest at indices {at} and {later}");
        }
    }
}

/// A name, the values put into random logits, and the marker the kernel must write.
type NonFiniteCase = (&'static str, Vec<(usize, f32)>, u32);

/// A row holding a NaN or an infinity yields the kernel's markers, never a token id: NaN
/// compares false, so without them a NaN row chose token 0 or 0xFFFFFFFF silently.
#[test]
fn argmax_marks_non_finite_rows() {
    use wllm_engine::finite::{ARGMAX_INF, ARGMAX_NAN};
    for (name, gpu) in gpus() {
        let mut rng = Rng::new(6);
        for n in [1usize, 7, 4097, 49_152] {
            let cases: [NonFiniteCase; 5] = [
                ("all NaN", (0..n).map(|i| (i, f32::NAN)).collect(), ARGMAX_NAN),
                ("one NaN", vec![(n - 1, f32::NAN)], ARGMAX_NAN),
                ("+inf", vec![(n / 2, f32::INFINITY)], ARGMAX_INF),
                ("-inf", vec![(0, f32::NEG_INFINITY)], ARGMAX_INF),
                ("NaN and inf", vec![(0, f32::INFINITY), (n - 1, f32::NAN)], ARGMAX_NAN),
            ];
            for (what, put, want) in cases {
                let mut v = rng.vec(n, 10.0);
                for (i, x) in put {
                    v[i] = x;
                }
                let logits = gpu.storage_init("logits", bytemuck::cast_slice(&v));
                let tokens = gpu.storage("tokens", 16);
                let ops = argmax(&gpu, &logits, 0, n as u32, &tokens, 1).unwrap();
                gpu.run(&ops.ops, 1).unwrap();
                let got = gpu.read_f32(&tokens).unwrap()[1].to_bits();
                assert_eq!(got, want, "{name}: {what} in {n} logits");
            }
        }
    }
}
