use super::candidates::{Candidates, TokenProb};
use super::config::SamplerConfig;
use super::error::SamplingError;
use super::filters;
use super::mask::TokenMask;
use super::penalties::PenaltyWindow;
use super::rng::{Rng, random_seed};

/// The sampling chain over one logits row (see the [module docs](super) for the stage order).
#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    seed: u64,
    rng: Rng,
    window: PenaltyWindow,
    cands: Candidates,
}

impl Sampler {
    /// Checks the settings and seeds the generator (a random seed when `config.seed` is `None`).
    pub fn new(config: SamplerConfig) -> Result<Sampler, SamplingError> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(random_seed);
        Ok(Sampler {
            rng: Rng::new(seed),
            window: PenaltyWindow::new(config.repeat_last_n),
            cands: Candidates::default(),
            seed,
            config,
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The seed in use, so a run with a random seed can be repeated.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records a token in the penalty window. Call it for every prompt token as well as every
    /// generated one (llama.cpp's CLI does both), in order.
    pub fn accept(&mut self, token: u32) {
        self.window.push(token);
    }

    /// Empties the penalty window and restarts the generator from the seed.
    pub fn reset(&mut self) {
        self.window.clear();
        self.rng = Rng::new(self.seed);
    }

    /// Draws the next token from `logits` (one row, indexed by token id).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        self.sample_masked(logits, None)
    }

    /// [`sample`](Self::sample) among the tokens `mask` allows.
    pub fn sample_masked(
        &mut self,
        logits: &[f32],
        mask: Option<TokenMask<'_>>,
    ) -> Result<u32, SamplingError> {
        self.run_chain(logits, mask)?;
        if let [only] = self.cands.items.as_slice() {
            return Ok(only.id);
        }
        Ok(self.draw())
    }

    /// The distribution the next [`sample`](Self::sample) would draw from: the surviving tokens
    /// with their final logits and probabilities, most likely first. Consumes no randomness.
    pub fn distribution(&mut self, logits: &[f32]) -> Result<&[TokenProb], SamplingError> {
        self.run_chain(logits, None)?;
        self.cands.softmax();
        self.cands.sort();
        Ok(&self.cands.items)
    }

    fn run_chain(&mut self, logits: &[f32], mask: Option<TokenMask<'_>>) -> Result<(), SamplingError> {
        self.load_row(logits)?;
        let c = &self.config;
        let cands = &mut self.cands;
        for b in &c.logit_bias {
            cands.items[b.token as usize].logit += b.bias;
        }
        self.window.apply(cands, c.repeat_penalty, c.frequency_penalty, c.presence_penalty);
        // Banned tokens would only carry p = 0 through the stages (and NaN into typical-p's
        // entropy), so they leave here.
        // So do the tokens a mask disallows (bias and penalties index the full row, so the
        // mask applies here, with the same effect as before them).
        cands.items.retain(|t| t.logit != f32::NEG_INFINITY && mask.is_none_or(|m| m.allows(t.id)));
        if cands.items.is_empty() {
            return Err(SamplingError::AllMasked);
        }
        filters::top_k(cands, c.top_k);
        filters::typical(cands, c.typical_p, c.min_keep);
        filters::top_p(cands, c.top_p, c.min_keep);
        filters::min_p(cands, c.min_p, c.min_keep);
        filters::temperature(cands, c.temp);
        Ok(())
    }

    fn load_row(&mut self, logits: &[f32]) -> Result<(), SamplingError> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        if let Some(b) = self.config.logit_bias.iter().find(|b| b.token as usize >= logits.len()) {
            return Err(SamplingError::BiasOutOfVocab { token: b.token, n_vocab: logits.len() });
        }
        let items = &mut self.cands.items;
        items.clear();
        items.reserve(logits.len());
        for (id, &logit) in logits.iter().enumerate() {
            if logit.is_nan() || logit == f32::INFINITY {
                return Err(SamplingError::NonFiniteLogit { token: id as u32, value: logit });
            }
            items.push(TokenProb { id: id as u32, logit, p: 0.0 });
        }
        self.cands.sorted = false;
        Ok(())
    }

    /// Inverse-CDF draw over the candidates in their current (fully determined) order. The sum
    /// is kept in f64 so a long tail of tiny probabilities is not lost to rounding.
    fn draw(&mut self) -> u32 {
        let items = &mut self.cands.items;
        let max = items.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for c in items.iter_mut() {
            c.p = libm::expf(c.logit - max);
            total += f64::from(c.p);
        }
        let target = self.rng.next_f64() * total;
        let mut run = 0.0f64;
        for c in items.iter() {
            run += f64::from(c.p);
            if run > target {
                return c.id;
            }
        }
        // Rounding can leave `run` a hair under `target`; the last token with mass takes it.
        items.iter().rev().find(|c| c.p > 0.0).map_or(items[0].id, |c| c.id)
    }
}
