//! The malformed-GGUF regression corpus: every file gets the typed error its manifest names,
//! with a message that points at the offset, key or tensor, in well under a second.
//!
//! Regenerate the files after changing the generator with
//! `cargo test -p wllm-loaders --test gguf_malformed -- --ignored regenerate`.

#[path = "support/malformed_gguf.rs"]
mod malformed_gguf;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use wllm_loaders::{Error, GgufFile, ModelConfig, ModelWeights};

const TIME_LIMIT: Duration = Duration::from_secs(1);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/malformed/gguf")
}

fn manifest_of(cases: &[malformed_gguf::Case]) -> Value {
    let entries: Map<String, Value> = cases
        .iter()
        .map(|c| {
            let entry = json!({ "error": c.error, "mentions": c.mentions, "description": c.description });
            (c.file.to_string(), entry)
        })
        .collect();
    Value::Object(entries)
}

/// The variant name from a derived `Debug` string: `BadMagic { .. }` -> `BadMagic`.
fn variant(debug: String) -> String {
    debug.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// What opening and building the model gives: `Ok` or the error's `Enum::Variant` and message.
fn outcome(path: &Path) -> Result<(), (String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let file = match GgufFile::open(path) {
        Ok(file) => file,
        Err(Error::Gguf { source, .. }) => {
            // The in-memory path must agree with the mmap path.
            let again = GgufFile::from_bytes(bytes).expect_err("from_bytes accepted what open refused");
            assert_eq!(again.to_string(), source.to_string());
            return Err((format!("GgufError::{}", variant(format!("{source:?}"))), source.to_string()));
        }
        Err(other) => panic!("{}: not a GGUF error: {other}", path.display()),
    };
    let model = ModelConfig::from_gguf(&file).and_then(|cfg| ModelWeights::resolve(&cfg, &file).map(|_| ()));
    model.map_err(|e| (format!("ModelError::{}", variant(format!("{e:?}"))), e.to_string()))
}

#[test]
fn every_malformed_file_gets_its_typed_error() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(corpus_dir().join("MANIFEST.json")).unwrap()).unwrap();
    let entries = manifest.as_object().unwrap();
    let malformed = entries.values().filter(|e| !e["error"].is_null()).count();
    assert!(malformed >= 25, "the corpus should keep at least 25 malformed files, has {malformed}");

    for (file, entry) in entries {
        let path = corpus_dir().join(file);
        let start = Instant::now();
        let got = outcome(&path);
        let took = start.elapsed();
        assert!(took < TIME_LIMIT, "{file}: took {took:?}");
        match (entry["error"].as_str(), got) {
            (None, Ok(())) => {}
            (None, Err((v, msg))) => panic!("{file}: the control file failed with {v}: {msg}"),
            (Some(want), Ok(())) => panic!("{file}: expected {want}, but it opened and built"),
            (Some(want), Err((v, msg))) => {
                assert_eq!(v, want, "{file}: {msg}");
                let mentions = entry["mentions"].as_str().unwrap();
                assert!(msg.contains(mentions), "{file}: message {msg:?} should mention {mentions:?}");
            }
        }
    }
}

/// The committed files are exactly what the generator makes, so the two cannot drift apart.
#[test]
fn committed_corpus_matches_its_generator() {
    let cases = malformed_gguf::cases();
    let committed: Value =
        serde_json::from_slice(&std::fs::read(corpus_dir().join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(committed, manifest_of(&cases), "MANIFEST.json is stale; regenerate the corpus");
    for c in &cases {
        let on_disk = std::fs::read(corpus_dir().join(c.file)).unwrap();
        assert!(on_disk == c.bytes, "{} is stale; regenerate the corpus", c.file);
    }
    let files = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "gguf"));
    assert_eq!(files.count(), cases.len(), "files in the corpus directory that the generator does not make");
}

#[test]
#[ignore = "rewrites tests/data/malformed/gguf; run after changing the generator"]
fn regenerate_malformed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for old in std::fs::read_dir(&dir).unwrap() {
        let path = old.unwrap().path();
        if path.extension().is_some_and(|x| x == "gguf") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let cases = malformed_gguf::cases();
    for c in &cases {
        std::fs::write(dir.join(c.file), &c.bytes).unwrap();
    }
    let mut manifest = serde_json::to_string_pretty(&manifest_of(&cases)).unwrap();
    manifest.push('\n');
    std::fs::write(dir.join("MANIFEST.json"), manifest).unwrap();
}
