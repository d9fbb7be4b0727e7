//! Constrained generation: every output of a JSON schema, a regular expression or a GBNF
//! grammar fits it, whatever the sampler draws; bad constraints are refused up front.

mod support;

use wllm::{Constraint, ConstraintError, Error, GenerateOptions, Model, SessionOptions, StopReason};

fn tiny(name: &str) -> Model {
    Model::load(support::data_dir().join(format!("models/{name}.gguf"))).unwrap()
}

/// Text generated under `constraint` with a hot sampler (random tokens would almost never fit
/// by chance), its stop reason and whether the constraint reports it complete.
fn generate(
    model: &Model,
    constraint: Constraint,
    seed: u64,
    max_tokens: usize,
) -> (String, StopReason, bool) {
    let mut session = model.session(&SessionOptions { n_ctx: Some(256), n_batch: 16 }).unwrap();
    let opts = GenerateOptions {
        max_tokens,
        sampling: support::hot_sampling(seed),
        constraint: Some(constraint),
        ..Default::default()
    };
    let mut generation = session.generate(&model.tokenize("The answer:"), opts).unwrap();
    let text: String = generation.by_ref().map(|c| c.unwrap().text).collect();
    let report = generation.constraint_report().unwrap();
    assert!(report.masks > 0);
    (text, generation.stop_reason().cloned().unwrap(), report.complete)
}

#[test]
fn json_schema_outputs_validate() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "maxLength": 12 },
            "age": { "type": "integer", "minimum": 0, "maximum": 150 },
            "tags": { "type": "array", "items": { "enum": ["a", "b"] }, "maxItems": 3 }
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": false
    });
    for (name, seed) in [("tiny-llama-q4_k_m", 1), ("tiny-qwen3-q4_k_m", 2), ("tiny-gemma3-q4_k_m", 3)] {
        let model = tiny(name);
        let (text, reason, complete) = generate(&model, Constraint::JsonSchema(schema.clone()), seed, 200);
        assert_eq!(reason, StopReason::Constraint, "{name}: {text:?}");
        assert!(complete, "{name}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text:?}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{name}: {text}");
        assert!(o["name"].as_str().unwrap().chars().count() <= 12, "{name}: {text}");
        assert!((0..=150).contains(&o["age"].as_i64().unwrap()), "{name}: {text}");
        let tags = o["tags"].as_array().unwrap();
        assert!(tags.len() <= 3 && tags.iter().all(|t| t == "a" || t == "b"), "{name}: {text}");
    }
}

#[test]
fn regex_and_gbnf_outputs_match() {
    let model = tiny("tiny-llama-q4_k_m");
    for seed in 0..3 {
        let (text, reason, _) = generate(&model, Constraint::Regex("[0-9]{3}-[a-z]{2}".into()), seed, 40);
        assert_eq!(reason, StopReason::Constraint, "{text:?}");
        let b = text.as_bytes();
        assert!(
            b.len() == 6
                && b[..3].iter().all(u8::is_ascii_digit)
                && b[3] == b'-'
                && b[4..].iter().all(u8::is_ascii_lowercase),
            "{text:?}"
        );
    }
    let gbnf = "root ::= answer (\", \" answer){2}\nanswer ::= \"yes\" | \"no\"\n";
    for seed in 0..3 {
        let (text, reason, complete) = generate(&model, Constraint::Gbnf(gbnf.into()), seed, 40);
        assert_eq!(reason, StopReason::Constraint, "{text:?}");
        assert!(complete);
        let parts: Vec<&str> = text.split(", ").collect();
        assert!(parts.len() == 3 && parts.iter().all(|p| *p == "yes" || *p == "no"), "{text:?}");
    }
}

#[test]
fn too_few_tokens_leave_the_constraint_incomplete() {
    let model = tiny("tiny-llama-q4_k_m");
    let schema = serde_json::json!({ "type": "array", "items": { "type": "integer" }, "minItems": 20 });
    let (text, reason, complete) = generate(&model, Constraint::JsonSchema(schema), 5, 4);
    assert_eq!(reason, StopReason::MaxTokens, "{text:?}");
    assert!(!complete);
}

#[test]
fn bad_constraints_are_refused_before_generating() {
    let model = tiny("tiny-llama-q4_k_m");
    let mut session = model.session(&SessionOptions::default()).unwrap();
    let prompt = model.tokenize("Hi");
    let mut start = |c: Constraint| {
        let opts = GenerateOptions { constraint: Some(c), ..Default::default() };
        match session.generate(&prompt, opts) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    };
    let err = start(Constraint::JsonSchema(serde_json::json!({ "type": "no-such-type" })));
    assert!(matches!(&err, Error::Constraint(ConstraintError::Invalid { kind: "JSON schema", .. })), "{err}");
    let err = start(Constraint::Regex("(unclosed".into()));
    assert!(matches!(&err, Error::Constraint(ConstraintError::Invalid { .. })), "{err}");
    let err = start(Constraint::Gbnf("root ::= \"a\"\nnext = \"b\"\n".into()));
    assert!(err.to_string().contains("GBNF line 2"), "{err}");
    let err = start(Constraint::Lark("start: undefined_rule\n".into()));
    assert!(matches!(&err, Error::Constraint(ConstraintError::Invalid { kind: "grammar", .. })), "{err}");
}

/// Schemas of the kinds agents send (nested objects, arrays of objects, enums, bounded numbers,
/// optional fields, `$ref` and `anyOf`, nullable members) on the real models at temperature 1.0
/// across seeds: every output is complete and valid, checked by a validator of its own.
#[test]
fn schema_suite_validates_on_real_models() {
    let schemas = [
        serde_json::json!({"type": "object", "properties": {
            "user": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                     "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]},
            "active": {"type": "boolean"}}, "required": ["user", "active"]}),
        serde_json::json!({"type": "object", "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 3,
            "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1},
                      "label": {"enum": ["red", "green", "blue"]}}, "required": ["id", "label"]}}},
            "required": ["items"]}),
        serde_json::json!({"type": "object", "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "count": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10}}, "required": ["score", "count"]}),
        serde_json::json!({"type": "object", "properties": {"title": {"type": "string", "maxLength": 20},
            "note": {"type": ["string", "null"], "maxLength": 10}}, "required": ["title"]}),
        serde_json::json!({"$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"},
                "y": {"type": "integer"}}, "required": ["x", "y"]}},
            "type": "object", "properties": {"from": {"$ref": "#/$defs/point"},
                "to": {"anyOf": [{"$ref": "#/$defs/point"}, {"type": "null"}]}}, "required": ["from", "to"]}),
        serde_json::json!({"type": "array", "items": {"enum": ["yes", "no", 1, true]}, "minItems": 2, "maxItems": 4}),
    ];
    for file in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"] {
        let path = support::real_model_path(file);
        if !path.exists() {
            eprintln!("skipping {file}: not in {}", support::models_dir().display());
            continue;
        }
        let model = Model::load(&path).unwrap();
        for (i, schema) in schemas.iter().enumerate() {
            for seed in [11, 12] {
                let mut session = model.session(&SessionOptions { n_ctx: Some(512), n_batch: 64 }).unwrap();
                let opts = GenerateOptions {
                    max_tokens: 256,
                    sampling: wllm::SamplerConfig { temp: 1.0, seed: Some(seed), ..Default::default() },
                    constraint: Some(Constraint::JsonSchema(schema.clone())),
                    ..Default::default()
                };
                let prompt = model.tokenize("Reply with JSON only.\n");
                let mut generation = session.generate(&prompt, opts).unwrap();
                let text: String = generation.by_ref().map(|c| c.unwrap().text).collect();
                let report = generation.constraint_report().unwrap();
                let what = format!("{file} schema {i} seed {seed}: {text:?}");
                assert!(report.complete, "incomplete: {what}");
                let value: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {what}"));
                if let Err(e) = support::json_schema::validate(schema, &value, schema) {
                    panic!("{e}: {what}");
                }
            }
        }
    }
}
