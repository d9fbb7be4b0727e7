//! Byte-level BPE as llama.cpp's `llm_tokenizer_bpe_session` does it: each pre-tokenized word
//! is spelled in GPT-2's byte alphabet and its adjacent pairs are merged lowest rank first
//! (ties to the leftmost pair).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::tokenizer::byte_level;
use crate::tokenizer::llama::vocab::{Merges, Vocab};
use crate::tokenizer::pretokenize::PreTokenizer;
use crate::tokenizer::unicode::utf8_len;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge, valid while both symbols keep the lengths they had when it was queued.
#[derive(PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Bigram) -> Ordering {
        // BinaryHeap pops the greatest: make that the lowest rank, then the leftmost pair.
        other.rank.cmp(&self.rank).then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Bigram) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub(crate) struct Bpe<'a> {
    pub vocab: &'a Vocab,
    pub merges: &'a Merges,
    pub pre: &'a PreTokenizer,
    pub ignore_merges: bool,
}

impl Bpe<'_> {
    /// Appends the tokens of `text` to `out`.
    pub fn tokenize(&self, text: &[u8], out: &mut Vec<u32>) {
        let mut word = Vec::new();
        let mut key = Vec::new();
        for raw in self.pre.split(text) {
            word.clear();
            byte_level::encode_into(&raw, &mut word);
            self.merge_word(&word, &mut key, out);
        }
    }

    fn merge_word(&self, word: &[u8], key: &mut Vec<u8>, out: &mut Vec<u32>) {
        if self.ignore_merges
            && let Some(id) = self.vocab.id(word)
        {
            out.push(id);
            return;
        }
        let mut symbols = Vec::with_capacity(word.len());
        let mut offset = 0;
        while offset < word.len() {
            let len = utf8_len(word[offset]).min(word.len() - offset);
            let index = symbols.len();
            symbols.push(Symbol {
                start: offset,
                len,
                prev: index.checked_sub(1),
                next: (offset + len < word.len()).then_some(index + 1),
            });
            offset += len;
        }

        let mut queue = BinaryHeap::new();
        let mut try_add = |symbols: &[Symbol],
                           queue: &mut BinaryHeap<Bigram>,
                           left: Option<usize>,
                           right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else { return };
            let (l, r) = (symbols[left], symbols[right]);
            let text = |s: Symbol| &word[s.start..s.start + s.len];
            if let Some(rank) = self.merges.rank(text(l), text(r), key) {
                queue.push(Bigram { rank, left, right, size: l.len + r.len });
            }
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
                continue;
            }
            symbols[bigram.left].len += r.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(bigram.left);
            }
            try_add(&symbols, &mut queue, l.prev, Some(bigram.left));
            try_add(&symbols, &mut queue, Some(bigram.left), r.next);
        }

        for s in symbols.iter().filter(|s| s.len > 0) {
            let piece = &word[s.start..s.start + s.len];
            match self.vocab.id(piece) {
                Some(id) => out.push(id),
                // llama.cpp then tries each byte of the spelled-out piece as a token of its own
                // and silently drops the ones that are not.
                None => out.extend(piece.iter().filter_map(|&b| self.vocab.id(&[b]))),
            }
        }
    }
}
