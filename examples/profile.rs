//! Per-kernel GPU timings through the library (what `wllm profile` prints, in brief).
//!
//! `cargo run --release --example profile -- MODEL.gguf [PROMPT]`
use anyhow::Context;
use wllm::engine::profile::copy_bandwidth;
use wllm::{GenerateOptions, Logits, Model, ProfileSummary, SamplerConfig, SessionOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = Model::load(args.next().context("usage: profile MODEL [PROMPT]")?)?;
    let prompt = model.tokenize(&args.next().unwrap_or_else(|| "The capital of France is".into()));
    let gpu = model.gpu().context("every layer runs on the CPU: no GPU to profile")?;
    let copy_gbs = copy_bandwidth(&gpu)?;

    let mut session = model.session(&SessionOptions { n_ctx: Some(256), ..Default::default() })?;
    // Steps block while profiling is on.
    session.enable_profiling();
    session.eval(&prompt, Logits::None)?;
    let prefill = session.take_profile().context("profiling is on")?;
    let opts = GenerateOptions { max_tokens: 8, sampling: SamplerConfig::greedy(), ..Default::default() };
    for chunk in session.generate(&model.tokenize(" and"), opts)? {
        chunk?;
    }
    let decode = session.take_profile().context("profiling is on")?;
    session.disable_profiling();
    println!("{}; copy bandwidth {copy_gbs:.1} GB/s", decode.mode.describe());
    print_top("prefill", &prefill);
    print_top("decode", &decode);
    Ok(())
}

fn print_top(name: &str, summary: &ProfileSummary) {
    println!("\n{name}: top kernels by GPU time over {} steps", summary.steps);
    for k in summary.kernels.iter().take(8) {
        let ns = k.total.as_nanos().max(1) as f64;
        println!(
            "{:>10.0} µs {:>5} calls {:>8.1} µs/call {:>8.2} GB/s  {}",
            ns / 1e3,
            k.count,
            k.mean().as_nanos() as f64 / 1e3,
            k.bytes as f64 / ns,
            k.label
        );
    }
}
