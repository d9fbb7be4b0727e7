//! Choosing the next token from a logits row, on the CPU, with llama.cpp's sampler names,
//! defaults and order.
//!
//! [`Sampler::sample`] runs these stages, in this order (llama.cpp's default chain, from
//! `common/common.h` and `common/sampling.cpp` at commit 0c1e570):
//!
//! 1. **logit bias** (`--logit-bias ID(+|-)BIAS`): added to the raw logits; `-inf` bans a token.
//! 2. **penalties** over the last `--repeat-last-n` tokens passed to [`Sampler::accept`]:
//!    repeat (`--repeat-penalty`; divides a positive logit, multiplies a negative one), then
//!    frequency (`count * --frequency-penalty`) and presence (`--presence-penalty`) subtracted.
//! 3. DRY and top-n-sigma: not implemented; llama.cpp's defaults leave them off.
//! 4. **top-k** (`--top-k`): the k highest logits.
//! 5. **typical-p** (`--typical`): locally typical sampling.
//! 6. **top-p** (`--top-p`): the smallest most-likely set whose probability reaches p.
//! 7. **min-p** (`--min-p`): tokens at least p times as likely as the top one.
//! 8. XTC: not implemented; off by default.
//! 9. **temperature** (`--temp`): logits divided by it. `temp <= 0` keeps only the most likely
//!    token (lowest id on ties), i.e. greedy decoding.
//! 10. **draw** from the softmax of what is left, with a seeded xoshiro256** generator.
//!
//! Truncation happens before temperature, so `--temp` reshapes only the surviving tokens. Each
//! stage renormalises over the tokens that reach it. Probabilities use `libm`'s exp and log and
//! every sort breaks ties by token id, so a given seed gives the same tokens on every platform.
//!
//! A [`TokenMask`] (a constraint's allowed tokens) passed to [`Sampler::sample_masked`] removes
//! every other token before stage 1, as llama.cpp applies its grammar sampler first.
//!
//! [`StopMatcher`] handles `--stop` strings over the decoded stream, and [`parse_logit_bias`]
//! reads `--logit-bias` arguments.

mod candidates;
mod chain;
mod config;
mod error;
mod filters;
mod logit_bias;
mod mask;
mod penalties;
mod rng;
mod stop;

pub use candidates::TokenProb;
pub use chain::Sampler;
pub use config::{LogitBias, SamplerConfig};
pub use error::SamplingError;
pub use logit_bias::parse_logit_bias;
pub use mask::{TokenMask, argmax_masked};
pub use stop::{StopMatcher, StopStep};

/// Index of the largest value, the lowest index on ties (as the GPU's argmax kernel breaks
/// them): greedy decoding on the CPU.
pub fn argmax(logits: &[f32]) -> u32 {
    // The largest value by lanes, then its first index: two passes that vectorize, where one
    // pass that tracks the index compares one value at a time (8 × 49152 logits of a batched
    // step ran that way on the calling thread while the others waited). A NaN never wins,
    // and a NaN first value is kept, as the walk `x > logits[best]` from index 0 gives.
    const LANES: usize = 16;
    if logits.first().is_none_or(|x| x.is_nan()) {
        return 0;
    }
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let tail = chunks.remainder().iter().copied();
    let max = lanes.into_iter().chain(tail).fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m });
    let chunk = logits.chunks(LANES).position(|c| c.iter().fold(false, |any, &x| any | (x == max)));
    let chunk = chunk.unwrap_or(0);
    let within = logits[chunk * LANES..].iter().position(|&x| x == max).unwrap_or(0);
    (chunk * LANES + within) as u32
}

#[cfg(test)]
mod tests {
    /// The first index of the largest value, one value at a time.
    fn walk(logits: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    #[test]
    fn argmax_is_the_first_largest_value() {
        let mut state = 7u32;
        let mut next = || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1 << 24) as f32
        };
        for len in [1, 2, 15, 16, 17, 33, 1000, 49152] {
            // Few distinct values, so that ties are common.
            let base: Vec<f32> = (0..len).map(|_| (next() * 8.0).floor()).collect();
            let mut cases = vec![base.clone(), vec![f32::NEG_INFINITY; len]];
            for (at, bad) in
                [(0, f32::NAN), (len / 2, f32::NAN), (len - 1, f32::INFINITY), (len / 3, f32::NEG_INFINITY)]
            {
                let mut v = base.clone();
                v[at] = bad;
                cases.push(v);
            }
            for v in cases {
                assert_eq!(super::argmax(&v), walk(&v), "{len} values: {:?}", &v[..len.min(20)]);
            }
        }
        assert_eq!(super::argmax(&[]), 0);
    }
}
