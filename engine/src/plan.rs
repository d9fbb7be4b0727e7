//! The memory plan: before anything is allocated, how many bytes of weights, KV cache and
//! scratch each device will hold for a given placement and context, against each device's
//! budget. `--gpu-layers auto` takes the most GPU layers that fit; an explicit request that
//! does not fit is refused with the plan and what to change.
//!
//! Placement: the GPU takes the *last* layers and the output head; layers leave the GPU from
//! the front of the stack (layer 0 first). The token embedding stays with the CPU when any
//! layer runs there, so a split costs one crossing per step.

use std::fmt;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{FfnWeights, ModelWeights, TensorMeta};

use crate::error::{EngineError, Result};
use crate::gpu::model::context_bytes;
use crate::gpu::repack::{gpu_bytes, layout};
use crate::gpu::tensor::rows_per_part;
use crate::kv_type::{CacheRequest, CacheTypes};

/// How many layers to put on the GPU.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum GpuLayers {
    /// As many as fit the budget.
    #[default]
    Auto,
    /// Every layer; refused if it does not fit.
    All,
    /// The last `n` layers (more than the model has means all).
    Count(u32),
}

impl std::str::FromStr for GpuLayers {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<GpuLayers> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(GpuLayers::Auto),
            "all" | "max" => Ok(GpuLayers::All),
            n => n.parse().map(GpuLayers::Count).map_err(|_| {
                EngineError::InvalidArgument(format!("GPU layers are a number, `all` or `auto`, not {s:?}"))
            }),
        }
    }
}

/// A memory size from the command line or environment: `6GiB`, `512M`, `8g`, `1000000`.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| EngineError::InvalidArgument(format!("bad memory size {s:?}")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(EngineError::InvalidArgument(format!("bad memory size {s:?} (try 6GiB or 512MiB)"))),
    };
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(EngineError::InvalidArgument(format!("bad memory size {s:?}")));
    }
    Ok(bytes as u64)
}

/// What the plan needs to know about the GPU.
#[derive(Clone, Debug)]
pub struct GpuFacts {
    pub name: String,
    /// The KV cache is f16 (else f32).
    pub kv_f16: bool,
    pub max_binding: u64,
    /// Shares memory with the host (integrated GPU, CPU adapter): one pool for both sides.
    pub unified: bool,
    /// Bytes the GPU side may use, and where that figure came from.
    pub budget: Option<u64>,
    pub budget_source: String,
}

impl GpuFacts {
    /// From an open device; `budget` (a user's `--memory-budget` or `WLLM_GPU_MEMORY`) wins
    /// over what the adapter reports. On unified memory the host's available memory is the
    /// budget.
    pub fn of(gpu: &crate::Gpu, budget: Option<u64>, host: &HostFacts) -> GpuFacts {
        let unified = gpu.caps.unified_memory;
        let (budget, budget_source) = match (budget, gpu.device_memory) {
            (Some(b), _) => (Some(b), "set by the user".to_string()),
            (None, _) if unified => (host.available, "host memory (unified)".to_string()),
            (None, Some(m)) => (Some(m), "device-local heap".to_string()),
            (None, None) => (None, "unknown: set a memory budget or WLLM_GPU_MEMORY".to_string()),
        };
        GpuFacts {
            name: gpu.adapter_name().to_string(),
            kv_f16: gpu.caps.f16,
            max_binding: gpu.max_binding(),
            unified,
            budget,
            budget_source,
        }
    }
}

/// What the plan needs to know about the host.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// Memory available to this process (`MemAvailable`), where the OS tells.
    pub available: Option<u64>,
}

impl HostFacts {
    pub fn probe() -> HostFacts {
        HostFacts { available: meminfo("MemAvailable:") }
    }
}

/// A field of `/proc/meminfo` in bytes (Linux only).
fn meminfo(key: &str) -> Option<u64> {
    proc_kib("/proc/meminfo", key)
}

/// Peak resident memory of this process so far (Linux only).
pub fn peak_rss() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Settings the plan is made for.
#[derive(Clone, Debug)]
pub struct PlanRequest {
    pub gpu_layers: GpuLayers,
    pub n_ctx: u32,
    pub n_batch: u32,
    /// Largest batch the CPU layers run at once.
    pub cpu_batch: u32,
    /// MoE layers below this index keep their experts (router included) on the CPU
    /// (`--n-cpu-moe`; `u32::MAX` for `--cpu-moe`).
    pub cpu_moe_below: u32,
    /// Element types of K and V asked for (`--cache-type-k/-v`).
    pub cache: CacheRequest,
    /// Sequences sharing the `n_ctx` positions (`--parallel`; 0 counts as 1). DeltaNet layers
    /// keep a fixed-size state per sequence, which `n_ctx` does not cover.
    pub n_seq: u32,
}

/// Bytes one device holds.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub weights: u64,
    pub kv: u64,
    pub scratch: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.scratch
    }
}

/// Where every layer goes and what each device holds.
#[derive(Clone, Debug)]
pub struct Plan {
    pub n_layer: u32,
    /// Layers on the GPU: the last ones, `n_layer - gpu_layers..n_layer`.
    pub gpu_layers: u32,
    pub n_ctx: u32,
    pub gpu: Option<(GpuFacts, Usage)>,
    pub cpu: Usage,
    pub host_available: Option<u64>,
    /// One layer's K or V cache at this context is larger than one GPU binding.
    pub kv_exceeds_binding: bool,
    /// The KV cache's element types asked for (each device resolves what was left open).
    pub cache: CacheRequest,
    /// Whether it fits every budget.
    pub fits: bool,
}

impl Plan {
    /// Layers on the CPU: the first ones, `0..cpu_layers()`.
    pub fn cpu_layers(&self) -> u32 {
        self.n_layer - self.gpu_layers
    }

    /// The KV cache's types where they are used: `K q8_0 V q8_0`, with the device when the
    /// GPU and the CPU differ.
    pub fn kv_types(&self) -> String {
        let types = |c: CacheTypes| format!("K {} V {}", c.k, c.v);
        let cpu = types(self.cache.for_cpu());
        match &self.gpu {
            Some((g, _)) => {
                let gpu = types(self.cache.for_gpu(g.kv_f16));
                if self.cpu_layers() == 0 || gpu == cpu {
                    gpu
                } else {
                    format!("{gpu} on the GPU, {cpu} on the CPU")
                }
            }
            None => cpu,
        }
    }
}

/// Makes the plan for `req`. `gpu` is `None` when there is no adapter (everything on the CPU).
/// Errors (with the plan in the message) when an explicit request does not fit, or nothing
/// does.
pub fn plan(
    cfg: &ModelConfig,
    w: &ModelWeights<TensorMeta>,
    req: &PlanRequest,
    gpu: Option<&GpuFacts>,
    host: &HostFacts,
) -> Result<Plan> {
    let n = cfg.n_layer;
    let make = |g: u32| plan_for(cfg, w, req, gpu, host, g);
    let chosen = match (gpu, req.gpu_layers) {
        (None, GpuLayers::Count(0) | GpuLayers::Auto) => make(0),
        (None, _) => {
            return Err(EngineError::InvalidArgument(
                "GPU layers were requested but no GPU adapter is available; ask for 0 GPU layers".into(),
            ));
        }
        (Some(_), GpuLayers::All) => make(n),
        (Some(_), GpuLayers::Count(k)) => make(k.min(n)),
        (Some(_), GpuLayers::Auto) => {
            // Fit grows monotonically harder on the GPU side, so the first fitting count
            // from the top is the most that fit; none fitting on the GPU leaves the CPU alone.
            (0..=n).rev().map(make).find(|p| p.fits).unwrap_or_else(|| make(0))
        }
    };
    if !chosen.fits {
        let advice = advice(&chosen, req);
        return Err(EngineError::OverBudget { plan: chosen.to_string(), advice });
    }
    Ok(chosen)
}

fn advice(p: &Plan, req: &PlanRequest) -> String {
    if let Some(too_big) = weights_alone_too_big(p) {
        return too_big;
    }
    let over_gpu = p.gpu.as_ref().is_some_and(|(f, u)| f.budget.is_some_and(|b| u.total() > b));
    let over_host = !host_fits(p);
    let mut tips = Vec::new();
    if over_gpu && p.gpu_layers > 0 {
        tips.push("fewer GPU layers (or auto)".to_string());
    }
    if over_host || p.kv_exceeds_binding {
        tips.push(format!("a smaller context than {}", req.n_ctx));
    }
    if req.n_seq > 1 && (over_gpu || over_host) {
        tips.push(format!("fewer parallel sequences than {}", req.n_seq));
    }
    if over_gpu || over_host {
        tips.push("a larger memory budget if more memory is really free".to_string());
    }
    if tips.is_empty() {
        tips.push(format!("a smaller context than {}", req.n_ctx));
    }
    format!("try {}", tips.join(", or "))
}

/// When the weights alone exceed all the memory there is for them (the host's available memory,
/// plus a discrete GPU's budget), no context, layer split or budget flag helps: say so.
fn weights_alone_too_big(p: &Plan) -> Option<String> {
    let avail = p.host_available?;
    let gpu_weights = p.gpu.as_ref().map_or(0, |(_, u)| u.weights);
    let gpu_room = p.gpu.as_ref().filter(|(f, _)| !f.unified).map_or(Some(0), |(f, _)| f.budget)?;
    let weights = p.cpu.weights + gpu_weights;
    (weights > avail + gpu_room).then(|| {
        let gpu = if gpu_room > 0 { format!(" and {} on the GPU", gib(gpu_room)) } else { String::new() };
        format!(
            "its weights alone take {}, more than the {} of available memory{gpu}; it needs a smaller \
             quantization or a machine with more memory",
            gib(weights),
            gib(avail)
        )
    })
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Whether the host side (plus the GPU's share of unified memory) fits what is available.
fn host_fits(p: &Plan) -> bool {
    let Some(avail) = p.host_available else { return true };
    let shared = p.gpu.as_ref().filter(|(f, _)| f.unified).map_or(0, |(_, u)| u.total());
    p.cpu.total() + shared <= avail
}

fn plan_for(
    cfg: &ModelConfig,
    w: &ModelWeights<TensorMeta>,
    req: &PlanRequest,
    gpu: Option<&GpuFacts>,
    host: &HostFacts,
    g: u32,
) -> Plan {
    let n = cfg.n_layer;
    let first_gpu = (n - g) as usize;
    let mut cpu = Usage::default();
    let mut gpu_use = Usage::default();
    let mut fits = true;
    let mut kv_exceeds_binding = false;
    // CPU side: the embedding whenever it runs a layer, its layers, the head if it runs all.
    if first_gpu > 0 {
        cpu.weights += w.token_embd.n_bytes();
        cpu.weights += w.layers[..first_gpu].iter().flat_map(|l| l.iter()).map(|m| m.n_bytes()).sum::<u64>();
        // Attention layers keep K and V per position; DeltaNet layers a fixed state instead,
        // one per sequence and a checkpoint of sequence 0's (taken after a prompt).
        let recurrent = (0..first_gpu).filter(|&il| cfg.is_recurrent(il)).count() as u64;
        let attention = first_gpu as u64 - recurrent;
        let n_seq = req.n_seq.max(1);
        let states = u64::from(n_seq) + 1;
        let state =
            states * cfg.delta_net.as_ref().map_or(0, |d| 4 * (d.state_len() + d.conv_state_len()) as u64);
        let types = req.cache.for_cpu();
        let row = types.k.cpu_row_bytes(cfg.head_dim) + types.v.cpu_row_bytes(cfg.head_dim_v);
        cpu.kv = attention * req.n_ctx as u64 * cfg.n_head_kv as u64 * row
            + recurrent * state
            // two RoPE tables, over one sequence's positions
            + 2 * (req.n_ctx / n_seq) as u64 * (cfg.rope_dim as u64 / 2) * 8;
        let b = req.cpu_batch.min(req.n_ctx).max(1) as u64;
        let e = cfg.n_embd as u64;
        let qkv = (cfg.n_embd_q() + cfg.n_embd_k() + cfg.n_embd_v()) as u64;
        let n_ff = cfg.n_ff.max(cfg.moe.as_ref().map_or(0, |m| m.n_ff_expert * m.n_expert_used)) as u64;
        cpu.scratch = b * (3 * e + 2 * qkv + 2 * n_ff) * 4;
        if g == 0 {
            cpu.weights += w.output_norm.n_bytes() + w.output.as_ref().map_or(0, |m| m.n_bytes());
            cpu.scratch += b * cfg.n_vocab as u64 * 4;
        }
    }
    // Experts kept on the CPU by GPU layers: read in place from the file, like CPU layers.
    let cpu_experts = |il: usize| -> Vec<&TensorMeta> {
        match &w.layers[il].ffn {
            ffn @ FfnWeights::Moe { .. } if (il as u32) < req.cpu_moe_below => {
                ffn.iter().chain(ffn.vectors()).collect()
            }
            _ => Vec::new(),
        }
    };
    let any_cpu_experts = g > 0 && (first_gpu..n as usize).any(|il| !cpu_experts(il).is_empty());
    if let (Some(f), true) = (gpu, g > 0) {
        let mut weights = 0;
        for il in first_gpu..n as usize {
            let on_cpu = cpu_experts(il);
            // Vectors (norms, biases, a DeltaNet layer's convolution taps) go up as f32 arrays,
            // whatever their shape in the file.
            let vectors: Vec<&str> = w.layers[il].vectors().map(|v| v.name.as_str()).collect();
            for m in w.layers[il].iter() {
                if on_cpu.iter().any(|c| c.name == m.name) {
                    cpu.weights += m.n_bytes();
                } else if vectors.contains(&m.name.as_str()) {
                    weights += m.n_elements() * 4;
                } else {
                    weights += device_bytes(m, f);
                }
            }
        }
        if any_cpu_experts {
            let b = req.cpu_batch.min(req.n_ctx).max(1) as u64;
            let moe = cfg.moe.as_ref().map_or(0, |m| m.n_ff_expert as u64 * 2 + m.n_expert as u64);
            cpu.scratch = cpu.scratch.max(b * (2 * cfg.n_embd as u64 + moe) * 4);
        }
        weights += device_bytes(&w.output_norm, f);
        if let Some(o) = &w.output {
            weights += device_bytes(o, f);
        }
        if first_gpu == 0 || w.output.is_none() {
            weights += device_bytes(&w.token_embd, f);
        }
        let cache = req.cache.for_gpu(f.kv_f16);
        let c = context_bytes(cfg, g, req.n_ctx, req.n_batch, req.n_seq, cache, any_cpu_experts);
        gpu_use = Usage { weights, kv: c.kv, scratch: c.scratch };
        if c.kv_binding > f.max_binding {
            kv_exceeds_binding = true;
            fits = false;
        }
        if let Some(b) = f.budget
            && gpu_use.total() > b
        {
            fits = false;
        }
    }
    let mut p = Plan {
        n_layer: n,
        gpu_layers: g,
        n_ctx: req.n_ctx,
        gpu: gpu.filter(|_| g > 0).map(|f| (f.clone(), gpu_use)),
        cpu,
        host_available: host.available,
        kv_exceeds_binding,
        cache: req.cache,
        fits,
    };
    // Unified memory: the GPU's buffers come out of the same RAM as the CPU's.
    if !host_fits(&p) {
        p.fits = false;
    }
    p
}

/// Bytes a tensor takes on the GPU: matrices in the repacked layout, split into parts of at
/// most one binding; vectors as f32.
fn device_bytes(m: &TensorMeta, f: &GpuFacts) -> u64 {
    if m.dims.len() < 2 || m.dims.iter().skip(1).product::<u64>() == 1 {
        return (m.n_elements() * 4).next_multiple_of(4);
    }
    let Some(lay) = layout(m.ggml_type) else { return m.n_bytes() };
    let nb = m.dim(0) / lay.elems as u64;
    let rows: u64 = m.dims.iter().skip(1).product();
    let row = gpu_bytes(&lay, nb).1.max(1);
    // As the upload splits it: stacked experts keep each expert in one part.
    let align = if m.dims.len() > 2 { m.dim(1) } else { 1 };
    let per_part = rows_per_part(row, f.max_binding, align).max(1);
    let full = rows / per_part;
    let rest = rows % per_part;
    full * gpu_bytes(&lay, per_part * nb).1 + if rest > 0 { gpu_bytes(&lay, rest * nb).1 } else { 0 }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "memory plan: {} of {} layers on the GPU (the last ones, with the head), context {}",
            self.gpu_layers, self.n_layer, self.n_ctx
        )?;
        writeln!(f, "  KV cache: {}", self.kv_types())?;
        if let Some((g, _)) = &self.gpu {
            writeln!(f, "  GPU: {}{}", g.name, if g.unified { " (shares host memory)" } else { "" })?;
        }
        writeln!(
            f,
            "  {:<16} {:>12} {:>12} {:>12} {:>12}  budget",
            "device", "weights", "KV cache", "scratch", "total"
        )?;
        if let Some((g, u)) = &self.gpu {
            let budget = match g.budget {
                Some(b) => format!("{} ({})", mib(b), g.budget_source),
                None => g.budget_source.clone(),
            };
            writeln!(
                f,
                "  {:<16} {:>12} {:>12} {:>12} {:>12}  {budget}",
                format!("GPU ({} layers)", self.gpu_layers),
                mib(u.weights),
                mib(u.kv),
                mib(u.scratch),
                mib(u.total())
            )?;
        }
        let avail = match self.host_available {
            Some(a) => format!("{} available", mib(a)),
            None => "unknown".into(),
        };
        writeln!(
            f,
            "  {:<16} {:>12} {:>12} {:>12} {:>12}  {avail}",
            format!("CPU ({} layers)", self.cpu_layers()),
            mib(self.cpu.weights),
            mib(self.cpu.kv),
            mib(self.cpu.scratch),
            mib(self.cpu.total())
        )?;
        write!(f, "  {}", if self.fits { "fits" } else { "does NOT fit" })
    }
}
