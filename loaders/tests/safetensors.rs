//! safetensors models through the public API: the tiny checkpoints under
//! `tests/data/safetensors` (written by the reference `safetensors` package, with numpy-computed
//! expectations of their GGUF view), models written here for the layouts those do not cover,
//! `config.json` edge cases, and the malformed corpus.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use half::{bf16, f16};
use serde_json::{Value, json};
use wllm_loaders::model::{ExpertGating, FfnActivation, FfnWeights, RopeLayout};
use wllm_loaders::safetensors::Dtype;
use wllm_loaders::{
    Arch, Error, GgmlType, ModelConfig, ModelError, ModelWeights, SafetensorsError, SafetensorsFiles,
    SafetensorsModel, TensorSource,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

fn decode(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    match ty {
        GgmlType::F32 => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        GgmlType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        GgmlType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        GgmlType::MXFP4 => wllm_loaders::quant::dequantize(ty, bytes, bytes.len() / 17 * 32).unwrap(),
        other => panic!("unexpected type {other}"),
    }
}

/// FNV-1a, 64-bit: what make-tiny-safetensors.py records of bytes it expects exactly.
fn fnv1a64(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3));
    format!("{h:016x}")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
}

/// Every GGUF tensor of the view against expected.json, and nothing more.
fn check_against_expected(model: &SafetensorsModel, dir: &Path) {
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let expected = expected.as_object().unwrap();
    let names: Vec<&str> = model.tensor_metas().iter().map(|m| m.name.as_str()).collect();
    let mut want: Vec<&str> = expected.keys().map(String::as_str).collect();
    want.sort();
    assert_eq!(names, want, "{}", dir.display());

    for (name, exp) in expected {
        let t = model.bytes(name).unwrap();
        let ty = exp["type"].as_str().unwrap();
        assert_eq!(t.meta.ggml_type.name(), ty, "{name}");
        let dims: Vec<u64> = exp["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
        assert_eq!(t.meta.dims, dims, "{name}");
        assert_eq!(t.bytes.len() as u64, t.meta.n_bytes(), "{name}");
        let values = decode(t.meta.ggml_type, &t.bytes);
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        assert!(close(sum, exp["sum"].as_f64().unwrap()), "{name}: sum {sum} vs {}", exp["sum"]);
        for s in exp["samples"].as_array().unwrap() {
            let (i, v) = (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap());
            assert!(close(values[i] as f64, v), "{name}[{i}] = {} expected {v}", values[i]);
        }
        if let Some(h) = exp.get("fnv1a64") {
            assert_eq!(fnv1a64(&t.bytes), h.as_str().unwrap(), "{name}: bytes differ from the converter's");
        }
        // GGUF semantics: every 1-D tensor is F32; big matrices stay borrowed from the map.
        if t.meta.dims.len() == 1 {
            assert_eq!(t.meta.ggml_type, GgmlType::F32, "{name}");
        }
        if name.ends_with("attn_q.weight") {
            assert!(matches!(t.bytes, Cow::Borrowed(_)), "{name} was copied");
        }
    }
}

#[test]
fn tiny_models_present_their_gguf_view() {
    for name in ["tiny-llama", "tiny-qwen3moe", "tiny-gemma3", "tiny-gptoss-mxfp4", "tiny-gptoss-bf16"] {
        let dir = data_dir().join("safetensors").join(name);
        let model = SafetensorsModel::open(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let w = ModelWeights::resolve(model.config(), &model).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(w.layers.len(), model.config().n_layer as usize);
        check_against_expected(&model, &dir);
    }
}

#[test]
fn sharded_llama() {
    let dir = data_dir().join("safetensors/tiny-llama");
    let model = SafetensorsModel::open(&dir).unwrap();
    assert_eq!(model.files().shard_paths().count(), 2);
    let c = model.config();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(c.name.as_deref(), Some("tiny-llama"));
    assert_eq!((c.n_layer, c.n_embd, c.n_head, c.n_head_kv, c.head_dim), (2, 32, 4, 2, 8));
    assert_eq!((c.n_ff, c.n_vocab, c.context_length), (64, 64, 256));
    assert_eq!(c.rope_layout, RopeLayout::Neox);
    assert_eq!(c.rms_eps, 1e-5);
    assert_eq!(c.rope_base, 10000.0);
    assert_eq!(c.rope_freq_scale, 1.0);
    assert_eq!(c.ffn_act, FfnActivation::Silu);
    assert!(c.moe.is_none() && !c.has_qk_norm && !c.has_qkv_bias && !c.has_post_norms);
    assert!((c.attn_scale - 1.0 / 8f32.sqrt()).abs() < 1e-7);
    let w = ModelWeights::resolve(c, &model).unwrap();
    assert!(w.output.is_some());
    assert_eq!(model.meta("rope_freqs.weight").unwrap().dims, vec![4]);

    // The raw layer: Hugging Face names, PyTorch shapes, and a shard opened on its own.
    let q = model.files().view("model.layers.1.self_attn.q_proj.weight").unwrap();
    assert_eq!((q.dtype, q.shape), (Dtype::F16, &[32u64, 32][..]));
    assert_eq!(q.bytes.len(), 32 * 32 * 2);
    let shard = SafetensorsFiles::open(dir.join("model-00002-of-00002.safetensors")).unwrap();
    assert!(shard.tensor("lm_head.weight").is_some());
    assert!(shard.tensor("model.embed_tokens.weight").is_none());
    assert_eq!(shard.views().count(), shard.tensors().len());
    let same = shard.view("model.layers.1.self_attn.q_proj.weight").unwrap();
    assert_eq!(same.bytes, q.bytes);
}

#[test]
fn qwen3moe_single_file_bf16() {
    let dir = data_dir().join("safetensors/tiny-qwen3moe");
    let model = SafetensorsModel::open(dir.join("model.safetensors")).unwrap();
    let c = model.config();
    assert_eq!(c.arch, Arch::Qwen3Moe);
    assert_eq!(c.head_dim, 16);
    assert!(c.has_qk_norm);
    let moe = c.moe.as_ref().unwrap();
    assert_eq!((moe.n_expert, moe.n_expert_used, moe.n_ff_expert), (4, 2, 16));
    assert_eq!(moe.gating, ExpertGating::SoftmaxTopK { renormalize: true });
    let w = ModelWeights::resolve(c, &model).unwrap();
    assert!(w.output.is_none(), "tied embeddings");
    let FfnWeights::Moe { gate_exps, router, .. } = &w.layers[1].ffn else { panic!("dense ffn") };
    assert_eq!(gate_exps.dims, vec![32, 16, 4]);
    assert_eq!(gate_exps.ggml_type, GgmlType::BF16);
    assert_eq!(router.ggml_type, GgmlType::F32);

    // Stacked bytes are the experts' bytes, expert 0 first.
    let stacked = model.bytes("blk.1.ffn_down_exps.weight").unwrap();
    let e2 = model.files().view("model.layers.1.mlp.experts.2.down_proj.weight").unwrap();
    let n = e2.bytes.len();
    assert_eq!(&stacked.bytes[2 * n..3 * n], e2.bytes);
}

#[test]
fn gemma3_multimodal_config_and_norms() {
    let dir = data_dir().join("safetensors/tiny-gemma3");
    let model = SafetensorsModel::open(&dir).unwrap();
    let c = model.config();
    assert_eq!(c.arch, Arch::Gemma3);
    assert_eq!((c.n_layer, c.n_head, c.n_head_kv, c.head_dim, c.n_vocab), (3, 2, 1, 16, 64));
    assert_eq!(c.swa_layers, vec![true, true, false]);
    assert_eq!(c.sliding_window, 8);
    assert!((c.attn_scale - 1.0 / 24f32.sqrt()).abs() < 1e-7);
    assert_eq!(c.rope_base, 1_000_000.0, "class default");
    assert_eq!(c.rope_base_swa, 10_000.0);
    assert_eq!(c.rope_freq_scale, 0.125);
    assert_eq!(c.embed_scale, Some(32f32.sqrt()));
    assert_eq!(c.rms_eps, 1e-6);
    assert_eq!(c.ffn_act, FfnActivation::GeluTanh);
    assert_eq!(c.final_logit_softcap, None);
    assert!(c.has_post_norms && c.has_qk_norm);
    assert_eq!(model.unmapped(), ["model.vision_tower.vision_model.post_layernorm.weight"]);

    // GGUF stores 1 + w for every Gemma RMSNorm weight.
    let raw = model.files().view("model.language_model.layers.2.pre_feedforward_layernorm.weight").unwrap();
    let norm = model.bytes("blk.2.ffn_norm.weight").unwrap();
    for (r, g) in decode(GgmlType::F32, raw.bytes).iter().zip(decode(GgmlType::F32, &norm.bytes)) {
        assert_eq!(r + 1.0, g);
    }
}

/// gpt-oss's two checkpoint forms of the same weights: the same config, MXFP4 experts kept
/// MXFP4 and dense ones in their stored BF16, and the same values once dequantized.
#[test]
fn gptoss_mxfp4_and_bf16_checkpoints_agree() {
    let open = |name: &str| SafetensorsModel::open(data_dir().join("safetensors").join(name)).unwrap();
    let (mx, bf) = (open("tiny-gptoss-mxfp4"), open("tiny-gptoss-bf16"));
    assert!(mx.unmapped().is_empty() && bf.unmapped().is_empty(), "{:?} {:?}", mx.unmapped(), bf.unmapped());
    let c = mx.config();
    let mut same = bf.config().clone();
    same.name.clone_from(&c.name);
    assert_eq!(&same, c, "the two config.json files say the same");
    assert_eq!(c.arch, Arch::GptOss);
    assert_eq!((c.n_embd, c.n_head, c.n_head_kv, c.head_dim, c.n_ff), (64, 4, 2, 16, 32));
    assert_eq!(c.ffn_act, FfnActivation::SwigluOai);
    assert!(c.has_qkv_bias && c.has_attn_out_bias && c.has_attn_sinks && c.has_moe_biases);
    assert_eq!(c.ffn_norm_name, "post_attention_norm");
    assert_eq!((c.sliding_window, c.swa_layers.as_slice()), (8, &[true, false][..]));
    assert_eq!((c.rope_base, c.rope_freq_scale, c.context_length), (150_000.0, 0.25, 4096));
    let y = c.rope_yarn.as_ref().unwrap();
    assert_eq!((y.orig_ctx, y.beta_fast, y.beta_slow, y.attn_factor), (1024, 32.0, 1.0, 1.0));
    let moe = c.moe.as_ref().unwrap();
    assert_eq!((moe.n_expert, moe.n_expert_used, moe.n_ff_expert), (4, 2, 32));
    assert_eq!(moe.gating, ExpertGating::SoftmaxTopK { renormalize: true });

    for model in [&mx, &bf] {
        let w = ModelWeights::resolve(model.config(), model).unwrap();
        let FfnWeights::Moe { router, .. } = &w.layers[0].ffn else { panic!("dense ffn") };
        assert_eq!(router.ggml_type, GgmlType::F32);
    }
    for il in 0..2 {
        for part in ["gate", "up", "down"] {
            let name = format!("blk.{il}.ffn_{part}_exps.weight");
            let (a, b) = (mx.bytes(&name).unwrap(), bf.bytes(&name).unwrap());
            assert_eq!((a.meta.ggml_type, b.meta.ggml_type), (GgmlType::MXFP4, GgmlType::BF16), "{name}");
            assert_eq!(a.meta.dims, b.meta.dims, "{name}");
            let (va, vb) = (decode(a.meta.ggml_type, &a.bytes), decode(b.meta.ggml_type, &b.bytes));
            assert!(va.iter().any(|v| *v != 0.0), "{name}");
            assert_eq!(va, vb, "{name}: dequantized MXFP4 vs BF16");
            let bias = format!("blk.{il}.ffn_{part}_exps.bias");
            assert_eq!(mx.bytes(&bias).unwrap().bytes, bf.bytes(&bias).unwrap().bytes, "{bias}");
        }
    }
}

/// A tensor to write: name, dtype, shape, bytes.
type StTensor = (String, Dtype, Vec<u64>, Vec<u8>);

/// The tiny MXFP4 gpt-oss checkpoint's tensors, to write altered copies of.
fn gptoss_tensors() -> (Value, Vec<StTensor>) {
    let dir = data_dir().join("safetensors/tiny-gptoss-mxfp4");
    let config = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let files = SafetensorsFiles::open(&dir).unwrap();
    let tensors =
        files.views().map(|v| (v.name.to_string(), v.dtype, v.shape.to_vec(), v.bytes.to_vec())).collect();
    (config, tensors)
}

fn gptoss_error(tag: &str, config: Value, tensors: Vec<StTensor>) -> String {
    let dir = temp_dir(tag);
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    write_st(&dir.join("model.safetensors"), &tensors);
    let err = SafetensorsModel::open(&dir).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn gptoss_expert_tensors_are_checked() {
    let (config, tensors) = gptoss_tensors();
    let without = |name: &str| tensors.iter().filter(|t| t.0 != name).cloned().collect::<Vec<_>>();

    let err =
        gptoss_error("oss-noscales", config.clone(), without("model.layers.1.mlp.experts.down_proj_scales"));
    assert!(err.contains("model.layers.1.mlp.experts.down_proj_scales"), "{err}");

    // A dequantized copy beside the blocks: two sources for one GGUF tensor.
    let mut both = tensors.clone();
    both.push((
        "model.layers.0.mlp.experts.gate_up_proj".into(),
        Dtype::BF16,
        vec![4, 64, 64],
        vec![0; 4 * 64 * 64 * 2],
    ));
    let err = gptoss_error("oss-both", config.clone(), both);
    assert!(err.contains("blk.0.ffn_gate_exps.weight") && err.contains("gate_up_proj_blocks"), "{err}");

    // Scales that do not match the blocks.
    let mut bad = tensors.clone();
    let s = bad.iter_mut().find(|t| t.0 == "model.layers.0.mlp.experts.gate_up_proj_scales").unwrap();
    s.2 = vec![4, 32, 2];
    s.3.truncate(4 * 32 * 2);
    let err = gptoss_error("oss-scales", config.clone(), bad);
    assert!(err.contains("gate_up_proj_scales") && err.contains("[4, 32, 2]"), "{err}");

    // Biases must have the weights' rows.
    let mut bad = tensors.clone();
    let b = bad.iter_mut().find(|t| t.0 == "model.layers.1.mlp.experts.down_proj_bias").unwrap();
    b.2 = vec![4, 32];
    b.3.truncate(4 * 32 * 2);
    let err = gptoss_error("oss-bias", config, bad);
    assert!(err.contains("down_proj_bias"), "{err}");
}

#[test]
fn gptoss_config_keys() {
    let (config, _) = gptoss_tensors();
    let cfg = |v: &Value| ModelConfig::from_hf_config(v);
    // The original checkpoint's spelling of the expert count alone.
    let mut alone = config.clone();
    alone.as_object_mut().unwrap().remove("num_experts_per_tok");
    assert_eq!(cfg(&alone).unwrap().moe.unwrap().n_expert_used, 2);
    // Without layer_types: transformers' and llama.cpp's period 2, even layers windowed.
    let mut period = config.clone();
    period["num_hidden_layers"] = json!(4);
    period.as_object_mut().unwrap().remove("layer_types");
    assert_eq!(cfg(&period).unwrap().swa_layers, vec![true, false, true, false]);
    let listed = with(config.clone(), "layer_types", json!(["full_attention", "sliding_attention"]));
    assert_eq!(cfg(&listed).unwrap().swa_layers, vec![false, true]);
    // A stated YaRN attention factor reaches the config, as the converter writes it.
    let mut af = config.clone();
    af["rope_scaling"]["attention_factor"] = json!(1.5);
    assert_eq!(cfg(&af).unwrap().rope_yarn.unwrap().attn_factor, 1.5);

    for (key, value) in [
        ("swiglu_limit", json!(5.0)),
        ("swiglu_alpha", json!(2.0)),
        ("attention_bias", json!(false)),
        ("hidden_act", json!("gelu")),
    ] {
        let e = cfg(&with(config.clone(), key, value)).unwrap_err();
        assert!(matches!(e, ModelError::Unsupported(_)) && e.to_string().contains(key), "{key}: {e}");
    }
    let mut ext = config.clone();
    ext["rope_scaling"]["extrapolation_factor"] = json!(0.5);
    assert!(matches!(cfg(&ext).unwrap_err(), ModelError::Unsupported(_)));
    let mut no_factor = config;
    no_factor["rope_scaling"].as_object_mut().unwrap().remove("factor");
    assert!(cfg(&no_factor).unwrap_err().to_string().contains("factor"));
}

/// Writes a safetensors file the way the reference writer lays it out.
fn write_st(path: &Path, tensors: &[(String, Dtype, Vec<u64>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut text = serde_json::to_vec(&header).unwrap();
    // Padded with spaces so the data starts 8-byte aligned, as the reference writer does.
    text.resize(text.len() + (8 - text.len() % 8) % 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wllm-st-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` elements counting up from `start` (distinct, so misplaced bytes show).
fn ramp(dtype: Dtype, n: u64, start: f32) -> Vec<u8> {
    let v = (0..n).map(|i| start + i as f32 * 0.5);
    match dtype {
        Dtype::F16 => v.flat_map(|x| f16::from_f32(x).to_le_bytes()).collect(),
        Dtype::BF16 => v.flat_map(|x| bf16::from_f32(x).to_le_bytes()).collect(),
        _ => v.flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Attention and norm tensors of one layer in Hugging Face naming.
fn attention(
    il: u32,
    e: u64,
    hd: u64,
    heads: u64,
    kv: u64,
    dtype: Dtype,
) -> Vec<(String, Dtype, Vec<u64>, Vec<u8>)> {
    let p = format!("model.layers.{il}.");
    vec![
        (format!("{p}input_layernorm.weight"), dtype, vec![e], ramp(dtype, e, 1.0)),
        (format!("{p}post_attention_layernorm.weight"), dtype, vec![e], ramp(dtype, e, 2.0)),
        (format!("{p}self_attn.q_proj.weight"), dtype, vec![heads * hd, e], ramp(dtype, heads * hd * e, 0.0)),
        (format!("{p}self_attn.k_proj.weight"), dtype, vec![kv * hd, e], ramp(dtype, kv * hd * e, 0.0)),
        (format!("{p}self_attn.v_proj.weight"), dtype, vec![kv * hd, e], ramp(dtype, kv * hd * e, 0.0)),
        (format!("{p}self_attn.o_proj.weight"), dtype, vec![e, heads * hd], ramp(dtype, heads * hd * e, 0.0)),
    ]
}

fn write_model(
    dir: &Path,
    config: Value,
    tensors: Vec<(String, Dtype, Vec<u64>, Vec<u8>)>,
) -> SafetensorsModel {
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    write_st(&dir.join("model.safetensors"), &tensors);
    SafetensorsModel::open(dir).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn mixtral_experts_stack_w1_w3_w2() {
    let dir = temp_dir("mixtral");
    let (e, ff, x, v, dt) = (8u64, 12u64, 3u64, 16u64, Dtype::F16);
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), dt, vec![v, e], ramp(dt, v * e, 0.0)),
        ("model.norm.weight".to_string(), dt, vec![e], ramp(dt, e, 1.0)),
        ("lm_head.weight".to_string(), dt, vec![v, e], ramp(dt, v * e, 3.0)),
        ("model.layers.0.block_sparse_moe.gate.weight".to_string(), dt, vec![x, e], ramp(dt, x * e, 0.0)),
    ];
    t.extend(attention(0, e, 4, 2, 1, dt));
    for xi in 0..x {
        for (w, shape) in [("w1", vec![ff, e]), ("w3", vec![ff, e]), ("w2", vec![e, ff])] {
            let start = 100.0 * xi as f32
                + if w == "w2" {
                    50.0
                } else if w == "w3" {
                    25.0
                } else {
                    0.0
                };
            let name = format!("model.layers.0.block_sparse_moe.experts.{xi}.{w}.weight");
            t.push((name, dt, shape, ramp(dt, ff * e, start)));
        }
    }
    let config = json!({
        "architectures": ["MixtralForCausalLM"], "hidden_size": e, "intermediate_size": ff,
        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": v,
        "num_local_experts": x, "num_experts_per_tok": 2, "rms_norm_eps": 1e-5, "rope_theta": 1e6,
        "sliding_window": null, "tie_word_embeddings": false
    });
    let model = write_model(&dir, config, t);
    let c = model.config();
    assert_eq!(c.arch, Arch::Llama);
    assert_eq!(c.rope_layout, RopeLayout::Neox);
    let moe = c.moe.as_ref().unwrap();
    assert_eq!((moe.n_expert, moe.n_expert_used, moe.n_ff_expert), (3, 2, 12));
    assert_eq!(moe.gating, ExpertGating::SoftmaxTopK { renormalize: true });
    ModelWeights::resolve(c, &model).unwrap();

    for (gguf, start) in [("ffn_gate_exps", 0.0), ("ffn_up_exps", 25.0), ("ffn_down_exps", 50.0)] {
        let s = model.bytes(&format!("blk.0.{gguf}.weight")).unwrap();
        assert_eq!(s.meta.ggml_type, GgmlType::F16);
        let vals = decode(GgmlType::F16, &s.bytes);
        let per = (ff * e) as usize;
        for xi in 0..x as usize {
            assert_eq!(vals[xi * per], 100.0 * xi as f32 + start, "{gguf} expert {xi}");
        }
    }
    let router = model.bytes("blk.0.ffn_gate_inp.weight").unwrap();
    assert_eq!((router.meta.ggml_type, router.meta.dims.clone()), (GgmlType::F32, vec![e, x]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qwen2_biases_widen_to_f32() {
    let dir = temp_dir("qwen2");
    let (e, ff, v, dt) = (8u64, 16u64, 16u64, Dtype::BF16);
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), dt, vec![v, e], ramp(dt, v * e, 0.0)),
        ("model.norm.weight".to_string(), dt, vec![e], ramp(dt, e, 1.0)),
        ("model.layers.0.self_attn.q_proj.bias".to_string(), dt, vec![8], ramp(dt, 8, 0.5)),
        ("model.layers.0.self_attn.k_proj.bias".to_string(), dt, vec![4], ramp(dt, 4, 0.5)),
        ("model.layers.0.self_attn.v_proj.bias".to_string(), dt, vec![4], ramp(dt, 4, 0.5)),
        ("model.layers.0.mlp.gate_proj.weight".to_string(), dt, vec![ff, e], ramp(dt, ff * e, 0.0)),
        ("model.layers.0.mlp.up_proj.weight".to_string(), dt, vec![ff, e], ramp(dt, ff * e, 0.0)),
        ("model.layers.0.mlp.down_proj.weight".to_string(), dt, vec![e, ff], ramp(dt, ff * e, 0.0)),
        (
            "model.layers.0.self_attn.rotary_emb.inv_freq".to_string(),
            Dtype::F32,
            vec![2],
            ramp(Dtype::F32, 2, 0.0),
        ),
    ];
    t.extend(attention(0, e, 4, 2, 1, dt));
    let config = json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": e, "intermediate_size": ff,
        "num_attention_heads": 2, "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": v,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": true, "use_sliding_window": false
    });
    let model = write_model(&dir, config, t);
    assert!(model.config().has_qkv_bias);
    let w = ModelWeights::resolve(model.config(), &model).unwrap();
    assert_eq!(w.layers[0].attn_k_bias.as_ref().unwrap().ggml_type, GgmlType::F32);
    let b = model.bytes("blk.0.attn_q.bias").unwrap();
    assert_eq!(decode(GgmlType::F32, &b.bytes), vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]);
    assert_eq!(model.unmapped(), ["model.layers.0.self_attn.rotary_emb.inv_freq"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fused_experts_split_into_gate_and_up() {
    let dir = temp_dir("fused");
    let (e, ff, x, v, dt) = (8u64, 4u64, 2u64, 16u64, Dtype::F32);
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), dt, vec![v, e], ramp(dt, v * e, 0.0)),
        ("model.norm.weight".to_string(), dt, vec![e], ramp(dt, e, 1.0)),
        ("model.layers.0.self_attn.q_norm.weight".to_string(), dt, vec![4], ramp(dt, 4, 1.0)),
        ("model.layers.0.self_attn.k_norm.weight".to_string(), dt, vec![4], ramp(dt, 4, 1.0)),
        ("model.layers.0.mlp.gate.weight".to_string(), dt, vec![x, e], ramp(dt, x * e, 0.0)),
        (
            "model.layers.0.mlp.experts.gate_up_proj".to_string(),
            dt,
            vec![x, 2 * ff, e],
            ramp(dt, x * 2 * ff * e, 0.0),
        ),
        ("model.layers.0.mlp.experts.down_proj".to_string(), dt, vec![x, e, ff], ramp(dt, x * ff * e, 0.0)),
    ];
    t.extend(attention(0, e, 4, 2, 1, dt));
    let config = json!({
        "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": e, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 4, "num_hidden_layers": 1, "vocab_size": v, "num_experts": x,
        "num_experts_per_tok": 1, "moe_intermediate_size": ff,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5e5}
    });
    let model = write_model(&dir, config, t);
    let c = model.config();
    assert_eq!(c.rope_base, 5e5);
    assert_eq!(c.moe.as_ref().unwrap().gating, ExpertGating::SoftmaxTopK { renormalize: false });
    ModelWeights::resolve(c, &model).unwrap();
    let block = (ff * e) as usize; // one expert's gate (or up) elements
    let gate = decode(GgmlType::F32, &model.bytes("blk.0.ffn_gate_exps.weight").unwrap().bytes);
    let up = decode(GgmlType::F32, &model.bytes("blk.0.ffn_up_exps.weight").unwrap().bytes);
    // Element i of the fused tensor is 0.5 * i; expert 1 starts at 2 * block.
    assert_eq!((gate[0], up[0]), (0.0, 0.5 * block as f32));
    assert_eq!((gate[block], up[block]), (0.5 * (2 * block) as f32, 0.5 * (3 * block) as f32));
    let down = model.bytes("blk.0.ffn_down_exps.weight").unwrap();
    assert!(matches!(down.bytes, Cow::Borrowed(_)));
    assert_eq!(down.meta.dims, vec![ff, e, x]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn base_llama() -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

#[test]
fn hf_config_fields_and_defaults() {
    let c = ModelConfig::from_hf_config(&base_llama()).unwrap();
    assert_eq!((c.n_head_kv, c.head_dim, c.rope_dim, c.context_length), (4, 16, 16, 2048));
    assert_eq!((c.rms_eps, c.rope_base), (1e-6, 10000.0));
    assert_eq!(c.swa_layers, vec![false, false]);

    // Mistral writes "head_dim": null; model_type works without "architectures".
    let mut m = with(base_llama(), "head_dim", Value::Null);
    m.as_object_mut().unwrap().remove("architectures");
    m["model_type"] = json!("mistral");
    assert_eq!(ModelConfig::from_hf_config(&m).unwrap().head_dim, 16);

    let linear = with(base_llama(), "rope_scaling", json!({"type": "linear", "factor": 4.0}));
    assert_eq!(ModelConfig::from_hf_config(&linear).unwrap().rope_freq_scale, 0.25);

    let gemma = json!({
        "architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 4, "sliding_window": 512,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        "final_logit_softcapping": 30.0,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 2e6},
                            "sliding_attention": {"rope_type": "default", "rope_theta": 5e3}}
    });
    let g = ModelConfig::from_hf_config(&gemma).unwrap();
    assert_eq!(g.swa_layers, vec![true, false, true, false]);
    assert_eq!((g.sliding_window, g.rope_base, g.rope_base_swa), (512, 2e6, 5e3));
    assert_eq!(g.final_logit_softcap, Some(30.0));
    // Gemma3TextConfig defaults fill the rest.
    assert_eq!((g.n_embd, g.n_head, g.n_head_kv, g.head_dim, g.n_vocab), (2304, 8, 4, 256, 262_208));
    assert!((g.attn_scale - 1.0 / 16.0).abs() < 1e-7);
}

#[test]
fn hf_config_errors_name_the_key() {
    let err = |v: Value| ModelConfig::from_hf_config(&v).unwrap_err();
    let msg = |v: Value| err(v).to_string();

    assert!(matches!(
        err(with(base_llama(), "architectures", json!(["BertModel"]))),
        ModelError::UnknownArchitecture(_)
    ));
    assert!(msg(json!({"hidden_size": 8})).contains("architectures"));
    assert!(msg(json!([])).contains("not an object"));
    let no_heads = base_llama().as_object().unwrap().clone();
    let mut no_heads = Value::Object(no_heads);
    no_heads.as_object_mut().unwrap().remove("num_attention_heads");
    assert!(msg(no_heads).contains("num_attention_heads"));
    assert!(msg(with(base_llama(), "num_attention_heads", json!(0))).contains("at least one head"));
    assert!(msg(with(base_llama(), "num_key_value_heads", json!(3))).contains("multiple"));
    assert!(msg(with(base_llama(), "hidden_size", json!(-64))).contains("hidden_size"));
    assert!(msg(with(base_llama(), "head_dim", json!(7))).contains("even"));
    assert!(msg(with(base_llama(), "vocab_size", json!(1e30))).contains("vocab_size"));
    assert!(matches!(
        err(with(base_llama(), "rope_scaling", json!({"rope_type": "longrope", "factor": 4.0}))),
        ModelError::Unsupported(_)
    ));
    assert!(matches!(err(with(base_llama(), "attention_bias", json!(true))), ModelError::Unsupported(_)));
    assert!(matches!(err(with(base_llama(), "hidden_act", json!("relu"))), ModelError::Unsupported(_)));

    let moe = json!({
        "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
        "num_hidden_layers": 2, "vocab_size": 100, "num_experts": 8, "num_experts_per_tok": 2,
        "moe_intermediate_size": 32
    });
    assert!(ModelConfig::from_hf_config(&moe).is_ok());
    assert!(matches!(err(with(moe.clone(), "mlp_only_layers", json!([0]))), ModelError::Unsupported(_)));
    assert!(msg(with(moe.clone(), "num_experts_per_tok", json!(9))).contains("num_experts_per_tok"));
    assert!(msg(with(moe, "num_experts", json!(1_000_000))).contains("num_experts"));

    let gemma = json!({"architectures": ["Gemma3ForCausalLM"], "num_hidden_layers": 2, "layer_types": ["full_attention"]});
    assert!(msg(gemma).contains("layer_types"));
}

fn qwen35_config() -> Value {
    json!({
        "architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
        "text_config": {
            "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 32, "num_hidden_layers": 4, "vocab_size": 100,
            "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
            "linear_num_key_heads": 2, "linear_num_value_heads": 6, "attn_output_gate": true,
            "layer_types": ["linear_attention", "full_attention", "linear_attention", "full_attention"],
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.5,
                                "mrope_section": [3, 3, 2], "mrope_interleaved": true}
        }
    })
}

fn with_text(mut v: Value, key: &str, value: Value) -> Value {
    v["text_config"][key] = value;
    v
}

#[test]
fn hf_config_hybrid_families() {
    let c = ModelConfig::from_hf_config(&qwen35_config()).unwrap();
    assert_eq!(c.arch, Arch::Qwen35);
    assert_eq!(c.recurrent_layers, [true, false, true, false]);
    assert_eq!((c.rope_dim, c.rope_base, c.attn_output_gate), (16, 1e7, true));
    let d = c.delta_net.as_ref().unwrap();
    assert_eq!((d.conv_kernel, d.n_k_heads, d.n_v_heads, d.head_dim), (4, 2, 6, 16));
    // The checkpoint's grouped value heads, which the converter would reorder.
    assert_eq!((d.key_heads, d.key_head(1), d.key_head(3)), (wllm_loaders::model::KeyHeadMap::Grouped, 0, 1));

    // Without layer_types: every full_attention_interval-th layer attends.
    let mut v = qwen35_config();
    v["text_config"].as_object_mut().unwrap().remove("layer_types");
    let c = ModelConfig::from_hf_config(&with_text(v.clone(), "full_attention_interval", json!(2))).unwrap();
    assert_eq!(c.recurrent_layers, [true, false, true, false]);
    assert_eq!(ModelConfig::from_hf_config(&v).unwrap().recurrent_layers, [true, true, true, false]);

    let next = json!({
        "architectures": ["Qwen3NextForCausalLM"], "hidden_size": 64, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32, "num_hidden_layers": 4, "vocab_size": 100,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4, "num_experts": 8,
        "num_experts_per_tok": 2, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 48,
        "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": []
    });
    let c = ModelConfig::from_hf_config(&next).unwrap();
    assert_eq!(c.arch, Arch::Qwen3Next);
    // The converter's default partial_rotary_factor (0.25) and full_attention_interval (4).
    assert_eq!((c.rope_dim, c.recurrent_layers.clone()), (8, vec![true, true, true, false]));
    let m = c.moe.as_ref().unwrap();
    assert_eq!((m.n_expert, m.n_ff_expert, m.shared_expert_ff), (8, 32, Some(48)));
    assert_eq!(m.gating, ExpertGating::SoftmaxTopK { renormalize: true });

    let err = |v: Value| ModelConfig::from_hf_config(&v).unwrap_err();
    let msg = |v: Value| err(v).to_string();
    let unsupported = |v: Value| matches!(err(v), ModelError::Unsupported(_));
    assert!(unsupported(with_text(qwen35_config(), "linear_value_head_dim", json!(32))));
    assert!(unsupported(with_text(qwen35_config(), "attn_output_gate", json!(false))));
    assert!(unsupported(with(next.clone(), "norm_topk_prob", json!(false))));
    assert!(unsupported(with(next.clone(), "mlp_only_layers", json!([1]))));
    assert!(
        msg(with_text(qwen35_config(), "layer_types", json!(["linear_attention"]))).contains("layer_types")
    );
    assert!(
        msg(with_text(qwen35_config(), "layer_types", json!(["linear_attention", "x", "y", "z"])))
            .contains("layer_types[1]")
    );
    assert!(
        msg(with_text(qwen35_config(), "linear_conv_kernel_dim", Value::Null))
            .contains("linear_conv_kernel_dim")
    );
    assert!(
        msg(with_text(qwen35_config(), "linear_num_value_heads", json!(5)))
            .contains("linear_num_value_heads")
    );
    assert!(msg(with(next, "linear_conv_kernel_dim", json!(0))).contains("linear_conv_kernel_dim"));
    // Qwen3.5's default sections [11, 11, 10] need 32 rotated pairs; these heads rotate 8.
    let mut v = qwen35_config();
    v["text_config"]["rope_parameters"].as_object_mut().unwrap().remove("mrope_section");
    assert!(ModelConfig::from_hf_config(&v).is_err_and(|e| e.to_string().contains("mrope_section")));
    v["text_config"]["rope_parameters"]["mrope_section"] = json!([3, 3, 2]);
    assert!(ModelConfig::from_hf_config(&v).is_ok());
    v["text_config"]["rope_parameters"]["mrope_section"] = json!([3, 3, 2, 1, 1]);
    assert!(msg(v).contains("mrope_section"));
}

/// Qwen3-Next's converted DeltaNet tensors from BF16: `ssm_a` and the convolution as F32 (as
/// the converter writes them), `in_proj_qkvz` split in its stored dtype; shapes that do not fit
/// are refused with the tensor's name.
#[test]
fn qwen3next_bf16_delta_net_tensors() {
    let (e, n_k, n_v, hd, taps) = (8u64, 2u64, 4u64, 2u64, 3u64);
    let (r, ch) = (n_v / n_k, 2 * n_k * hd + n_v * hd);
    let config = json!({
        "architectures": ["Qwen3NextForCausalLM"], "hidden_size": e, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 8, "num_hidden_layers": 1, "vocab_size": 16,
        "linear_conv_kernel_dim": taps, "linear_key_head_dim": hd, "linear_value_head_dim": hd,
        "linear_num_key_heads": n_k, "linear_num_value_heads": n_v, "num_experts": 2,
        "num_experts_per_tok": 1, "moe_intermediate_size": 4, "shared_expert_intermediate_size": 4
    });
    let p = "model.layers.0.";
    let bf = Dtype::BF16;
    let qkvz_rows = n_k * (2 * hd + 2 * r * hd);
    let tensors = |conv_shape: Vec<u64>, qkvz_rows: u64| {
        vec![
            (format!("{p}linear_attn.conv1d.weight"), bf, conv_shape, ramp(bf, ch * taps, 0.0)),
            (format!("{p}linear_attn.A_log"), bf, vec![n_v], ramp(bf, n_v, -1.0)),
            (
                format!("{p}linear_attn.in_proj_qkvz.weight"),
                bf,
                vec![qkvz_rows, e],
                ramp(bf, qkvz_rows * e, 0.0),
            ),
            (format!("{p}mlp.shared_expert_gate.weight"), bf, vec![1, e], ramp(bf, e, 0.5)),
        ]
    };
    let dir = temp_dir("qwen3next-bf16");
    let m = write_model(&dir, config.clone(), tensors(vec![ch, 1, taps], qkvz_rows));
    let f32s = |name: &str| {
        let t = m.bytes(name).unwrap_or_else(|| panic!("{name} missing"));
        (t.meta.ggml_type, t.meta.dims.clone(), decode(t.meta.ggml_type, &t.bytes))
    };
    let (ty, dims, conv) = f32s("blk.0.ssm_conv1d.weight");
    assert_eq!((ty, dims), (GgmlType::F32, vec![taps, ch]));
    assert_eq!(conv, (0..ch * taps).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
    let (ty, _, a) = f32s("blk.0.ssm_a");
    assert_eq!(ty, GgmlType::F32);
    assert_eq!(a, (0..n_v).map(|i| -(f64::from(-1.0 + i as f32 * 0.5).exp()) as f32).collect::<Vec<_>>());
    let (ty, dims, _) = f32s("blk.0.ffn_gate_inp_shexp.weight");
    assert_eq!((ty, dims), (GgmlType::F32, vec![e, 1]));
    // Per key head: q (2 rows), k (2), v (4), z (4); qkv takes q, q, k, k, v, v of the heads.
    let (ty, dims, qkv) = f32s("blk.0.attn_qkv.weight");
    assert_eq!((ty, dims), (GgmlType::BF16, vec![e, 2 * n_k * hd + n_v * hd]));
    let per_head = 2 * hd + 2 * r * hd;
    let first_col =
        |rows: &[f32]| rows.chunks(e as usize).map(|row| row[0] / 0.5 / e as f32).collect::<Vec<_>>();
    let want: Vec<f32> = [(0, 2), (per_head, 2), (2, 2), (per_head + 2, 2), (4, 4), (per_head + 4, 4)]
        .iter()
        .flat_map(|&(first, n)| (first..first + n).map(|row| row as f32))
        .collect();
    assert_eq!(first_col(&qkv), want);
    let (_, _, z) = f32s("blk.0.attn_gate.weight");
    let want: Vec<f32> = [8, per_head + 8].iter().flat_map(|&f| (f..f + 4).map(|row| row as f32)).collect();
    assert_eq!(first_col(&z), want);
    drop(m);

    for (conv_shape, rows, bad) in [
        (vec![ch, taps], qkvz_rows, "conv1d.weight"),
        (vec![ch, 1, taps], qkvz_rows - 1, "in_proj_qkvz.weight"),
    ] {
        std::fs::write(dir.join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
        write_st(&dir.join("model.safetensors"), &tensors(conv_shape, rows));
        let e = SafetensorsModel::open(&dir).unwrap_err();
        assert!(matches!(e, Error::Safetensors { source: SafetensorsError::BadShape { .. }, .. }), "{e:?}");
        assert!(e.to_string().contains(bad), "{e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[derive(serde::Deserialize)]
struct Manifest {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    path: String,
    open: String,
    expect: String,
    description: String,
}

#[test]
fn malformed_corpus_fails_with_the_expected_error() {
    let root = data_dir().join("malformed/safetensors");
    let manifest: Manifest =
        serde_json::from_slice(&std::fs::read(root.join("MANIFEST.json")).unwrap()).unwrap();
    assert!(manifest.cases.len() >= 10);
    for case in &manifest.cases {
        let path = root.join(&case.path);
        let start = Instant::now();
        let result = match case.open.as_str() {
            "files" => SafetensorsFiles::open(&path).map(|_| ()),
            "model" => SafetensorsModel::open(&path).map(|_| ()),
            other => panic!("{}: unknown open mode {other}", case.path),
        };
        let elapsed = start.elapsed();
        let err = match result {
            Ok(()) => panic!("{} ({}) opened without error", case.path, case.description),
            Err(e) => e,
        };
        let Error::Safetensors { path: at, source } = &err else {
            panic!("{}: expected a safetensors error, got {err:?}", case.path);
        };
        let kind = format!("{source:?}");
        assert!(
            kind.starts_with(&case.expect),
            "{} ({}): expected {}, got {kind}",
            case.path,
            case.description,
            case.expect
        );
        assert!(at.starts_with(&root), "{}: error names {}", case.path, at.display());
        assert!(err.to_string().len() > at.as_os_str().len() + 10, "{}: terse message {err}", case.path);
        assert!(elapsed < Duration::from_secs(1), "{} took {elapsed:?}", case.path);
    }
}

#[test]
fn in_memory_images_parse_and_fail_alike() {
    let mut ok = b"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}".to_vec();
    let mut file = (ok.len() as u64).to_le_bytes().to_vec();
    file.append(&mut ok);
    file.extend_from_slice(&[1, 2, 3, 4]);
    let f = SafetensorsFiles::from_bytes(file.clone()).unwrap();
    assert_eq!(f.view("a").unwrap().bytes, &[1, 2, 3, 4]);
    file.pop();
    assert!(matches!(SafetensorsFiles::from_bytes(file), Err(SafetensorsError::OutOfBounds { .. })));
}

/// Byte flips and truncations of a real shard: every outcome is Ok or a typed error, never a
/// panic (a cheap stand-in for fuzzing that runs in every test pass).
#[test]
fn mutated_shards_never_panic() {
    let shard =
        std::fs::read(data_dir().join("safetensors/tiny-llama/model-00001-of-00002.safetensors")).unwrap();
    let header_end = 8 + u64::from_le_bytes(shard[..8].try_into().unwrap()) as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..3000 {
        let mut bytes = shard.clone();
        // Mostly the header: that is where the parser looks.
        let at = (next() as usize) % if i % 4 == 0 { bytes.len() } else { header_end };
        bytes[at] = next() as u8;
        if i % 3 == 0 {
            bytes.truncate((next() as usize) % bytes.len());
        }
        let _ = SafetensorsFiles::from_bytes(bytes);
    }
}
