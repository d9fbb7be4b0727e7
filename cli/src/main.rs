//! `wllm`: run open-weight LLMs on any GPU through wgpu.

/// `println!` that returns an error on a closed stdout (`wllm info M | head -1`) instead of
/// panicking; `main` turns that error into a quiet exit.
macro_rules! outln {
    () => { std::io::Write::write_all(&mut std::io::stdout(), b"\n")? };
    ($($t:tt)*) => { std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($t)*)))? };
}

mod cmd;
mod common;
mod logger;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wllm",
    version,
    about = "Run GGUF and safetensors LLMs on Vulkan, Metal and DX12 through wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model file: architecture, sizes, quant types, metadata.
    Info(cmd::info::Args),
    /// Show how a model's tokenizer splits a text.
    Tokenize(cmd::tokenize::Args),
    /// Generate a completion for a prompt.
    Run(cmd::run::Args),
    /// Chat with an instruct model: a REPL on a terminal, one message per line otherwise.
    Chat(cmd::chat::Args),
    /// Measure prompt-processing and generation speed (like llama-bench).
    Bench(cmd::bench::Args),
    /// Per-kernel GPU time of a prompt and some decode steps.
    Profile(cmd::profile::Args),
    /// Perplexity of a text file, by llama-perplexity's method (comparable figures).
    Perplexity(cmd::perplexity::Args),
    /// Where the layers would go and the memory each device would need, without loading.
    Plan(cmd::plan::Args),
    /// Serve the model over an OpenAI-compatible HTTP API, batching concurrent requests.
    Serve(cmd::serve::Args),
}

fn main() {
    // Mesa's Vulkan drivers complain on stderr when no desktop session set this.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let cli = Cli::parse();
    let verbose = match &cli.command {
        Command::Run(a) => a.verbose,
        Command::Chat(a) => a.verbose,
        // A server's log is its request lines, which are info.
        Command::Serve(_) => true,
        _ => false,
    };
    logger::install(verbose);
    let result = match cli.command {
        Command::Info(a) => cmd::info::run(a),
        Command::Tokenize(a) => cmd::tokenize::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Profile(a) => cmd::profile::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Plan(a) => cmd::plan::run(a),
        Command::Serve(a) => cmd::serve::run(a),
    };
    if let Err(e) = result {
        if broken_pipe(&e) {
            // The reader left (`| head`): what it wanted was written; leave quietly, as
            // line-oriented tools do.
            std::process::exit(0);
        }
        eprintln!("error: {}{}", one_line(&e), flag_hint(&e));
        std::process::exit(1);
    }
}

/// The flags that change what a library error complains about: library messages speak of
/// options in words and leave the spelling to the tool.
fn flag_hint(e: &anyhow::Error) -> &'static str {
    match e.chain().find_map(|c| c.downcast_ref::<wllm::Error>()) {
        Some(wllm::Error::ContextOverflow { .. }) => " (raise --ctx)",
        Some(wllm::Error::OverBudget { .. }) => " (see --gpu-layers, --ctx and --memory-budget)",
        Some(wllm::Error::NoAdapter(_)) => " (--gpu-layers 0 runs on the CPU)",
        _ => "",
    }
}

/// Whether the error is a write to a stdout whose reader has gone.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, skipping causes an outer message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !msg.contains(&s) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&s);
        }
    }
    msg
}
