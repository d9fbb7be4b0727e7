//! The token table: texts, scores and attributes by id, and ids by text.

use std::collections::HashMap;

use crate::tokenizer::attr::TokenAttr;
use crate::tokenizer::error::TokenizerError;

pub(crate) struct Vocab {
    /// All token texts back to back; token `i` is `arena[ends[i - 1]..ends[i]]`.
    arena: Vec<u8>,
    ends: Vec<usize>,
    scores: Vec<f32>,
    attrs: Vec<TokenAttr>,
    by_text: HashMap<Box<[u8]>, u32>,
}

impl Vocab {
    /// `scores` and `attrs` must be as long as `texts`; the loader checks that.
    pub fn new(texts: &[&[u8]], scores: Vec<f32>, attrs: Vec<TokenAttr>) -> Result<Vocab, TokenizerError> {
        if texts.is_empty() {
            return Err(TokenizerError::EmptyVocab);
        }
        if u32::try_from(texts.len()).is_err() {
            return Err(TokenizerError::VocabTooLarge(texts.len()));
        }
        let total: usize = texts.iter().map(|t| t.len()).sum();
        let mut arena = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(texts.len());
        let mut by_text = HashMap::with_capacity(texts.len());
        for (i, &text) in texts.iter().enumerate() {
            let id = i as u32;
            // llama.cpp renames empty tokens so that every text is a usable key.
            let renamed;
            let text = if text.is_empty() {
                renamed = format!("[EMPTY_{i}]");
                renamed.as_bytes()
            } else {
                text
            };
            arena.extend_from_slice(text);
            ends.push(arena.len());
            if let Some(first) = by_text.insert(Box::from(text), id) {
                // llama.cpp refuses such a vocabulary (it asserts one id per text).
                let text = String::from_utf8_lossy(text).into_owned();
                return Err(TokenizerError::DuplicateToken { first, second: id, text });
            }
        }
        Ok(Vocab { arena, ends, scores, attrs, by_text })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn contains(&self, id: u32) -> bool {
        (id as usize) < self.len()
    }

    /// The text of a token that exists.
    pub fn text(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.arena[start..self.ends[i]]
    }

    pub fn score(&self, id: u32) -> f32 {
        self.scores[id as usize]
    }

    pub fn attr(&self, id: u32) -> TokenAttr {
        self.attrs[id as usize]
    }

    pub fn set_attr(&mut self, id: u32, attr: TokenAttr) {
        self.attrs[id as usize] = attr;
    }

    pub fn id(&self, text: &[u8]) -> Option<u32> {
        self.by_text.get(text).copied()
    }

    pub fn ids(&self) -> std::ops::Range<u32> {
        0..self.len() as u32
    }
}

/// BPE merge ranks. A merge is keyed by its line in `tokenizer.ggml.merges` ("left right"),
/// which is what looking up the pair (left, right) amounts to: llama.cpp splits each line at
/// its first space after the first byte, and the halves it looks up never contain a space.
pub(crate) struct Merges {
    ranks: HashMap<Box<[u8]>, u32>,
}

impl Merges {
    pub fn new(lines: &[&[u8]]) -> Merges {
        let mut ranks = HashMap::with_capacity(lines.len());
        for (rank, &line) in lines.iter().enumerate() {
            // A repeated pair keeps its first rank, as with llama.cpp's `emplace`.
            ranks.entry(Box::from(line)).or_insert(rank as u32);
        }
        Merges { ranks }
    }

    /// The rank of merging `left` and `right`; `key` is scratch space.
    pub fn rank(&self, left: &[u8], right: &[u8], key: &mut Vec<u8>) -> Option<u32> {
        if left.is_empty() {
            return None;
        }
        key.clear();
        key.extend_from_slice(left);
        key.push(b' ');
        key.extend_from_slice(right);
        self.ranks.get(key.as_slice()).copied()
    }
}
