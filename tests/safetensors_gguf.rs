//! The same tiny model as a Hugging Face safetensors directory and as an F32 GGUF gives the
//! same logits on the GPU path, for every architecture the safetensors loader maps; and
//! quantizing the F32 model on load stays close to it.
//!
//! The files are made at test time in a temporary directory from the committed tiny GGUFs:
//! every tensor dequantized to F32 (`wllm_loaders::quant`), rounded to the safetensors dtype
//! under test, then written twice: as an F32 GGUF (`GgufWriter`, the source's metadata) and
//! as safetensors under Hugging Face names and conventions (the inverse of what
//! `SafetensorsModel` maps: PyTorch dim order, llama's unpermuted Q/K, Gemma's `w - 1`
//! norms, one tensor per expert) with a `config.json` written from the GGUF's hyperparameters.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::{bf16, f16};
use serde_json::{Value, json};
use wllm::engine::cpu::{CpuStack, LogitRows};
use wllm::engine::{Context, ContextOptions, DeviceOptions, Gpu, GpuModel, Logits};
use wllm::loaders::gguf::GgufWriter;
use wllm::loaders::model::{Arch, ExpertGating, RopeLayout, TensorSource};
use wllm::loaders::{GgmlType, GgufFile, ModelConfig, SafetensorsModel};
use wllm::{LoadOptions, Model, SessionOptions};

/// Same values, same kernels up to accumulation order: agreement to float rounding.
/// Qwen and Gemma come out bit-identical. Llama-family checkpoints keep Q/K unpermuted, so
/// RoPE runs in the NeoX layout and attention sums each head's q·k in another element order:
/// rounding differences of about 1e-5 of the logits' size remain.
const SAME_LOGITS: f64 = 5e-4;
const PROMPT: &[u32] = &[1, 15, 200, 33, 7, 480, 2, 99, 311, 64, 128, 5];
const DECODE: &[u32] = &[17, 402, 250];

#[derive(Copy, Clone, Debug, PartialEq)]
enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }
    fn round(self, v: f32) -> f32 {
        match self {
            Dtype::F32 => v,
            Dtype::F16 => f16::from_f32(v).to_f32(),
            Dtype::BF16 => bf16::from_f32(v).to_f32(),
        }
    }
    fn bytes(self, v: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
            Dtype::BF16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
        }
    }
}

/// A GGUF tensor as F32 values, ggml dims.
struct Tensor {
    name: String,
    dims: Vec<u64>,
    data: Vec<f32>,
}

struct Fixture {
    name: &'static str,
    /// transformers class written to config.json.
    class: &'static str,
}

/// The Llama 3 RoPE scaling the `tiny-llama-ropefreqs` fixture's `rope_freqs.weight` was
/// computed from (tests/data/tools/make_tiny.py); a Hugging Face checkpoint states these
/// parameters instead of the factors.
const LLAMA3_ROPE_SCALING: &str = r#"{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
    "high_freq_factor": 4.0, "original_max_position_embeddings": 64}"#;

const FIXTURES: &[Fixture] = &[
    Fixture { name: "tiny-llama-q4_k_m", class: "LlamaForCausalLM" },
    Fixture { name: "tiny-qwen2-q4_k_m", class: "Qwen2ForCausalLM" },
    Fixture { name: "tiny-qwen3-q4_k_m", class: "Qwen3ForCausalLM" },
    Fixture { name: "tiny-gemma3-q4_k_m", class: "Gemma3ForCausalLM" },
    Fixture { name: "tiny-qwen3moe-q4_k_m", class: "Qwen3MoeForCausalLM" },
    Fixture { name: "tiny-llama-moe-q4_k_m", class: "MixtralForCausalLM" },
    Fixture { name: "tiny-llama-ropefreqs-q8_0", class: "LlamaForCausalLM" },
    Fixture { name: "tiny-gemma3-62l-q8_0", class: "Gemma3ForCausalLM" },
];

fn temp_dir(tag: &str) -> PathBuf {
    // Tests run in parallel and two may convert the same fixture: each call gets its own dir.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("wllm-st-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gemma_norm(cfg: &ModelConfig, name: &str) -> bool {
    cfg.arch == Arch::Gemma3 && name.ends_with("norm.weight")
}

/// Every tensor of `f` in F32, rounded so that storing it as `dtype` in Hugging Face form
/// and mapping it back gives the same F32 values: 2-D tensors exactly representable in
/// `dtype`; Gemma norms as `round(w - 1) + 1`, which is what the loader computes.
fn tensors(f: &GgufFile, cfg: &ModelConfig, dtype: Dtype) -> Vec<Tensor> {
    f.tensors()
        .iter()
        .map(|t| {
            let n = t.n_elements() as usize;
            let mut data = wllm::loaders::quant::dequantize(t.ggml_type, f.tensor_data(t), n).unwrap();
            let shift = if gemma_norm(cfg, &t.name) { 1.0 } else { 0.0 };
            // The RoPE factors are no checkpoint tensor: the loader computes them in f32 from
            // config.json, so they keep their F32 values here.
            if t.name != "rope_freqs.weight" {
                for v in &mut data {
                    *v = dtype.round(*v - shift) + shift;
                }
            }
            Tensor { name: t.name.clone(), dims: t.dims.clone(), data }
        })
        .collect()
}

fn write_gguf(src: &GgufFile, tensors: &[Tensor], path: &Path) {
    let mut w = GgufWriter::new();
    for k in src.keys() {
        if k != "general.file_type" && k != "general.alignment" {
            w.add_metadata(k, src.value(k).unwrap()).unwrap();
        }
    }
    w.add_metadata("general.file_type", 0u32).unwrap();
    for t in tensors {
        let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        w.add_tensor(&t.name, GgmlType::F32, &t.dims, bytes).unwrap();
    }
    let mut out = std::fs::File::create(path).unwrap();
    w.write_to(&mut out).unwrap();
}

/// Undoes convert_hf_to_gguf.py's llama Q/K permutation: GGUF row `2i + j` of each head
/// is Hugging Face row `j * d/2 + i`.
fn unpermute(data: &[f32], cols: usize, n_head: usize) -> Vec<f32> {
    let rows = data.len() / cols;
    let hd = rows / n_head;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let src = h * hd + 2 * i + j;
                let dst = h * hd + j * hd / 2 + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Hugging Face name(s) and values for one GGUF tensor: (name, PyTorch shape, values).
fn to_hf(t: &Tensor, cfg: &ModelConfig, mixtral: bool) -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
    let gemma = cfg.arch == Arch::Gemma3;
    let one = |name: String, data: Vec<f32>| vec![(name, shape.clone(), data)];
    let data =
        if gemma_norm(cfg, &t.name) { t.data.iter().map(|v| v - 1.0).collect() } else { t.data.clone() };
    match t.name.as_str() {
        "token_embd.weight" => return one("model.embed_tokens.weight".into(), data),
        "output_norm.weight" => return one("model.norm.weight".into(), data),
        "output.weight" => return one("lm_head.weight".into(), data),
        // Hugging Face states the scaling parameters in config.json instead.
        "rope_freqs.weight" => return Vec::new(),
        _ => {}
    }
    let rest = t.name.strip_prefix("blk.").unwrap();
    let (il, rest) = rest.split_once('.').unwrap();
    let layer = |s: &str| format!("model.layers.{il}.{s}");
    let cols = t.dims[0] as usize;
    let llama = cfg.arch == Arch::Llama;
    let hf = match rest {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" if llama => {
            return one(layer("self_attn.q_proj.weight"), unpermute(&data, cols, cfg.n_head as usize));
        }
        "attn_k.weight" if llama => {
            return one(layer("self_attn.k_proj.weight"), unpermute(&data, cols, cfg.n_head_kv as usize));
        }
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "ffn_norm.weight" if gemma => "pre_feedforward_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "post_attention_norm.weight" => "post_attention_layernorm.weight",
        "post_ffw_norm.weight" => "post_feedforward_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "ffn_gate_inp.weight" if mixtral => "block_sparse_moe.gate.weight",
        "ffn_gate_inp.weight" => "mlp.gate.weight",
        exps => {
            let part = exps.strip_suffix("_exps.weight").unwrap_or_else(|| panic!("unmapped {}", t.name));
            let part = match (part, mixtral) {
                ("ffn_gate", false) => "gate_proj",
                ("ffn_up", false) => "up_proj",
                ("ffn_down", false) => "down_proj",
                ("ffn_gate", true) => "w1",
                ("ffn_up", true) => "w3",
                ("ffn_down", true) => "w2",
                _ => panic!("unmapped {}", t.name),
            };
            let (rows, n_expert) = (t.dims[1] as usize, t.dims[2] as usize);
            let prefix = if mixtral { "block_sparse_moe.experts" } else { "mlp.experts" };
            return (0..n_expert)
                .map(|e| {
                    let slice = data[e * rows * cols..(e + 1) * rows * cols].to_vec();
                    (layer(&format!("{prefix}.{e}.{part}.weight")), vec![rows as u64, cols as u64], slice)
                })
                .collect();
        }
    };
    one(layer(hf), data)
}

/// A safetensors file of f32 values stored as `dtype`.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<u64>, Vec<f32>)], dtype: Dtype) {
    let raw: Vec<RawSt> = tensors
        .iter()
        .map(|(name, shape, values)| (name.clone(), dtype.name(), shape.clone(), dtype.bytes(values)))
        .collect();
    write_raw_safetensors(path, &raw);
}

/// config.json for `cfg`, with the keys transformers' class of that name reads.
fn hf_config(cfg: &ModelConfig, class: &str, tensors: &[Tensor], dtype: Dtype) -> Value {
    let has_output = tensors.iter().any(|t| t.name == "output.weight");
    let model_type = match class {
        "LlamaForCausalLM" => "llama",
        "Qwen2ForCausalLM" => "qwen2",
        "Qwen3ForCausalLM" => "qwen3",
        "Qwen3MoeForCausalLM" => "qwen3_moe",
        "MixtralForCausalLM" => "mixtral",
        "Gemma3ForCausalLM" => "gemma3_text",
        other => panic!("no config for {other}"),
    };
    let mut c = json!({
        "architectures": [class],
        "model_type": model_type,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_ff,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_head_kv,
        "head_dim": cfg.head_dim,
        "num_hidden_layers": cfg.n_layer,
        "vocab_size": cfg.n_vocab,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_base,
        "max_position_embeddings": cfg.context_length,
        "tie_word_embeddings": !has_output,
        "torch_dtype": match dtype { Dtype::F32 => "float32", Dtype::F16 => "float16", Dtype::BF16 => "bfloat16" },
    });
    let o = c.as_object_mut().unwrap();
    if tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        o.insert("rope_scaling".into(), serde_json::from_str(LLAMA3_ROPE_SCALING).unwrap());
    }
    if let Some(m) = &cfg.moe {
        let ExpertGating::SoftmaxTopK { renormalize } = m.gating;
        o.insert("num_experts_per_tok".into(), json!(m.n_expert_used));
        if class == "MixtralForCausalLM" {
            assert!(renormalize, "mixtral always renormalises");
            o.insert("num_local_experts".into(), json!(m.n_expert));
            o.insert("intermediate_size".into(), json!(m.n_ff_expert));
        } else {
            o.insert("num_experts".into(), json!(m.n_expert));
            o.insert("moe_intermediate_size".into(), json!(m.n_ff_expert));
            o.insert("norm_topk_prob".into(), json!(renormalize));
            o.insert("decoder_sparse_step".into(), json!(1));
            o.insert("mlp_only_layers".into(), json!([]));
        }
    }
    if cfg.arch == Arch::Gemma3 {
        let types: Vec<&str> =
            cfg.swa_layers.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect();
        o.insert("layer_types".into(), json!(types));
        o.insert("sliding_window".into(), json!(cfg.sliding_window));
        o.insert("rope_local_base_freq".into(), json!(cfg.rope_base_swa));
        o.insert("query_pre_attn_scalar".into(), json!(1.0 / (cfg.attn_scale as f64).powi(2)));
        o.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
        o.insert("final_logit_softcapping".into(), json!(cfg.final_logit_softcap));
    }
    c
}

/// Writes `<dir>/model.gguf` and `<dir>/hf/` for one fixture and dtype.
fn make_pair(fx: &Fixture, dtype: Dtype) -> (PathBuf, PathBuf, ModelConfig) {
    let src = GgufFile::open(support::data_dir().join("models").join(format!("{}.gguf", fx.name))).unwrap();
    let cfg = ModelConfig::from_gguf(&src).unwrap();
    let ts = tensors(&src, &cfg, dtype);
    let dir = temp_dir(&format!("{}-{}", fx.name, dtype.name()));
    let gguf = dir.join("model.gguf");
    write_gguf(&src, &ts, &gguf);
    let mixtral = fx.class == "MixtralForCausalLM";
    let hf: Vec<_> = ts.iter().flat_map(|t| to_hf(t, &cfg, mixtral)).collect();
    let hf_dir = dir.join("hf");
    std::fs::create_dir_all(&hf_dir).unwrap();
    write_safetensors(&hf_dir.join("model.safetensors"), &hf, dtype);
    let config = hf_config(&cfg, fx.class, &ts, dtype);
    std::fs::write(hf_dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    (gguf, hf_dir, cfg)
}

/// Prompt logits as one batch, then each decode token's row.
fn logits(gpu: &Arc<Gpu>, cfg: ModelConfig, src: &dyn TensorSource) -> Vec<f32> {
    let model = Arc::new(GpuModel::load(gpu.clone(), cfg, src, &mut |_, _| {}).unwrap());
    let mut ctx =
        Context::new(model, &ContextOptions { n_ctx: 64, n_batch: 16, ..Default::default() }).unwrap();
    let mut out = ctx.eval(PROMPT, Logits::All, false).unwrap().logits;
    for &t in DECODE {
        out.extend(ctx.eval(&[t], Logits::Last, false).unwrap().logits);
    }
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> (f64, usize) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((*x as f64 - *y as f64).abs(), i))
        .fold((0.0, 0), |m, d| if d.0 > m.0 || d.0.is_nan() { d } else { m })
}

fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::new(&DeviceOptions::default()) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn check_same_logits(fixtures: &[&str], dtypes: &[Dtype]) {
    let Some(gpu) = gpu() else { return };
    let mut failures = Vec::new();
    let chosen: Vec<&Fixture> = FIXTURES.iter().filter(|f| fixtures.contains(&f.name)).collect();
    assert_eq!(chosen.len(), fixtures.len(), "unknown fixture among {fixtures:?}");
    for fx in chosen {
        for &dtype in dtypes {
            let what = format!("{} as {}", fx.name, dtype.name());
            let (gguf, hf_dir, gguf_cfg) = make_pair(fx, dtype);
            let st = SafetensorsModel::open(&hf_dir).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(st.unmapped().is_empty(), "{what}: unmapped {:?}", st.unmapped());
            // The two configs agree but for what the formats carry differently.
            let mut hf_cfg = st.config().clone();
            if gguf_cfg.arch == Arch::Llama {
                assert_eq!(hf_cfg.rope_layout, RopeLayout::Neox, "{what}");
                hf_cfg.rope_layout = gguf_cfg.rope_layout;
            }
            hf_cfg.name = gguf_cfg.name.clone();
            assert_eq!(hf_cfg, gguf_cfg, "{what}: config.json vs GGUF metadata");
            // 2-D weights stay in the stored dtype (the F16/BF16 kernels run), the rest is F32.
            let q = st.meta("blk.0.attn_q.weight").unwrap();
            assert_eq!(q.ggml_type.name(), dtype.name(), "{what}: attn_q type");

            let f = GgufFile::open(&gguf).unwrap();
            let want = logits(&gpu, ModelConfig::from_gguf(&f).unwrap(), &f);
            let got = logits(&gpu, st.config().clone(), &st);
            let (d, at) = max_abs_diff(&got, &want);
            let v = gguf_cfg.n_vocab as usize;
            let spread = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            eprintln!(
                "{what}: max |logit(safetensors) - logit(F32 GGUF)| = {d:.3e} (row {}, id {}; max |logit| {spread:.2})",
                at / v,
                at % v
            );
            if d.is_nan() || d > SAME_LOGITS {
                failures.push(format!("{what}: max |d| {d:e} at row {} id {}", at / v, at % v));
            }
            let _ = std::fs::remove_dir_all(gguf.parent().unwrap());
        }
    }
    assert!(failures.is_empty(), "logit mismatches:\n{}", failures.join("\n"));
}

#[test]
fn dense_safetensors_match_f32_gguf() {
    check_same_logits(
        &["tiny-llama-q4_k_m", "tiny-qwen2-q4_k_m", "tiny-qwen3-q4_k_m", "tiny-gemma3-q4_k_m"],
        &[Dtype::F32, Dtype::F16, Dtype::BF16],
    );
}

/// Llama 3 RoPE factors stated as `rope_scaling` in config.json give the logits of the GGUF
/// that carries them as `rope_freqs.weight`; Gemma 3's 62-layer attention scale and logit
/// softcap from config.json match llama.cpp's rule for the GGUF.
#[test]
fn rope_factors_and_gemma_scale_safetensors_match_f32_gguf() {
    check_same_logits(&["tiny-llama-ropefreqs-q8_0", "tiny-gemma3-62l-q8_0"], &[Dtype::F32, Dtype::BF16]);
}

#[test]
fn moe_safetensors_match_f32_gguf() {
    check_same_logits(
        &["tiny-qwen3moe-q4_k_m", "tiny-llama-moe-q4_k_m"],
        &[Dtype::F32, Dtype::F16, Dtype::BF16],
    );
}

/// Logit rows through the public API, with `quantize` on load.
fn session_logits(path: &Path, gpu: &Arc<Gpu>, quantize: Option<GgmlType>) -> Vec<f32> {
    let opts = LoadOptions { gpu: Some(gpu.clone()), quantize, ..Default::default() };
    let model = Model::load_with(path, &opts, &mut |_, _| {}).unwrap();
    let mut s = model.session(&SessionOptions { n_ctx: Some(64), n_batch: 16 }).unwrap();
    let mut out = s.eval(PROMPT, Logits::All).unwrap();
    for &t in DECODE {
        out.extend(s.eval(&[t], Logits::Last).unwrap());
    }
    out
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |b, (i, v)| if *v > row[b] { i } else { b })
}

/// Quantizing the F32 model on load: mean and max |Δlogit| against the F32 model's logits
/// within budget, and the same top-1 token on at least `min_top1` of the rows.
fn check_quantized(
    fixture: &str,
    ty: GgmlType,
    mean_budget: f64,
    max_budget: f64,
    min_top1: f64,
) -> Option<String> {
    let gpu = gpu()?;
    let fx = FIXTURES.iter().find(|f| f.name == fixture).unwrap();
    let (gguf, _, cfg) = make_pair(fx, Dtype::F32);
    let want = session_logits(&gguf, &gpu, None);
    let got = session_logits(&gguf, &gpu, Some(ty));
    let v = cfg.n_vocab as usize;
    let (max, at) = max_abs_diff(&got, &want);
    let mean =
        got.iter().zip(&want).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / got.len() as f64;
    let spread = want.iter().fold(0f64, |m, x| m.max(x.abs() as f64));
    let rows = want.len() / v;
    let same_top = (0..rows).filter(|r| argmax(&got[r * v..][..v]) == argmax(&want[r * v..][..v])).count();
    eprintln!(
        "{fixture} quantized to {ty} on load vs F32: |Δlogit| mean {mean:.4} max {max:.4} (row {}, id {}; max |logit| {spread:.2}); top-1 agrees on {same_top}/{rows} rows",
        at / v,
        at % v,
    );
    let _ = std::fs::remove_dir_all(gguf.parent().unwrap());
    let ok = mean <= mean_budget && max <= max_budget && same_top as f64 >= min_top1 * rows as f64;
    (!ok).then(|| format!("{fixture} {ty}: |Δlogit| mean {mean} max {max}, top-1 {same_top}/{rows}"))
}

/// Budgets: about 1.5x the measured values (Q8_0: mean 0.05-0.07, max 0.29-0.46 on logits
/// up to 15; Q4_K: mean 0.28, max 1.29), so a broken quantizer or a mislabelled tensor,
/// which moves logits by whole units, fails.
#[test]
fn quantize_q8_0_on_load_stays_close() {
    let failures: Vec<String> = ["tiny-llama-q4_k_m", "tiny-qwen3moe-q4_k_m", "tiny-gemma3-q4_k_m"]
        .into_iter()
        .filter_map(|f| check_quantized(f, GgmlType::Q8_0, 0.1, 0.75, 0.9))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn quantize_q4_k_on_load_stays_close() {
    // Dense only: with 4-bit experts the tiny MoE's near-tied router logits flip experts
    // (measured: mean 0.60, max 4.5, top-1 on 9 of 15 rows), which says nothing about the
    // quantizer.
    let failure = check_quantized("tiny-llama-q4_k_m", GgmlType::Q4_K, 0.4, 2.0, 0.8);
    assert!(failure.is_none(), "{failure:?}");
}

/// gpt-oss in Hugging Face form, one per checkpoint form people download.
#[derive(Copy, Clone, Debug, PartialEq)]
enum OssForm {
    /// OpenAI's: experts as MXFP4 `_blocks` + `_scales`, the rest (here) F32.
    Mxfp4,
    /// A dequantized checkpoint: everything BF16, experts as transformers multiplies them.
    Bf16,
}

/// ggml `block_mxfp4`s (scale byte, then element `j` | element `j + 16` << 4) as the
/// checkpoint's (scales, blocks): element `2i` | element `2i + 1` << 4.
fn mxfp4_to_hf(ggml: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut scales = Vec::new();
    let mut blocks = Vec::new();
    for b in ggml.chunks_exact(17) {
        scales.push(b[0]);
        let code = |i: usize| if i < 16 { b[1 + i] & 0x0F } else { b[1 + i - 16] >> 4 };
        blocks.extend((0..16).map(|i| code(2 * i) | (code(2 * i + 1) << 4)));
    }
    (scales, blocks)
}

/// Interleaves gate and up `[x][rows][cols]` row by row into `[x][2 rows][cols]`: gate on
/// even rows, up on odd ones, as gpt-oss stores them. Works on any element size.
fn interleave<T: Copy>(gate: &[T], up: &[T], x: usize, row: usize) -> Vec<T> {
    let rows = gate.len() / x / row;
    let mut out = Vec::with_capacity(2 * gate.len());
    for e in 0..x {
        for r in 0..rows {
            let at = (e * rows + r) * row;
            out.extend_from_slice(&gate[at..at + row]);
            out.extend_from_slice(&up[at..at + row]);
        }
    }
    out
}

/// `[x][a][b]` to `[x][b][a]`.
fn transpose3(v: &[f32], x: usize, a: usize, b: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for e in 0..x {
        for i in 0..a {
            for j in 0..b {
                out[(e * b + j) * a + i] = v[(e * a + i) * b + j];
            }
        }
    }
    out
}

/// A raw safetensors tensor: name, dtype name, shape, bytes.
type RawSt = (String, &'static str, Vec<u64>, Vec<u8>);

/// A minimal safetensors writer: JSON header (8-byte little-endian length, space-padded to
/// 8 bytes), then the tensors back to back.
fn write_raw_safetensors(path: &Path, tensors: &[RawSt]) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.clone(),
            json!({ "dtype": dtype, "shape": shape, "data_offsets": [start, data.len()] }),
        );
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

/// The tiny MXFP4 gpt-oss GGUF (llama-quantize's MXFP4 experts, Q8_0 elsewhere) as a GGUF of
/// exactly representable values and as a Hugging Face directory of the same values.
fn make_gptoss_pair(form: OssForm) -> (PathBuf, PathBuf, ModelConfig) {
    let src = GgufFile::open(support::data_dir().join("models/tiny-gptoss-mxfp4.gguf")).unwrap();
    let cfg = ModelConfig::from_gguf(&src).unwrap();
    let moe = cfg.moe.as_ref().unwrap();
    let (x, e, ff) = (moe.n_expert as usize, cfg.n_embd as usize, moe.n_ff_expert as usize);
    let dtype = if form == OssForm::Mxfp4 { Dtype::F32 } else { Dtype::BF16 };
    let st_dtype = if form == OssForm::Mxfp4 { "F32" } else { "BF16" };
    let dir = temp_dir(&format!("gptoss-{form:?}"));
    let mut w = GgufWriter::new();
    for k in src.keys() {
        if k != "general.file_type" && k != "general.alignment" {
            w.add_metadata(k, src.value(k).unwrap()).unwrap();
        }
    }
    let mut hf: Vec<RawSt> = Vec::new();
    let mut experts: std::collections::HashMap<String, (Vec<u8>, Vec<f32>)> = Default::default();
    for t in src.tensors() {
        let raw = src.tensor_data(t);
        let mut data = wllm::loaders::quant::dequantize(t.ggml_type, raw, t.n_elements() as usize).unwrap();
        for v in &mut data {
            *v = dtype.round(*v);
        }
        let keep_mxfp4 = form == OssForm::Mxfp4 && t.ggml_type == GgmlType::MXFP4;
        if keep_mxfp4 {
            w.add_tensor(&t.name, GgmlType::MXFP4, &t.dims, raw.to_vec()).unwrap();
        } else {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.add_tensor(&t.name, GgmlType::F32, &t.dims, bytes).unwrap();
        }
        let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
        let name = match t.name.as_str() {
            "token_embd.weight" => "model.embed_tokens.weight".to_string(),
            "output.weight" => "lm_head.weight".to_string(),
            "output_norm.weight" => "model.norm.weight".to_string(),
            n if n.contains("_exps.") => {
                experts.insert(n.to_string(), (raw.to_vec(), data));
                continue;
            }
            n => {
                let (il, rest) = n.strip_prefix("blk.").unwrap().split_once('.').unwrap();
                let hf = match rest {
                    "attn_norm.weight" => "input_layernorm.weight",
                    "post_attention_norm.weight" => "post_attention_layernorm.weight",
                    "attn_q.weight" => "self_attn.q_proj.weight",
                    "attn_k.weight" => "self_attn.k_proj.weight",
                    "attn_v.weight" => "self_attn.v_proj.weight",
                    "attn_output.weight" => "self_attn.o_proj.weight",
                    "attn_q.bias" => "self_attn.q_proj.bias",
                    "attn_k.bias" => "self_attn.k_proj.bias",
                    "attn_v.bias" => "self_attn.v_proj.bias",
                    "attn_output.bias" => "self_attn.o_proj.bias",
                    "attn_sinks.weight" => "self_attn.sinks",
                    "ffn_gate_inp.weight" => "mlp.router.weight",
                    "ffn_gate_inp.bias" => "mlp.router.bias",
                    other => panic!("unmapped {other}"),
                };
                format!("model.layers.{il}.{hf}")
            }
        };
        hf.push((name, st_dtype, shape, dtype.bytes(&data)));
    }
    for il in 0..cfg.n_layer {
        let take = |part: &str, what: &str| experts[&format!("blk.{il}.ffn_{part}_exps.{what}")].clone();
        let p = format!("model.layers.{il}.mlp.experts.");
        let ((gate_raw, gate), (up_raw, up), (down_raw, down)) =
            (take("gate", "weight"), take("up", "weight"), take("down", "weight"));
        match form {
            OssForm::Mxfp4 => {
                // gate/up: [x][ff][e / 32] blocks, interleaved row by row; down: [x][e][ff / 32].
                let (gs, gb) = mxfp4_to_hf(&gate_raw);
                let (us, ub) = mxfp4_to_hf(&up_raw);
                let (ds, db) = mxfp4_to_hf(&down_raw);
                let (ge, de) = (e as u64 / 32, ff as u64 / 32);
                let (x, ff2, e) = (x as u64, 2 * ff as u64, e as u64);
                hf.push((
                    p.clone() + "gate_up_proj_scales",
                    "U8",
                    vec![x, ff2, ge],
                    interleave(&gs, &us, x as usize, ge as usize),
                ));
                hf.push((
                    p.clone() + "gate_up_proj_blocks",
                    "U8",
                    vec![x, ff2, ge, 16],
                    interleave(&gb, &ub, x as usize, 16 * ge as usize),
                ));
                hf.push((p.clone() + "down_proj_scales", "U8", vec![x, e, de], ds));
                hf.push((p.clone() + "down_proj_blocks", "U8", vec![x, e, de, 16], db));
            }
            OssForm::Bf16 => {
                // transformers' layout: gate_up [x][e][2 ff] (interleaved columns), down [x][ff][e].
                let gate_up = transpose3(&interleave(&gate, &up, x, e), x, 2 * ff, e);
                let down_t = transpose3(&down, x, e, ff);
                let (xu, e64, ff64) = (x as u64, e as u64, ff as u64);
                hf.push((p.clone() + "gate_up_proj", "BF16", vec![xu, e64, 2 * ff64], dtype.bytes(&gate_up)));
                hf.push((p.clone() + "down_proj", "BF16", vec![xu, ff64, e64], dtype.bytes(&down_t)));
            }
        }
        let ((_, gate_b), (_, up_b), (_, down_b)) =
            (take("gate", "bias"), take("up", "bias"), take("down", "bias"));
        let gate_up_b = interleave(&gate_b, &up_b, x, 1);
        hf.push((
            p.clone() + "gate_up_proj_bias",
            st_dtype,
            vec![x as u64, 2 * ff as u64],
            dtype.bytes(&gate_up_b),
        ));
        hf.push((p + "down_proj_bias", st_dtype, vec![x as u64, e as u64], dtype.bytes(&down_b)));
    }
    w.add_metadata("general.file_type", 0u32).unwrap();
    let gguf = dir.join("model.gguf");
    w.write_to(&mut std::fs::File::create(&gguf).unwrap()).unwrap();

    let hf_dir = dir.join("hf");
    std::fs::create_dir_all(&hf_dir).unwrap();
    write_raw_safetensors(&hf_dir.join("model.safetensors"), &hf);
    let yarn = cfg.rope_yarn.as_ref().unwrap();
    let types: Vec<&str> =
        cfg.swa_layers.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect();
    let config = json!({
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": true,
        "hidden_size": cfg.n_embd, "intermediate_size": moe.n_ff_expert,
        "num_attention_heads": cfg.n_head, "num_key_value_heads": cfg.n_head_kv, "head_dim": cfg.head_dim,
        "num_hidden_layers": cfg.n_layer, "vocab_size": cfg.n_vocab, "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_base, "max_position_embeddings": cfg.context_length,
        "num_local_experts": moe.n_expert, "num_experts_per_tok": moe.n_expert_used,
        "sliding_window": cfg.sliding_window, "layer_types": types, "tie_word_embeddings": false,
        "hidden_act": "silu", "swiglu_limit": 7.0,
        "rope_scaling": {"rope_type": "yarn", "factor": 1.0 / cfg.rope_freq_scale, "beta_fast": yarn.beta_fast,
            "beta_slow": yarn.beta_slow, "original_max_position_embeddings": yarn.orig_ctx, "truncate": false},
    });
    std::fs::write(hf_dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    (gguf, hf_dir, cfg)
}

/// Prompt logits as one batch, then each decode token's row, on the CPU.
fn cpu_logits(cfg: &ModelConfig, src: Arc<dyn TensorSource>) -> Vec<f32> {
    let mut stack = CpuStack::new(cfg, src, cfg.n_layer, true, 64, 1).unwrap();
    let mut out = stack.logits(PROMPT, 0, LogitRows::All).unwrap();
    for (pos, &t) in (PROMPT.len() as u32..).zip(DECODE) {
        out.extend(stack.logits(&[t], pos, LogitRows::Last).unwrap());
    }
    out
}

/// gpt-oss from a Hugging Face directory in either form gives the logits of the GGUF with the
/// same values: the MXFP4 form's experts reach the engine as the GGUF's very bytes, the BF16
/// form's as BF16 matrices of the same values. On the CPU always; on the GPU where one exists.
#[test]
fn gptoss_safetensors_match_gguf() {
    let gpu = gpu();
    let mut failures = Vec::new();
    for form in [OssForm::Mxfp4, OssForm::Bf16] {
        let (gguf, hf_dir, gguf_cfg) = make_gptoss_pair(form);
        let st = SafetensorsModel::open(&hf_dir).unwrap_or_else(|e| panic!("{form:?}: {e}"));
        assert!(st.unmapped().is_empty(), "{form:?}: unmapped {:?}", st.unmapped());
        let mut hf_cfg = st.config().clone();
        hf_cfg.name.clone_from(&gguf_cfg.name);
        assert_eq!(hf_cfg, gguf_cfg, "{form:?}: config.json vs GGUF metadata");
        let f = GgufFile::open(&gguf).unwrap();
        for il in 0..gguf_cfg.n_layer {
            let name = format!("blk.{il}.ffn_up_exps.weight");
            let (a, b) = (st.bytes(&name).unwrap(), TensorSource::bytes(&f, &name).unwrap());
            assert_eq!(a.meta.dims, b.meta.dims, "{form:?} {name}");
            if form == OssForm::Mxfp4 {
                assert!(a.bytes == b.bytes, "{name}: the MXFP4 blocks are not the GGUF's");
            } else {
                assert_eq!(a.meta.ggml_type, GgmlType::BF16, "{name}");
            }
        }
        let st: Arc<dyn TensorSource> = Arc::new(st);
        let f: Arc<dyn TensorSource> = Arc::new(f);
        let mut runs = vec![("CPU", cpu_logits(&gguf_cfg, f.clone()), cpu_logits(&hf_cfg, st.clone()))];
        if let Some(gpu) = &gpu {
            runs.push(("GPU", logits(gpu, gguf_cfg.clone(), &*f), logits(gpu, hf_cfg.clone(), &*st)));
        }
        for (device, want, got) in runs {
            let (d, at) = max_abs_diff(&got, &want);
            let v = gguf_cfg.n_vocab as usize;
            let spread = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            eprintln!(
                "gpt-oss {form:?} on the {device}: max |logit(safetensors) - logit(GGUF)| = {d:.3e} (row {}, id {}; max |logit| {spread:.2})",
                at / v,
                at % v
            );
            if d.is_nan() || d > SAME_LOGITS || spread == 0.0 {
                failures.push(format!(
                    "{form:?} on the {device}: max |d| {d:e} at row {} id {}",
                    at / v,
                    at % v
                ));
            }
        }
        let _ = std::fs::remove_dir_all(gguf.parent().unwrap());
    }
    assert!(failures.is_empty(), "logit mismatches:\n{}", failures.join("\n"));
}
