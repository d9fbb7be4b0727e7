//! `wllm profile`: where the GPU time goes, per kernel, for prefill and decode.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use wllm::engine::profile::{KernelEvent, Phase, copy_bandwidth};
use wllm::{GenerateOptions, SamplerConfig, SessionOptions};

use crate::common::{DeviceArgs, load_model, open_output, whole_in};

#[derive(clap::Args)]
pub struct Args {
    pub model: PathBuf,
    #[arg(short, long)]
    pub prompt: String,
    /// Tokens to generate (decode steps profiled), at most 1048576.
    #[arg(short = 'n', long = "n-predict", default_value_t = 16, allow_negative_numbers = true, value_parser = whole_in::<usize>(0, 1 << 20))]
    pub n: usize,
    /// Write a Chrome trace-event JSON file (open in Perfetto or chrome://tracing).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    #[arg(long = "batch-size", short = 'b', default_value_t = 256, allow_negative_numbers = true, value_parser = whole_in::<u32>(1, wllm::MAX_BATCH as u64))]
    pub batch: u32,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    let mut trace = a.trace.as_deref().map(|p| open_output("--trace", p)).transpose()?;
    let model = load_model(&a.model, &a.device, None, None)?;
    let prompt = model.tokenize(&a.prompt);
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    let n_ctx = u32::try_from(prompt.len() + a.n + 8).map_err(|_| {
        anyhow::anyhow!("the prompt ({} tokens) and -n {} are too many tokens", prompt.len(), a.n)
    })?;
    let mut session = model.session(&SessionOptions { n_ctx: Some(n_ctx), n_batch: a.batch })?;
    session.enable_profiling();
    let opts = GenerateOptions { max_tokens: a.n, sampling: SamplerConfig::greedy(), ..Default::default() };
    let mut text = String::new();
    for chunk in session.generate(&prompt, opts)? {
        text.push_str(&chunk?.text);
    }
    if let Some(p) = session.cpu_profile() {
        cpu_table(p, model.info().plan.cpu_layers())?;
    }
    let Some(gpu) = model.gpu() else {
        return Ok(());
    };
    let copy_gbs = copy_bandwidth(&gpu)?;
    let profiler = session.profiler().context("profiling was not enabled")?;
    outln!("adapter: {} ({}), {}", gpu.adapter_name(), gpu.backend(), profiler.mode().describe());
    outln!("device copy bandwidth: {copy_gbs:.2} GB/s");
    outln!("prompt: {} tokens; generated {} tokens: {text:?}", prompt.len(), a.n);
    for (phase, name) in [(Phase::Prefill, "prefill"), (Phase::Decode, "decode")] {
        let events: Vec<&KernelEvent> = profiler.events.iter().filter(|e| e.phase == phase).collect();
        if events.is_empty() {
            continue;
        }
        table(name, &events, copy_gbs)?;
    }
    if let (Some(path), Some(file)) = (&a.trace, trace.as_mut()) {
        file.write_all(profiler.chrome_trace().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        outln!("trace written to {}", path.display());
    }
    Ok(())
}

fn table(name: &str, events: &[&KernelEvent], copy_gbs: f64) -> Result<()> {
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
    outln!();
    outln!(
        "{name}: {steps} step(s), {:.2} ms of GPU time per step, {} dispatches per step",
        total / 1e6 / steps as f64,
        events.len() / steps
    );
    outln!("| kernel | calls | total µs | mean µs | share | MB moved | GB/s | of copy |");
    outln!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
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
        outln!(
            "| {label} | {calls} | {:.0} | {:.1} | {:.1}% | {mb} | {gb} | {ratio} |",
            ns / 1e3,
            ns / 1e3 / calls as f64,
            100.0 * ns / total
        );
    }
    Ok(())
}

/// Wall-clock time of the CPU layers per op kind (prefill and decode together).
fn cpu_table(p: &wllm::engine::cpu::Profile, layers: u32) -> Result<()> {
    let total = p.total().as_secs_f64().max(1e-12);
    outln!("CPU ({layers} layers): {:.2} ms in all", total * 1e3);
    outln!("| op | total ms | share |");
    outln!("| --- | ---: | ---: |");
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
        outln!("| {name} | {:.2} | {:.1}% |", s * 1e3, 100.0 * s / total);
    }
    Ok(())
}
