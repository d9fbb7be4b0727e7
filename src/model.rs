//! Loading a model (GGUF file or Hugging Face safetensors directory) onto a device.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wllm_engine::{Backend, DeviceOptions, Gpu, GpuModel};
use wllm_loaders::chat::{ChatTemplate, SpecialTokens};
use wllm_loaders::model::TensorSource;
use wllm_loaders::{GgufFile, ModelConfig, SafetensorsModel, Tokenizer};

use crate::error::{Error, Result};
use crate::session::{Session, SessionOptions};

/// How to load a model.
///
/// ```no_run
/// use wllm::{LoadOptions, Model};
///
/// let opts = LoadOptions {
///     backend: Some(wllm::engine::Backend::Vulkan),
///     warm_up: true,
///     ..LoadOptions::default()
/// };
/// let model = Model::load_with("model.gguf", &opts, &mut |done, total| {
///     eprint!("\rloading {}%", 100 * done / total.max(1));
/// })?;
/// # Ok::<(), wllm::Error>(())
/// ```
///
/// To run on a device the application already has, set `gpu` from
/// [`Engine::gpu`](crate::Engine::gpu), or load through [`Engine::load_with`](crate::Engine::load_with).
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Restrict the adapter search to one backend (`None`: `WLLM_BACKEND`, else any).
    pub backend: Option<Backend>,
    /// Run on this device instead of opening one (an application's own wgpu device).
    pub gpu: Option<Arc<Gpu>>,
    /// Override the chat template (a Jinja file, or a tokenizer_config.json).
    pub chat_template: Option<PathBuf>,
    /// Run a tiny prompt and a decode step while loading, so shader compilation (which some
    /// drivers do on first use) is part of the load rather than of the first request.
    pub warm_up: bool,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// What was loaded and how long it took.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: String,
    pub name: Option<String>,
    pub weight_bytes: u64,
    pub load_time: Duration,
    pub adapter: String,
    pub backend: &'static str,
}

pub(crate) struct ModelInner {
    pub cfg: ModelConfig,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub gpu_model: Arc<GpuModel>,
    pub info: ModelInfo,
    /// Keeps the memory map alive for as long as any layer may read it.
    pub _source: Arc<dyn TensorSource>,
}

/// A loaded model. Cheap to clone; `Send + Sync`, so any number of sessions on any threads
/// share its weights.
///
/// ```no_run
/// use wllm::{Model, SessionOptions};
///
/// let model = Model::load("model.gguf")?;
/// let ids = model.tokenize("Hello, world");
/// assert_eq!(model.detokenize(&ids[1..]), "Hello, world"); // after BOS, if the model adds one
/// // Two conversations over one copy of the weights, each on its own thread.
/// std::thread::scope(|s| {
///     for text in ["The sky is", "Grass is"] {
///         let model = model.clone();
///         s.spawn(move || -> wllm::Result<u32> {
///             let mut session = model.session(&SessionOptions::default())?;
///             session.eval_greedy(&model.tokenize(text))
///         });
///     }
/// });
/// # Ok::<(), wllm::Error>(())
/// ```
#[derive(Clone)]
pub struct Model {
    pub(crate) inner: Arc<ModelInner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.inner.info).finish_non_exhaustive()
    }
}

impl Model {
    /// Loads `path` (a `.gguf` file, or a directory / `.safetensors` file with `config.json`
    /// and `tokenizer.json` beside it) with default options.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &LoadOptions::default(), &mut |_, _| {})
    }

    /// Loads with options; `progress(bytes_done, bytes_total)` is called as weights upload.
    pub fn load_with(
        path: impl AsRef<Path>,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Model> {
        let start = Instant::now();
        let path = path.as_ref();
        let meta =
            std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let is_gguf = meta.is_file() && path.extension().is_none_or(|e| e != "safetensors");
        let (cfg, tokenizer, template, source): (_, _, _, Arc<dyn TensorSource>) = if is_gguf {
            let f = GgufFile::open(path)?;
            let cfg = ModelConfig::from_gguf(&f)?;
            let tok = Tokenizer::from_gguf(&f)?;
            let tpl = match &opts.chat_template {
                Some(p) => {
                    Some(ChatTemplate::from_file(p)?.with_special_tokens(SpecialTokens::from_gguf(&f)?))
                }
                None => ChatTemplate::from_gguf(&f).ok(),
            };
            (cfg, tok, tpl, Arc::new(f))
        } else {
            let m = SafetensorsModel::open(path)?;
            let dir = if meta.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            let tok_cfg_path = dir.join("tokenizer_config.json");
            let tok_cfg = tok_cfg_path.exists().then_some(tok_cfg_path.as_path());
            let tok = Tokenizer::from_hf_files(dir.join("tokenizer.json"), tok_cfg)?;
            let tpl = match &opts.chat_template {
                Some(p) => Some(ChatTemplate::from_file(p)?),
                None => match tok_cfg {
                    Some(p) => {
                        let text = std::fs::read_to_string(p)
                            .map_err(|source| Error::Io { path: p.to_path_buf(), source })?;
                        let json: serde_json::Value = serde_json::from_str(&text)
                            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display())))?;
                        ChatTemplate::from_tokenizer_config(&json).ok()
                    }
                    None => None,
                },
            };
            (m.config().clone(), tok, tpl, Arc::new(m))
        };
        let gpu = match &opts.gpu {
            Some(g) => g.clone(),
            None => Gpu::new(&DeviceOptions { backend: opts.backend, ..Default::default() })?,
        };
        let gpu_model = Arc::new(GpuModel::load(gpu.clone(), cfg.clone(), source.as_ref(), progress)?);
        let info = ModelInfo {
            path: path.to_path_buf(),
            architecture: cfg.arch.name().to_string(),
            name: cfg.name.clone(),
            weight_bytes: gpu_model.weight_bytes,
            load_time: start.elapsed(),
            adapter: gpu.adapter_name().to_string(),
            backend: gpu.backend().name(),
        };
        let mut model = Model {
            inner: Arc::new(ModelInner {
                cfg,
                tokenizer,
                chat_template: template,
                gpu_model,
                info,
                _source: source,
            }),
        };
        if opts.warm_up {
            let mut s = model.session(&SessionOptions { n_ctx: Some(8), n_batch: 4 })?;
            s.eval(&[0, 0], wllm_engine::Logits::Last)?;
            s.eval_greedy(&[0])?;
            s.eval(&[0], wllm_engine::Logits::All)?;
            drop(s);
            if let Some(inner) = Arc::get_mut(&mut model.inner) {
                inner.info.load_time = start.elapsed();
            }
        }
        Ok(model)
    }

    /// The device the model's GPU layers run on.
    pub fn gpu(&self) -> Arc<Gpu> {
        self.inner.gpu_model.gpu.clone()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }
    pub fn config(&self) -> &ModelConfig {
        &self.inner.cfg
    }
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.inner.chat_template.as_ref()
    }

    /// Tokenizes as llama.cpp does by default: BOS/EOS per the model's metadata, special-token
    /// text left as plain text.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.inner.tokenizer.encode(text, true, false)
    }

    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.inner.tokenizer.decode(ids)
    }

    /// A new session (its own KV cache) over this model's weights.
    pub fn session(&self, opts: &SessionOptions) -> Result<Session> {
        Session::new(self.clone(), opts)
    }
}
