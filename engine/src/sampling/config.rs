use super::error::SamplingError;

/// One `--logit-bias` entry: `bias` is added to the logit of `token` before anything else runs.
/// A bias of `-inf` bans the token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitBias {
    pub token: u32,
    pub bias: f32,
}

/// Sampling settings, named after llama.cpp's CLI flags. [`Default`] gives llama.cpp's defaults
/// (`common/common.h`, `common_params_sampling`, at commit 0c1e570).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// `--temp`: logits are divided by it after truncation; `<= 0` samples greedily.
    pub temp: f32,
    /// `--top-k`: keep the k most likely tokens; 0 disables.
    pub top_k: usize,
    /// `--top-p`: keep the smallest most-likely set whose probability reaches p; 1.0 disables.
    pub top_p: f32,
    /// `--min-p`: drop tokens less likely than `min_p` times the most likely one; 0.0 disables.
    pub min_p: f32,
    /// `--typical`: locally typical sampling mass; 1.0 disables.
    pub typical_p: f32,
    /// `--repeat-penalty`: divides positive (multiplies negative) logits of tokens in the
    /// window; 1.0 disables.
    pub repeat_penalty: f32,
    /// `--repeat-last-n`: how many of the last accepted tokens the penalties look at; 0 disables.
    pub repeat_last_n: usize,
    /// `--frequency-penalty`: subtracted once per occurrence in the window; 0.0 disables.
    pub frequency_penalty: f32,
    /// `--presence-penalty`: subtracted once if the token occurs in the window; 0.0 disables.
    pub presence_penalty: f32,
    /// Each truncation stage keeps at least this many tokens (llama.cpp `min_keep`, default 0).
    pub min_keep: usize,
    /// `--seed`: `None` picks a random seed, readable back through `Sampler::seed`.
    pub seed: Option<u64>,
    /// `--logit-bias`, applied in order; several entries for one token add up.
    pub logit_bias: Vec<LogitBias>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            min_keep: 0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: always the most likely token (ties go to the lowest id).
    pub fn greedy() -> Self {
        SamplerConfig { temp: 0.0, ..Default::default() }
    }

    /// Whether these settings always pick the most likely token of the raw logits (no
    /// temperature, bias or penalty changes which one), so no sampler is needed.
    pub fn is_greedy(&self) -> bool {
        self.temp <= 0.0
            && self.logit_bias.is_empty()
            && (self.repeat_penalty == 1.0 || self.repeat_last_n == 0)
            && self.frequency_penalty == 0.0
            && self.presence_penalty == 0.0
    }

    /// Rejects settings that would turn logits into NaN or make a stage meaningless, naming
    /// the setting.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |name, value, reason| Err(SamplingError::InvalidSetting { name, value, reason });
        for (name, value) in
            [("temp", self.temp), ("top_p", self.top_p), ("min_p", self.min_p), ("typical_p", self.typical_p)]
        {
            if value.is_nan() {
                return bad(name, value, "must be a number");
            }
        }
        // Matches llama.cpp's check: the penalty divides and multiplies logits, so it and its
        // inverse must both be finite.
        let rp = self.repeat_penalty;
        if !(rp.is_finite() && rp > 0.0 && (1.0 / rp).is_finite()) {
            return bad("repeat_penalty", rp, "must be finite and greater than 0");
        }
        if !self.frequency_penalty.is_finite() {
            return bad("frequency_penalty", self.frequency_penalty, "must be finite");
        }
        if !self.presence_penalty.is_finite() {
            return bad("presence_penalty", self.presence_penalty, "must be finite");
        }
        for b in &self.logit_bias {
            // +inf would leave inf - inf = NaN in the softmax; a large finite bias forces a token.
            if b.bias.is_nan() || b.bias == f32::INFINITY {
                return bad("logit_bias", b.bias, "must be finite or -inf");
            }
        }
        Ok(())
    }
}
