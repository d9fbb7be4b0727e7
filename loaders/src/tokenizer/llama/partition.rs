//! Splitting out special tokens before the model tokenizer runs, as llama.cpp's
//! `tokenizer_st_partition` does: one special token at a time, longest text first, every
//! occurrence in the remaining plain text becomes that token. Control and unknown tokens only
//! take part when special tokens are parsed; user-defined tokens always do.
//!
//! A vocabulary can hold thousands of special tokens, so `Specials` first finds which of them
//! occur in the text at all (one Aho-Corasick pass) and only those are split out in order.
//! A token absent from the text cannot appear in a fragment of it, so the result is the same.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;

use std::ops::Range;

use crate::tokenizer::attr::TokenAttr;
use crate::tokenizer::llama::vocab::Vocab;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// The special tokens of a vocabulary in llama.cpp's order, for both settings of
/// `parse_special`.
pub(crate) struct Specials {
    /// Control, user-defined and unknown tokens, longest text first.
    all: Vec<u32>,
    /// Those taking part without `parse_special`: the user-defined ones.
    plain: Vec<u32>,
    /// Built on first use, so that loading a vocabulary stays cheap.
    matchers: [OnceLock<Option<AhoCorasick>>; 2],
}

impl Specials {
    pub fn new(vocab: &Vocab) -> Specials {
        let mask = TokenAttr::CONTROL.with(TokenAttr::USER_DEFINED).with(TokenAttr::UNKNOWN);
        let mut all: Vec<u32> = vocab.ids().filter(|&id| vocab.attr(id).intersects(mask)).collect();
        // llama.cpp's sort is not stable; texts of equal length keep id order here, which only
        // matters for two equally long special tokens overlapping in the text.
        all.sort_by_key(|&id| std::cmp::Reverse(vocab.text(id).len()));
        let skipped = TokenAttr::CONTROL.with(TokenAttr::UNKNOWN);
        let plain = all.iter().copied().filter(|&id| !vocab.attr(id).intersects(skipped)).collect();
        Specials { all, plain, matchers: [OnceLock::new(), OnceLock::new()] }
    }

    /// The tokens to split out of `text`, in order: those of the mode that occur in it.
    fn present(&self, vocab: &Vocab, text: &[u8], parse_special: bool) -> Vec<u32> {
        let ids = if parse_special { &self.all } else { &self.plain };
        let matcher = self.matchers[usize::from(parse_special)]
            .get_or_init(|| AhoCorasick::new(ids.iter().map(|&id| vocab.text(id))).ok());
        let Some(matcher) = matcher else {
            // Building the automaton failed (it has size limits); test every token instead.
            return ids.clone();
        };
        let mut seen = vec![false; ids.len()];
        for m in matcher.find_overlapping_iter(text) {
            seen[m.pattern().as_usize()] = true;
        }
        ids.iter().zip(seen).filter(|&(_, s)| s).map(|(&id, _)| id).collect()
    }
}

/// Cuts `text` into plain fragments and special tokens.
pub(crate) fn partition(
    vocab: &Vocab,
    specials: &Specials,
    text: &[u8],
    parse_special: bool,
) -> Vec<Fragment> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut fragments = vec![Fragment::Text(0..text.len())];
    for id in specials.present(vocab, text, parse_special) {
        let attr = vocab.attr(id);
        let needle = vocab.text(id);
        if !fragments
            .iter()
            .any(|f| matches!(f, Fragment::Text(r) if find(&text[r.clone()], needle).is_some()))
        {
            continue;
        }
        let mut next = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            match fragment {
                Fragment::Text(range) => split(text, range, needle, id, attr, &mut next),
                token => next.push(token),
            }
        }
        fragments = next;
    }
    fragments
}

/// Splits one plain fragment at every occurrence of `needle`, left to right.
fn split(
    text: &[u8],
    mut range: Range<usize>,
    needle: &[u8],
    id: u32,
    attr: TokenAttr,
    out: &mut Vec<Fragment>,
) {
    while let Some(at) = find(&text[range.clone()], needle) {
        let start = range.start + at;
        let mut left_end = start;
        if attr.intersects(TokenAttr::LSTRIP) {
            while left_end > range.start && is_c_space(text[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > range.start {
            out.push(Fragment::Text(range.start..left_end));
        }
        out.push(Fragment::Token(id));
        let mut right = start + needle.len();
        if right >= range.end {
            return;
        }
        if attr.intersects(TokenAttr::RSTRIP) {
            while right < range.end && is_c_space(text[right]) {
                right += 1;
            }
        }
        range = right..range.end;
    }
    if !range.is_empty() {
        out.push(Fragment::Text(range));
    }
}

/// C's `isspace` in the "C" locale, which llama.cpp strips with.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(texts: &[(&str, TokenAttr)]) -> Vocab {
        let t: Vec<&[u8]> = texts.iter().map(|(s, _)| s.as_bytes()).collect();
        let attrs = texts.iter().map(|(_, a)| *a).collect();
        Vocab::new(&t, vec![0.0; texts.len()], attrs).unwrap()
    }

    #[test]
    fn splits_longest_first_and_skips_control_unless_parsing() {
        let v = vocab(&[
            ("<a>", TokenAttr::USER_DEFINED),
            ("<a><a>", TokenAttr::USER_DEFINED),
            ("<c>", TokenAttr::CONTROL),
        ]);
        let specials = Specials::new(&v);
        assert_eq!(specials.all, [1, 0, 2]);
        let text = b"x<a><a><a>y<c>";
        let got = partition(&v, &specials, text, false);
        assert_eq!(
            got,
            [Fragment::Text(0..1), Fragment::Token(1), Fragment::Token(0), Fragment::Text(10..14)]
        );
        let got = partition(&v, &specials, text, true);
        assert_eq!(got[3..], [Fragment::Text(10..11), Fragment::Token(2)]);
    }

    #[test]
    fn strips_around_tokens_that_ask_for_it() {
        let v = vocab(&[("<t>", TokenAttr::CONTROL.with(TokenAttr::RSTRIP).with(TokenAttr::LSTRIP))]);
        let got = partition(&v, &Specials::new(&v), b"a  <t> \n b", true);
        assert_eq!(got, [Fragment::Text(0..1), Fragment::Token(0), Fragment::Text(9..10)]);
    }
}
