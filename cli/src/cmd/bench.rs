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
    /// Prompt tokens, at most 1048576 (0 skips the prompt test); a comma list runs each.
    #[arg(short = 'p', long = "n-prompt", default_value = "128", value_delimiter = ',', allow_negative_numbers = true, value_parser = whole_in::<u32>(0, MAX_TOKENS as u64))]
    pub n_prompt: Vec<u32>,
    /// Generated tokens, at most 1048576 (0 skips the generation test); a comma list runs each.
    #[arg(short = 'n', long = "n-gen", default_value = "64", value_delimiter = ',', allow_negative_numbers = true, value_parser = whole_in::<u32>(0, MAX_TOKENS as u64))]
    pub n_gen: Vec<u32>,
    /// Tokens already in the context before each test (llama-bench's -d): prompt processing
    /// and generation are measured after that many; a comma list runs each.
    #[arg(short = 'd', long = "n-depth", default_value = "0", value_delimiter = ',', allow_negative_numbers = true, value_parser = whole_in::<u32>(0, MAX_TOKENS as u64))]
    pub n_depth: Vec<u32>,
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

/// One measurement: a prompt of `n_prompt` tokens or `n_gen` generated tokens, after `depth`.
#[derive(Clone, Copy)]
struct Test {
    n_prompt: u32,
    n_gen: u32,
    depth: u32,
}

impl Test {
    /// llama-bench's name: `pp512`, `tg128`, with ` @ d4096` after a depth.
    fn name(&self) -> String {
        let base =
            if self.n_prompt > 0 { format!("pp{}", self.n_prompt) } else { format!("tg{}", self.n_gen) };
        if self.depth > 0 { format!("{base} @ d{}", self.depth) } else { base }
    }

    fn tokens(&self) -> u32 {
        self.n_prompt + self.n_gen
    }
}

/// Every test the lists ask for, depth by depth (so each depth's context is filled once).
fn tests(a: &Args) -> Vec<Test> {
    let mut out = Vec::new();
    for &depth in &a.n_depth {
        out.extend(a.n_prompt.iter().filter(|&&p| p > 0).map(|&n_prompt| Test { n_prompt, n_gen: 0, depth }));
        out.extend(a.n_gen.iter().filter(|&&n| n > 0).map(|&n_gen| Test { n_prompt: 0, n_gen, depth }));
    }
    out
}

pub fn run(a: Args) -> Result<()> {
    let tests = tests(&a);
    let longest = tests.iter().map(|t| t.depth as u64 + t.tokens() as u64).max().unwrap_or(0);
    if longest + 8 > MAX_TOKENS as u64 {
        bail!("a test of -d and -p or -n together needs {longest} tokens, more than {MAX_TOKENS}");
    }
    let n_ctx = (longest as u32 + 8).max(64);
    let model = match load_model(&a.model, &a.device, None, Some(n_ctx)) {
        Ok(m) => m,
        // The plan's advice names --ctx, which bench sizes from -p, -n and -d.
        Err(e) => match e.downcast_ref::<wllm::Error>() {
            Some(wllm::Error::OverBudget { plan, .. }) => bail!(
                "the tests need a context of {n_ctx} tokens (the largest -d plus -p or -n), which does not fit: try smaller values\n{plan}"
            ),
            _ => return Err(e),
        },
    };
    let n_vocab = model.config().n_vocab;
    let mut session = model.session(&SessionOptions { n_ctx: Some(n_ctx), n_batch: a.batch })?;
    // Warm-up builds every pipeline and touches every buffer once.
    let warm = a.n_prompt.iter().copied().max().unwrap_or(0).clamp(2, 16);
    session.eval(&tokens(warm, n_vocab, 0), Logits::None)?;
    session.eval_greedy(&[1])?;
    let mut results = Vec::new();
    let mut filled = None;
    for test in &tests {
        if filled != Some(test.depth) {
            session.clear();
            if test.depth > 0 {
                session.eval(&tokens(test.depth, n_vocab, 7), Logits::None)?;
            }
            filled = Some(test.depth);
        }
        let mut speeds = Vec::new();
        for r in 0..a.reps {
            session.truncate(test.depth as usize);
            speeds.push(measure(&mut session, test, n_vocab, r as u32)?);
        }
        results.push((*test, median(speeds)));
    }
    report(&a, &model, &session, &results)
}

/// Tokens per second of one run of `test` on a session holding just its depth.
fn measure(session: &mut wllm::Session, test: &Test, n_vocab: u32, rep: u32) -> Result<f64> {
    if test.n_prompt > 0 {
        let prompt = tokens(test.n_prompt, n_vocab, rep + 1);
        let start = Instant::now();
        session.eval_greedy(&prompt)?;
        return Ok(test.n_prompt as f64 / start.elapsed().as_secs_f64());
    }
    let mut token = tokens(1, n_vocab, 100 + rep)[0];
    let start = Instant::now();
    for _ in 0..test.n_gen {
        token = session.eval_greedy(&[token])?;
    }
    Ok(test.n_gen as f64 / start.elapsed().as_secs_f64())
}

fn report(a: &Args, model: &wllm::Model, session: &wllm::Session, results: &[(Test, f64)]) -> Result<()> {
    let info = model.info();
    let backend = session.backend_name();
    let name = info.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    outln!("| model | size | backend | adapter | test | t/s |");
    outln!("| --- | ---: | --- | --- | ---: | ---: |");
    for (test, tps) in results {
        outln!(
            "| {name} | {} | {backend} | {} | {} | {tps:.2} |",
            human_bytes(info.weight_bytes),
            info.adapter,
            test.name()
        );
    }
    let bandwidth = stream_report(model, backend, results)?;
    if a.json {
        // pp_tps / tg_tps: the first prompt and generation tests (what one -p, -n reports).
        let first = |prompt: bool| {
            results.iter().find(|(t, _)| (t.n_prompt > 0) == prompt).map_or(0.0, |(_, tps)| *tps)
        };
        let rows: Vec<_> = results
            .iter()
            .map(|(t, tps)| json!({"test": t.name(), "n_prompt": t.n_prompt, "n_gen": t.n_gen, "n_depth": t.depth, "tps": tps}))
            .collect();
        outln!(
            "{}",
            json!({"model": name, "backend": backend, "adapter": info.adapter,
                   "n_prompt": a.n_prompt.first(), "n_gen": a.n_gen.first(), "n_depth": a.n_depth.first(),
                   "gpu_layers": info.plan.gpu_layers, "cpu_layers": info.plan.cpu_layers(), "threads": info.threads,
                   "repetitions": a.reps, "pp_tps": first(true), "tg_tps": first(false), "results": rows,
                   "decode_weight_bytes": info.decode_weight_bytes, "read_bandwidth_gbs": bandwidth.map(|b| b / 1e9)})
        );
    }
    Ok(())
}

/// On the CPU backend with generation tests: how fast this machine's threads stream memory,
/// and how fast each generation test read the weights (every decode token reads them once),
/// as the figures of the bandwidth target. Returns the read bandwidth in bytes per second.
fn stream_report(model: &wllm::Model, backend: &str, results: &[(Test, f64)]) -> Result<Option<f64>> {
    let info = model.info();
    if backend != "cpu" || !results.iter().any(|(t, _)| t.n_gen > 0) {
        return Ok(None);
    }
    let Some(read) = wllm::engine::cpu::read_bandwidth(info.threads) else {
        outln!("host memory read bandwidth: not measured (no 1 GiB buffer)");
        return Ok(None);
    };
    outln!("\nhost memory read bandwidth: {:.2} GB/s ({} threads streaming 1 GiB)", read / 1e9, info.threads);
    for (test, tps) in results.iter().filter(|(t, _)| t.n_gen > 0) {
        let weights = info.decode_weight_bytes as f64 * tps;
        outln!(
            "{}: weights read at {:.2} GB/s, {:.0}% of it ({} per token)",
            test.name(),
            weights / 1e9,
            100.0 * weights / read,
            human_bytes(info.decode_weight_bytes)
        );
    }
    Ok(Some(read))
}
