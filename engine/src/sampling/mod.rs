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
    let mut best = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}
