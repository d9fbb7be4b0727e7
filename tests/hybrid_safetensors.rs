//! Qwen3.5, Qwen3.5-MoE and Qwen3-Next from Hugging Face directories
//! (tests/data/hybrid/safetensors, made by tests/data/tools/make_hf_qwen35.py).
//!
//! `tiny-qwen3next` is a random checkpoint in Qwen3-Next's own layout (fused `in_proj_qkvz` and
//! `in_proj_ba`, one tensor per expert) whose `expected.json` holds the GGUF view llama.cpp's
//! converter gives: every tensor of the loaded directory is checked against it.
//! `tiny-qwen35` and `tiny-qwen35moe` are the F32 hybrid GGUFs converted backwards: loading them
//! must give the GGUF's tensors (with value heads in the checkpoint's grouped order, which the
//! config says), the GGUF's logits on the CPU, and logits as close to the float64 exact pass
//! as the GGUF's on every F32 hybrid fixture case.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use wllm::engine::cpu::{CpuStack, LogitRows};
use wllm::loaders::model::{Arch, KeyHeadMap, ModelWeights, TensorSource};
use wllm::loaders::{GgmlType, GgufFile, ModelConfig, SafetensorsModel};

const PROMPT: &[u32] = &[1, 15, 200, 33, 7, 480, 2, 99, 311, 64, 128, 5, 77, 300, 41, 9];
const DECODE: &[u32] = &[17, 402, 250, 3];

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hybrid").join(rel)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f32_tensor(src: &dyn TensorSource, name: &str) -> (Vec<u64>, Vec<f32>) {
    let t = src.bytes(name).unwrap_or_else(|| panic!("{name} is missing"));
    assert_eq!(t.meta.ggml_type, GgmlType::F32, "{name}");
    (t.meta.dims.clone(), floats(&t.bytes))
}

/// Prompt logits as one batch, then each decode token's row, on the CPU (token ids folded
/// into the vocabulary).
fn cpu_logits(cfg: &ModelConfig, src: Arc<dyn TensorSource>) -> Vec<f32> {
    let fold = |ids: &[u32]| ids.iter().map(|t| t % cfg.n_vocab).collect::<Vec<u32>>();
    let mut stack = CpuStack::new(cfg, src, cfg.n_layer, true, 64, 1).unwrap();
    let mut out = stack.logits(&fold(PROMPT), 0, LogitRows::All).unwrap();
    for (pos, t) in (PROMPT.len() as u32..).zip(fold(DECODE)) {
        out.extend(stack.logits(&[t], pos, LogitRows::Last).unwrap());
    }
    out
}

/// ggml dims without their insignificant trailing 1s.
fn trimmed(dims: &[u64]) -> &[u64] {
    let mut n = dims.len();
    while n > 1 && dims[n - 1] == 1 {
        n -= 1;
    }
    &dims[..n]
}

#[test]
fn qwen3next_directory_gives_the_converters_gguf_view() {
    let dir = data("safetensors/tiny-qwen3next");
    let st = SafetensorsModel::open(&dir).unwrap();
    assert!(st.unmapped().is_empty(), "unmapped {:?}", st.unmapped());
    let expected: BTreeMap<String, Value> =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let names: Vec<&str> = st.tensor_metas().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, expected.keys().map(String::as_str).collect::<Vec<_>>(), "the GGUF view's tensors");

    for (name, want) in &expected {
        assert_eq!(want["type"], "F32", "{name}: expected.json holds F32 tensors only");
        let (dims, values) = f32_tensor(&st, name);
        let want_dims: Vec<u64> =
            want["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(dims, want_dims, "{name}: dims");
        assert_eq!(values.len() as u64, dims.iter().product::<u64>(), "{name}: element count");
        for s in want["samples"].as_array().unwrap() {
            let (i, v) = (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap() as f32);
            assert_eq!(values[i].to_bits(), v.to_bits(), "{name}: element {i} is {} not {v}", values[i]);
        }
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let scale: f64 = values.iter().map(|&v| f64::from(v).abs()).sum::<f64>().max(1.0);
        let want_sum = want["sum"].as_f64().unwrap();
        assert!((sum - want_sum).abs() <= 1e-12 * scale, "{name}: element sum {sum} is not {want_sum}");
    }

    let cfg = st.config();
    assert_eq!(cfg.arch, Arch::Qwen3Next);
    assert_eq!(cfg.recurrent_layers, [true, true, true, false]);
    assert_eq!((cfg.head_dim, cfg.rope_dim, cfg.n_head, cfg.n_head_kv), (32, 8, 2, 1));
    let d = cfg.delta_net.as_ref().unwrap();
    assert_eq!((d.n_k_heads, d.n_v_heads, d.head_dim, d.conv_kernel), (2, 4, 16, 4));
    assert_eq!((d.key_heads, d.fused_beta_alpha), (KeyHeadMap::Grouped, true));
    let moe = cfg.moe.as_ref().unwrap();
    assert_eq!(
        (moe.n_expert, moe.n_expert_used, moe.n_ff_expert, moe.shared_expert_ff),
        (4, 2, 32, Some(32))
    );

    // The view is a whole model: every tensor the layer plan asks for is there, and it runs.
    ModelWeights::resolve(cfg, &st).unwrap();
    let cfg = cfg.clone();
    let logits = cpu_logits(&cfg, Arc::new(st));
    assert_eq!(logits.len(), (PROMPT.len() + DECODE.len()) * 64);
    assert!(logits.iter().all(|x| x.is_finite()), "non-finite logits");
}

/// `x` viewed as `[outer][axis][inner]`, where the `axis` entries from `start` on are value
/// heads of `block` entries each: llama.cpp's tiled head order (value head `m * n_k + g`)
/// rearranged into the checkpoints' grouped order (`g * r + m`).
fn grouped(
    x: &[f32],
    axis: usize,
    inner: usize,
    start: usize,
    n_k: usize,
    r: usize,
    block: usize,
) -> Vec<f32> {
    let mut out = x.to_vec();
    for o in 0..x.len() / (axis * inner) {
        for g in 0..n_k {
            for m in 0..r {
                for j in 0..block {
                    let from = (o * axis + start + (m * n_k + g) * block + j) * inner;
                    let to = (o * axis + start + (g * r + m) * block + j) * inner;
                    out[to..to + inner].copy_from_slice(&x[from..from + inner]);
                }
            }
        }
    }
    out
}

/// The GGUF's tensor as the directory must hold it: value heads regrouped where the tensor
/// has them (rows of the projections into value heads, channels of the convolution, inputs
/// of `ssm_out`), unchanged otherwise.
fn expected_from_gguf(cfg: &ModelConfig, name: &str, dims: &[u64], x: &[f32]) -> Vec<f32> {
    let d = cfg.delta_net.as_ref().unwrap();
    let (n_k, hd) = (d.n_k_heads as usize, d.head_dim as usize);
    let r = (d.n_v_heads / d.n_k_heads) as usize;
    let rows = dims.get(1).copied().unwrap_or(1) as usize;
    let cols = dims[0] as usize;
    let kind =
        name.rsplit_once("blk.").map_or(name, |(_, rest)| rest.split_once('.').map_or(rest, |(_, t)| t));
    match kind {
        // [ch, n_embd] in ggml dims [n_embd, ch]: rows are channels.
        "attn_qkv.weight" => grouped(x, rows, cols, 2 * n_k * hd, n_k, r, hd),
        "attn_gate.weight" => grouped(x, rows, cols, 0, n_k, r, hd),
        "ssm_beta.weight" | "ssm_alpha.weight" => grouped(x, rows, cols, 0, n_k, r, 1),
        // [taps, ch]: each channel's taps together.
        "ssm_conv1d.weight" => grouped(x, rows, cols, 2 * n_k * hd, n_k, r, hd),
        "ssm_dt.bias" | "ssm_a" => grouped(x, cols, 1, 0, n_k, r, 1),
        // [value_dim, n_embd]: each row's inputs are the value heads.
        "ssm_out.weight" => grouped(x, cols, 1, 0, n_k, r, hd),
        _ => x.to_vec(),
    }
}

#[test]
fn qwen35_directories_match_their_f32_ggufs_on_cpu() {
    let mut failures = Vec::new();
    for name in ["qwen35", "qwen35moe"] {
        let gguf = GgufFile::open(data(&format!("models/tiny-{name}-f32.gguf"))).unwrap();
        let gguf_cfg = ModelConfig::from_gguf(&gguf).unwrap();
        let st = SafetensorsModel::open(data(&format!("safetensors/tiny-{name}"))).unwrap();
        assert!(st.unmapped().is_empty(), "{name}: unmapped {:?}", st.unmapped());

        // The configs agree but for the name and the value heads' order.
        let mut hf_cfg = st.config().clone();
        assert_eq!(hf_cfg.delta_net.as_ref().unwrap().key_heads, KeyHeadMap::Grouped, "{name}");
        hf_cfg.name.clone_from(&gguf_cfg.name);
        hf_cfg.delta_net.as_mut().unwrap().key_heads = KeyHeadMap::Tiled;
        assert_eq!(hf_cfg, gguf_cfg, "{name}: config.json vs GGUF metadata");

        let mut gguf_names: Vec<String> = gguf.tensors().iter().map(|t| t.name.clone()).collect();
        gguf_names.sort();
        let st_names: Vec<String> = st.tensor_metas().iter().map(|m| m.name.clone()).collect();
        assert_eq!(st_names, gguf_names, "{name}: the GGUF view's tensors");
        // 1 ulp off where no float32 A_log reaches the GGUF's ssm_a (make_hf_qwen35.py).
        let mut off_by_one_ulp = 0;
        for t in &gguf_names {
            let (dims, want) = f32_tensor(&gguf, t);
            let (st_dims, got) = f32_tensor(&st, t);
            let want = expected_from_gguf(&gguf_cfg, t, &dims, &want);
            // The converter keeps the shared expert's gate [1, n_embd] as [n_embd, 1]; the tiny
            // GGUFs were written with [n_embd].
            assert_eq!(trimmed(&st_dims), trimmed(&dims), "{name} {t}: dims");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
                let allowed = if t.ends_with("ssm_a") { 1 } else { 0 };
                assert!(ulps <= allowed, "{name} {t}: element {i} is {a}, the GGUF's {b}");
                off_by_one_ulp += ulps as usize;
            }
        }
        eprintln!("{name}: every tensor equals the GGUF's; {off_by_one_ulp} ssm_a values 1 ulp away");

        let gguf_cfg_run = gguf_cfg.clone();
        let want = cpu_logits(&gguf_cfg_run, Arc::new(gguf));
        let st_cfg = st.config().clone();
        let got = cpu_logits(&st_cfg, Arc::new(st));
        assert_eq!(got.len(), want.len());
        let v = gguf_cfg.n_vocab as usize;
        let (mut worst, mut at) = (0f64, 0);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            let d = (f64::from(*a) - f64::from(*b)).abs();
            if d > worst || d.is_nan() {
                (worst, at) = (d, i);
            }
        }
        let spread = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        eprintln!(
            "{name}: max |logit(safetensors) - logit(GGUF)| = {worst:.3e} (row {}, id {}; max |logit| {spread:.2})",
            at / v,
            at % v
        );
        if worst.is_nan() || worst > SAME_LOGITS * f64::from(spread) || spread == 0.0 {
            failures.push(format!("{name}: max |d| {worst:e} at row {} id {}", at / v, at % v));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// On every case of the F32 tiny models, the directory's teacher-forced logits sit as close to
/// the float64 exact pass as the GGUF's do (`hybrid_cpu.rs` holds the GGUF to its budget).
#[test]
fn qwen35_directories_meet_the_exact_pass_like_their_ggufs() {
    let mut checked = 0;
    for case in support::hybrid_cases() {
        let file = case.model_path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(name) = file.strip_prefix("tiny-").and_then(|f| f.strip_suffix("-f32.gguf")) else {
            continue;
        };
        let st = SafetensorsModel::open(data(&format!("safetensors/tiny-{name}"))).unwrap();
        let gguf = GgufFile::open(&case.model_path).unwrap();
        let gguf_cfg = ModelConfig::from_gguf(&gguf).unwrap();
        let rows = case.prompt_ids.len() + case.greedy_ids.len();
        let mut distances = Vec::new();
        for (cfg, src) in
            [(st.config().clone(), Arc::new(st) as Arc<dyn TensorSource>), (gguf_cfg, Arc::new(gguf))]
        {
            let mut stack = CpuStack::new(&cfg, src, cfg.n_layer, true, 512, 1).unwrap();
            let mut got = stack.logits(&case.prompt_ids, 0, LogitRows::All).unwrap();
            for (pos, &t) in (case.prompt_ids.len() as u32..).zip(&case.greedy_ids) {
                got.extend(stack.logits(&[t], pos, LogitRows::Last).unwrap());
            }
            distances.push(support::compare(&case, &got, rows));
        }
        let [(mean, max), (gguf_mean, gguf_max)] = distances[..] else { unreachable!() };
        eprintln!(
            "{}: |directory - exact| mean {mean:.2e} max {max:.2e}; |GGUF - exact| mean {gguf_mean:.2e} max {gguf_max:.2e}",
            case.name
        );
        // Rounding differences of the order of the engine's own F32 error, not a model's.
        assert!(mean <= 2.0 * gguf_mean + 1e-6 && max <= 2.0 * gguf_max + 1e-5, "{}", case.name);
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} F32 qwen35 / qwen35moe cases found");
}

/// The directories hold the GGUF's values with value heads in another order, so `ssm_out`
/// sums its inputs in another order too (and five `ssm_a` values sit 1 ulp away): the logits
/// agree to float rounding, relative to their size.
const SAME_LOGITS: f64 = 1e-5;
