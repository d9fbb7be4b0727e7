//! `wllm plan`: where a model's layers would go and what each device would hold, without
//! loading any weights.

use std::path::PathBuf;

use anyhow::{Context, Result};
use wllm::Model;

use crate::common::DeviceArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file or a Hugging Face safetensors directory.
    pub model: PathBuf,
    /// Context size to plan for (default: the largest the memory plan fits, up to the model's trained context).
    #[arg(long = "ctx", short = 'c')]
    pub ctx: Option<u32>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    let opts = a.device.load_options(a.ctx)?;
    let p = Model::plan(&a.model, &opts).with_context(|| format!("planning {}", a.model.display()))?;
    outln!("{}: {} of {} layers on the GPU", a.model.display(), p.gpu_layers, p.n_layer);
    outln!("{p}");
    Ok(())
}
