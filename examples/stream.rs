//! Token streaming with cancellation from another thread.
//!
//! `cargo run --release --example stream -- MODEL.gguf [PROMPT] [--max-ms MS]`
//!
//! Tokens are printed as they arrive. A watchdog thread cancels the generation after a time
//! limit, exactly as a UI's stop button or a Ctrl-C handler would: it only needs a clone of the
//! `CancelToken`.
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use wllm::{CancelToken, GenerateOptions, Model, SamplerConfig, SessionOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = args.iter().filter(|a| !a.starts_with("--"));
    let path = positional.next().context("usage: stream MODEL [PROMPT] [--max-ms MS]")?;
    let prompt = positional.next().map(String::as_str).unwrap_or("Write a short story about a robot.");
    let max_ms: u64 = match args.iter().position(|a| a == "--max-ms") {
        Some(i) => args.get(i + 1).context("--max-ms needs a value")?.parse()?,
        None => 3000,
    };

    let model = Model::load(path)?;
    let mut session = model.session(&SessionOptions::default())?;
    let cancel = CancelToken::new();
    let watchdog = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(max_ms));
            cancel.cancel();
        })
    };
    let opts = GenerateOptions {
        max_tokens: 512,
        sampling: SamplerConfig { temp: 0.7, seed: Some(42), ..SamplerConfig::default() },
        stop: vec!["\n\n\n".into()],
        cancel: Some(cancel),
        ..GenerateOptions::default()
    };
    let mut generation = session.generate(&model.tokenize(prompt), opts)?;
    let mut out = std::io::stdout().lock();
    for chunk in generation.by_ref() {
        out.write_all(chunk?.text.as_bytes())?;
        out.flush()?;
    }
    let stats = generation.stats();
    writeln!(
        out,
        "\n\n[stopped: {:?}; {} tokens at {:.1} tokens/s; prompt {:.1} tokens/s]",
        generation.stop_reason(),
        stats.generated_tokens,
        stats.generation_tps(),
        stats.prompt_tps()
    )?;
    drop(generation);
    // The watchdog may still be sleeping; the program does not wait for it.
    drop(watchdog);
    Ok(())
}
