//! llama.cpp's own tokenizers, driven by GGUF metadata: SentencePiece (`llama`) and byte-level
//! BPE (`gpt2`), behind the same special-token handling.

mod bpe;
mod detokenize;
mod load;
mod partition;
mod specials;
mod spm;
mod vocab;

use std::collections::BTreeSet;

use crate::tokenizer::attr::TokenAttr;
use crate::tokenizer::pretokenize::PreTokenizer;

pub(crate) use load::from_gguf;
use partition::{Fragment, Specials};
use specials::SpecialIds;
// The tokenizer.json backend recognises llama.cpp's special tokens by the same names.
#[cfg(feature = "hf-tokenizer")]
pub(crate) use specials::{ALWAYS_RENDERED, EOG_NAMES};
use vocab::{Merges, Vocab};

pub(crate) enum Kind {
    Spm,
    Bpe { pre: PreTokenizer, merges: Merges, ignore_merges: bool },
}

/// The flags llama.cpp settles on for a vocabulary.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
}

pub(crate) struct LlamaTokenizer {
    vocab: Vocab,
    kind: Kind,
    settings: Settings,
    ids: SpecialIds,
    eog: BTreeSet<u32>,
    specials: Specials,
}

impl LlamaTokenizer {
    fn new(
        vocab: Vocab,
        kind: Kind,
        settings: Settings,
        ids: SpecialIds,
        eog: BTreeSet<u32>,
    ) -> LlamaTokenizer {
        let specials = Specials::new(&vocab);
        LlamaTokenizer { vocab, kind, settings, ids, eog, specials }
    }

    pub fn encode(&self, text: &[u8], add_special: bool, parse_special: bool) -> Vec<u32> {
        self.encode_with(text, add_special, parse_special, self.settings.add_space_prefix)
    }

    /// Text that continues other text: as [`encode`](Self::encode) without specials, and
    /// without SentencePiece's space prefix (which belongs at the start of the text only).
    pub fn encode_continuation(&self, text: &[u8]) -> Vec<u32> {
        self.encode_with(text, false, false, false)
    }

    fn encode_with(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
        space_prefix: bool,
    ) -> Vec<u32> {
        let fragments = partition::partition(&self.vocab, &self.specials, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        // llama.cpp asserts that a model asking for BOS or EOS has one; without one there is
        // nothing to add.
        if add_special && self.settings.add_bos {
            out.extend(self.ids.bos);
        }
        match &self.kind {
            Kind::Spm => {
                // A space is prefixed to the text at the start and after each special token.
                let mut after_special = true;
                let mut escaped = Vec::new();
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(range) => {
                            escaped.clear();
                            if space_prefix && after_special {
                                escaped.extend_from_slice("\u{2581}".as_bytes());
                            }
                            for &b in &text[range] {
                                if b == b' ' {
                                    escaped.extend_from_slice("\u{2581}".as_bytes());
                                } else {
                                    escaped.push(b);
                                }
                            }
                            spm::tokenize(&self.vocab, self.ids.unk, &escaped, &mut out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
            Kind::Bpe { pre, merges, ignore_merges } => {
                let bpe = bpe::Bpe { vocab: &self.vocab, merges, pre, ignore_merges: *ignore_merges };
                for fragment in fragments {
                    match fragment {
                        Fragment::Text(range) => bpe.tokenize(&text[range], &mut out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_special && self.settings.add_eos {
            out.extend(self.ids.eos);
        }
        out
    }

    pub fn n_vocab(&self) -> usize {
        self.vocab.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }
    pub fn eot(&self) -> Option<u32> {
        self.ids.eot
    }
    pub fn unk(&self) -> Option<u32> {
        self.ids.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.ids.pad
    }
    pub fn add_bos(&self) -> bool {
        self.settings.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.settings.add_eos
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    pub fn attr(&self, id: u32) -> Option<TokenAttr> {
        self.vocab.contains(id).then(|| self.vocab.attr(id))
    }
    pub fn score(&self, id: u32) -> Option<f32> {
        self.vocab.contains(id).then(|| self.vocab.score(id))
    }
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.vocab.contains(id).then(|| self.vocab.text(id))
    }
    pub fn id_of(&self, piece: &[u8]) -> Option<u32> {
        self.vocab.id(piece)
    }
}
