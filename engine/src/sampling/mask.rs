//! Which tokens a constraint (a JSON schema, a grammar) allows at this step.

/// A set of allowed token ids as a bitset of 32-bit words, bit `id % 32` of word `id / 32`
/// (the layout grammar engines such as llguidance produce). Ids past its end are disallowed.
#[derive(Clone, Copy, Debug)]
pub struct TokenMask<'a> {
    words: &'a [u32],
}

impl<'a> TokenMask<'a> {
    pub fn new(words: &'a [u32]) -> Self {
        TokenMask { words }
    }

    pub fn allows(&self, id: u32) -> bool {
        self.words.get((id / 32) as usize).is_some_and(|w| w & (1 << (id % 32)) != 0)
    }

    /// Whether no token is allowed.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }
}

/// Greedy decoding under a mask: the allowed token with the largest logit, the lowest id on
/// ties (as [`argmax`](super::argmax)); `None` when the mask allows nothing in the row.
pub fn argmax_masked(logits: &[f32], mask: TokenMask<'_>) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (w, &bits) in mask.words.iter().enumerate() {
        let mut bits = bits;
        while bits != 0 {
            let id = w * 32 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(&x) = logits.get(id) else { return best.map(|(i, _)| i as u32) };
            if best.is_none_or(|(_, b)| x > b) {
                best = Some((id, x));
            }
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_argmax_skips_disallowed_tokens() {
        let logits = [0.0, 5.0, 1.0, 1.0, 9.0];
        // Tokens 2, 3 allowed: equal logits, lowest id wins.
        assert_eq!(argmax_masked(&logits, TokenMask::new(&[0b01100])), Some(2));
        assert_eq!(argmax_masked(&logits, TokenMask::new(&[0b10010])), Some(4));
        assert_eq!(argmax_masked(&logits, TokenMask::new(&[0])), None);
        // Bits past the row are ignored.
        assert_eq!(argmax_masked(&logits, TokenMask::new(&[1 << 31])), None);
        let m = TokenMask::new(&[0, 1]);
        assert!(m.allows(32) && !m.allows(0) && !m.allows(64));
    }
}
