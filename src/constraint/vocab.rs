//! The model's vocabulary as the grammar engine sees it: each token's bytes, with control
//! tokens marked special so that no grammar can spell them out of text.

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use wllm_loaders::Tokenizer;

/// A [`TokenizerEnv`] over a wllm tokenizer.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // Grammars tokenize text they force in the middle of the output: plain text, and
        // without the space SentencePiece puts before a whole text.
        self.tokenizer.encode_continuation(&String::from_utf8_lossy(s))
    }
}

/// The token that ends a constrained reply: the end of turn where the model has one (chat
/// replies end there), else EOS.
pub(crate) fn stop_token(tokenizer: &Tokenizer) -> Option<u32> {
    tokenizer.eot().or(tokenizer.eos())
}

/// The bytes of token `id` in the grammar engine's terms: text tokens (byte-level BPE and
/// SentencePiece pieces alike) as the bytes they decode to, control tokens as their text behind
/// the special-token marker byte, unknown and unused tokens empty (never allowed).
fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    let Some(attr) = tokenizer.token_attr(id) else { return Vec::new() };
    if attr.is_control() || attr.is_unknown() || attr.is_unused() {
        let text = tokenizer.token_to_piece_special(id);
        if text.is_empty() || attr.is_unused() {
            return Vec::new();
        }
        let mut marked = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        marked.extend_from_slice(&text);
        return marked;
    }
    tokenizer.token_to_piece(id)
}

/// The grammar engine's view of `tokenizer`.
pub(crate) fn token_env(tokenizer: Arc<Tokenizer>) -> TokEnv {
    let n_vocab = tokenizer.n_vocab() as u32;
    let words: Vec<Vec<u8>> = (0..n_vocab).map(|id| token_bytes(&tokenizer, id)).collect();
    let mut info = TokRxInfo::new(n_vocab, stop_token(&tokenizer).unwrap_or(0));
    info.tok_bos = tokenizer.bos();
    info.tok_unk = tokenizer.unk();
    info.tok_pad = tokenizer.pad();
    info.tok_end_of_turn = tokenizer.eot();
    let trie = TokTrie::from(&info, &words);
    Arc::new(Vocabulary { trie, tokenizer })
}
