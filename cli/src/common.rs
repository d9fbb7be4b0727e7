//! Pieces shared by subcommands: device flags, model loading with a progress bar.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wllm::engine::plan::parse_size;
use wllm::engine::{Backend, GpuLayers};
use wllm::loaders::GgmlType;
use wllm::{LoadOptions, Model, SessionOptions};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// GPU API to use: vulkan, metal, dx12 or gl (default: best available; env WLLM_BACKEND).
    #[arg(long)]
    pub backend: Option<String>,
    /// Layers on the GPU: a number, `all` or `auto` (as many as the memory budget allows). The
    /// GPU takes the last layers and the output head; the first layers run on the CPU.
    /// 0 runs everything on the CPU.
    #[arg(long = "gpu-layers", visible_alias = "ngl", default_value = "auto")]
    pub gpu_layers: String,
    /// CPU threads for layers on the CPU (default: one per core).
    #[arg(long, short = 't', default_value_t = 0)]
    pub threads: usize,
    /// Memory the GPU side may use, e.g. 6GiB (default: env WLLM_GPU_MEMORY, else what the
    /// adapter reports; on integrated GPUs and CPU adapters, the available host memory).
    #[arg(long = "memory-budget")]
    pub memory_budget: Option<String>,
    /// Keep every MoE layer's router and experts on the CPU (attention stays on the GPU).
    #[arg(long = "cpu-moe")]
    pub cpu_moe: bool,
    /// Keep the experts of the first N MoE layers on the CPU.
    #[arg(long = "n-cpu-moe", conflicts_with = "cpu_moe")]
    pub n_cpu_moe: Option<u32>,
    /// Quantize F32/F16/BF16 weight matrices while loading: q8_0 or q4_k.
    #[arg(long, value_parser = parse_quantize)]
    pub quantize: Option<GgmlType>,
}

fn parse_quantize(s: &str) -> std::result::Result<GgmlType, String> {
    match GgmlType::from_name(&s.to_ascii_uppercase()) {
        Some(t @ (GgmlType::Q8_0 | GgmlType::Q4_K)) => Ok(t),
        _ => Err(format!("{s:?}: quantize on load supports q8_0 and q4_k")),
    }
}

impl DeviceArgs {
    pub fn backend(&self) -> Result<Option<Backend>> {
        self.backend.as_deref().map(Backend::parse).transpose().map_err(Into::into)
    }

    pub fn load_options(&self, n_ctx: Option<u32>) -> Result<LoadOptions> {
        Ok(LoadOptions {
            backend: self.backend()?,
            gpu_layers: self.gpu_layers.parse::<GpuLayers>()?,
            threads: self.threads,
            memory_budget: self.memory_budget.as_deref().map(parse_size).transpose()?,
            n_ctx,
            n_cpu_moe: if self.cpu_moe { u32::MAX } else { self.n_cpu_moe.unwrap_or(0) },
            quantize: self.quantize,
            ..Default::default()
        })
    }
}

/// What `run` and `chat` share about the conversation's context.
#[derive(clap::Args, Debug, Clone)]
pub struct ContextArgs {
    /// Jinja chat template (or tokenizer_config.json) to use instead of the model's.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    /// Context size (default: the model's, capped at 4096).
    #[arg(long = "ctx", short = 'c')]
    pub ctx: Option<u32>,
    /// Prompt tokens processed per step.
    #[arg(long = "batch-size", short = 'b', default_value_t = 256)]
    pub batch: u32,
}

impl ContextArgs {
    /// Loads `path` with the memory plan made for this context, then opens a session on it.
    pub fn load(&self, path: &Path, dev: &DeviceArgs) -> Result<(Model, SessionOptions)> {
        let model = load_model(path, dev, self.chat_template.as_deref(), self.ctx)?;
        Ok((model, SessionOptions { n_ctx: self.ctx, n_batch: self.batch }))
    }
}

/// Loads a model, drawing a progress bar when stderr is a terminal. `n_ctx` is the context the
/// memory plan is made for (`None`: the model's, capped at 4096).
pub fn load_model(
    path: &Path,
    dev: &DeviceArgs,
    chat_template: Option<&Path>,
    n_ctx: Option<u32>,
) -> Result<Model> {
    let opts = LoadOptions {
        chat_template: chat_template.map(Path::to_path_buf),
        warm_up: true,
        ..dev.load_options(n_ctx)?
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("loading {bar:40} {binary_bytes}/{binary_total_bytes}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut progress = |done: u64, total: u64| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    };
    let model = Model::load_with(path, &opts, &mut progress)
        .with_context(|| format!("loading {}", path.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(model)
}

/// Comma-separated token ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse::<u32>().with_context(|| format!("bad token id {p:?} in --prompt-tokens")))
        .collect()
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.2} {}", units[u]) }
}
