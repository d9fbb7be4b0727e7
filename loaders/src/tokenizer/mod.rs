//! Tokenizers that give llama.cpp's token ids: SentencePiece (`llama`) and byte-level BPE
//! (`gpt2`) from GGUF metadata, and Hugging Face `tokenizer.json` for safetensors models.
//!
//! The GGUF tokenizers follow llama.cpp 0c1e570 (`src/llama-vocab.cpp`, `src/unicode.cpp`) and
//! were compared with it on tens of thousands of strings for SmolLM2, Gemma 3 and every
//! supported `tokenizer.ggml.pre`. Where llama.cpp's result depends on hash-map or unstable-sort
//! order, this crate picks one deterministic answer: equally long special tokens overlapping in
//! the text are split out in id order, and of two tokens named for the same role (say
//! `<|im_end|>` and `<|endoftext|>` for end of turn) the first in llama.cpp's list wins; both
//! still end generation. Not supported: the `bert`, `t5`, `rwkv`, `plamo2`, `gemma4`,
//! `hybriddna` and `whitespace` models and the `kimi-k2`, `superbpe` and `sarvam-moe`
//! pre-tokenizers, which fail with a typed error.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use wllm_loaders::{GgufFile, Tokenizer};
//! let gguf = GgufFile::open("model.gguf")?;
//! let tok = Tokenizer::from_gguf(&gguf)?;
//! let ids = tok.encode("Hello world", true, false);
//! let mut stream = tok.stream_decoder();
//! let text: String = ids.iter().map(|&id| stream.push(id)).collect();
//! # Ok(()) }
//! ```

mod attr;
mod byte_level;
mod error;
#[cfg(feature = "hf-tokenizer")]
mod hf;
mod llama;
mod pretokenize;
mod stream;
mod unicode;

#[cfg(feature = "hf-tokenizer")]
use std::path::Path;

pub use attr::{TokenAttr, TokenType};
pub use error::TokenizerError;
pub use stream::{StreamDecoder, Utf8Stream};

use crate::gguf::GgufFile;
#[cfg(feature = "hf-tokenizer")]
use hf::HfTokenizer;
use llama::LlamaTokenizer;

/// A model's tokenizer. Built from GGUF it reproduces llama.cpp (commit 0c1e570) id for id;
/// built from `tokenizer.json` it is whatever the `tokenizers` crate makes of that file.
pub struct Tokenizer {
    backend: Backend,
}

enum Backend {
    Llama(Box<LlamaTokenizer>),
    #[cfg(feature = "hf-tokenizer")]
    Hf(Box<HfTokenizer>),
}

/// Calls the same method on whichever backend there is.
macro_rules! dispatch {
    ($self:ident, $t:ident => $e:expr) => {
        match &$self.backend {
            Backend::Llama($t) => $e,
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf($t) => $e,
        }
    };
}

impl Tokenizer {
    /// The tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Ok(Tokenizer { backend: Backend::Llama(Box::new(llama::from_gguf(gguf)?)) })
    }

    /// A Hugging Face tokenizer (with the `hf-tokenizer` feature, which brings the
    /// `tokenizers` crate and its C regex library). `tokenizer_config.json`, if given, names the BOS/EOS/UNK/PAD
    /// tokens and whether BOS and EOS are added.
    #[cfg(feature = "hf-tokenizer")]
    pub fn from_hf_files(
        tokenizer_json: impl AsRef<Path>,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Tokenizer, TokenizerError> {
        let hf = HfTokenizer::from_files(tokenizer_json.as_ref(), tokenizer_config_json)?;
        Ok(Tokenizer { backend: Backend::Hf(Box::new(hf)) })
    }

    /// Text to ids, as llama.cpp's `llama_tokenize`. `add_special` adds BOS and/or EOS where the
    /// model asks for them; `parse_special` turns the text of control tokens such as
    /// `<|im_start|>` into those tokens. User-defined tokens are always matched.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        match &self.backend {
            Backend::Llama(t) => t.encode(text.as_bytes(), add_special, parse_special),
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(t) => t.encode(text, add_special, parse_special),
        }
    }

    /// Text that continues other text, as the tokens a model would write for it mid-reply:
    /// no special tokens, and no SentencePiece space prefix (which [`Tokenizer::encode`] adds
    /// at the start of a text).
    pub fn encode_continuation(&self, text: &str) -> Vec<u32> {
        match &self.backend {
            Backend::Llama(t) => t.encode_continuation(text.as_bytes()),
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(t) => t.encode(text, false, false),
        }
    }

    /// The bytes of one token, as `llama_token_to_piece(special = false)`: control and unknown
    /// tokens give nothing. May be part of a UTF-8 character.
    pub fn token_to_piece(&self, id: u32) -> Vec<u8> {
        dispatch!(self, t => t.token_to_piece(id, false))
    }

    /// As [`Tokenizer::token_to_piece`], but control and unknown tokens give their text.
    pub fn token_to_piece_special(&self, id: u32) -> Vec<u8> {
        dispatch!(self, t => t.token_to_piece(id, true))
    }

    /// Ids to text, as `llama_detokenize(remove_special = false, unparse_special = false)`:
    /// control tokens give nothing, bytes that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.backend {
            Backend::Llama(t) => String::from_utf8_lossy(&t.detokenize(ids, false, false)).into_owned(),
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(t) => t.decode(ids, true),
        }
    }

    /// `llama_detokenize` with its two switches: `remove_special` drops a leading BOS and a
    /// trailing EOS the model adds, `unparse_special` renders control tokens. Raw bytes.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        match &self.backend {
            Backend::Llama(t) => t.detokenize(ids, remove_special, unparse_special),
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(t) => {
                let ids = match (remove_special, ids.first(), ids.last()) {
                    (true, Some(&first), _) if t.add_bos() && Some(first) == t.bos() => &ids[1..],
                    _ => ids,
                };
                let ids = match (remove_special, ids.last()) {
                    (true, Some(&last)) if t.add_eos() && Some(last) == t.eos() => &ids[..ids.len() - 1],
                    _ => ids,
                };
                t.decode(ids, !unparse_special).into_bytes()
            }
        }
    }

    /// Incremental decoding that only ever yields whole characters.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    pub fn bos(&self) -> Option<u32> {
        dispatch!(self, t => t.bos())
    }
    pub fn eos(&self) -> Option<u32> {
        dispatch!(self, t => t.eos())
    }
    /// End of turn (`<|im_end|>`, `<end_of_turn>`, …), where the model has one.
    pub fn eot(&self) -> Option<u32> {
        match &self.backend {
            Backend::Llama(t) => t.eot(),
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(_) => None,
        }
    }
    pub fn unk(&self) -> Option<u32> {
        dispatch!(self, t => t.unk())
    }
    pub fn pad(&self) -> Option<u32> {
        dispatch!(self, t => t.pad())
    }
    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        dispatch!(self, t => t.add_bos())
    }
    /// Whether `encode(.., add_special = true, ..)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        dispatch!(self, t => t.add_eos())
    }
    /// Whether generation stops at this token: EOS, EOT, EOM and the other end tokens llama.cpp
    /// recognises by name (`<|im_end|>`, `<end_of_turn>`, `<|endoftext|>`, …).
    pub fn is_eog(&self, id: u32) -> bool {
        dispatch!(self, t => t.is_eog(id))
    }
    /// Every end-of-generation token, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        dispatch!(self, t => t.eog_ids().collect())
    }
    pub fn n_vocab(&self) -> usize {
        dispatch!(self, t => t.n_vocab())
    }
    /// How the token behaves (see [`TokenAttr::token_type`]); `None` outside the vocabulary.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.token_attr(id).map(TokenAttr::token_type)
    }
    /// All attribute bits of a token; `None` outside the vocabulary.
    pub fn token_attr(&self, id: u32) -> Option<TokenAttr> {
        dispatch!(self, t => t.attr(id))
    }
    /// The token's SentencePiece score (GGUF only).
    pub fn score(&self, id: u32) -> Option<f32> {
        match &self.backend {
            Backend::Llama(t) => t.score(id),
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(_) => None,
        }
    }
    /// The token's text as stored in the vocabulary (e.g. `▁the`, `Ġthe`, `<0x0A>`).
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        dispatch!(self, t => t.piece(id))
    }
    /// The id of a vocabulary entry, by its stored text.
    pub fn id_of(&self, piece: impl AsRef<[u8]>) -> Option<u32> {
        dispatch!(self, t => t.id_of(piece.as_ref()))
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Llama(_) => "gguf",
            #[cfg(feature = "hf-tokenizer")]
            Backend::Hf(_) => "tokenizer.json",
        };
        f.debug_struct("Tokenizer").field("source", &kind).field("n_vocab", &self.n_vocab()).finish()
    }
}
