//! Special token ids: the defaults of each vocabulary type, the GGUF keys that override them,
//! and llama.cpp's detection of end-of-turn, fill-in-the-middle and end-of-generation tokens by
//! their text (`llama_vocab::impl::load`, "auto-detect special tokens by text").

use std::collections::BTreeSet;

use crate::tokenizer::attr::TokenAttr;
use crate::tokenizer::llama::vocab::Vocab;

/// The ids llama.cpp keeps for special roles; `None` is its `LLAMA_TOKEN_NULL`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

/// A special-token role, for walking the GGUF keys.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Role {
    Bos,
    Eos,
    Eot,
    Eom,
    Unk,
    Sep,
    Pad,
    Mask,
    FimPre,
    FimSuf,
    FimMid,
    FimPad,
    FimRep,
    FimSep,
}

/// The GGUF key of each role, in the order llama.cpp reads them (the deprecated prefix, suffix
/// and middle keys come last and win).
pub(crate) const KEYS: [(&str, Role); 17] = [
    ("tokenizer.ggml.bos_token_id", Role::Bos),
    ("tokenizer.ggml.eos_token_id", Role::Eos),
    ("tokenizer.ggml.eot_token_id", Role::Eot),
    ("tokenizer.ggml.eom_token_id", Role::Eom),
    ("tokenizer.ggml.unknown_token_id", Role::Unk),
    ("tokenizer.ggml.seperator_token_id", Role::Sep),
    ("tokenizer.ggml.padding_token_id", Role::Pad),
    ("tokenizer.ggml.mask_token_id", Role::Mask),
    ("tokenizer.ggml.fim_pre_token_id", Role::FimPre),
    ("tokenizer.ggml.fim_suf_token_id", Role::FimSuf),
    ("tokenizer.ggml.fim_mid_token_id", Role::FimMid),
    ("tokenizer.ggml.fim_pad_token_id", Role::FimPad),
    ("tokenizer.ggml.fim_rep_token_id", Role::FimRep),
    ("tokenizer.ggml.fim_sep_token_id", Role::FimSep),
    ("tokenizer.ggml.prefix_token_id", Role::FimPre),
    ("tokenizer.ggml.suffix_token_id", Role::FimSuf),
    ("tokenizer.ggml.middle_token_id", Role::FimMid),
];

impl SpecialIds {
    pub fn slot(&mut self, role: Role) -> &mut Option<u32> {
        match role {
            Role::Bos => &mut self.bos,
            Role::Eos => &mut self.eos,
            Role::Eot => &mut self.eot,
            Role::Eom => &mut self.eom,
            Role::Unk => &mut self.unk,
            Role::Sep => &mut self.sep,
            Role::Pad => &mut self.pad,
            Role::Mask => &mut self.mask,
            Role::FimPre => &mut self.fim_pre,
            Role::FimSuf => &mut self.fim_suf,
            Role::FimMid => &mut self.fim_mid,
            Role::FimPad => &mut self.fim_pad,
            Role::FimRep => &mut self.fim_rep,
            Role::FimSep => &mut self.fim_sep,
        }
    }
}

const EOT_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_NAMES: &[&str] = &["<|eom_id|>"];
const FIM_PRE_NAMES: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_NAMES: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_NAMES: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_NAMES: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_NAMES: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_NAMES: &[&str] = &["<|file_sep|>"];

/// Texts that end generation wherever they appear in a vocabulary.
pub(crate) const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Tokens gpt-oss needs rendered, whatever their type says.
pub(crate) const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// Fills the roles the file left empty from token texts, adjusts attributes as llama.cpp does,
/// and returns the end-of-generation set.
///
/// llama.cpp walks a hash map here, so when a vocabulary holds two candidates for one role the
/// one it picks is unspecified; this takes the candidate listed first, then the lowest id.
pub(crate) fn detect(vocab: &mut Vocab, ids: &mut SpecialIds) -> BTreeSet<u32> {
    let roles: [(&[&str], &mut Option<u32>); 8] = [
        (EOT_NAMES, &mut ids.eot),
        (EOM_NAMES, &mut ids.eom),
        (FIM_PRE_NAMES, &mut ids.fim_pre),
        (FIM_SUF_NAMES, &mut ids.fim_suf),
        (FIM_MID_NAMES, &mut ids.fim_mid),
        (FIM_PAD_NAMES, &mut ids.fim_pad),
        (FIM_REP_NAMES, &mut ids.fim_rep),
        (FIM_SEP_NAMES, &mut ids.fim_sep),
    ];
    for (names, role) in roles {
        if role.is_some() {
            continue;
        }
        if let Some(id) = names.iter().find_map(|n| vocab.id(n.as_bytes())) {
            *role = Some(id);
            make_control(vocab, id);
        }
    }

    // Control tokens named "unused…" are unused.
    for id in vocab.ids() {
        let attr = vocab.attr(id);
        if attr.is_control() && contains(vocab.text(id), b"unused") {
            vocab.set_attr(id, attr.with(TokenAttr::UNUSED));
        }
    }

    let mut eog: BTreeSet<u32> = [ids.fim_pad, ids.fim_rep, ids.fim_sep].into_iter().flatten().collect();
    for name in EOG_NAMES {
        if let Some(id) = vocab.id(name.as_bytes()) {
            eog.insert(id);
            make_control(vocab, id);
        }
    }
    for name in ALWAYS_RENDERED {
        if let Some(id) = vocab.id(name.as_bytes()) {
            vocab.set_attr(id, TokenAttr::USER_DEFINED);
        }
    }
    eog.extend([ids.eos, ids.eot, ids.eom].into_iter().flatten());

    // o200k_harmony and Solar Open end a message with <|end|> but keep generating after it.
    if let Some(end) = find(vocab, &eog, "<|end|>") {
        let call = find(vocab, &eog, "<|call|>").or(find(vocab, &eog, "<|calls|>"));
        let ret = find(vocab, &eog, "<|return|>").or(find(vocab, &eog, "<|flush|>"));
        if call.is_some() && ret.is_some() {
            eog.remove(&end);
            vocab.set_attr(end, TokenAttr::USER_DEFINED);
        }
    }
    // Gemma 4 and PLaMo use </s> as an ordinary token.
    let normal_s = find(vocab, &eog, "<|tool_response>").or(find(vocab, &eog, "<|plamo:eos|>"));
    if let Some(s) = find(vocab, &eog, "</s>")
        && normal_s.is_some()
    {
        eog.remove(&s);
        vocab.set_attr(s, TokenAttr::NORMAL);
    }
    eog
}

/// The end-of-generation token with this text, if there is one.
fn find(vocab: &Vocab, eog: &BTreeSet<u32>, text: &str) -> Option<u32> {
    eog.iter().find(|&&id| vocab.text(id) == text.as_bytes()).copied()
}

fn make_control(vocab: &mut Vocab, id: u32) {
    let attr = vocab.attr(id);
    vocab.set_attr(id, attr.with(TokenAttr::CONTROL));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
