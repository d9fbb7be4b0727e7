use std::collections::{HashMap, VecDeque};

use super::candidates::Candidates;

/// The last `repeat_last_n` accepted tokens and how often each occurs among them.
#[derive(Debug, Clone, Default)]
pub(crate) struct PenaltyWindow {
    capacity: usize,
    tokens: VecDeque<u32>,
    counts: HashMap<u32, u32>,
}

impl PenaltyWindow {
    pub(crate) fn new(capacity: usize) -> Self {
        PenaltyWindow { capacity, tokens: VecDeque::with_capacity(capacity), counts: HashMap::new() }
    }

    pub(crate) fn push(&mut self, token: u32) {
        if self.capacity == 0 {
            return;
        }
        if self.tokens.len() == self.capacity
            && let Some(old) = self.tokens.pop_front()
            && let Some(n) = self.counts.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&old);
            }
        }
        self.tokens.push_back(token);
        *self.counts.entry(token).or_insert(0) += 1;
    }

    pub(crate) fn clear(&mut self) {
        self.tokens.clear();
        self.counts.clear();
    }

    /// Applies llama.cpp's penalties to a full, unsorted row whose index equals the token id.
    /// The repeat penalty multiplies non-positive logits instead of dividing them, so a
    /// repeated token never becomes more likely.
    pub(crate) fn apply(&self, cands: &mut Candidates, repeat: f32, frequency: f32, presence: f32) {
        for (&token, &count) in &self.counts {
            let Some(c) = cands.items.get_mut(token as usize) else { continue };
            if c.logit <= 0.0 {
                c.logit *= repeat;
            } else {
                c.logit /= repeat;
            }
            c.logit -= count as f32 * frequency + presence;
        }
        cands.sorted = false;
    }
}
