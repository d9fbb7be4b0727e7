//! `wllm run`: stream a completion.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::json;
use wllm::engine::sampling::parse_logit_bias;
use wllm::loaders::chat::RenderOptions;
use wllm::{ChatMessage, GenerateOptions, ReasoningFormat, SamplerConfig, StopReason};

use crate::cmd::chat::{ReasoningArgs, ReplyPrinter};
use crate::cmd::constraint::ConstraintArgs;
use crate::common::{ContextArgs, DeviceArgs, number_in, open_output, parse_ids, whole_in};

#[derive(clap::Args)]
pub struct Args {
    /// A .gguf file or a Hugging Face safetensors directory.
    pub model: PathBuf,
    /// The prompt text.
    #[arg(short, long)]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids instead of text.
    #[arg(long, conflicts_with = "prompt")]
    pub prompt_tokens: Option<String>,
    /// Send the prompt as a user message through the model's chat template.
    #[arg(long, requires = "prompt")]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Tokens to generate.
    #[arg(short = 'n', long = "n-predict", default_value_t = 256, allow_negative_numbers = true, value_parser = whole_in::<usize>(0, u32::MAX as u64))]
    pub n: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// What the output must match.
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    #[command(flatten)]
    pub context: ContextArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// With --chat: the reasoning effort, and whether to print the reasoning.
    #[command(flatten)]
    pub reasoning: ReasoningArgs,
    /// Write the logits (f32 little-endian rows of n_vocab): one row per prompt position, then
    /// one per generated token that was fed back.
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// Timings and device on stderr.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print one JSON object with ids, text and timings instead of streaming text. With --chat,
    /// `text` is the answer and `reasoning` the reasoning before it.
    #[arg(long)]
    pub json: bool,
    /// Keep generating past end-of-generation tokens (as llama.cpp's --ignore-eos).
    #[arg(long)]
    pub ignore_eos: bool,
}

/// Every number is checked against its range when parsed; negative values reach the check
/// (instead of clap's "use -- -1" tip) so the refusal names the flag and what it allows.
#[derive(clap::Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Temperature, 0 or more; 0 = greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true, value_parser = number_in(0.0, f32::INFINITY))]
    pub temp: f32,
    /// Keep the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40, allow_negative_numbers = true, value_parser = whole_in::<usize>(0, u32::MAX as u64))]
    pub top_k: usize,
    /// Nucleus sampling, 0 to 1 (1 = off).
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true, value_parser = number_in(0.0, 1.0))]
    pub top_p: f32,
    /// Drop tokens below this fraction of the best one's probability, 0 to 1 (0 = off).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true, value_parser = number_in(0.0, 1.0))]
    pub min_p: f32,
    /// Locally typical sampling, 0 to 1 (1 = off).
    #[arg(long = "typical", default_value_t = 1.0, allow_negative_numbers = true, value_parser = number_in(0.0, 1.0))]
    pub typical_p: f32,
    /// Penalty on repeated tokens, more than 0 (1 = off).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = number_in(f32::MIN_POSITIVE, f32::INFINITY))]
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at (0 = off).
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = whole_in::<usize>(0, u32::MAX as u64))]
    pub repeat_last_n: usize,
    /// OpenAI-style presence penalty, -2 to 2.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = number_in(-2.0, 2.0))]
    pub presence_penalty: f32,
    /// OpenAI-style frequency penalty, -2 to 2.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, value_parser = number_in(-2.0, 2.0))]
    pub frequency_penalty: f32,
    /// Random seed (default: random).
    #[arg(long, short = 's')]
    pub seed: Option<u64>,
    /// Stop generation at this string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Bias a token: ID+BIAS, ID-BIAS or ID-inf (repeatable).
    #[arg(long = "logit-bias", allow_hyphen_values = true)]
    pub logit_bias: Vec<String>,
}

impl SamplingArgs {
    pub fn config(&self) -> Result<SamplerConfig> {
        let mut logit_bias = Vec::new();
        for b in &self.logit_bias {
            logit_bias.push(parse_logit_bias(b)?);
        }
        Ok(SamplerConfig {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            logit_bias,
            ..SamplerConfig::default()
        })
    }
}

pub fn run(a: Args) -> Result<()> {
    let sampling = a.sampling.config()?;
    let constraint = a.constraint.constraint()?;
    let dump = a.dump_logits.as_deref().map(|p| open_output("--dump-logits", p)).transpose()?;
    let (model, session_opts) = a.context.load(&a.model, &a.device)?;
    let mut stop = a.sampling.stop.clone();
    let mut reasoning = None;
    let prompt_ids = match (&a.prompt, &a.prompt_tokens) {
        (Some(p), _) if a.chat => {
            let mut messages: Vec<ChatMessage> = a.system.iter().map(ChatMessage::system).collect();
            messages.push(ChatMessage::user(p));
            stop.extend(model.chat_end_of_turn());
            let render = RenderOptions {
                add_generation_prompt: true,
                reasoning_effort: a.reasoning.reasoning_effort,
                ..Default::default()
            };
            let prompt = model.chat_prompt(&messages, &render).map_err(crate::cmd::chat::template_hint)?;
            reasoning = (prompt.reasoning.format() != ReasoningFormat::None).then_some(prompt.reasoning);
            prompt.tokens
        }
        (Some(p), _) => model.tokenize(p),
        (None, Some(ids)) => parse_ids(ids)?,
        (None, None) => bail!("give a prompt with --prompt TEXT or --prompt-tokens IDS"),
    };
    if prompt_ids.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    let mut session = model.session(&session_opts)?;
    if prompt_ids.len() > session.n_ctx() {
        bail!(
            "the prompt has {} tokens but the context holds {} (raise --ctx)",
            prompt_ids.len(),
            session.n_ctx()
        );
    }
    let opts = GenerateOptions {
        max_tokens: a.n,
        sampling,
        stop,
        collect_logits: a.dump_logits.is_some(),
        stop_at_eog: !a.ignore_eos,
        reasoning,
        constraint,
        ..Default::default()
    };
    let backend = session.backend_name();
    let n_ctx = session.n_ctx();
    let mut gen_ = session.generate(&prompt_ids, opts)?;
    let (mut text, mut reasoning) = (String::new(), String::new());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printer = ReplyPrinter::new(&a.reasoning);
    let streamed = gen_.by_ref().try_for_each(|chunk| -> Result<()> {
        let chunk = chunk?;
        text.push_str(&chunk.text);
        reasoning.push_str(&chunk.reasoning);
        if !a.json {
            printer.write(&mut out, &chunk)?;
            out.flush()?;
        }
        Ok(())
    });
    printer.end_reasoning(&mut out)?;
    streamed?;
    let ids = gen_.ids().to_vec();
    let stats = gen_.stats().clone();
    let reason = gen_.stop_reason().cloned();
    let constrained = gen_.constraint_report();
    if let (Some(path), Some(mut file)) = (&a.dump_logits, dump) {
        let bytes: Vec<u8> = gen_.logits().iter().flat_map(|v| v.to_le_bytes()).collect();
        file.write_all(&bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    drop(gen_);
    let info = model.info();
    if a.json {
        let o = json!({
            "prompt_ids": prompt_ids,
            "ids": ids,
            "text": text,
            "reasoning": reasoning,
            "backend": backend,
            "adapter": info.adapter,
            "gpu_layers": info.plan.gpu_layers,
            "cpu_layers": info.plan.cpu_layers(),
            "stop_reason": reason.as_ref().map(wllm::StopReason::as_str),
            "constraint": constrained.map(|c| json!({
                "complete": c.complete,
                "masks": c.masks,
                "mean_mask_us": c.mean_mask_time.as_secs_f64() * 1e6,
            })),
            "timings": {
                "load_ms": info.load_time.as_secs_f64() * 1e3,
                "prompt_tokens": stats.prompt_tokens,
                "prompt_ms": stats.prompt_time.as_secs_f64() * 1e3,
                "prompt_tps": stats.prompt_tps(),
                "generated_tokens": stats.generated_tokens,
                "generation_ms": stats.generation_time.as_secs_f64() * 1e3,
                "generation_tps": stats.generation_tps(),
                "ttft_ms": stats.time_to_first_token.as_secs_f64() * 1e3,
            },
        });
        writeln!(out, "{o}")?;
    } else {
        writeln!(out)?;
        out.flush()?;
        match &reason {
            Some(StopReason::ContextFull) => {
                eprintln!("(stopped: the context of {n_ctx} tokens is full; raise --ctx for longer output)")
            }
            Some(StopReason::Cancelled) => eprintln!("(stopped: cancelled)"),
            _ if constrained.is_some_and(|c| !c.complete) => {
                eprintln!("(stopped before the output completed its constraint; raise -n for longer output)")
            }
            Some(r) if a.verbose => eprintln!("stop reason:          {r}"),
            _ => {}
        }
    }
    if a.verbose {
        eprintln!("backend:              {backend} ({})", info.adapter);
        eprintln!(
            "layers:               {} on the GPU, {} on the CPU ({} threads)",
            info.plan.gpu_layers,
            info.plan.cpu_layers(),
            info.threads
        );
        eprintln!("KV cache:             {}", info.plan.kv_types());
        let trained = model.config().context_length;
        let how = if a.context.ctx.is_some() { "asked for" } else { "the largest that fits" };
        eprintln!("context:              {n_ctx} tokens ({how}; the model was trained for {trained})");
        eprintln!("load duration:        {:.2?}", info.load_time);
        if let Some((bytes, time)) = info.cpu_weight_copy {
            let bytes = crate::common::human_bytes(bytes);
            let packed = match info.cpu_weights_packed {
                0 => String::new(),
                p => format!(", {} of it packed for the CPU kernels", crate::common::human_bytes(p)),
            };
            eprintln!(
                "CPU weights:          {bytes} copied to huge-page memory in {time:.2?}{packed} (--mmap reads the file in place)"
            );
        }
        eprintln!("shader build:         {:.2?}{}", info.shader_build_time, warm_up_note(info));
        if let Some(c) = constrained {
            eprintln!(
                "constraint:           {} ({} masks, {:.1?} each)",
                if c.complete { "complete" } else { "incomplete" },
                c.masks,
                c.mean_mask_time
            );
        }
        // Measured now: the session's KV cache and buffers exist only since after loading.
        if let Some(rss) = wllm::engine::plan::peak_rss() {
            eprintln!("peak memory (RSS):    {}", crate::common::human_bytes(rss));
        }
        eprintln!("prompt eval count:    {} token(s)", stats.prompt_tokens);
        eprintln!("prompt eval duration: {:.2?}", stats.prompt_time);
        eprintln!("prompt eval rate:     {:.2} tokens/s", stats.prompt_tps());
        eprintln!("eval count:           {} token(s)", stats.generated_tokens);
        eprintln!("eval duration:        {:.2?}", stats.generation_time);
        eprintln!("eval rate:            {:.2} tokens/s", stats.generation_tps());
        eprintln!("time to first token:  {:.2?}", stats.time_to_first_token);
    }
    Ok(())
}

/// The warm-up's share of the load, for `--verbose`.
pub fn warm_up_note(info: &wllm::ModelInfo) -> String {
    match info.warm_up_time {
        Some(t) => format!(" (during the load; warm-up steps {t:.2?})"),
        None => String::new(),
    }
}
