//! A tokenizer built from fuzzer-chosen GGUF metadata (vocabulary, scores, token types, merges,
//! special ids, flags), written with `GgufWriter`, then arbitrary text encoded and arbitrary ids
//! decoded. Building may fail with a typed error; nothing may panic, and every id `encode`
//! returns must be inside the vocabulary.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wllm_loaders::Tokenizer;
use wllm_loaders::gguf::{GgufFile, GgufWriter, MetaValue};

/// The pre-tokenizers most models use, and one name no model has.
const PRE: &[&str] = &[
    "",
    "default",
    "llama3",
    "gpt-2",
    "qwen2",
    "smollm",
    "deepseek-llm",
    "command-r",
    "tekken",
    "gpt-4o",
    "nope",
];

const SPECIAL_KEYS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.seperator_token_id",
];

#[derive(Arbitrary, Debug)]
enum Model {
    Llama,
    Gpt2,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Token {
    text: String,
    /// Sometimes not UTF-8: GGUF piece strings are raw bytes.
    raw: Option<Vec<u8>>,
    score: f32,
    token_type: i32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    model: Model,
    pre: u8,
    general_name: Option<String>,
    tokens: Vec<Token>,
    /// Merges as pairs of token indices (most are then real pieces) or free text.
    merges: Vec<(u16, u16)>,
    raw_merges: Vec<String>,
    /// Drop or shorten the parallel arrays, as broken converters do.
    scores: Option<u8>,
    token_types: Option<u8>,
    specials: Vec<(u8, u32)>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    add_space_prefix: Option<bool>,
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
    remove_special: bool,
    unparse_special: bool,
}

fuzz_target!(|input: Input| {
    let Some(gguf) = build_gguf(&input) else { return };
    let Ok(tok) = Tokenizer::from_gguf(&gguf) else { return };
    exercise(&tok, &input);
});

fn piece(t: &Token) -> Vec<u8> {
    t.raw.clone().unwrap_or_else(|| t.text.clone().into_bytes())
}

fn build_gguf(input: &Input) -> Option<GgufFile> {
    let mut w = GgufWriter::new();
    let model = match &input.model {
        Model::Llama => "llama",
        Model::Gpt2 => "gpt2",
        Model::Other(s) => s.as_str(),
    };
    w.add_metadata("tokenizer.ggml.model", model).ok()?;
    w.add_metadata("tokenizer.ggml.pre", PRE[input.pre as usize % PRE.len()]).ok()?;
    if let Some(name) = &input.general_name {
        w.add_metadata("general.name", name.as_str()).ok()?;
    }
    let n = input.tokens.len();
    w.add_metadata("tokenizer.ggml.tokens", MetaValue::strings(input.tokens.iter().map(piece))).ok()?;
    if let Some(keep) = input.scores {
        let scores: Vec<f32> =
            input.tokens.iter().map(|t| t.score).take(n.min(keep as usize + n / 2)).collect();
        w.add_metadata("tokenizer.ggml.scores", scores).ok()?;
    }
    if let Some(keep) = input.token_types {
        let types: Vec<i32> =
            input.tokens.iter().map(|t| t.token_type).take(n.min(keep as usize + n / 2)).collect();
        w.add_metadata("tokenizer.ggml.token_type", types).ok()?;
    }
    let mut merges: Vec<Vec<u8>> = Vec::new();
    if n > 0 {
        for &(a, b) in &input.merges {
            let mut m = piece(&input.tokens[a as usize % n]);
            m.push(b' ');
            m.extend(piece(&input.tokens[b as usize % n]));
            merges.push(m);
        }
    }
    merges.extend(input.raw_merges.iter().map(|m| m.as_bytes().to_vec()));
    w.add_metadata("tokenizer.ggml.merges", MetaValue::strings(merges)).ok()?;
    for &(which, id) in &input.specials {
        // A repeated key is refused by the writer; skipping it is fine.
        let _ = w.add_metadata(SPECIAL_KEYS[which as usize % SPECIAL_KEYS.len()], id);
    }
    for (key, v) in [
        ("tokenizer.ggml.add_bos_token", input.add_bos),
        ("tokenizer.ggml.add_eos_token", input.add_eos),
        ("tokenizer.ggml.add_space_prefix", input.add_space_prefix),
    ] {
        if let Some(v) = v {
            w.add_metadata(key, v).ok()?;
        }
    }
    let bytes = w.to_bytes().expect("writing to memory");
    Some(GgufFile::from_bytes(bytes).expect("the writer's output parses"))
}

fn exercise(tok: &Tokenizer, input: &Input) {
    let n_vocab = tok.n_vocab();
    let ids = tok.encode(&input.text, input.add_special, input.parse_special);
    for &id in &ids {
        assert!((id as usize) < n_vocab, "encode gave id {id} outside a vocabulary of {n_vocab}");
    }
    for list in [&ids, &input.ids] {
        let _ = tok.decode(list);
        let _ = tok.detokenize(list, input.remove_special, input.unparse_special);
        let mut stream = tok.stream_decoder().render_special(input.unparse_special);
        for &id in list.iter() {
            let _ = stream.push(id);
            let _ =
                (tok.token_to_piece(id), tok.token_to_piece_special(id), tok.token_attr(id), tok.is_eog(id));
            if let Some(p) = tok.piece(id) {
                assert!(tok.id_of(p).is_some(), "piece of {id} has no id");
            }
        }
        let _ = stream.finish();
    }
    let _ =
        (tok.bos(), tok.eos(), tok.eot(), tok.unk(), tok.pad(), tok.add_bos(), tok.add_eos(), tok.eog_ids());
}
