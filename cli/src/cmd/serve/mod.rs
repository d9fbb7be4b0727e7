//! `wllm serve`: an OpenAI-compatible HTTP server over the continuous batcher.
//!
//! The port is bound first and the model loads in the background, so a load balancer sees
//! `/health` answer 503 (loading) and then 200. SIGINT/SIGTERM stop accepting connections and
//! requests, let running ones finish (streams end with their last chunk), and exit 0; a
//! second signal exits at once.

mod access_log;
mod completions;
mod embeddings;
mod errors;
mod format;
mod job;
mod metrics;
mod openai;
mod routes;
mod sse;
mod state;
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use wllm::batch::{Batcher, BatcherOptions};

use crate::common::{ContextArgs, DeviceArgs, TemplateArg, load_model_for, whole_in};
use state::{AppState, Ready, unix_now};

#[derive(clap::Args)]
#[command(mut_arg("ctx", |a| a.help(
    "Context of each sequence in tokens, prompt and reply (default: the largest the memory plan fits, up to the model's trained context); \
     the KV cache holds --parallel times this"
)))]
#[command(mut_arg("batch", |a| a.help(
    "Most tokens in one step: the next token of every running sequence plus chunks of new prompts"
)))]
pub struct Args {
    /// A .gguf file or a Hugging Face safetensors directory.
    pub model: PathBuf,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests generated at once, each in its own sequence of --ctx tokens.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = whole_in::<u32>(1, 1024))]
    pub parallel: u32,
    /// Requests that may wait for a free sequence; more get 429.
    #[arg(long = "max-queue", default_value_t = 64, allow_negative_numbers = true, value_parser = whole_in::<usize>(0, 1 << 20))]
    pub max_queue: usize,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health (default: env
    /// WLLM_API_KEY; none: no key needed).
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// The model id reported by /v1/models and in responses (default: the file's stem).
    #[arg(long)]
    pub alias: Option<String>,
    /// How /v1/embeddings pools the final hidden states: mean, last or cls (default: what the
    /// model file says in `<arch>.pooling_type`, else last).
    #[arg(long)]
    pub pooling: Option<wllm::Pooling>,
    #[command(flatten)]
    pub context: ContextArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(a: Args) -> Result<()> {
    let template = a.context.chat_template.as_deref().map(TemplateArg::parse).transpose()?;
    if let Some(per_seq) = a.context.ctx {
        per_seq
            .checked_mul(a.parallel)
            .with_context(|| format!("--parallel {} times --ctx {per_seq} overflows", a.parallel))?;
    }
    // Refuse bad device flags now, not after the port is bound.
    a.device.load_options(a.context.ctx)?;
    let api_key = a.api_key.clone().or_else(|| std::env::var("WLLM_API_KEY").ok()).filter(|k| !k.is_empty());
    let (alias, other_names) = names(&a.model, a.alias.as_deref());
    let st = Arc::new(AppState {
        ready: OnceLock::new(),
        alias,
        other_names,
        api_key,
        started: unix_now(),
        responses: Mutex::new(BTreeMap::new()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Handlers only parse, tokenize and forward events: the batcher does the work.
        .worker_threads(2)
        .thread_name("wllm-http")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let opts = BatcherOptions {
        parallel: a.parallel,
        n_ctx: a.context.ctx,
        n_batch: a.context.batch,
        max_queue: a.max_queue,
    };
    let load = Load { path: a.model.clone(), device: a.device.clone(), template, opts, pooling: a.pooling };
    rt.block_on(serve(st, &a.host, a.port, load))
}

/// What the background load needs.
struct Load {
    path: PathBuf,
    device: DeviceArgs,
    template: Option<TemplateArg>,
    opts: BatcherOptions,
    pooling: Option<wllm::Pooling>,
}

impl Load {
    fn run(self) -> Result<Ready> {
        // The memory plan (and the placement of layers) counts every sequence.
        let (parallel, ctx, n_batch) = (self.opts.parallel, self.opts.n_ctx, self.opts.n_batch);
        let model = load_model_for(&self.path, &self.device, self.template.as_ref(), ctx, parallel)?;
        let batcher = Batcher::start(model.clone(), self.opts)
            .with_context(|| format!("{parallel} sequences (lower --parallel or --ctx)"))?;
        let info = model.info();
        eprintln!(
            "ready: {} on {} ({}), {} sequences of {} tokens",
            info.path.display(),
            info.backend,
            info.adapter,
            parallel,
            batcher.n_ctx()
        );
        let end_of_turn = model.chat_end_of_turn();
        let pooling = self
            .pooling
            .or_else(|| model.config().pooling_type.and_then(wllm::Pooling::from_llama_code))
            .unwrap_or(wllm::Pooling::Last);
        Ok(Ready { model, batcher, end_of_turn, pooling, embedder: Mutex::new(None), n_batch })
    }
}

async fn serve(st: Arc<AppState>, host: &str, port: u16, load: Load) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    eprintln!("listening on http://{addr} (loading {})", load.path.display());
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let loader_state = st.clone();
    let loader = std::thread::Builder::new().name("wllm-load".into()).spawn(move || match load.run() {
        Ok(ready) => {
            let _ = loader_state.ready.set(ready);
        }
        Err(e) => {
            let _ = failed_tx.send(e);
        }
    })?;
    let failure = Arc::new(Mutex::new(None));
    let stop = shutdown_signal(st.clone(), failed_rx, failure.clone());
    axum::serve(listener, routes::router(st.clone()))
        .with_graceful_shutdown(stop)
        .await
        .context("serving")?;
    // Wait for a load still under way (the second signal exits at once), so that the engine's
    // threads are not torn down mid-call; dropping the state then joins the batcher.
    let _ = tokio::task::spawn_blocking(move || loader.join()).await;
    drop(st);
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    eprintln!("stopped");
    Ok(())
}

/// Resolves on SIGINT/SIGTERM (then stops the batcher accepting) or when the load failed
/// (kept in `failure` for `run` to report).
async fn shutdown_signal(
    st: Arc<AppState>,
    failed: tokio::sync::oneshot::Receiver<anyhow::Error>,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
) {
    tokio::select! {
        _ = signal() => {
            eprintln!("shutting down: finishing running requests (signal again to exit now)");
            if let Some(r) = st.ready.get() {
                r.batcher.stop_accepting();
            }
            tokio::spawn(async {
                signal().await;
                eprintln!("exiting now");
                std::process::exit(130);
            });
        }
        Ok(e) = failed => {
            if let Ok(mut f) = failure.lock() {
                *f = Some(e);
            }
        }
    }
}

/// SIGINT or SIGTERM.
async fn signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}

/// The served model id and the other names a request may use for it.
fn names(path: &Path, alias: Option<&str>) -> (String, Vec<String>) {
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let alias = alias.map(str::to_string).unwrap_or_else(|| stem.clone());
    let others = [file, stem, path.display().to_string()]
        .into_iter()
        .filter(|n| !n.is_empty() && *n != alias)
        .collect();
    (alias, others)
}
