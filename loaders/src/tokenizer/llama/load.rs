//! Reading a tokenizer from GGUF metadata, with llama.cpp's defaults for whatever is absent
//! (`llama_vocab::impl::load`). All `tokenizer.ggml.*` keys are read here and nowhere else.

use crate::gguf::GgufFile;
use crate::tokenizer::attr::{TokenAttr, TokenType};
use crate::tokenizer::error::TokenizerError;
use crate::tokenizer::llama::specials::{self, SpecialIds};
use crate::tokenizer::llama::vocab::{Merges, Vocab};
use crate::tokenizer::llama::{Kind, LlamaTokenizer, Settings};
use crate::tokenizer::pretokenize::{PreConfig, PreTokenizer};

pub(crate) fn from_gguf(gguf: &GgufFile) -> Result<LlamaTokenizer, TokenizerError> {
    let model =
        gguf.opt_str("tokenizer.ggml.model")?.ok_or(TokenizerError::MissingKey("tokenizer.ggml.model"))?;
    let pre_name = gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("");

    let texts = gguf
        .opt_bytes_array("tokenizer.ggml.tokens")?
        .ok_or(TokenizerError::MissingKey("tokenizer.ggml.tokens"))?;
    let n = texts.len();
    let scores = match gguf.opt_f32_array("tokenizer.ggml.scores")? {
        Some(s) => at_least(s, n, "tokenizer.ggml.scores")?,
        None => vec![0.0; n],
    };
    let attrs: Vec<TokenAttr> = match gguf.opt_i64_array("tokenizer.ggml.token_type")? {
        Some(t) => at_least(t, n, "tokenizer.ggml.token_type")?
            .into_iter()
            .map(|c| TokenType::from_code(c).into())
            .collect(),
        None => vec![TokenAttr::NORMAL; n],
    };
    let mut vocab = Vocab::new(&texts, scores, attrs)?;

    let mut settings =
        Settings { add_bos: false, add_eos: false, add_space_prefix: false, clean_spaces: false };
    let mut ids = SpecialIds::default();
    let kind = match model {
        "llama" => {
            settings =
                Settings { add_bos: true, add_eos: false, add_space_prefix: true, clean_spaces: false };
            ids.bos = Some(1);
            ids.eos = Some(2);
            ids.unk = Some(0);
            Kind::Spm
        }
        "gpt2" => {
            let pre = PreConfig::from_name(pre_name)
                .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(pre_name.into()))?;
            let merges = gguf
                .opt_bytes_array("tokenizer.ggml.merges")?
                .ok_or(TokenizerError::MissingKey("tokenizer.ggml.merges"))?;
            settings.clean_spaces = pre.clean_spaces;
            settings.add_bos = pre.add_bos;
            if !pre.no_default_bos {
                ids.bos = Some(11);
            }
            ids.eos = Some(11);
            Kind::Bpe {
                pre: PreTokenizer::new(&pre)?,
                merges: Merges::new(&merges),
                ignore_merges: pre.ignore_merges,
            }
        }
        other => return Err(TokenizerError::UnsupportedModel(other.into())),
    };
    if let Some(v) = gguf.opt_bool("tokenizer.ggml.add_space_prefix")? {
        settings.add_space_prefix = v;
    }

    for (key, role) in specials::KEYS {
        let slot = ids.slot(role);
        // A default outside the vocabulary is dropped; a stored id outside it is ignored.
        if slot.is_some_and(|id| !vocab.contains(id)) {
            *slot = None;
        }
        if let Some(id) = gguf.opt_u32(key)?.filter(|&id| vocab.contains(id)) {
            *slot = Some(id);
        }
    }
    if let Some(v) = gguf.opt_bool("tokenizer.ggml.add_bos_token")? {
        settings.add_bos = v;
    }
    if let Some(v) = gguf.opt_bool("tokenizer.ggml.add_eos_token")? {
        settings.add_eos = v;
    }

    let eog = specials::detect(&mut vocab, &mut ids);
    apply_strip_rules(gguf, &mut vocab)?;
    Ok(LlamaTokenizer::new(vocab, kind, settings, ids, eog))
}

/// llama.cpp reads as many entries as there are tokens and rejects shorter arrays.
fn at_least<T>(mut v: Vec<T>, n: usize, key: &'static str) -> Result<Vec<T>, TokenizerError> {
    if v.len() < n {
        return Err(TokenizerError::LengthMismatch { key, found: v.len(), n_vocab: n });
    }
    v.truncate(n);
    Ok(v)
}

/// Per-model whitespace stripping around special tokens, which llama.cpp keys on names since
/// GGUF has no field for it.
fn apply_strip_rules(gguf: &GgufFile, vocab: &mut Vocab) -> Result<(), TokenizerError> {
    let name = gguf.opt_str("general.name")?.unwrap_or("").to_ascii_lowercase();
    let pre = gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("");
    let arch = gguf.opt_str("general.architecture")?.unwrap_or("");
    let any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
    if any(pre, &["jina-v2-de", "jina-v2-es", "jina-v2-code"])
        || any(arch, &["nomic-bert-moe", "jina-bert-v3"])
    {
        set_bit(vocab, "<mask>", TokenAttr::LSTRIP, true);
    } else if any(&name, &["phi-3", "phi3"]) {
        let special = TokenAttr::CONTROL.with(TokenAttr::USER_DEFINED).with(TokenAttr::UNKNOWN);
        for id in vocab.ids() {
            if vocab.attr(id).intersects(special) {
                vocab.set_attr(id, vocab.attr(id).with(TokenAttr::RSTRIP));
            }
        }
        set_bit(vocab, "</s>", TokenAttr::RSTRIP, true);
        for text in ["<unk>", "<s>", "<|endoftext|>"] {
            set_bit(vocab, text, TokenAttr::RSTRIP, false);
        }
    } else if name.contains("modern-bert") {
        set_bit(vocab, "[MASK]", TokenAttr::LSTRIP, true);
    }
    Ok(())
}

fn set_bit(vocab: &mut Vocab, text: &str, bit: TokenAttr, on: bool) {
    if let Some(id) = vocab.id(text.as_bytes()) {
        let attr = vocab.attr(id);
        vocab.set_attr(id, if on { attr.with(bit) } else { attr.without(bit) });
    }
}
