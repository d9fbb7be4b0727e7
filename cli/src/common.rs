//! Pieces shared by subcommands: device flags, model loading with a progress bar.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use wllm::engine::Backend;
use wllm::loaders::GgmlType;
use wllm::{LoadOptions, Model};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// GPU API to use: vulkan, metal, dx12 or gl (default: best available; env WLLM_BACKEND).
    #[arg(long)]
    pub backend: Option<String>,
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
}

/// Loads a model, drawing a progress bar when stderr is a terminal.
pub fn load_model(path: &Path, dev: &DeviceArgs, chat_template: Option<&Path>) -> Result<Model> {
    let opts = LoadOptions {
        backend: dev.backend()?,
        chat_template: chat_template.map(Path::to_path_buf),
        warm_up: true,
        quantize: dev.quantize,
        ..Default::default()
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
