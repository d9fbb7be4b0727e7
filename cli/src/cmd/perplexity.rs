//! `wllm perplexity`: the perplexity of a text file, measured as llama.cpp's
//! `llama-perplexity` measures it, so that the two figures can be compared.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use wllm::SessionOptions;

use crate::common::{DeviceArgs, load_model, whole_in};

#[derive(clap::Args)]
pub struct Args {
    pub model: PathBuf,
    /// The text to measure (UTF-8).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Tokens per chunk, at least 2: the first half of each chunk is context, the second half
    /// is scored.
    #[arg(long = "ctx", short = 'c', default_value_t = 512, allow_negative_numbers = true, value_parser = whole_in::<u32>(2, u32::MAX as u64))]
    pub ctx: u32,
    /// Most chunks to measure (default: every whole chunk of the text).
    #[arg(long, allow_negative_numbers = true, value_parser = whole_in::<usize>(1, usize::MAX as u64))]
    pub chunks: Option<usize>,
    /// Tokens processed per step.
    #[arg(long = "batch-size", short = 'b', default_value_t = 256, allow_negative_numbers = true, value_parser = whole_in::<u32>(1, wllm::MAX_BATCH as u64))]
    pub batch: u32,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object instead of llama-perplexity's lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut text =
        std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    // llama-perplexity's `-f` drops one trailing newline; so do we, so both score the same tokens.
    if text.ends_with('\n') {
        text.pop();
    }
    let model = load_model(&a.model, &a.device, None, Some(a.ctx))?;
    let mut session = model.session(&SessionOptions { n_ctx: Some(a.ctx), n_batch: a.batch })?;
    let tokens = model.tokenize(&text);
    let start = Instant::now();
    let p = session.perplexity(&tokens, a.ctx as usize, a.chunks)?;
    let secs = start.elapsed().as_secs_f64();
    let evaluated = p.chunk_ppl.len() * p.n_ctx;
    if a.json {
        outln!(
            "{}",
            json!({
                "ppl": p.ppl,
                "ppl_stderr": p.ppl_stderr,
                "chunks": p.chunk_ppl.len(),
                "n_ctx": p.n_ctx,
                "text_tokens": tokens.len(),
                "scored_tokens": p.n_scored,
                "chunk_ppl": p.chunk_ppl,
                "backend": session.backend_name(),
                "seconds": secs,
                "tokens_per_second": evaluated as f64 / secs,
            })
        );
        return Ok(());
    }
    eprintln!(
        "{} tokens; {} chunks of {} on {}, {:.1} s ({:.0} tokens/s)",
        tokens.len(),
        p.chunk_ppl.len(),
        p.n_ctx,
        session.backend_name(),
        secs,
        evaluated as f64 / secs
    );
    let running: Vec<String> =
        p.chunk_ppl.iter().enumerate().map(|(i, x)| format!("[{}]{x:.4}", i + 1)).collect();
    outln!("{},", running.join(","));
    outln!("Final estimate: PPL = {:.4} +/- {:.5}", p.ppl, p.ppl_stderr);
    Ok(())
}
