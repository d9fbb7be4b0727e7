//! Pieces shared by subcommands: device flags, model loading with a progress bar.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wllm::engine::plan::parse_size;
use wllm::engine::{Backend, CacheRequest, GpuLayers, KvType};
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
    /// CPU threads for layers on the CPU (default: one per core; more than the cores is capped
    /// to the cores).
    #[arg(long, short = 't', default_value_t = 0, allow_negative_numbers = true, value_parser = whole_in::<usize>(0, 1 << 16))]
    pub threads: usize,
    /// Memory the GPU side may use, e.g. 6GiB (default: env WLLM_GPU_MEMORY, else what the
    /// adapter reports; on integrated GPUs and CPU adapters, the available host memory).
    #[arg(long = "memory-budget")]
    pub memory_budget: Option<String>,
    /// Keep every MoE layer's router and experts on the CPU (attention stays on the GPU).
    #[arg(long = "cpu-moe")]
    pub cpu_moe: bool,
    /// Keep the experts of the first N MoE layers on the CPU.
    #[arg(long = "n-cpu-moe", conflicts_with = "cpu_moe", allow_negative_numbers = true, value_parser = whole_in::<u32>(0, u32::MAX as u64))]
    pub n_cpu_moe: Option<u32>,
    /// Quantize F32/F16/BF16 weight matrices while loading: q8_0 or q4_k.
    #[arg(long, value_parser = parse_quantize)]
    pub quantize: Option<GgmlType>,
    /// KV cache type of K: f16 (default), q8_0 or q4_0 (or f32, exact at twice f16's memory).
    #[arg(long = "cache-type-k", visible_alias = "ctk", value_parser = parse_kv_type)]
    pub cache_type_k: Option<KvType>,
    /// KV cache type of V: f16, q8_0 or q4_0 (or f32). Default as for K.
    #[arg(long = "cache-type-v", visible_alias = "ctv", value_parser = parse_kv_type)]
    pub cache_type_v: Option<KvType>,
    /// Let the CPU read its layers' weights from the memory-mapped file instead of copying
    /// them into huge-page memory at load (faster load, pages shared with other processes
    /// mapping the file, slower CPU decode).
    #[arg(long)]
    pub mmap: bool,
}

fn parse_kv_type(s: &str) -> std::result::Result<KvType, String> {
    KvType::parse(s).map_err(|e| e.to_string())
}

fn parse_quantize(s: &str) -> std::result::Result<GgmlType, String> {
    match GgmlType::from_name(&s.to_ascii_uppercase()) {
        Some(t @ (GgmlType::Q8_0 | GgmlType::Q4_K)) => Ok(t),
        _ => Err(format!("{s:?}: quantize on load supports q8_0 and q4_k")),
    }
}

impl DeviceArgs {
    pub fn backend(&self) -> Result<Option<Backend>> {
        self.backend.as_deref().map(Backend::parse).transpose().context("--backend")
    }

    pub fn load_options(&self, n_ctx: Option<u32>) -> Result<LoadOptions> {
        Ok(LoadOptions {
            backend: self.backend()?,
            gpu_layers: self.gpu_layers.parse::<GpuLayers>().context("--gpu-layers")?,
            threads: self.threads,
            memory_budget: self
                .memory_budget
                .as_deref()
                .map(parse_size)
                .transpose()
                .context("--memory-budget")?,
            n_ctx,
            n_cpu_moe: if self.cpu_moe { u32::MAX } else { self.n_cpu_moe.unwrap_or(0) },
            quantize: self.quantize,
            cache: CacheRequest { k: self.cache_type_k, v: self.cache_type_v },
            map_cpu_weights: self.mmap,
            ..Default::default()
        })
    }
}

/// What `run` and `chat` share about the conversation's context.
#[derive(clap::Args, Debug, Clone)]
pub struct ContextArgs {
    /// Chat template to use instead of the model's: a file (Jinja, or a tokenizer_config.json),
    /// or the Jinja text itself (anything with `{{` or `{%` that is not a file's name).
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Context size in tokens, at least 1 (default: the largest the memory plan fits, up to the model's trained context).
    #[arg(long = "ctx", short = 'c', allow_negative_numbers = true, value_parser = whole_in::<u32>(1, u32::MAX as u64))]
    pub ctx: Option<u32>,
    /// Prompt tokens processed per step.
    #[arg(long = "batch-size", visible_alias = "batch", short = 'b', default_value_t = 256, allow_negative_numbers = true, value_parser = whole_in::<u32>(1, wllm::MAX_BATCH as u64))]
    pub batch: u32,
}

/// A `--chat-template` value: the file it names, or the template it is.
pub enum TemplateArg {
    File(PathBuf),
    Inline(String),
}

impl TemplateArg {
    pub fn parse(s: &str) -> Result<TemplateArg> {
        let p = Path::new(s);
        if p.exists() {
            if !p.is_file() {
                anyhow::bail!("--chat-template {}: is not a regular file", p.display());
            }
            return Ok(TemplateArg::File(p.to_path_buf()));
        }
        if s.contains("{{") || s.contains("{%") {
            return Ok(TemplateArg::Inline(s.to_string()));
        }
        anyhow::bail!("--chat-template {s:?}: no such file, and not a Jinja template either (no {{{{ or {{%)")
    }

    /// Sets the load options' template and says on stderr which one is used.
    fn apply(&self, opts: &mut LoadOptions) {
        match self {
            TemplateArg::File(p) => {
                eprintln!("chat template: from the file {}", p.display());
                opts.chat_template = Some(p.clone());
            }
            TemplateArg::Inline(src) => {
                eprintln!("chat template: the inline text given to --chat-template ({} bytes)", src.len());
                opts.chat_template_source = Some(src.clone());
            }
        }
    }
}

/// A clap value parser for a whole-number flag from `lo` to `hi`, whose refusals say the range
/// (clap's own message names the flag).
pub fn whole_in<T>(
    lo: u64,
    hi: u64,
) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync + 'static
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    move |s: &str| {
        let range = if hi == u64::MAX || hi == u32::MAX as u64 {
            format!("a whole number, {lo} or more")
        } else {
            format!("a whole number from {lo} to {hi}")
        };
        let v: u64 = s.trim().parse().map_err(|_| format!("expected {range}"))?;
        if v < lo || v > hi {
            return Err(format!("{v} is out of range: expected {range}"));
        }
        T::try_from(v).map_err(|_| format!("expected {range}"))
    }
}

/// A clap value parser for a finite number from `lo` to `hi` (either may be infinite: no bound).
pub fn number_in(
    lo: f32,
    hi: f32,
) -> impl Fn(&str) -> std::result::Result<f32, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let range = match (lo.is_finite(), hi.is_finite()) {
            (true, true) => format!("a number from {lo} to {hi}"),
            (true, false) => format!("a number, {lo} or more"),
            (false, true) => format!("a number, at most {hi}"),
            (false, false) => "a finite number".to_string(),
        };
        let v: f32 = s.trim().parse().map_err(|_| format!("expected {range}"))?;
        if !v.is_finite() || v < lo || v > hi {
            return Err(format!("{v} is out of range: expected {range}"));
        }
        Ok(v)
    }
}

/// Opens an output file (`--dump-logits`, `--trace`) before any work, so a bad path fails at
/// once rather than after the run.
pub fn open_output(flag: &str, path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).with_context(|| format!("{flag} {}: cannot write there", path.display()))
}

impl ContextArgs {
    /// Loads `path` with the memory plan made for this context, then opens a session on it.
    pub fn load(&self, path: &Path, dev: &DeviceArgs) -> Result<(Model, SessionOptions)> {
        let template = self.chat_template.as_deref().map(TemplateArg::parse).transpose()?;
        let model = load_model(path, dev, template.as_ref(), self.ctx)?;
        Ok((model, SessionOptions { n_ctx: self.ctx, n_batch: self.batch }))
    }
}

/// Loads a model, drawing a progress bar when stderr is a terminal. `n_ctx` is the context the
/// memory plan is made for (`None`: the largest that fits, up to the model's trained context).
pub fn load_model(
    path: &Path,
    dev: &DeviceArgs,
    chat_template: Option<&TemplateArg>,
    n_ctx: Option<u32>,
) -> Result<Model> {
    load_model_for(path, dev, chat_template, n_ctx, 1)
}

/// As [`load_model`], with the memory plan made for `n_seq` sequences of `n_ctx` positions
/// (`wllm serve --parallel`).
pub fn load_model_for(
    path: &Path,
    dev: &DeviceArgs,
    chat_template: Option<&TemplateArg>,
    n_ctx: Option<u32>,
    n_seq: u32,
) -> Result<Model> {
    let mut opts = LoadOptions { n_seq, ..dev.load_options(n_ctx)? };
    if let Some(t) = chat_template {
        t.apply(&mut opts);
    }
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
