//! Greedy sampling on the GPU against the reference argmax: one logit, fewer than a chunk,
//! exactly one chunk, one past it, a vocabulary-sized row, ties across chunks (the first wins),
//! and a row read at an offset into the logits, on every device configuration.

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
