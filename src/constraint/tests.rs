//! Tool-call grammars of formats whose markers are control tokens (Gemma 4's), compiled over a
//! small vocabulary that has those tokens, and walked at random: every finished walk is a call
//! the format's parser reads back with arguments that follow the tool's schema.

use std::sync::Arc;

use serde_json::{Value, json};
use wllm_loaders::Tokenizer;
use wllm_loaders::chat::{ToolCallFormat, parse_tool_calls};
use wllm_loaders::gguf::{GgufFile, GgufWriter, MetaValue, Scalar, ValueType};

use super::{Constraint, Grammars};

const CONTROL: [&str; 4] = ["<|tool_call>", "<tool_call|>", "<|\"|>", "<|tool_response>"];

/// A SentencePiece vocabulary: `<unk> <s> </s>`, Gemma 4's call markers as control tokens, the
/// 256 byte tokens, and a few word pieces.
fn gemma_like_tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend(CONTROL.map(String::from));
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["call:", "get_weather", "city:", "days:", "unit:", "▁"].map(String::from));
    let types: Vec<MetaValue> = (0..tokens.len())
        .map(|i| {
            MetaValue::Scalar(Scalar::I32(match i {
                0 => 2,
                1..=6 => 3,
                7..=262 => 6,
                _ => 1,
            }))
        })
        .collect();
    let scores: Vec<MetaValue> =
        (0..tokens.len()).map(|i| MetaValue::Scalar(Scalar::F32(i as f32))).collect();
    let mut writer = GgufWriter::new();
    let meta: Vec<(&str, MetaValue)> = vec![
        ("general.architecture", "llama".into()),
        ("tokenizer.ggml.model", "llama".into()),
        ("tokenizer.ggml.tokens", MetaValue::strings(&tokens)),
        ("tokenizer.ggml.token_type", MetaValue::array(ValueType::I32, types)),
        ("tokenizer.ggml.scores", MetaValue::array(ValueType::F32, scores)),
    ];
    for (key, value) in meta {
        writer.add_metadata(key, value).expect("metadata");
    }
    let gguf = GgufFile::from_bytes(writer.to_bytes().expect("gguf")).expect("parse");
    Tokenizer::from_gguf(&gguf).expect("tokenizer")
}

/// xorshift64: a seeded walk without a dependency.
struct Walk(u64);

impl Walk {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Takes random allowed tokens until the grammar is complete; control tokens (which close
/// strings) are taken half the time they are allowed, so walks end.
fn walk(grammars: &Grammars, tokenizer: &Arc<Tokenizer>, constraint: &Constraint, seed: u64) -> String {
    let mut active = grammars.start(tokenizer, constraint).expect("grammar compiles");
    let mut rng = Walk(seed);
    let mut ids = Vec::new();
    for _ in 0..4000 {
        if active.is_finished() {
            break;
        }
        let mask = active.mask().expect("mask");
        let allowed: Vec<u32> = (0..tokenizer.n_vocab() as u32).filter(|&id| mask.allows(id)).collect();
        assert!(!allowed.is_empty(), "seed {seed}: empty mask after {ids:?}");
        let control: Vec<u32> = allowed.iter().copied().filter(|id| (3..7).contains(id)).collect();
        let token = if !control.is_empty() && rng.next(2) == 0 {
            control[rng.next(control.len())]
        } else {
            allowed[rng.next(allowed.len())]
        };
        active.commit(token).expect("commit");
        // The end of sequence the grammar allows last ends generation; it is not text.
        if Some(token) != tokenizer.eos() {
            ids.push(token);
        }
    }
    assert!(active.report().complete, "seed {seed}: walk did not finish");
    String::from_utf8_lossy(&tokenizer.detokenize(&ids, true, true)).into_owned()
}

#[test]
fn gemma4_required_call_grammar_yields_parseable_schema_valid_calls() {
    let tokenizer = Arc::new(gemma_like_tokenizer());
    let tools = [json!({"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                       "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city", "unit"]}}})];
    let grammars = Grammars::default();
    for parallel in [false, true] {
        let constraint = Constraint::Lark(ToolCallFormat::Gemma4.calls_grammar(&tools, parallel));
        for seed in 1..=12u64 {
            let text = walk(&grammars, &tokenizer, &constraint, seed * 7919);
            let parsed = parse_tool_calls(ToolCallFormat::Gemma4, &text, "");
            assert!(!parsed.calls.is_empty(), "seed {seed}: no call in {text:?}");
            assert!(parallel || parsed.calls.len() == 1, "seed {seed}: {text:?}");
            assert_eq!(parsed.content, "", "seed {seed}: {text:?}");
            for call in &parsed.calls {
                assert_eq!(call.name, "get_weather");
                let args: Value = serde_json::from_str(&call.arguments).expect("JSON arguments");
                assert!(args["city"].is_string(), "seed {seed}: {args}");
                assert!(["C", "F"].contains(&args["unit"].as_str().unwrap_or("")), "seed {seed}: {args}");
                // An integer (a long one comes back as a float with no fraction).
                let integral = |v: &Value| v.as_f64().is_some_and(|f| f.fract() == 0.0);
                assert!(args.get("days").is_none_or(integral), "seed {seed}: {args}");
            }
        }
    }
}
