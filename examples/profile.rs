//! Per-kernel GPU timings through the library (what `wllm profile` prints, in brief).
//!
//! `cargo run --release --example profile -- MODEL.gguf [PROMPT]`
use std::collections::HashMap;

use anyhow::Context;
use wllm::engine::profile::{Phase, copy_bandwidth};
use wllm::{GenerateOptions, Model, SamplerConfig, SessionOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = Model::load(args.next().context("usage: profile MODEL [PROMPT]")?)?;
    let prompt = model.tokenize(&args.next().unwrap_or_else(|| "The capital of France is".into()));
    let gpu = model.gpu().context("every layer runs on the CPU: no GPU to profile")?;
    let copy_gbs = copy_bandwidth(&gpu)?;

    let mut session = model.session(&SessionOptions { n_ctx: Some(256), ..Default::default() })?;
    session.enable_profiling();
    let opts = GenerateOptions { max_tokens: 8, sampling: SamplerConfig::greedy(), ..Default::default() };
    for chunk in session.generate(&prompt, opts)? {
        chunk?;
    }
    let profiler = session.profiler().context("profiling is on")?;
    println!("{}; copy bandwidth {copy_gbs:.1} GB/s", profiler.mode().describe());
    for phase in [Phase::Prefill, Phase::Decode] {
        // kernel -> (calls, ns, bytes)
        let mut by: HashMap<&str, (u32, f64, u64)> = HashMap::new();
        for e in profiler.events.iter().filter(|e| e.phase == phase) {
            let s = by.entry(&e.label).or_default();
            *s = (s.0 + 1, s.1 + e.dur_ns, s.2 + e.bytes);
        }
        let mut rows: Vec<_> = by.into_iter().collect();
        rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
        println!("\n{phase:?}: top kernels by GPU time");
        for (label, (calls, ns, bytes)) in rows.iter().take(8) {
            println!(
                "{:>10.0} µs {calls:>5} calls {:>8.2} GB/s  {label}",
                ns / 1e3,
                *bytes as f64 / ns.max(1.0)
            );
        }
    }
    Ok(())
}
