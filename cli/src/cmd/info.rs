//! `wllm info`: what is in a model file, and whether wllm can run it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use wllm::loaders::gguf::Value as GgufValue;
use wllm::loaders::model::TensorMeta;
use wllm::loaders::{GgmlType, GgufFile, ModelConfig, SafetensorsModel};

use crate::common::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file, or a Hugging Face directory with config.json and *.safetensors.
    pub model: PathBuf,
    /// Print one JSON object (as the last line) instead of text.
    #[arg(long)]
    pub json: bool,
}

struct Summary {
    format: String,
    file_size: u64,
    tensors: Vec<TensorMeta>,
    config: std::result::Result<ModelConfig, String>,
    arch_name: Option<String>,
    metadata: BTreeMap<String, String>,
}

pub fn run(a: Args) -> Result<()> {
    let s = if a.model.is_dir() || a.model.extension().is_some_and(|e| e == "safetensors") {
        safetensors(&a)?
    } else {
        gguf(&a)?
    };
    let params: u64 = s.tensors.iter().map(|t| t.n_elements()).sum();
    let mut hist: BTreeMap<GgmlType, (usize, u64)> = BTreeMap::new();
    for t in &s.tensors {
        let e = hist.entry(t.ggml_type).or_default();
        e.0 += 1;
        e.1 += t.n_bytes();
    }
    let cfg = s.config.as_ref().ok();
    if a.json {
        let mut o = json!({
            "path": a.model.display().to_string(),
            "format": s.format,
            "architecture": cfg.map(|c| c.arch.name().to_string()).or(s.arch_name.clone()),
            "supported": cfg.is_some(),
            "tensor_count": s.tensors.len(),
            "parameters": params,
            "file_size": s.file_size,
            "quant_types": hist.iter().map(|(t, (n, b))| (t.name().to_string(), json!({"tensors": n, "bytes": b}))).collect::<serde_json::Map<_, _>>(),
            "metadata": s.metadata,
        });
        match &s.config {
            Ok(c) => {
                o["name"] = json!(c.name);
                o["context_length"] = json!(c.context_length);
                o["layers"] = json!(c.n_layer);
                o["embedding_length"] = json!(c.n_embd);
                o["heads"] = json!(c.n_head);
                o["kv_heads"] = json!(c.n_head_kv);
                o["head_dim"] = json!(c.head_dim);
                o["feed_forward_length"] = json!(c.n_ff);
                o["vocab_size"] = json!(c.n_vocab);
                if let Some(m) = &c.moe {
                    o["experts"] = json!(m.n_expert);
                    o["experts_used"] = json!(m.n_expert_used);
                }
            }
            Err(e) => o["unsupported_reason"] = json!(e),
        }
        outln!("{}", serde_json::to_string(&o)?);
        return Ok(());
    }
    outln!("model        {}", a.model.display());
    outln!("format       {}", s.format);
    match &s.config {
        Ok(c) => {
            outln!("architecture {}", c.arch.name());
            if let Some(n) = &c.name {
                outln!("name         {n}");
            }
            outln!("parameters   {} ({params})", human_count(params));
            outln!("context      {}", c.context_length);
            outln!("layers       {}", c.n_layer);
            outln!("embedding    {}", c.n_embd);
            outln!("heads        {} (kv {}, head size {})", c.n_head, c.n_head_kv, c.head_dim);
            if let Some(m) = &c.moe {
                outln!(
                    "experts      {} ({} used per token, ffn {})",
                    m.n_expert,
                    m.n_expert_used,
                    m.n_ff_expert
                );
            } else {
                outln!("ffn          {}", c.n_ff);
            }
            outln!("vocab        {}", c.n_vocab);
        }
        Err(e) => {
            outln!("architecture {} (cannot run: {e})", s.arch_name.as_deref().unwrap_or("?"));
            outln!("parameters   {} ({params})", human_count(params));
        }
    }
    outln!("file size    {}", human_bytes(s.file_size));
    outln!("tensors      {}", s.tensors.len());
    outln!("quant types");
    for (t, (n, b)) in &hist {
        outln!("  {:<8} {n:>5} tensors {:>12}", t.name(), human_bytes(*b));
    }
    outln!("metadata");
    for (k, v) in &s.metadata {
        outln!("  {k} = {v}");
    }
    Ok(())
}

fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n => format!("{:.1}K", n as f64 / 1e3),
    }
}

fn gguf(a: &Args) -> Result<Summary> {
    let f = GgufFile::open(&a.model)?;
    let mut metadata = BTreeMap::new();
    for key in f.keys() {
        let Some(v) = f.value(key) else { continue };
        let shown = match v {
            GgufValue::Scalar(s) => s.to_string(),
            GgufValue::String(b) => {
                let s = String::from_utf8_lossy(b);
                let one_line: String = s.chars().take(80).map(|c| if c == '\n' { ' ' } else { c }).collect();
                if s.chars().count() > 80 { format!("{one_line}…") } else { one_line }
            }
            GgufValue::Array(arr) => format!("[{} x {}]", arr.len(), arr.elem_type().name()),
        };
        metadata.insert(key.to_string(), shown);
    }
    metadata.insert("GGUF.version".into(), f.version().to_string());
    Ok(Summary {
        format: format!("GGUF v{}", f.version()),
        file_size: f.file_len(),
        tensors: f
            .tensors()
            .iter()
            .map(|t| TensorMeta { name: t.name.clone(), ggml_type: t.ggml_type, dims: t.dims.clone() })
            .collect(),
        config: ModelConfig::from_gguf(&f).map_err(|e| e.to_string()),
        arch_name: f.opt_str("general.architecture").ok().flatten().map(str::to_string),
        metadata,
    })
}

fn safetensors(a: &Args) -> Result<Summary> {
    let m = SafetensorsModel::open(&a.model)?;
    let file_size = m.files().shard_paths().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let mut metadata = BTreeMap::new();
    if let Value::Object(o) = m.hf_config() {
        for (k, v) in o {
            if !v.is_object() && !v.is_array() {
                metadata.insert(k.clone(), v.to_string());
            }
        }
    }
    let summary: Result<Summary> = Ok(Summary {
        format: "safetensors".into(),
        file_size,
        tensors: m.tensor_metas().into_iter().cloned().collect(),
        config: Ok(m.config().clone()),
        arch_name: None,
        metadata,
    });
    summary.context("reading safetensors model")
}
