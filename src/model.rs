//! Loading a model (GGUF file or Hugging Face safetensors directory) onto a device.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wllm_engine::plan::{GpuFacts, HostFacts, PlanRequest, parse_size, peak_rss, plan};
use wllm_engine::{
    Backend, CacheRequest, CacheTypes, DeviceOptions, EngineError, Gpu, GpuLayers, GpuModel, KvType, Plan,
};
use wllm_loaders::chat::{ChatTemplate, SpecialTokens};
use wllm_loaders::mapped::FileStamp;
use wllm_loaders::model::ModelWeights;
use wllm_loaders::model::{ResidentSource, TensorMeta, TensorSource};
use wllm_loaders::{GgmlType, GgufFile, ModelConfig, QuantizingSource, SafetensorsModel, Tokenizer};

use crate::error::{Error, Result};
use crate::session::{Session, SessionOptions};

/// How to load a model.
///
/// ```no_run
/// use wllm::{LoadOptions, Model};
///
/// let opts = LoadOptions {
///     backend: Some(wllm::Backend::Vulkan),
///     warm_up: false, // a tool that measures its first step itself
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
#[derive(Clone)]
pub struct LoadOptions {
    /// Restrict the adapter search to one backend (`None`: `WLLM_BACKEND`, else any).
    pub backend: Option<Backend>,
    /// Run on this device instead of opening one (an application's own wgpu device).
    pub gpu: Option<Arc<Gpu>>,
    /// Override the chat template (a Jinja file, or a tokenizer_config.json).
    pub chat_template: Option<PathBuf>,
    /// Override the chat template with this Jinja source (takes precedence over
    /// `chat_template`).
    pub chat_template_source: Option<String>,
    /// Run a tiny prompt and a decode step on the GPU while loading (on by default), so that
    /// building the kernels (0.5 to 2 s on some drivers, which compile on first use) is part of
    /// the load rather than of the first request or frame. Off, the first steps pay it.
    pub warm_up: bool,
    /// Which layers run on the GPU (the last ones, with the head); the rest run on the CPU.
    /// `Auto` (the default) takes as many as the memory budget allows, and falls back to the
    /// CPU alone when no adapter exists.
    pub gpu_layers: GpuLayers,
    /// CPU threads for layers on the CPU (0: one per core). More than the machine's cores is
    /// capped to its cores, with a warning: oversubscribed workers only wait on each other.
    pub threads: usize,
    /// Bytes the GPU side may use (`None`: `WLLM_GPU_MEMORY`, else what the adapter reports;
    /// on unified memory, the host's available memory).
    pub memory_budget: Option<u64>,
    /// The context sessions get by default, and that the memory plan is made for (`None`: the
    /// largest that fits the memory plan with the placement asked for, up to the model's
    /// training context; at least that context capped at 4096).
    pub n_ctx: Option<u32>,
    /// Sequences of `n_ctx` positions the memory plan makes room for (a server's `--parallel`;
    /// 0 and 1 both mean one). Each session or batched sequence still has `n_ctx` positions.
    pub n_seq: u32,
    /// MoE layers below this index keep their router and experts on the CPU while attention
    /// stays on the GPU (llama.cpp's `--n-cpu-moe N`; `u32::MAX` is `--cpu-moe`).
    pub n_cpu_moe: u32,
    /// Quantize float weight matrices to this type (Q8_0 or Q4_K) while loading; tensors
    /// already quantized are kept as they are.
    pub quantize: Option<GgmlType>,
    /// Element types of the KV cache's K and V (llama.cpp's `-ctk`/`-ctv`): `None` for a side
    /// leaves it f16 (f32 on a GPU without f16 storage).
    pub cache: CacheRequest,
    /// Let the CPU read its layers' weights in place from the memory-mapped file (llama.cpp's
    /// default). Off (the default), loading copies them into anonymous memory advised for
    /// huge pages, which the CPU streams faster (7B decode: about 6% more tokens per
    /// second); on, loading skips the copy and processes mapping the same file share pages.
    pub map_cpu_weights: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            backend: None,
            gpu: None,
            chat_template: None,
            chat_template_source: None,
            warm_up: true,
            gpu_layers: GpuLayers::default(),
            threads: 0,
            memory_budget: None,
            n_ctx: None,
            n_seq: 0,
            n_cpu_moe: 0,
            quantize: None,
            cache: CacheRequest::default(),
            map_cpu_weights: false,
        }
    }
}

/// Most prompt tokens a step processes unless a session asks otherwise.
pub(crate) const DEFAULT_BATCH: u32 = 256;

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// What was loaded and how long it took.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The file or directory loaded.
    pub path: PathBuf,
    /// The architecture's name (`llama`, `qwen3`, `gemma3`, ...).
    pub architecture: String,
    /// The model's own name, when its metadata gives one.
    pub name: Option<String>,
    /// Bytes of the weights in the file.
    pub weight_bytes: u64,
    /// Bytes of weights one decode token reads (the embedding table's one row and the
    /// experts it is not routed to left out): a decode step's floor on memory traffic.
    pub decode_weight_bytes: u64,
    /// Time the load took, warm-up included.
    pub load_time: Duration,
    /// The device the GPU layers run on (or the CPU, with its threads).
    pub adapter: String,
    /// `vulkan`, `metal`, `dx12`, `gl`, `cpu`, or `cpu+vulkan` (etc.) for a split.
    pub backend: &'static str,
    /// Where the layers went and what each device holds.
    pub plan: Plan,
    /// CPU threads for the CPU layers.
    pub threads: usize,
    /// Time spent building GPU kernels during the load (warm-up included): with
    /// [`LoadOptions::warm_up`] off, most of it comes with the first steps instead.
    pub shader_build_time: Duration,
    /// Time the warm-up steps took (`None`: no warm-up, or nothing runs on the GPU).
    pub warm_up_time: Option<Duration>,
    /// The process's peak resident memory when loading finished (Linux). Sessions allocate
    /// their KV caches later; [`wllm_engine::plan::peak_rss`] gives the figure at any time.
    pub peak_rss: Option<u64>,
    /// Bytes of CPU weights copied out of the file map at load, and the time it took
    /// (`None`: nothing copied; see [`LoadOptions::map_cpu_weights`]).
    pub cpu_weight_copy: Option<(u64, Duration)>,
    /// Bytes of that copy rewritten on the way into the layout the CPU kernels read fastest
    /// (Q4_K in groups of 16 rows on AVX-512 VNNI; `WLLM_CPU_PACKED=0` turns it off).
    pub cpu_weights_packed: u64,
}

pub(crate) struct ModelInner {
    pub cfg: ModelConfig,
    pub tokenizer: Arc<Tokenizer>,
    /// The grammar compiler for constrained generation, built on first use.
    pub grammars: crate::constraint::Grammars,
    pub chat_template: Option<ChatTemplate>,
    /// The GPU's layers and the head; `None` when everything runs on the CPU.
    pub gpu_model: Option<Arc<GpuModel>>,
    pub info: ModelInfo,
    /// What the plan was made from, to check sessions with other contexts against it.
    pub weights: ModelWeights<wllm_loaders::model::TensorMeta>,
    pub gpu_facts: Option<GpuFacts>,
    pub n_cpu_moe: u32,
    pub cache: CacheRequest,
    /// Positions per sequence the load was asked for (sessions' and batched sequences'
    /// default); the plan covers `n_seq` times as many.
    pub seq_ctx: u32,
    /// The weights; CPU layers read them in place for as long as any session lives.
    pub source: Arc<dyn TensorSource>,
    /// The mapped files as they were when opened; checked before every step that reads them.
    pub stamps: Vec<FileStamp>,
    /// Whether steps read the memory map (CPU layers or CPU experts), not only the load.
    pub reads_map: bool,
    /// The ChatML fallback has been reported once.
    pub chatml_warned: std::sync::atomic::AtomicBool,
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
        let built_before = opts.gpu.as_ref().map_or(Duration::ZERO, |g| g.pipelines.build_time());
        let path = path.as_ref();
        let meta =
            std::fs::metadata(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let is_gguf = meta.is_file() && path.extension().is_none_or(|e| e != "safetensors");
        check_load_options(opts)?;
        let mut stamps = Vec::new();
        let (cfg, tokenizer, template, source): (_, _, _, Arc<dyn TensorSource>) = if is_gguf {
            let f = GgufFile::open(path)?;
            stamps.extend(f.stamp().cloned());
            let cfg = ModelConfig::from_gguf(&f)?;
            let tok = Tokenizer::from_gguf(&f)?;
            let tpl = match (&opts.chat_template_source, &opts.chat_template) {
                (Some(src), _) => Some(
                    ChatTemplate::new(src.as_str(), "", "")?
                        .with_special_tokens(SpecialTokens::from_gguf(&f)?),
                ),
                (None, Some(p)) => {
                    Some(ChatTemplate::from_file(p)?.with_special_tokens(SpecialTokens::from_gguf(&f)?))
                }
                (None, None) => ChatTemplate::from_gguf(&f).ok(),
            };
            (cfg, tok, tpl, Arc::new(f))
        } else {
            let m = SafetensorsModel::open(path)?;
            stamps.extend(m.files().stamps().iter().cloned());
            let dir = if meta.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            };
            let tok_cfg_path = dir.join("tokenizer_config.json");
            let tok_cfg = tok_cfg_path.exists().then_some(tok_cfg_path.as_path());
            let tok = hf_tokenizer(&dir, tok_cfg)?;
            let tpl = match (&opts.chat_template_source, &opts.chat_template) {
                (Some(src), _) => Some(ChatTemplate::new(src.as_str(), "", "")?),
                (None, Some(p)) => Some(ChatTemplate::from_file(p)?),
                (None, None) => hf_chat_template(&dir, tok_cfg)?,
            };
            (m.config().clone(), tok, tpl, Arc::new(m))
        };
        let source = quantized(source, opts)?;
        let weights = ModelWeights::resolve(&cfg, source.as_ref())?;
        let (gpu, gpu_facts, host, request) = placement_inputs(&cfg, &weights, opts)?;
        let plan = plan(&cfg, &weights, &request, gpu_facts.as_ref(), &host)?;
        let first_gpu = plan.cpu_layers();
        let gpu_model = match (&gpu, plan.gpu_layers) {
            (Some(g), n) if n > 0 => Some(Arc::new(GpuModel::load_layers(
                g.clone(),
                cfg.clone(),
                source.as_ref(),
                first_gpu,
                opts.n_cpu_moe,
                progress,
            )?)),
            _ => None,
        };
        let (source, cpu_weight_copy) = match opts.map_cpu_weights {
            true => (source, None),
            false => {
                let cpu_moe = gpu_model.as_ref().map_or(&[][..], |g| &g.cpu_moe_layers[..]);
                resident(source, &weights, first_gpu, cpu_moe)?
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = match opts.threads {
            0 => cores,
            t if t > cores => {
                log::warn!("{t} CPU threads asked for, but this machine has {cores} cores; using {cores}");
                cores
            }
            t => t,
        };
        if let Some(n) = opts.n_ctx
            && n > cfg.context_length
        {
            log::warn!(
                "a context of {n} tokens is more than the {} the model was trained for; output past that is likely poor",
                cfg.context_length
            );
        }
        let (adapter, backend) = match (&gpu_model, plan.cpu_layers()) {
            (Some(m), 0) => (m.gpu.adapter_name().to_string(), m.gpu.backend().name()),
            (Some(m), k) => (
                format!("{} ({k} layer{} on the CPU)", m.gpu.adapter_name(), if k == 1 { "" } else { "s" }),
                split_name(m.gpu.backend().name()),
            ),
            (None, _) => (format!("CPU ({}, {threads} threads)", wllm_engine::cpu::Isa::best()), "cpu"),
        };
        let info = ModelInfo {
            path: path.to_path_buf(),
            architecture: cfg.arch.name().to_string(),
            name: cfg.name.clone(),
            weight_bytes: weights.all().iter().map(|m| m.n_bytes()).sum(),
            decode_weight_bytes: cfg
                .moe
                .as_ref()
                .map_or(weights.decode_bytes(0, 0), |m| weights.decode_bytes(m.n_expert, m.n_expert_used)),
            load_time: start.elapsed(),
            adapter,
            backend,
            plan,
            threads,
            shader_build_time: Duration::ZERO,
            warm_up_time: None,
            peak_rss: None,
            cpu_weight_copy: cpu_weight_copy.map(|(bytes, time, _)| (bytes, time)),
            cpu_weights_packed: cpu_weight_copy.map_or(0, |(_, _, packed)| packed),
        };
        let reads_map =
            info.plan.cpu_layers() > 0 || gpu_model.as_ref().is_some_and(|g| !g.cpu_moe_layers.is_empty());
        let mut model = Model {
            inner: Arc::new(ModelInner {
                cfg,
                tokenizer: Arc::new(tokenizer),
                grammars: Default::default(),
                chat_template: template,
                gpu_model,
                info,
                weights,
                gpu_facts,
                n_cpu_moe: opts.n_cpu_moe,
                cache: opts.cache,
                seq_ctx: request.n_ctx / opts.n_seq.max(1),
                source,
                stamps,
                reads_map,
                chatml_warned: Default::default(),
            }),
        };
        // The weights were read while loading: a file truncated or rewritten meanwhile gave
        // zeros or mixed data, whatever the placement.
        model.check_files()?;
        let warm_up_time = match (opts.warm_up, model.gpu()) {
            (true, Some(_)) => Some(crate::warm_up::run(&model)?),
            _ => None,
        };
        let shader_build_time =
            model.gpu().map_or(Duration::ZERO, |g| g.pipelines.build_time() - built_before);
        if let Some(inner) = Arc::get_mut(&mut model.inner) {
            inner.info.warm_up_time = warm_up_time;
            inner.info.shader_build_time = shader_build_time;
            inner.info.load_time = start.elapsed();
            inner.info.peak_rss = peak_rss();
        }
        Ok(model)
    }

    /// Errors if a memory-mapped model file was truncated or written since it was loaded
    /// (see [`wllm_loaders::mapped`]). Sessions check before every step that reads the map.
    pub fn check_files(&self) -> Result<()> {
        for s in &self.inner.stamps {
            s.check()?;
        }
        Ok(())
    }

    /// The device the model's GPU layers run on (`None`: everything runs on the CPU).
    pub fn gpu(&self) -> Option<Arc<Gpu>> {
        self.inner.gpu_model.as_ref().map(|m| m.gpu.clone())
    }

    /// The memory plan `load_with(path, opts)` would follow, without reading any weights
    /// (`wllm plan`). Errors as loading would when the request does not fit.
    pub fn plan(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Plan> {
        check_load_options(opts)?;
        let path = path.as_ref();
        let (cfg, source): (ModelConfig, Arc<dyn TensorSource>) =
            if path.is_file() && path.extension().is_none_or(|e| e != "safetensors") {
                let f = GgufFile::open(path)?;
                (ModelConfig::from_gguf(&f)?, Arc::new(f))
            } else {
                let m = SafetensorsModel::open(path)?;
                (m.config().clone(), Arc::new(m))
            };
        let source = quantized(source, opts)?;
        let weights = ModelWeights::resolve(&cfg, source.as_ref())?;
        let (_, gpu_facts, host, request) = placement_inputs(&cfg, &weights, opts)?;
        Ok(plan(&cfg, &weights, &request, gpu_facts.as_ref(), &host)?)
    }

    /// The memory plan for sessions of `n_ctx` positions with this model's placement; errors
    /// if such a session would not fit.
    pub fn plan_for_context(&self, n_ctx: u32) -> Result<Plan> {
        let i = &self.inner;
        let request = PlanRequest {
            gpu_layers: GpuLayers::Count(i.info.plan.gpu_layers),
            n_ctx,
            n_batch: DEFAULT_BATCH,
            cpu_batch: DEFAULT_BATCH,
            cpu_moe_below: i.n_cpu_moe,
            cache: i.cache,
            n_seq: 1,
        };
        Ok(plan(&i.cfg, &i.weights, &request, i.gpu_facts.as_ref(), &HostFacts::probe())?)
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.inner.tokenizer
    }

    /// Compiles `constraint` against this model's vocabulary for one generation (the
    /// vocabulary index is built on the first call and kept).
    pub(crate) fn start_constraint(
        &self,
        constraint: &crate::Constraint,
    ) -> Result<crate::constraint::ActiveConstraint> {
        Ok(self.inner.grammars.start(&self.inner.tokenizer, constraint)?)
    }
    /// The model's hyperparameters.
    pub fn config(&self) -> &ModelConfig {
        &self.inner.cfg
    }
    /// What was loaded, where, and how long it took.
    pub fn info(&self) -> &ModelInfo {
        &self.inner.info
    }
    /// The chat template (the override, the model's own, or ChatML); `None` when there is none.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.inner.chat_template.as_ref()
    }

    /// Tokenizes as llama.cpp does by default: BOS/EOS per the model's metadata, special-token
    /// text left as plain text.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.inner.tokenizer.encode(text, true, false)
    }

    /// The text of `ids` (special tokens rendered as their text).
    pub fn detokenize(&self, ids: &[u32]) -> String {
        self.inner.tokenizer.decode(ids)
    }

    /// A new session (its own KV cache) over this model's weights.
    pub fn session(&self, opts: &SessionOptions) -> Result<Session> {
        Session::new(self.clone(), opts)
    }
}

/// Bytes copied, the time it took, and the bytes of the copy packed.
type CopyFigures = (u64, Duration, u64);

/// `source` with the matrices the CPU streams every token copied into anonymous memory (see
/// [`ResidentSource`]): those of layers `0..cpu_layers`, the head when every layer is on the
/// CPU, and the experts of `cpu_moe` layers. The embedding table stays mapped unless it is
/// the head: a token reads one row of it.
fn resident(
    source: Arc<dyn TensorSource>,
    weights: &ModelWeights<TensorMeta>,
    cpu_layers: u32,
    cpu_moe: &[u32],
) -> Result<(Arc<dyn TensorSource>, Option<CopyFigures>)> {
    let cpu_layers = cpu_layers as usize;
    let mut names: Vec<String> = Vec::new();
    for l in &weights.layers[..cpu_layers.min(weights.layers.len())] {
        names.extend(l.matrices().map(|m| m.name.clone()));
    }
    if cpu_layers >= weights.layers.len() {
        names.push(weights.output.as_ref().unwrap_or(&weights.token_embd).name.clone());
    }
    for &il in cpu_moe {
        if let Some(l) = weights.layers.get(il as usize) {
            names.extend(l.ffn.iter().map(|m| m.name.clone()));
        }
    }
    if names.is_empty() {
        return Ok((source, None));
    }
    let start = Instant::now();
    // `WLLM_CPU_PACKED=0` keeps the file's layout (to compare the kernels).
    let packed = !std::env::var("WLLM_CPU_PACKED").is_ok_and(|v| v.trim() == "0");
    let packer = wllm_engine::cpu::CpuPacker(wllm_engine::cpu::Isa::best());
    let copy = ResidentSource::new(source, &names, packed.then_some(&packer as _))?;
    let done = (copy.resident_bytes(), start.elapsed(), copy.packed_bytes());
    Ok((Arc::new(copy), Some(done)))
}

/// The source as `opts.quantize` asks: float matrices quantized while they are read.
fn quantized(source: Arc<dyn TensorSource>, opts: &LoadOptions) -> Result<Arc<dyn TensorSource>> {
    Ok(match opts.quantize {
        Some(ty) => Arc::new(QuantizingSource::new(source, ty).map_err(|e| Error::InvalidOption {
            option: "quantize",
            message: format!("{e} (Q8_0 and Q4_K are)"),
        })?),
        None => source,
    })
}

/// What a plan starts from: the device (none for `--gpu-layers 0`, or when no adapter exists and
/// the placement is `auto`), its facts and budget, the host's, and the request.
type PlacementInputs = (Option<Arc<Gpu>>, Option<GpuFacts>, HostFacts, PlanRequest);

fn placement_inputs(
    cfg: &ModelConfig,
    weights: &ModelWeights<wllm_loaders::model::TensorMeta>,
    opts: &LoadOptions,
) -> Result<PlacementInputs> {
    let gpu = match (&opts.gpu, opts.gpu_layers) {
        (_, GpuLayers::Count(0)) => None,
        (Some(g), _) => Some(g.clone()),
        (None, want) => match Gpu::new(&DeviceOptions { backend: opts.backend, ..Default::default() }) {
            Ok(g) => Some(g),
            // Without any adapter, `auto` means the CPU alone.
            Err(EngineError::NoAdapter(why)) if want == GpuLayers::Auto && opts.backend.is_none() => {
                log::warn!("no GPU adapter{why}; running on the CPU");
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    let budget =
        match opts.memory_budget {
            Some(b) => Some(b),
            None => match std::env::var("WLLM_GPU_MEMORY") {
                Ok(s) if !s.trim().is_empty() => Some(parse_size(&s).map_err(|e| Error::InvalidOption {
                    option: "WLLM_GPU_MEMORY",
                    message: e.to_string(),
                })?),
                _ => None,
            },
        };
    let host = HostFacts::probe();
    let gpu_facts = gpu.as_ref().map(|g| GpuFacts::of(g, budget, &host));
    let mut request = PlanRequest {
        gpu_layers: opts.gpu_layers,
        n_ctx: 0,
        n_batch: DEFAULT_BATCH,
        cpu_batch: DEFAULT_BATCH,
        cpu_moe_below: opts.n_cpu_moe,
        cache: opts.cache,
        n_seq: opts.n_seq.max(1),
    };
    let n_seq = request.n_seq;
    let seq_ctx = match opts.n_ctx {
        Some(n) => n.max(1),
        None => auto_context(cfg, weights, &request, gpu_facts.as_ref(), &host, n_seq),
    };
    request.n_ctx = seq_ctx.saturating_mul(n_seq);
    if cfg.n_layer as usize > (0..cfg.n_layer as usize).filter(|&il| cfg.is_recurrent(il)).count() {
        // Quantized types need whole blocks per head; f16 and f32 take any size.
        let asked =
            CacheTypes { k: opts.cache.k.unwrap_or(KvType::F32), v: opts.cache.v.unwrap_or(KvType::F32) };
        asked.check_dims(cfg.head_dim, cfg.head_dim_v)?;
    }
    Ok((gpu, gpu_facts, host, request))
}

/// Positions per sequence when the load names none: the largest context, up to the one the
/// model was trained for (in steps of 256), whose memory plan keeps the placement asked for
/// (with `auto` and a GPU, every layer on the GPU), and never less than the trained context
/// capped at 4096 (with which the plan then does what it would: fewer GPU layers, or a
/// refusal that names the sizes).
fn auto_context(
    cfg: &ModelConfig,
    weights: &ModelWeights<wllm_loaders::model::TensorMeta>,
    req: &PlanRequest,
    gpu: Option<&GpuFacts>,
    host: &HostFacts,
    n_seq: u32,
) -> u32 {
    const STEP: u32 = 256;
    let trained = cfg.context_length.max(1);
    let floor = trained.min(4096);
    let holds = |n: u32| {
        let r = PlanRequest { n_ctx: n.saturating_mul(n_seq), ..req.clone() };
        plan(cfg, weights, &r, gpu, host).is_ok_and(|p| {
            p.fits && (req.gpu_layers != GpuLayers::Auto || gpu.is_none() || p.gpu_layers == cfg.n_layer)
        })
    };
    if trained == floor || !holds(floor) {
        return floor;
    }
    if holds(trained) {
        return trained;
    }
    // holds(lo), !holds(hi): halve on multiples of STEP.
    let (mut lo, mut hi) = (floor, trained);
    while hi - lo > STEP {
        let mid = (lo + (hi - lo) / 2) / STEP * STEP;
        let mid = if mid <= lo { lo + STEP } else { mid };
        if holds(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The error for a context of no positions.
pub(crate) fn zero_context() -> Error {
    Error::InvalidOption {
        option: "n_ctx",
        message: "a context of 0 tokens holds nothing (at least 1)".into(),
    }
}

/// Refuses options no load can honour, before anything is opened.
fn check_load_options(opts: &LoadOptions) -> Result<()> {
    if opts.n_ctx == Some(0) {
        return Err(zero_context());
    }
    Ok(())
}

/// The backend name of a CPU + GPU split.
fn split_name(gpu: &str) -> &'static str {
    match gpu {
        "vulkan" => "cpu+vulkan",
        "metal" => "cpu+metal",
        "dx12" => "cpu+dx12",
        "gl" => "cpu+gl",
        _ => "cpu+gpu",
    }
}

/// A Hugging Face directory's tokenizer (`tokenizer.json`).
#[cfg(feature = "safetensors")]
fn hf_tokenizer(dir: &Path, tok_cfg: Option<&Path>) -> Result<Tokenizer> {
    Ok(Tokenizer::from_hf_files(dir.join("tokenizer.json"), tok_cfg)?)
}

/// Without the `tokenizers` crate a Hugging Face directory cannot be tokenized.
#[cfg(not(feature = "safetensors"))]
fn hf_tokenizer(_dir: &Path, _tok_cfg: Option<&Path>) -> Result<Tokenizer> {
    Err(Error::FeatureDisabled { feature: "safetensors", what: "a Hugging Face directory's tokenizer.json" })
}

/// A Hugging Face directory's chat template: `chat_template` in `tokenizer_config.json`, or
/// (transformers 4.43 and later save it apart, as gpt-oss ships it) `chat_template.jinja`
/// beside it, with the config's special tokens either way.
fn hf_chat_template(dir: &Path, tok_cfg: Option<&Path>) -> Result<Option<ChatTemplate>> {
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|source| Error::Io { path: p.to_path_buf(), source });
    let mut config = match tok_cfg {
        Some(p) => serde_json::from_str(&read(p)?)
            .map_err(|e| Error::Config { path: p.to_path_buf(), message: e.to_string() })?,
        None => serde_json::json!({}),
    };
    let jinja = dir.join("chat_template.jinja");
    if config["chat_template"].is_null() && jinja.exists() {
        config["chat_template"] = serde_json::Value::String(read(&jinja)?);
    }
    Ok(ChatTemplate::from_tokenizer_config(&config).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Hugging Face directory's tokenizer is read with the `safetensors` feature and refused
    /// by name without it.
    #[test]
    fn hf_tokenizer_needs_the_safetensors_feature() {
        let e = hf_tokenizer(Path::new("/nonexistent-wllm-dir"), None).unwrap_err();
        if cfg!(feature = "safetensors") {
            assert!(matches!(e, Error::Tokenizer(_)), "{e:?}");
        } else {
            assert!(matches!(e, Error::FeatureDisabled { feature: "safetensors", .. }), "{e:?}");
        }
    }

    /// A directory whose template sits in `chat_template.jinja` (gpt-oss's layout) gets it, with
    /// the config's special tokens; a template in the config wins over the file.
    #[test]
    fn hf_template_from_its_own_file() {
        let dir = std::env::temp_dir().join(format!("wllm-hf-template-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("tokenizer_config.json");
        std::fs::write(&cfg, r#"{"bos_token": "<s>", "eos_token": "</s>"}"#).unwrap();
        std::fs::write(dir.join("chat_template.jinja"), "{{ bos_token }}{{ messages[0]['content'] }}")
            .unwrap();
        let t = hf_chat_template(&dir, Some(&cfg)).unwrap().expect("the file's template");
        assert_eq!(t.source(), "{{ bos_token }}{{ messages[0]['content'] }}");
        assert!(hf_chat_template(&dir, None).unwrap().is_some(), "no tokenizer_config.json");
        std::fs::write(&cfg, r#"{"chat_template": "from the config"}"#).unwrap();
        assert_eq!(hf_chat_template(&dir, Some(&cfg)).unwrap().unwrap().source(), "from the config");
        std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
        std::fs::write(&cfg, "{}").unwrap();
        assert!(hf_chat_template(&dir, Some(&cfg)).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
