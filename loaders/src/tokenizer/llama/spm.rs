//! SentencePiece-style tokenization as llama.cpp's `llm_tokenizer_spm_session` does it: start
//! from single characters and keep merging the adjacent pair whose concatenation is the
//! highest-scoring token (ties go to the leftmost pair); whatever never became a token is
//! spelled out as byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::tokenizer::llama::vocab::Vocab;
use crate::tokenizer::unicode::utf8_len;

/// A symbol: a span of the text, linked to its live neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of `left` and its right neighbour, valid while both still have the
/// lengths they had when it was queued (`size` is their sum).
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Bigram) -> Ordering {
        // Higher score first, then the smaller left index. Scores compare as llama.cpp's `<`
        // does, so -0.0 and 0.0 tie.
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Bigram) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Bigram {
    fn eq(&self, other: &Bigram) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}

/// Appends the tokens of `text` (spaces already escaped to U+2581) to `out`.
pub(crate) fn tokenize(vocab: &Vocab, unk: Option<u32>, text: &[u8], out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let mut symbols = Vec::with_capacity(text.len());
    let mut offset = 0;
    while offset < text.len() {
        let len = utf8_len(text[offset]).min(text.len() - offset);
        let index = symbols.len();
        symbols.push(Symbol {
            start: offset,
            len,
            prev: index.checked_sub(1),
            next: (offset + len < text.len()).then_some(index + 1),
        });
        offset += len;
    }

    let mut queue = BinaryHeap::new();
    let try_add =
        |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, left: Option<usize>, right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else { return };
            let size = symbols[left].len + symbols[right].len;
            let start = symbols[left].start;
            if let Some(id) = vocab.id(&text[start..start + size]) {
                queue.push(Bigram { score: vocab.score(id), left, right, size });
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

    let mut i = Some(0);
    while let Some(index) = i {
        let s = symbols[index];
        let piece = &text[s.start..s.start + s.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            // Every merged symbol is a token, so only an unknown single character gets here.
            None => out.extend(piece.iter().filter_map(|&b| byte_token(vocab, b).or(unk))),
        }
        i = s.next;
    }
}

/// The token for a raw byte: `<0xNN>`, else the byte itself as a one-byte token
/// (llama.cpp's `byte_to_token` for SentencePiece vocabularies).
pub(crate) fn byte_token(vocab: &Vocab, b: u8) -> Option<u32> {
    vocab.id(format!("<0x{b:02X}>").as_bytes()).or_else(|| vocab.id(&[b]))
}
