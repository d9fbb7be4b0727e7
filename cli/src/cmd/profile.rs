//! `wllm profile`: where the GPU time goes, per kernel, for prefill and decode.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wllm::engine::profile::{KernelEvent, Phase, copy_bandwidth};
use wllm::{GenerateOptions, SamplerConfig, SessionOptions};

use crate::common::{DeviceArgs, load_model};

#[derive(clap::Args)]
pub struct Args {
    pub model: PathBuf,
    #[arg(short, long)]
    pub prompt: String,
    /// Tokens to generate (decode steps profiled).
    #[arg(short = 'n', long = "n-predict", default_value_t = 16)]
    pub n: usize,
    /// Write a Chrome trace-event JSON file (open in Perfetto or chrome://tracing).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    #[arg(long = "batch-size", short = 'b', default_value_t = 256)]
    pub batch: u32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    let model = load_model(&a.model, &a.device, None, None)?;
    let prompt = model.tokenize(&a.prompt);
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    let mut session = model
        .session(&SessionOptions { n_ctx: Some(prompt.len() as u32 + a.n as u32 + 8), n_batch: a.batch })?;
    session.enable_profiling();
    let opts = GenerateOptions { max_tokens: a.n, sampling: SamplerConfig::greedy(), ..Default::default() };
    let mut text = String::new();
    for chunk in session.generate(&prompt, opts)? {
        text.push_str(&chunk?.text);
    }
    if let Some(p) = session.cpu_profile() {
        cpu_table(p, model.info().plan.cpu_layers());
    }
    let Some(gpu) = model.gpu() else {
        return Ok(());
    };
    let copy_gbs = copy_bandwidth(&gpu)?;
    let profiler = session.profiler().context("profiling was not enabled")?;
    println!("adapter: {} ({}), {}", gpu.adapter_name(), gpu.backend(), profiler.mode().describe());
    println!("device copy bandwidth: {copy_gbs:.2} GB/s");
    println!("prompt: {} tokens; generated {} tokens: {text:?}", prompt.len(), a.n);
    for (phase, name) in [(Phase::Prefill, "prefill"), (Phase::Decode, "decode")] {
        let events: Vec<&KernelEvent> = profiler.events.iter().filter(|e| e.phase == phase).collect();
        if events.is_empty() {
            continue;
        }
        table(name, &events, copy_gbs);
    }
    if let Some(path) = &a.trace {
        std::fs::write(path, profiler.chrome_trace())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("trace written to {}", path.display());
    }
    Ok(())
}

fn table(name: &str, events: &[&KernelEvent], copy_gbs: f64) {
    let steps = events.iter().map(|e| e.step).collect::<std::collections::HashSet<_>>().len().max(1);
    let total: f64 = events.iter().map(|e| e.dur_ns).sum();
    let mut by: HashMap<&str, (usize, f64, u64)> = HashMap::new();
    for e in events {
        let s = by.entry(&e.label).or_default();
        s.0 += 1;
        s.1 += e.dur_ns;
        s.2 += e.bytes;
    }
    let mut rows: Vec<_> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    println!();
    println!(
        "{name}: {steps} step(s), {:.2} ms of GPU time per step, {} dispatches per step",
        total / 1e6 / steps as f64,
        events.len() / steps
    );
    println!("| kernel | calls | total µs | mean µs | share | MB moved | GB/s | of copy |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, (calls, ns, bytes)) in rows {
        let gbs = if ns > 0.0 { bytes as f64 / ns } else { 0.0 };
        let (mb, gb, ratio) = if bytes > 0 {
            (
                format!("{:.2}", bytes as f64 / 1e6),
                format!("{gbs:.2}"),
                format!("{:.0}%", 100.0 * gbs / copy_gbs),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        println!(
            "| {label} | {calls} | {:.0} | {:.1} | {:.1}% | {mb} | {gb} | {ratio} |",
            ns / 1e3,
            ns / 1e3 / calls as f64,
            100.0 * ns / total
        );
    }
}

/// Wall-clock time of the CPU layers per op kind (prefill and decode together).
fn cpu_table(p: &wllm::engine::cpu::Profile, layers: u32) {
    let total = p.total().as_secs_f64().max(1e-12);
    println!("CPU ({layers} layers): {:.2} ms in all", total * 1e3);
    println!("| op | total ms | share |");
    println!("| --- | ---: | ---: |");
    let rows = [
        ("embedding", p.embed),
        ("norms", p.norms),
        ("q/k/v projections", p.qkv),
        ("rope", p.rope),
        ("attention", p.attention),
        ("attention output", p.attn_out),
        ("ffn gate/up", p.ffn_in),
        ("glu", p.glu),
        ("ffn down", p.ffn_out),
        ("head", p.head),
    ];
    for (name, d) in rows {
        let s = d.as_secs_f64();
        println!("| {name} | {:.2} | {:.1}% |", s * 1e3, 100.0 * s / total);
    }
}
