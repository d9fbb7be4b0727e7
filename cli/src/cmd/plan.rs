//! `wllm plan`: where a model's layers would go and what each device would hold, without
//! loading any weights.

use std::path::PathBuf;

use anyhow::{Context, Result};
use wllm::engine::plan::{GpuFacts, HostFacts, PlanRequest, plan};
use wllm::engine::{DeviceOptions, Gpu, GpuLayers};
use wllm::loaders::model::ModelWeights;
use wllm::loaders::{GgufFile, ModelConfig, SafetensorsModel};

use crate::common::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file or a Hugging Face safetensors directory.
    pub model: PathBuf,
    /// Context size to plan for (default: the model's, capped at 4096).
    #[arg(long = "ctx", short = 'c')]
    pub ctx: Option<u32>,
    #[arg(long = "batch-size", short = 'b', default_value_t = 256)]
    pub batch: u32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    let opts = a.device.load_options(a.ctx)?;
    let (cfg, weights) = if a.model.is_file() && a.model.extension().is_none_or(|e| e != "safetensors") {
        let f = GgufFile::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
        let cfg = ModelConfig::from_gguf(&f)?;
        let w = ModelWeights::resolve(&cfg, &f)?;
        (cfg, w)
    } else {
        let m = SafetensorsModel::open(&a.model).with_context(|| format!("opening {}", a.model.display()))?;
        let cfg = m.config().clone();
        let w = ModelWeights::resolve(&cfg, &m)?;
        (cfg, w)
    };
    let gpu = match opts.gpu_layers {
        GpuLayers::Count(0) => None,
        want => match Gpu::new(&DeviceOptions { backend: opts.backend, ..Default::default() }) {
            Ok(g) => Some(g),
            Err(wllm::engine::EngineError::NoAdapter(_)) if want == GpuLayers::Auto => None,
            Err(e) => return Err(e.into()),
        },
    };
    let budget = match opts.memory_budget {
        Some(b) => Some(b),
        None => match std::env::var("WLLM_GPU_MEMORY") {
            Ok(s) if !s.trim().is_empty() => Some(wllm::engine::plan::parse_size(&s)?),
            _ => None,
        },
    };
    let host = HostFacts::probe();
    let facts = gpu.as_ref().map(|g| GpuFacts::of(g, budget, &host));
    let n_ctx = opts.n_ctx.unwrap_or_else(|| cfg.context_length.min(4096)).max(1);
    let req = PlanRequest {
        gpu_layers: opts.gpu_layers,
        n_ctx,
        n_batch: a.batch,
        cpu_batch: a.batch,
        cpu_moe_below: opts.n_cpu_moe,
    };
    let p = plan(&cfg, &weights, &req, facts.as_ref(), &host)?;
    println!("{}: {} ({} layers)", a.model.display(), cfg.arch.name(), cfg.n_layer);
    println!("{p}");
    Ok(())
}
