//! Hugging Face `tokenizer.json` (safetensors models), run by the `tokenizers` crate and given
//! the same surface as the GGUF tokenizers: llama.cpp-style pieces, special-token roles from
//! `tokenizer_config.json`, end-of-generation tokens by the same names llama.cpp knows.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::tokenizer::attr::TokenAttr;
use crate::tokenizer::byte_level;
use crate::tokenizer::error::TokenizerError;
use crate::tokenizer::llama::{ALWAYS_RENDERED, EOG_NAMES};
use crate::tokenizer::unicode;

pub(crate) struct HfTokenizer {
    /// Splits special tokens out of the text (`parse_special`).
    parsing: tokenizers::Tokenizer,
    /// Reads special-token text as plain text; non-special added tokens still match.
    literal: tokenizers::Tokenizer,
    texts: Vec<Option<String>>,
    attrs: Vec<TokenAttr>,
    byte_level: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    eog: BTreeSet<u32>,
}

impl HfTokenizer {
    pub fn from_files(
        tokenizer_json: &Path,
        config_json: Option<&Path>,
    ) -> Result<HfTokenizer, TokenizerError> {
        let raw = read_json(tokenizer_json)?;
        let parsing = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| {
            TokenizerError::HfTokenizer { path: tokenizer_json.into(), reason: e.to_string() }
        })?;
        let mut literal = parsing.clone();
        literal.set_encode_special_tokens(true);
        let config = config_json.map(read_json).transpose()?.unwrap_or(Value::Null);

        let vocab = parsing.get_vocab(true);
        let n_vocab = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if n_vocab == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        // Ids index tables here, so a vocabulary must not be mostly holes.
        if n_vocab > 2 * vocab.len() + 65536 {
            let reason = format!("token id {} is far beyond the {} tokens defined", n_vocab - 1, vocab.len());
            return Err(TokenizerError::HfTokenizer { path: tokenizer_json.into(), reason });
        }
        let mut texts = vec![None; n_vocab];
        for (text, id) in vocab {
            texts[id as usize] = Some(text);
        }

        let byte_level =
            mentions_type(&raw["decoder"], "ByteLevel") || mentions_type(&raw["pre_tokenizer"], "ByteLevel");
        let byte_fallback = raw["model"]["byte_fallback"].as_bool() == Some(true)
            || mentions_type(&raw["decoder"], "ByteFallback");
        let mut attrs: Vec<TokenAttr> = texts
            .iter()
            .map(|t| match t {
                Some(t) if byte_fallback && is_byte_token(t) => TokenAttr::BYTE,
                Some(_) => TokenAttr::NORMAL,
                None => TokenAttr::UNDEFINED,
            })
            .collect();
        for (id, added) in parsing.get_added_tokens_decoder() {
            if let Some(attr) = attrs.get_mut(id as usize) {
                *attr = if added.special { TokenAttr::CONTROL } else { TokenAttr::USER_DEFINED };
            }
        }

        let id_of = |text: &str| parsing.token_to_id(text);
        let role = |key: &str| token_text(&config[key]).and_then(id_of);
        let bos = role("bos_token");
        let eos = role("eos_token");
        let unk = role("unk_token").or_else(|| raw["model"]["unk_token"].as_str().and_then(id_of));
        let pad = role("pad_token");
        // Without a config flag, BOS is added exactly when the post-processor adds it.
        let adds = |ids: &[u32], id: Option<u32>, first: bool| {
            let end = if first { ids.first() } else { ids.last() };
            id.is_some() && end.copied() == id
        };
        let empty = parsing.encode("", true).map(|e| e.get_ids().to_vec()).unwrap_or_default();
        let add_bos = config["add_bos_token"].as_bool().unwrap_or_else(|| adds(&empty, bos, true));
        let add_eos = config["add_eos_token"].as_bool().unwrap_or_else(|| adds(&empty, eos, false));

        let mut eog: BTreeSet<u32> = EOG_NAMES.iter().filter_map(|n| id_of(n)).collect();
        eog.extend(eos);
        for &id in &eog {
            if let Some(attr) = attrs.get_mut(id as usize) {
                *attr = attr.with(TokenAttr::CONTROL);
            }
        }
        // As for GGUF vocabularies (llama/specials.rs): harmony's markers must reach the text,
        // where the reply's channels are told apart, and `<|end|>` closes a message, not the
        // reply, when `<|return|>` and `<|call|>` exist.
        for id in ALWAYS_RENDERED.iter().filter_map(|n| id_of(n)) {
            if let Some(attr) = attrs.get_mut(id as usize) {
                *attr = TokenAttr::USER_DEFINED;
            }
        }
        if let (Some(end), Some(_), Some(_)) = (id_of("<|end|>"), id_of("<|return|>"), id_of("<|call|>"))
            && eog.remove(&end)
            && let Some(attr) = attrs.get_mut(end as usize)
        {
            *attr = TokenAttr::USER_DEFINED;
        }

        Ok(HfTokenizer {
            parsing,
            literal,
            texts,
            attrs,
            byte_level,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            add_eos,
            eog,
        })
    }

    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let tokenizer = if parse_special { &self.parsing } else { &self.literal };
        match tokenizer.encode(text, add_special) {
            Ok(encoding) => encoding.get_ids().to_vec(),
            Err(e) => {
                log::warn!("tokenizer.json could not encode the text: {e}");
                Vec::new()
            }
        }
    }

    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        let (Some(Some(text)), Some(&attr)) = (self.texts.get(id as usize), self.attrs.get(id as usize))
        else {
            return Vec::new();
        };
        if attr.is_control() {
            return if special { text.as_bytes().to_vec() } else { Vec::new() };
        }
        if attr.is_user_defined() {
            return text.as_bytes().to_vec();
        }
        if attr.is_byte() {
            return u8::from_str_radix(&text[3..5], 16).map(|b| vec![b]).unwrap_or_default();
        }
        if self.byte_level {
            let cpts = unicode::decode_utf8(text.as_bytes());
            if let Some(bytes) =
                cpts.iter().map(|&c| byte_level::char_to_byte(c)).collect::<Option<Vec<u8>>>()
            {
                return bytes;
            }
        }
        text.replace('\u{2581}', " ").into_bytes()
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.parsing.decode(ids, skip_special).unwrap_or_else(|e| {
            log::warn!("tokenizer.json could not decode the ids: {e}");
            String::new()
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.texts.len()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    pub fn eog_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.eog.iter().copied()
    }
    pub fn attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.texts.get(id as usize)?.as_deref().map(str::as_bytes)
    }
    pub fn id_of(&self, piece: &[u8]) -> Option<u32> {
        self.parsing.token_to_id(std::str::from_utf8(piece).ok()?)
    }
}

fn read_json(path: &Path) -> Result<Value, TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io { path: path.into(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| TokenizerError::Json { path: path.into(), source })
}

/// A special-token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

/// Whether a component (or any member of a `Sequence`) has the given `type`.
fn mentions_type(component: &Value, ty: &str) -> bool {
    if component["type"].as_str() == Some(ty) {
        return true;
    }
    ["decoders", "pretokenizers"]
        .iter()
        .filter_map(|k| component[k].as_array())
        .any(|members| members.iter().any(|m| mentions_type(m, ty)))
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && b[3..5].iter().all(u8::is_ascii_hexdigit)
}
