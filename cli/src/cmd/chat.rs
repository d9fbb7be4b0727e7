//! `wllm chat`: a multi-turn conversation with the model's chat template.
//!
//! On a terminal it is a REPL (`/clear`, `/exit`, Ctrl-C stops a reply, Ctrl-D leaves). When
//! stdin is not a terminal each non-empty line is one user message and each reply is printed
//! followed by a newline, so it can be scripted; there an overflowing context ends the run
//! with an error instead of waiting for a `/clear` that will not come.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use wllm::{
    CancelToken, Chat, ChatOptions, Chunk, Error, GenerateOptions, ReasoningEffort, Reply, StopReason,
};

use crate::cmd::run::SamplingArgs;
use crate::common::{ContextArgs, DeviceArgs};

#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file or a Hugging Face safetensors directory.
    pub model: PathBuf,
    /// System message, kept through /clear and context truncation.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024, allow_negative_numbers = true, value_parser = crate::common::whole_in::<usize>(0, u32::MAX as u64))]
    pub n: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub context: ContextArgs,
    /// When the conversation outgrows the context: refuse the turn, or drop the oldest turns.
    #[arg(long, value_enum, default_value_t = Overflow::Error)]
    pub context_overflow: Overflow,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub reasoning: ReasoningArgs,
    /// Per-turn token counts and speeds on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

/// What `run --chat` and `chat` share about models that reason before they answer.
#[derive(clap::Args, Clone, Debug)]
pub struct ReasoningArgs {
    /// How much the model should reason (`reasoning_effort` for templates that read it, such
    /// as gpt-oss's): low, medium or high. Default: the template's.
    #[arg(long)]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Print only the answer, not the reasoning (which is otherwise shown first, dimmed on a
    /// terminal).
    #[arg(long)]
    pub hide_reasoning: bool,
}

/// Writes replies as they stream: reasoning first (dimmed on a terminal, unless hidden), then a
/// blank line, then the answer.
pub struct ReplyPrinter {
    hide: bool,
    dim: bool,
    in_reasoning: bool,
}

const DIM: &[u8] = b"\x1b[2m";
const RESET: &[u8] = b"\x1b[0m";

impl ReplyPrinter {
    pub fn new(args: &ReasoningArgs) -> ReplyPrinter {
        ReplyPrinter { hide: args.hide_reasoning, dim: std::io::stdout().is_terminal(), in_reasoning: false }
    }

    pub fn write(&mut self, out: &mut impl Write, chunk: &Chunk) -> std::io::Result<()> {
        if !chunk.reasoning.is_empty() && !self.hide {
            if !self.in_reasoning && self.dim {
                out.write_all(DIM)?;
            }
            self.in_reasoning = true;
            out.write_all(chunk.reasoning.as_bytes())?;
        }
        if !chunk.text.is_empty() {
            if self.in_reasoning {
                self.end_reasoning(out)?;
                out.write_all(b"\n\n")?;
            }
            out.write_all(chunk.text.as_bytes())?;
        }
        Ok(())
    }

    /// Call when the reply ends, however it ends, so the terminal is not left dimmed.
    pub fn end_reasoning(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if std::mem::take(&mut self.in_reasoning) && self.dim {
            out.write_all(RESET)?;
        }
        Ok(())
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Overflow {
    Error,
    TruncateOldest,
}

impl From<Overflow> for wllm::ContextOverflow {
    fn from(o: Overflow) -> Self {
        match o {
            Overflow::Error => wllm::ContextOverflow::Error,
            Overflow::TruncateOldest => wllm::ContextOverflow::TruncateOldest,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let sampling = a.sampling.config()?;
    let (model, session_opts) = a.context.load(&a.model, &a.device)?;
    let session = model.session(&session_opts)?;
    let options = ChatOptions {
        system: a.system.clone(),
        overflow: a.context_overflow.into(),
        reasoning_effort: a.reasoning.reasoning_effort,
    };
    let mut chat = Chat::new(session, options).map_err(template_hint)?;
    let interactive = std::io::stdin().is_terminal();

    // Ctrl-C during a reply stops the reply; anywhere else it leaves, as usual.
    let cancel = CancelToken::new();
    let generating = Arc::new(AtomicBool::new(false));
    {
        let (cancel, generating) = (cancel.clone(), generating.clone());
        ctrlc::set_handler(move || {
            if generating.load(Ordering::SeqCst) {
                cancel.cancel();
            } else {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }

    if interactive {
        eprintln!("chatting with {} (/clear forgets, /exit or Ctrl-D leaves, Ctrl-C stops a reply)", {
            let info = model.info();
            info.name.clone().unwrap_or_else(|| info.path.display().to_string())
        });
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut line = String::new();
    loop {
        if interactive {
            let mut out = stdout.lock();
            write!(out, ">>> ")?;
            out.flush()?;
        }
        line.clear();
        if input.read_line(&mut line).context("reading stdin")? == 0 {
            break;
        }
        let message = line.trim_end_matches(['\n', '\r']);
        match message.trim() {
            "" => continue,
            "/exit" | "/bye" => break,
            "/clear" => {
                chat.clear();
                if interactive {
                    eprintln!("(conversation cleared)");
                }
                continue;
            }
            _ => {}
        }
        let opts = GenerateOptions {
            max_tokens: a.n,
            sampling: sampling.clone(),
            stop: a.sampling.stop.clone(),
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        cancel.reset();
        let reply = match chat.send(message, opts) {
            Ok(r) => r,
            Err(e @ Error::ContextOverflow { .. }) => {
                let hint = "/clear, raise --ctx, or use --context-overflow truncate-oldest";
                if !interactive {
                    anyhow::bail!("{e} ({hint})");
                }
                eprintln!("error: {e} ({hint})");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if reply.info().dropped_turns > 0 {
            eprintln!(
                "(dropped the {} oldest turn(s) to fit the {}-token context)",
                reply.info().dropped_turns,
                a.context.ctx.map_or_else(|| "model's".to_string(), |c| c.to_string())
            );
        }
        generating.store(true, Ordering::SeqCst);
        let result = stream(reply, &stdout, &mut ReplyPrinter::new(&a.reasoning), a.verbose);
        generating.store(false, Ordering::SeqCst);
        result?;
    }
    Ok(())
}

/// A missing template is fixed on the command line: say how.
pub fn template_hint(e: Error) -> anyhow::Error {
    match e {
        Error::NoChatTemplate => anyhow::anyhow!("{e}: pass --chat-template FILE or TEMPLATE"),
        e => e.into(),
    }
}

/// Prints a reply as it comes, then a newline, then (with `verbose`) its figures.
fn stream(
    mut reply: Reply<'_>,
    stdout: &std::io::Stdout,
    printer: &mut ReplyPrinter,
    verbose: bool,
) -> Result<()> {
    let mut out = stdout.lock();
    let streamed = reply.by_ref().try_for_each(|chunk| -> Result<()> {
        printer.write(&mut out, &chunk?)?;
        out.flush()?;
        Ok(())
    });
    printer.end_reasoning(&mut out)?;
    streamed?;
    writeln!(out)?;
    out.flush()?;
    match reply.stop_reason() {
        Some(StopReason::Cancelled) => eprintln!("(reply stopped)"),
        Some(StopReason::ContextFull) => eprintln!("(reply cut: the context is full)"),
        _ => {}
    }
    if verbose {
        let (info, stats) = (reply.info(), reply.stats());
        eprintln!(
            "prompt tokens evaluated: {} (of {}, {} reused from the cache)",
            info.evaluated_tokens, info.prompt_tokens, info.reused_tokens
        );
        eprintln!("prompt eval rate: {:.2} tokens/s", stats.prompt_tps());
        eprintln!("eval count: {} token(s), {:.2} tokens/s", stats.generated_tokens, stats.generation_tps());
    }
    Ok(())
}
