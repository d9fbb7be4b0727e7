//! Tokenizers against llama.cpp: the public `tokenize-*.json` fixtures, the extra goldens in
//! `tests/data/tokenizer/` (made with llama.cpp's `llama-tokenize`), the greedy pieces of the
//! case files, streaming decode, and bad metadata. Tests whose model is absent print a skip
//! message and pass.

use std::path::{Path, PathBuf};

use serde_json::Value;
use wllm_loaders::gguf::{GgufWriter, MetaValue, Scalar, ValueType};
use wllm_loaders::{GgufFile, TokenType, Tokenizer, TokenizerError};

const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
const TINY_LLAMA: &str = "tiny-llama-q4_k_m.gguf";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// The committed tiny models, then the real ones in `~/.cache/wllm/models`.
fn model_path(file: &str) -> Option<PathBuf> {
    let committed = data_dir().join("models").join(file);
    if committed.exists() {
        return Some(committed);
    }
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".cache/wllm/models").join(file)).filter(|p| p.exists())
}

fn load(file: &str) -> Option<Tokenizer> {
    let Some(path) = model_path(file) else {
        eprintln!("skipping: model {file} not found");
        return None;
    };
    let gguf = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{file}: {e}")))
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("an id list").iter().map(|x| x.as_u64().expect("an id") as u32).collect()
}

/// `(text, ids)` pairs from a list of `{text, ids}`.
fn cases(list: &Value) -> Vec<(String, Vec<u32>)> {
    let list = list.as_array().expect("a case list");
    list.iter().map(|c| (c["text"].as_str().expect("text").to_string(), ids_of(&c["ids"]))).collect()
}

/// Encodes every case and fails listing all disagreements; returns the number checked.
fn check_cases(tok: &Tokenizer, what: &str, cases: &[(String, Vec<u32>)], parse_special: bool) -> usize {
    let mut wrong = Vec::new();
    for (text, want) in cases {
        let got = tok.encode(text, true, parse_special);
        if &got != want {
            wrong.push(format!("{text:?}\n   want {want:?}\n   got  {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{what}: {} of {} differ:\n{}", wrong.len(), cases.len(), wrong.join("\n"));
    eprintln!("{what}: {}/{} agree", cases.len(), cases.len());
    cases.len()
}

fn public_fixture(tokenize_json: &str) -> Vec<(String, Vec<u32>)> {
    cases(&read_json(&data_dir().join("reference").join(tokenize_json)))
}

fn extra_goldens(name: &str) -> Value {
    read_json(&data_dir().join("tokenizer").join(format!("extra-{name}.json")))
}

#[test]
fn smollm2_matches_public_fixture() {
    let Some(tok) = load(SMOLLM) else { return };
    check_cases(&tok, "smollm2 public", &public_fixture("tokenize-smollm2-135m-instruct-q4_1.json"), false);
}

#[test]
fn gemma3_matches_public_fixture() {
    let Some(tok) = load(GEMMA) else { return };
    check_cases(&tok, "gemma3 public", &public_fixture("tokenize-gemma-3-270m-q4_k_m.json"), false);
}

fn check_extra(file: &str, name: &str) {
    let Some(tok) = load(file) else { return };
    let doc = extra_goldens(name);
    let n = check_cases(&tok, &format!("{name} extra"), &cases(&doc["cases"]), false);
    assert!(n >= 60, "{name}: only {n} extra strings");
    check_cases(&tok, &format!("{name} extra, parse_special"), &cases(&doc["cases_parse_special"]), true);
}

#[test]
fn smollm2_matches_extra_goldens() {
    check_extra(SMOLLM, "smollm2-135m-instruct-q4_1");
}

#[test]
fn gemma3_matches_extra_goldens() {
    check_extra(GEMMA, "gemma-3-270m-q4_k_m");
}

#[test]
fn tiny_llama_matches_extra_goldens() {
    // Every score in this vocabulary is 0, so it exercises SentencePiece's tie-breaking.
    check_extra(TINY_LLAMA, "tiny-llama-q4_k_m");
}

/// All fixture and golden texts of a model.
fn all_texts(tokenize_json: Option<&str>, name: &str) -> Vec<String> {
    let mut texts: Vec<String> =
        tokenize_json.map(public_fixture).unwrap_or_default().into_iter().map(|c| c.0).collect();
    texts.extend(cases(&extra_goldens(name)["cases"]).into_iter().map(|c| c.0));
    texts
}

#[test]
fn decode_round_trips() {
    for (file, fixture, name) in [
        (SMOLLM, Some("tokenize-smollm2-135m-instruct-q4_1.json"), "smollm2-135m-instruct-q4_1"),
        (GEMMA, Some("tokenize-gemma-3-270m-q4_k_m.json"), "gemma-3-270m-q4_k_m"),
    ] {
        let Some(tok) = load(file) else { continue };
        // SentencePiece writes spaces as U+2581, so a literal U+2581 comes back as a space.
        for text in all_texts(fixture, name).into_iter().filter(|t| file == SMOLLM || !t.contains('▁')) {
            let ids = tok.encode(&text, true, false);
            assert_eq!(tok.decode(&ids), text, "{file}: {ids:?}");
            assert_eq!(tok.detokenize(&ids, true, false), text.as_bytes(), "{file}");
        }
    }

    // SentencePiece with a space prefix: llama.cpp drops it only when no BOS came first.
    let Some(tok) = load(TINY_LLAMA) else { return };
    for text in all_texts(None, "tiny-llama-q4_k_m").into_iter().filter(|t| !t.contains('▁')) {
        let ids = tok.encode(&text, false, false);
        assert_eq!(tok.decode(&ids), text, "{ids:?}");
        let with_bos = tok.encode(&text, true, false);
        let prefixed = if text.is_empty() { String::new() } else { format!(" {text}") };
        assert_eq!(tok.decode(&with_bos), prefixed);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

#[test]
fn greedy_pieces_match_case_files() {
    let mut checked = 0;
    for entry in std::fs::read_dir(data_dir().join("reference")).expect("reference dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if !name.ends_with(".json") || name.contains(".exact") || !name.contains("_c") {
            continue;
        }
        let case = read_json(&path);
        let Some(model) = case["model"].as_str() else { continue };
        let Some(tok) = load(model) else { continue };
        let ids = ids_of(&case["greedy_ids"]);
        let hexes: Vec<&str> = case["greedy_pieces_hex"]
            .as_array()
            .expect("pieces")
            .iter()
            .map(|h| h.as_str().expect("hex"))
            .collect();
        assert_eq!(hexes.len(), ids.len(), "{name}");
        let mut text = Vec::new();
        for (&id, hex) in ids.iter().zip(&hexes) {
            assert_eq!(tok.token_to_piece(id), unhex(hex), "{name}: token {id}");
            text.extend(tok.token_to_piece(id));
        }
        let want = unhex(case["greedy_text_hex"].as_str().expect("text hex"));
        assert_eq!(text, want, "{name}");
        assert_eq!(tok.detokenize(&ids, false, false), want, "{name}");
        if let Some(prompt) = case["prompt_text"].as_str() {
            assert_eq!(tok.encode(prompt, true, false), ids_of(&case["prompt_ids"]), "{name}: prompt");
        }
        checked += 1;
    }
    eprintln!("checked {checked} case files");
}

/// Streams `ids` one at a time and checks that only whole characters come out.
fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut decoder = tok.stream_decoder();
    let mut text = String::new();
    for &id in ids {
        text.push_str(&decoder.push(id));
    }
    text.push_str(&decoder.finish());
    text
}

#[test]
fn stream_decoder_holds_back_partial_characters() {
    // Bytes split across pushes.
    if let Some(tok) = load(TINY_LLAMA) {
        let mut d = tok.stream_decoder();
        assert_eq!(d.push_bytes(&[0xE2]), "");
        assert!(d.has_pending());
        assert_eq!(d.push_bytes(&[0x82]), "");
        assert_eq!(d.push_bytes(&[0xAC, b'!']), "€!");
        assert_eq!(d.push_bytes(&[0xF0, 0x9F]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        // A byte that can never start a character does not stall the stream.
        assert_eq!(d.push_bytes(&[0xFF, b'a']), "\u{FFFD}a");
    }

    // Byte-fallback tokens: "€" is <0xE2><0x82><0xAC> in a vocabulary without it.
    if let Some(tok) = load(TINY_LLAMA) {
        let ids = tok.encode("€", false, false);
        let bytes: Vec<u32> =
            ["<0xE2>", "<0x82>", "<0xAC>"].iter().map(|p| tok.id_of(p).expect("byte token")).collect();
        assert!(ids.ends_with(&bytes), "{ids:?}");
        let mut d = tok.stream_decoder();
        let out: Vec<String> = ids.iter().map(|&id| d.push(id)).collect();
        assert_eq!(out.concat(), " €");
        assert_eq!(out.last().map(String::as_str), Some("€"));
        assert!(out[out.len() - 3..out.len() - 1].iter().all(String::is_empty));
    }

    // Byte-level BPE tokens that end inside a character, and Gemma's byte tokens.
    for (file, name) in [(SMOLLM, "smollm2-135m-instruct-q4_1"), (GEMMA, "gemma-3-270m-q4_k_m")] {
        let Some(tok) = load(file) else { continue };
        let mut partial = 0;
        for text in all_texts(None, name).into_iter().filter(|t| file == SMOLLM || !t.contains('▁')) {
            let ids = tok.encode(&text, true, false);
            assert_eq!(stream(&tok, &ids), text, "{file}");
            partial +=
                ids.iter().filter(|&&id| std::str::from_utf8(&tok.token_to_piece(id)).is_err()).count();
        }
        assert!(partial > 0, "{file}: no token ended inside a character");
    }
}

#[test]
fn special_tokens_and_end_of_generation() {
    if let Some(tok) = load(SMOLLM) {
        assert_eq!(tok.n_vocab(), 49152);
        assert_eq!((tok.bos(), tok.eos(), tok.add_bos(), tok.add_eos()), (Some(1), Some(2), false, false));
        let im_start = tok.id_of("<|im_start|>").expect("im_start");
        let im_end = tok.id_of("<|im_end|>").expect("im_end");
        let eot = tok.id_of("<|endoftext|>").expect("endoftext");
        assert!(tok.is_eog(im_end) && tok.is_eog(eot) && !tok.is_eog(im_start));
        assert_eq!(tok.token_type(im_start), Some(TokenType::Control));
        assert_eq!(tok.token_type(300), Some(TokenType::Normal));
        assert_eq!(tok.token_type(u32::MAX), None);
        assert_eq!(tok.encode("<|im_start|>hi", false, true)[0], im_start);
        assert_ne!(tok.encode("<|im_start|>hi", false, false)[0], im_start);
        assert!(tok.token_to_piece(im_end).is_empty());
        assert_eq!(tok.token_to_piece_special(im_end), b"<|im_end|>");
        assert_eq!(tok.piece(im_end), Some(&b"<|im_end|>"[..]));
        assert_eq!(tok.token_to_piece(tok.id_of("Ġthe").expect("Ġthe")), b" the");
    }
    if let Some(tok) = load(GEMMA) {
        assert_eq!(tok.n_vocab(), 262144);
        assert_eq!((tok.bos(), tok.eos(), tok.add_bos(), tok.add_eos()), (Some(2), Some(1), true, false));
        let eot = tok.id_of("<end_of_turn>").expect("end_of_turn");
        assert!(tok.is_eog(eot) && tok.is_eog(1));
        assert_eq!(tok.eot(), Some(eot));
        // User-defined tokens are matched even without parse_special.
        let td = tok.id_of("<td>").expect("<td>");
        assert_eq!(tok.token_type(td), Some(TokenType::UserDefined));
        assert_eq!(tok.encode("<td>", false, false), [td]);
        // "</s>" is user-defined in Gemma 3, but llama.cpp makes it an end-of-generation
        // control token, so it is no longer matched as such.
        let s = tok.id_of("</s>").expect("</s>");
        assert!(tok.is_eog(s) && tok.token_type(s) == Some(TokenType::Control));
        assert_ne!(tok.encode("</s>", false, false), [s]);
        assert_eq!(tok.encode("</s>", false, true), [s]);
        assert_eq!(tok.token_to_piece(tok.id_of("<0x0A>").expect("<0x0A>")), b"\n");
        assert_eq!(tok.token_to_piece(tok.id_of("▁the").expect("▁the")), b" the");
    }
}

#[test]
fn tokenizer_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Tokenizer>();
}

#[test]
fn gemma3_vocab_builds_quickly() {
    let Some(path) = model_path(GEMMA) else {
        eprintln!("skipping: model {GEMMA} not found");
        return;
    };
    let gguf = GgufFile::open(&path).expect("open");
    let start = std::time::Instant::now();
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let elapsed = start.elapsed();
    eprintln!("gemma3 from_gguf: {elapsed:?} for {} tokens", tok.n_vocab());
    // Well under a second in release; this bound leaves room for unoptimized test builds.
    assert!(elapsed.as_secs_f64() < 5.0, "{elapsed:?}");
}

/// A small SentencePiece vocabulary written as GGUF.
fn spm_gguf(edit: impl FnOnce(&mut Vec<(&'static str, MetaValue)>)) -> GgufFile {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["▁", "a", "b", "▁a", "ab", "▁ab"].map(String::from));
    let n = tokens.len();
    let types: Vec<MetaValue> = (0..n)
        .map(|i| {
            MetaValue::Scalar(Scalar::I32(match i {
                0 => 2,
                1 | 2 => 3,
                3..=258 => 6,
                _ => 1,
            }))
        })
        .collect();
    let scores: Vec<MetaValue> = (0..n).map(|i| MetaValue::Scalar(Scalar::F32(i as f32))).collect();
    let mut meta: Vec<(&'static str, MetaValue)> = vec![
        ("general.architecture", "llama".into()),
        ("tokenizer.ggml.model", "llama".into()),
        ("tokenizer.ggml.tokens", MetaValue::strings(&tokens)),
        ("tokenizer.ggml.token_type", MetaValue::array(ValueType::I32, types)),
        ("tokenizer.ggml.scores", MetaValue::array(ValueType::F32, scores)),
    ];
    edit(&mut meta);
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.add_metadata(k, v).expect("metadata");
    }
    GgufFile::from_bytes(w.to_bytes().expect("gguf")).expect("parse")
}

#[test]
fn synthetic_sentencepiece_vocab() {
    let tok = Tokenizer::from_gguf(&spm_gguf(|_| {})).expect("tokenizer");
    let id = |p: &str| tok.id_of(p).expect(p);
    // Defaults for `llama`: BOS 1, space prefix, byte fallback.
    assert_eq!(tok.encode("ab ab", true, false), [1, id("▁ab"), id("▁ab")]);
    assert_eq!(tok.encode("abc", false, false), [id("▁ab"), id("<0x63>")]);
    assert_eq!(tok.decode(&tok.encode("ab b", false, false)), "ab b");
    assert!(tok.is_eog(2));
}

fn expect_error(gguf: GgufFile, what: &str) -> TokenizerError {
    match Tokenizer::from_gguf(&gguf) {
        Ok(_) => panic!("{what}: expected an error"),
        Err(e) => {
            eprintln!("{what}: {e}");
            e
        }
    }
}

#[test]
fn bad_metadata_is_an_error() {
    let without =
        |key: &'static str| move |m: &mut Vec<(&'static str, MetaValue)>| m.retain(|(k, _)| *k != key);
    let set = |key: &'static str, v: MetaValue| {
        move |m: &mut Vec<(&'static str, MetaValue)>| {
            m.retain(|(k, _)| *k != key);
            m.push((key, v));
        }
    };
    assert!(matches!(
        expect_error(spm_gguf(without("tokenizer.ggml.model")), "no model"),
        TokenizerError::MissingKey(_)
    ));
    assert!(matches!(
        expect_error(spm_gguf(without("tokenizer.ggml.tokens")), "no tokens"),
        TokenizerError::MissingKey(_)
    ));
    assert!(matches!(
        expect_error(spm_gguf(set("tokenizer.ggml.model", "bert".into())), "bert"),
        TokenizerError::UnsupportedModel(_)
    ));
    assert!(matches!(
        expect_error(spm_gguf(set("tokenizer.ggml.model", "gpt2".into())), "gpt2 without merges"),
        TokenizerError::MissingKey(_)
    ));
    let with_merges = |pre: &'static str| {
        move |m: &mut Vec<(&'static str, MetaValue)>| {
            m.retain(|(k, _)| !k.starts_with("tokenizer.ggml.model"));
            m.push(("tokenizer.ggml.model", "gpt2".into()));
            m.push(("tokenizer.ggml.pre", pre.into()));
            m.push(("tokenizer.ggml.merges", MetaValue::strings(["a b"])));
        }
    };
    assert!(Tokenizer::from_gguf(&spm_gguf(with_merges("llama-bpe"))).is_ok());
    assert!(matches!(
        expect_error(spm_gguf(with_merges("no-such-pre")), "unknown pre"),
        TokenizerError::UnsupportedPreTokenizer(_)
    ));
    let short = MetaValue::array(ValueType::F32, vec![MetaValue::Scalar(Scalar::F32(0.0))]);
    assert!(matches!(
        expect_error(spm_gguf(set("tokenizer.ggml.scores", short)), "short scores"),
        TokenizerError::LengthMismatch { .. }
    ));
    assert!(matches!(
        expect_error(
            spm_gguf(set("tokenizer.ggml.tokens", MetaValue::strings(["a", "b", "a"]))),
            "duplicate"
        ),
        TokenizerError::DuplicateToken { .. }
    ));
    assert!(matches!(
        expect_error(
            spm_gguf(set("tokenizer.ggml.model", MetaValue::Scalar(Scalar::U32(1)))),
            "model not a string"
        ),
        TokenizerError::Gguf(_)
    ));
}

#[cfg(feature = "hf-tokenizer")]
#[test]
fn hugging_face_tokenizer_json() {
    // There is no tokenizer.json among the test data, so write SmolLM2's from its GGUF: the
    // same vocabulary, merges and pre-tokenizer (digits split, then GPT-2 byte level).
    let Some(path) = model_path(SMOLLM) else {
        eprintln!("skipping: model {SMOLLM} not found");
        return;
    };
    let gguf = GgufFile::open(&path).expect("open");
    let gguf_tok = Tokenizer::from_gguf(&gguf).expect("gguf tokenizer");
    let tokens = gguf.opt_bytes_array("tokenizer.ggml.tokens").expect("tokens").expect("tokens");
    let merges = gguf.opt_bytes_array("tokenizer.ggml.merges").expect("merges").expect("merges");
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
    let vocab: serde_json::Map<String, Value> =
        tokens.iter().enumerate().map(|(i, t)| (text(t), Value::from(i as u64))).collect();
    let added: Vec<Value> = (0..17)
        .map(|i| {
            serde_json::json!({"id": i, "content": text(tokens[i]), "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]},
        "post_processor": byte_level, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges.iter().map(|m| text(m)).collect::<Vec<_>>()},
    });
    let config = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                                    "pad_token": "<|im_end|>"});
    let dir = std::env::temp_dir().join(format!("wllm-hf-tokenizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (json_path, config_path) = (dir.join("tokenizer.json"), dir.join("tokenizer_config.json"));
    std::fs::write(&json_path, serde_json::to_vec(&json).expect("json")).expect("write");
    std::fs::write(&config_path, serde_json::to_vec(&config).expect("json")).expect("write");
    let hf = Tokenizer::from_hf_files(&json_path, Some(&config_path)).expect("hf tokenizer");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(hf.n_vocab(), gguf_tok.n_vocab());
    assert_eq!((hf.bos(), hf.eos(), hf.add_bos(), hf.add_eos()), (Some(1), Some(2), false, false));
    assert!(hf.is_eog(2) && hf.is_eog(0) && !hf.is_eog(1));
    assert_eq!(hf.token_type(1), Some(TokenType::Control));
    for id in 0..hf.n_vocab() as u32 {
        assert_eq!(hf.token_to_piece(id), gguf_tok.token_to_piece(id), "token {id}");
    }
    assert_eq!(hf.encode("<|im_start|>hi", false, true)[0], 1);
    assert_ne!(hf.encode("<|im_start|>hi", false, false)[0], 1);

    let mut texts = public_fixture("tokenize-smollm2-135m-instruct-q4_1.json");
    texts.extend(cases(&extra_goldens("smollm2-135m-instruct-q4_1")["cases"]));
    let agree = texts.iter().filter(|(t, ids)| &hf.encode(t, true, false) == ids).count();
    eprintln!("tokenizer.json vs llama.cpp: {agree}/{} agree", texts.len());
    check_cases(
        &hf,
        "smollm2 tokenizer.json public",
        &public_fixture("tokenize-smollm2-135m-instruct-q4_1.json"),
        false,
    );
    for (text, _) in &texts {
        assert_eq!(hf.decode(&hf.encode(text, true, false)), *text);
    }
}

#[cfg(feature = "hf-tokenizer")]
#[test]
fn harmony_markers_reach_the_text_from_tokenizer_json() {
    // gpt-oss's tokenizer.json marks every harmony marker special; without the GGUF loader's
    // adjustments the channels would be invisible and `<|end|>` would end the reply after the
    // reasoning.
    let markers =
        ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"];
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["<unk>", "hi"].iter().chain(&markers).enumerate() {
        vocab.insert(w.to_string(), Value::from(i as u64));
    }
    let added: Vec<Value> = markers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            serde_json::json!({"id": i + 2, "content": m, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    let dir = std::env::temp_dir().join(format!("wllm-hf-harmony-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).expect("json")).expect("write");
    let tok = Tokenizer::from_hf_files(&path, None).expect("hf tokenizer");
    let _ = std::fs::remove_dir_all(&dir);

    let id = |m: &str| tok.encode(m, false, true)[0];
    for m in ["<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|end|>"] {
        assert_eq!(tok.token_to_piece(id(m)), m.as_bytes(), "{m} is shown");
        assert!(!tok.is_eog(id(m)), "{m} does not end generation");
    }
    assert!(tok.is_eog(id("<|return|>")) && tok.is_eog(id("<|call|>")));
    assert!(tok.token_to_piece(id("<|return|>")).is_empty());
}
