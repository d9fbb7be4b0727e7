//! `wllm bench`: prompt processing and generation speed, printed like llama-bench.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::json;
use wllm::{Logits, SessionOptions};

use crate::common::{DeviceArgs, human_bytes, load_model, whole_in};

/// The most prompt or generated tokens a bench asks for: the context both need is sized from
/// them (their sum cannot overflow) and refused by the memory plan before anything is allocated
/// when it does not fit.
const MAX_TOKENS: u32 = 1 << 20;

#[derive(clap::Args)]
pub struct Args {
    pub model: PathBuf,
    /// Prompt tokens, at most 1048576 (0 skips the prompt test).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128, allow_negative_numbers = true, value_parser = whole_in::<u32>(0, MAX_TOKENS as u64))]
    pub n_prompt: u32,
    /// Generated tokens, at most 1048576 (0 skips the generation test).
    #[arg(short = 'n', long = "n-gen", default_value_t = 64, allow_negative_numbers = true, value_parser = whole_in::<u32>(0, MAX_TOKENS as u64))]
    pub n_gen: u32,
    /// Repetitions, 1 to 1000; the median is reported.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5, allow_negative_numbers = true, value_parser = whole_in::<usize>(1, 1000))]
    pub reps: usize,
    /// Prompt tokens processed per step.
    #[arg(long = "batch-size", short = 'b', default_value_t = 256, allow_negative_numbers = true, value_parser = whole_in::<u32>(1, wllm::MAX_BATCH as u64))]
    pub batch: u32,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print one JSON object (as the last line) with pp_tps and tg_tps.
    #[arg(long)]
    pub json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Deterministic stand-in tokens spread over the vocabulary (llama-bench uses random ids).
fn tokens(n: u32, n_vocab: u32, seed: u32) -> Vec<u32> {
    let mut s = 0x9E37_79B9u32 ^ seed;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s % n_vocab
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let Some(n_ctx) = a.n_prompt.checked_add(a.n_gen).and_then(|n| n.checked_add(8)) else {
        bail!("-p {} and -n {} together are too many tokens", a.n_prompt, a.n_gen);
    };
    let n_ctx = n_ctx.max(64);
    let model = match load_model(&a.model, &a.device, None, Some(n_ctx)) {
        Ok(m) => m,
        // The plan's advice names --ctx, which bench sizes from -p and -n.
        Err(e) => match e.downcast_ref::<wllm::Error>() {
            Some(wllm::Error::OverBudget { plan, .. }) => bail!(
                "-p {} and -n {} need a context of {n_ctx} tokens, which does not fit: try a smaller -p or -n\n{plan}",
                a.n_prompt,
                a.n_gen
            ),
            _ => return Err(e),
        },
    };
    let n_vocab = model.config().n_vocab;
    let mut session = model.session(&SessionOptions { n_ctx: Some(n_ctx), n_batch: a.batch })?;
    // Warm-up builds every pipeline and touches every buffer once.
    session.eval(&tokens(a.n_prompt.clamp(2, 16), n_vocab, 0), Logits::None)?;
    session.eval_greedy(&[1])?;
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for r in 0..a.reps.max(1) {
        if a.n_prompt > 0 {
            session.clear();
            let t = tokens(a.n_prompt, n_vocab, r as u32 + 1);
            let start = Instant::now();
            session.eval_greedy(&t)?;
            pp.push(a.n_prompt as f64 / start.elapsed().as_secs_f64());
        }
        if a.n_gen > 0 {
            session.clear();
            let mut tok = tokens(1, n_vocab, 100 + r as u32)[0];
            let start = Instant::now();
            for _ in 0..a.n_gen {
                tok = session.eval_greedy(&[tok])?;
            }
            tg.push(a.n_gen as f64 / start.elapsed().as_secs_f64());
        }
    }
    let (pp_tps, tg_tps) = (median(pp), median(tg));
    let info = model.info();
    let backend = session.backend_name();
    let name = info.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    outln!("| model | size | backend | adapter | test | t/s |");
    outln!("| --- | ---: | --- | --- | ---: | ---: |");
    if a.n_prompt > 0 {
        outln!(
            "| {name} | {} | {backend} | {} | pp{} | {pp_tps:.2} |",
            human_bytes(info.weight_bytes),
            info.adapter,
            a.n_prompt
        );
    }
    if a.n_gen > 0 {
        outln!(
            "| {name} | {} | {backend} | {} | tg{} | {tg_tps:.2} |",
            human_bytes(info.weight_bytes),
            info.adapter,
            a.n_gen
        );
    }
    if a.json {
        outln!(
            "{}",
            json!({"model": name, "backend": backend, "adapter": info.adapter, "n_prompt": a.n_prompt, "n_gen": a.n_gen,
                   "gpu_layers": info.plan.gpu_layers, "cpu_layers": info.plan.cpu_layers(), "threads": info.threads,
                   "repetitions": a.reps, "pp_tps": pp_tps, "tg_tps": tg_tps})
        );
    }
    Ok(())
}
