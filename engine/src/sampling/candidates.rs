use std::cmp::Ordering;

/// One surviving token: its id, its logit after the stages so far, and its probability once a
/// stage (or [`Sampler::distribution`](super::Sampler::distribution)) has computed one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenProb {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

/// The candidate list a chain works on, with whether it is sorted by [`by_logit_desc`].
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    pub(crate) items: Vec<TokenProb>,
    pub(crate) sorted: bool,
}

/// Most likely first; equal logits go lowest id first so every sort is fully determined and
/// the chain gives the same set and order on every platform.
pub(crate) fn by_logit_desc(a: &TokenProb, b: &TokenProb) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

impl Candidates {
    pub(crate) fn sort(&mut self) {
        if !self.sorted {
            self.items.sort_unstable_by(by_logit_desc);
            self.sorted = true;
        }
    }

    pub(crate) fn max_logit(&self) -> f32 {
        self.items.iter().map(|c| c.logit).fold(f32::NEG_INFINITY, f32::max)
    }

    /// Fills `p` with the softmax of the logits. `libm` keeps exp bit-identical across
    /// platforms, so stages that compare cumulative sums cut at the same place everywhere.
    pub(crate) fn softmax(&mut self) {
        let max = self.max_logit();
        let mut sum = 0.0f32;
        for c in &mut self.items {
            c.p = libm::expf(c.logit - max);
            sum += c.p;
        }
        for c in &mut self.items {
            c.p /= sum;
        }
    }
}
