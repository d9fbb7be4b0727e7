//! Shared support for whole-model tests: the llama.cpp fixtures and the exact reference.
#![allow(dead_code)]

pub mod json_schema;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `tests/data` of the workspace, whichever crate's tests include this module.
pub fn data_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = if here.join("tests/data").is_dir() { here } else { here.parent().unwrap_or(here) };
    root.join("tests/data")
}

/// Where the real models live (`WLLM_MODELS`, default `~/.cache/wllm/models`).
pub fn models_dir() -> PathBuf {
    match std::env::var("WLLM_MODELS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/wllm/models"),
    }
}

/// File name of a real model as the fixtures name it, mapped to the file fetch-models writes.
pub fn real_model_path(fixture_name: &str) -> PathBuf {
    let file = match fixture_name {
        "SmolLM2-135M-Instruct.Q4_1.gguf" | "smollm2-135m-instruct-q4_1.gguf" => {
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        }
        other => other,
    };
    models_dir().join(file)
}

#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub model_path: PathBuf,
    pub real: bool,
    pub prompt_text: Option<String>,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_prefix_agree_exact: usize,
    pub n_vocab: usize,
    /// llama.cpp logits: full rows (tiny models, SmolLM2) or None.
    pub llama_logits: Option<Vec<f32>>,
    /// llama.cpp top-64 per row when the full rows are not stored.
    pub llama_top: Option<Vec<Vec<(u32, f32)>>>,
    /// Exact reference: full rows (tiny) and top-64 (all).
    pub exact_logits: Option<Vec<f32>>,
    pub exact_top: Vec<Vec<(u32, f32)>>,
    /// Two-turn cases (hybrid fixtures): each turn's (prompt ids, greedy ids); `prompt_ids`
    /// and `greedy_ids` then describe the whole conversation evaluated afresh.
    pub turns: Option<Vec<(Vec<u32>, Vec<u32>)>>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect()).unwrap_or_default()
}

/// `[[id, logit], ...]` rows of a fixture's top-k logits.
pub fn top(v: &Value) -> Vec<Vec<(u32, f32)>> {
    v.as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap() as f32))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytemuck::pod_collect_to_vec(&b)
}

/// Every public case, in index order.
pub fn cases() -> Vec<Case> {
    cases_in("reference", "models")
}

/// The hybrid (Qwen3.5 / Qwen3-Next) cases, in index order.
pub fn hybrid_cases() -> Vec<Case> {
    cases_in("hybrid/reference", "hybrid/models")
}

fn cases_in(set: &str, models: &str) -> Vec<Case> {
    let dir = data_dir().join(set);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for c in index["cases"].as_array().unwrap() {
        let j: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(c["json"].as_str().unwrap())).unwrap())
                .unwrap();
        let ex: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(c["exact_json"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let real = c["model_dir"].as_str() == Some("real");
        let model = c["model"].as_str().unwrap();
        out.push(Case {
            name: c["case"].as_str().unwrap().to_string(),
            model_path: if real { real_model_path(model) } else { data_dir().join(models).join(model) },
            real,
            prompt_text: j["prompt_text"].as_str().map(str::to_string),
            prompt_ids: ids(&j["prompt_ids"]),
            greedy_ids: ids(&j["greedy_ids"]),
            greedy_prefix_agree_exact: c["greedy_prefix_agree_exact"].as_u64().unwrap() as usize,
            n_vocab: j["n_vocab"].as_u64().unwrap() as usize,
            llama_logits: j["logits_file"].as_str().map(|f| read_f32(&dir.join(f))),
            llama_top: j.get("top_logits").map(top),
            exact_logits: ex["logits_file"].as_str().map(|f| read_f32(&dir.join(f))),
            exact_top: top(&ex["top_logits"]),
            turns: j["turns"]
                .as_array()
                .map(|ts| ts.iter().map(|t| (ids(&t["prompt_ids"]), ids(&t["greedy_ids"]))).collect()),
        })
    }
    out
}

/// Mean and max |a - b| of `rows` logit rows over the ids that are compared: every id when
/// the exact reference has full rows, else the exact reference's top-64 per row.
pub fn compare(case: &Case, got: &[f32], rows: usize) -> (f64, f64) {
    let v = case.n_vocab;
    let (mut sum, mut n, mut max) = (0f64, 0usize, 0f64);
    for r in 0..rows {
        match &case.exact_logits {
            Some(ex) => {
                for i in 0..v {
                    let d = (got[r * v + i] as f64 - ex[r * v + i] as f64).abs();
                    sum += d;
                    n += 1;
                    max = max.max(d);
                }
            }
            None => {
                for &(id, l) in &case.exact_top[r] {
                    let d = (got[r * v + id as usize] as f64 - l as f64).abs();
                    sum += d;
                    n += 1;
                    max = max.max(d);
                }
            }
        }
    }
    (sum / n.max(1) as f64, max)
}

/// How many of the leading greedy steps llama.cpp and exact math agree on
/// (`greedy_prefix_agree_exact`) a path whose logits lie within `max_dev` of exact math must
/// reproduce: those whose exact top-two margin is wider than `2 · max_dev` (the two logits can
/// move that far toward each other). The rest are near-ties that any rounding may flip (the
/// CPU's tiny-qwen3 c1 opens with a margin of 0.002, against 0.0023 of deviation).
pub fn exact_vouched(case: &Case, max_dev: f64) -> usize {
    let first = case.prompt_ids.len() - 1;
    (0..case.greedy_prefix_agree_exact)
        .take_while(|&i| {
            let mut best: Vec<f32> = case.exact_top[first + i].iter().map(|&(_, v)| v).collect();
            best.sort_by(|a, b| b.total_cmp(a));
            (best[0] - best[1]) as f64 > 2.0 * max_dev
        })
        .count()
}

/// llama.cpp's own distance from the exact reference, on the same ids where it has them.
pub fn llama_vs_exact(case: &Case, rows: usize) -> Option<(f64, f64)> {
    let v = case.n_vocab;
    if let Some(l) = &case.llama_logits {
        return Some(compare(case, &l[..rows * v], rows));
    }
    let top = case.llama_top.as_ref()?;
    let (mut sum, mut n, mut max) = (0f64, 0usize, 0f64);
    for (ex_row, top_row) in case.exact_top.iter().zip(top).take(rows) {
        for &(id, ex) in ex_row {
            if let Some(&(_, l)) = top_row.iter().find(|(i, _)| *i == id) {
                let d = (l as f64 - ex as f64).abs();
                sum += d;
                n += 1;
                max = max.max(d);
            }
        }
    }
    Some((sum / n.max(1) as f64, max))
}

/// [`compare`] on the ids [`llama_vs_exact`] can compare when llama.cpp kept only its top-64
/// per row (the exact top-64 ids that are also in llama.cpp's), so that both figures are over
/// the same ids; plain [`compare`] when it kept full rows.
pub fn compare_like_llama(case: &Case, got: &[f32], rows: usize) -> (f64, f64) {
    let Some(top) = case.llama_logits.is_none().then_some(case.llama_top.as_ref()).flatten() else {
        return compare(case, got, rows);
    };
    let v = case.n_vocab;
    let (mut sum, mut n, mut max) = (0f64, 0usize, 0f64);
    for (r, (ex_row, top_row)) in case.exact_top.iter().zip(top).take(rows).enumerate() {
        for &(id, ex) in ex_row.iter().filter(|(id, _)| top_row.iter().any(|(i, _)| i == id)) {
            let d = (got[r * v + id as usize] as f64 - ex as f64).abs();
            sum += d;
            n += 1;
            max = max.max(d);
        }
    }
    (sum / n.max(1) as f64, max)
}

/// The first index of the largest value.
pub fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best }) as u32
}

/// A case's logits through a session: its prompt as one evaluation (in `opts.n_batch` steps),
/// then each of its greedy tokens on its own.
pub fn teacher_forced(model: &wllm::Model, case: &Case, opts: &wllm::SessionOptions) -> Vec<f32> {
    let mut s = model.session(opts).unwrap();
    let mut got = s.eval(&case.prompt_ids, wllm::Logits::All).unwrap();
    for &t in &case.greedy_ids {
        got.extend(s.eval(&[t], wllm::Logits::Last).unwrap());
    }
    got
}

/// Greedy decoding from a case's prompt for `n` tokens through a session.
pub fn greedy(model: &wllm::Model, case: &Case, n: usize, opts: &wllm::SessionOptions) -> Vec<u32> {
    let mut s = model.session(opts).unwrap();
    let mut tok = argmax(&s.eval(&case.prompt_ids, wllm::Logits::Last).unwrap());
    let mut out = vec![tok];
    while out.len() < n {
        tok = argmax(&s.eval(&[tok], wllm::Logits::Last).unwrap());
        out.push(tok);
    }
    out
}

/// A hot sampler with no truncation, seeded: tokens a constraint did not force would almost
/// never fit it by chance.
pub fn hot_sampling(seed: u64) -> wllm::SamplerConfig {
    wllm::SamplerConfig {
        temp: 1.5,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        seed: Some(seed),
        ..Default::default()
    }
}
