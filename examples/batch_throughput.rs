//! Aggregate generation speed of the continuous batcher at several concurrency levels, through
//! the library alone (no HTTP): `cargo run --release --example batch_throughput -- MODEL
//! [--gpu-layers N] [--clients 1,4,8,16] [-p 128] [-n 64]`.
//!
//! Each level submits that many distinct greedy requests at once and reports generated tokens
//! per second over the level's wall time, and the time to first token (median and worst).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use wllm::batch::{BatchRequest, Batcher, BatcherOptions, Event};
use wllm::engine::GpuLayers;
use wllm::{LoadOptions, Model, SamplerConfig};

struct Args {
    model: String,
    gpu_layers: GpuLayers,
    clients: Vec<usize>,
    prompt: usize,
    generate: usize,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        model: String::new(),
        gpu_layers: GpuLayers::Auto,
        clients: vec![1, 4, 8, 16],
        prompt: 128,
        generate: 64,
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--gpu-layers" => a.gpu_layers = GpuLayers::Count(value()?.parse().map_err(|e| format!("{e}"))?),
            "--clients" => {
                a.clients = value()?
                    .split(',')
                    .map(|c| c.parse().map_err(|e| format!("{e}")))
                    .collect::<Result<_, _>>()?
            }
            "-p" => a.prompt = value()?.parse().map_err(|e| format!("{e}"))?,
            "-n" => a.generate = value()?.parse().map_err(|e| format!("{e}"))?,
            m if a.model.is_empty() => a.model = m.to_string(),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if a.model.is_empty() {
        return Err("usage: batch_throughput MODEL [--gpu-layers N] [--clients 1,4,8] [-p N] [-n N]".into());
    }
    Ok(a)
}

/// A prompt of about `n` tokens, different for every `i`.
fn prompt(model: &Model, i: usize, n: usize) -> Vec<u32> {
    let words =
        ["river", "copper", "lantern", "orbit", "meadow", "cipher", "harbor", "velvet", "summit", "ember"];
    let mut text = format!("Request {i}. ");
    let mut k = i * 7 + 3;
    while model.tokenize(&text).len() < n {
        text.push_str(words[k % words.len()]);
        text.push(' ');
        k = k * 31 + 17;
    }
    let mut ids = model.tokenize(&text);
    ids.truncate(n);
    ids
}

fn main() {
    let args = parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let max_clients = *args.clients.iter().max().unwrap_or(&1) as u32;
    let n_ctx = (args.prompt + args.generate + 8) as u32;
    let load =
        LoadOptions { gpu_layers: args.gpu_layers, n_ctx: Some(n_ctx * max_clients), ..Default::default() };
    let model = Model::load_with(&args.model, &load, &mut |_, _| {}).expect("load");
    let opts = BatcherOptions { parallel: max_clients, n_ctx: Some(n_ctx), n_batch: 256, max_queue: 256 };
    let batcher = Batcher::start(model.clone(), opts).expect("batcher");
    println!("| clients | generated | wall s | aggregate t/s | TTFT p50 ms | TTFT max ms |");
    println!("|---|---|---|---|---|---|");
    for (round, &clients) in std::iter::once(&1usize).chain(&args.clients).enumerate() {
        // The first pass is a warm-up and is not printed.
        let start = Instant::now();
        let rxs: Vec<_> = (0..clients)
            .map(|c| {
                let (tx, rx) = mpsc::channel();
                let req = BatchRequest {
                    prompt: prompt(&model, round * 100 + c, args.prompt),
                    max_tokens: Some(args.generate),
                    sampling: SamplerConfig::greedy(),
                    stop_at_eog: false,
                    ..Default::default()
                };
                let sent = Instant::now();
                batcher.submit(req, move |e| tx.send((e, sent.elapsed())).is_ok()).expect("submit");
                rx
            })
            .collect();
        let mut ttft: Vec<Duration> = Vec::new();
        let mut generated = 0;
        for rx in rxs {
            let mut first = None;
            for (e, at) in rx.iter() {
                match e {
                    Event::Token(_) => {
                        first.get_or_insert(at);
                        generated += 1;
                    }
                    Event::Done(_) => break,
                    Event::Error(e) => panic!("{e}"),
                    Event::Started { .. } => {}
                }
            }
            ttft.extend(first);
        }
        let wall = start.elapsed().as_secs_f64();
        ttft.sort();
        if round > 0 {
            println!(
                "| {clients} | {generated} | {wall:.2} | {:.1} | {:.0} | {:.0} |",
                generated as f64 / wall,
                ttft[ttft.len() / 2].as_secs_f64() * 1e3,
                ttft.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
            );
        }
    }
}
