//! One transformer implementation for every supported architecture. What differs between
//! llama, qwen2/3, qwen3moe and gemma3 is data in [`ModelConfig`] and which optional tensors
//! exist; the graph in `graph.rs` reads those and nothing else.

mod context;
mod graph;

use std::sync::Arc;

pub use context::{
    Context, ContextBytes, ContextOptions, Logits, PendingStep, StepOutput, StepTimings, context_bytes,
};
use wllm_loaders::model::{FfnWeights, ModelWeights, TensorBytes, TensorMeta, TensorSource};
use wllm_loaders::{ModelConfig, ModelError};

use crate::device::Gpu;
use crate::error::{EngineError, Result};
use crate::tensor::GpuWeight;

/// A layer's feed-forward weights on the GPU.
#[derive(Debug)]
pub enum GpuFfn {
    Dense {
        gate_up: GateUp,
        down: GpuWeight,
    },
    Moe {
        router: GpuWeight,
        gate_exps: GpuWeight,
        up_exps: GpuWeight,
        down_exps: GpuWeight,
    },
    /// The router and experts run on the CPU (`--cpu-moe`); the step hands the normed hidden
    /// state over and takes the experts' sum back.
    CpuMoe,
}

/// Gate and up projections: stacked in one weight (one dispatch, `Epilogue::Pair*`) when their
/// types agree and they fit one binding, else apart.
#[derive(Debug)]
pub enum GateUp {
    Fused(GpuWeight),
    Split { gate: GpuWeight, up: GpuWeight },
}

/// One linear projection into a slice of a packed output row.
#[derive(Debug)]
pub struct Proj {
    pub w: GpuWeight,
    /// First element of the output row this projection writes.
    pub row0: u32,
    pub bias: Option<wgpu::Buffer>,
}

#[derive(Debug)]
pub struct GpuLayer {
    pub attn_norm: wgpu::Buffer,
    /// The Q, K and V projections into a packed [q | k | v] row; consecutive ones of the same
    /// type are stacked into one weight so they take one dispatch.
    pub qkv: Vec<Proj>,
    /// q-norm weights followed by k-norm weights.
    pub qk_norm: Option<wgpu::Buffer>,
    pub wo: GpuWeight,
    pub post_attn_norm: Option<wgpu::Buffer>,
    pub ffn_norm: wgpu::Buffer,
    pub ffn: GpuFfn,
    pub post_ffw_norm: Option<wgpu::Buffer>,
}

/// The GPU's share of a model: layers `first_layer..n_layer` and the output head. It is shared
/// (read-only) by any number of contexts. When `first_layer > 0` the layers before it run
/// elsewhere (the CPU) and each step starts from their hidden state instead of token ids.
#[derive(Debug)]
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub cfg: ModelConfig,
    /// Model layer index of `layers[0]`.
    pub first_layer: u32,
    /// Present when the GPU embeds the tokens (`first_layer == 0`) or the head is tied to it.
    pub token_embd: Option<GpuWeight>,
    pub output_norm: wgpu::Buffer,
    /// `None`: the head is tied to `token_embd`.
    pub output: Option<GpuWeight>,
    pub layers: Vec<GpuLayer>,
    /// Model layers whose experts run on the CPU.
    pub cpu_moe_layers: Vec<u32>,
    /// Bytes of the weights in the file.
    pub weight_bytes: u64,
}

/// Load progress: bytes uploaded so far and in total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Uploads tensors one at a time, reporting progress.
struct Uploader<'a> {
    gpu: &'a Gpu,
    src: &'a dyn TensorSource,
    done: u64,
    total: u64,
    /// Bytes written into mapped buffers since the queue last ran; see `tick`.
    unflushed: u64,
    progress: Progress<'a>,
}

/// On a discrete GPU, each buffer written at creation goes through a staging copy that lives
/// until the queue runs; flushing every this many bytes bounds that staging memory.
const STAGING_BOUND: u64 = 256 << 20;

impl Uploader<'_> {
    fn bytes(&self, m: &TensorMeta) -> Result<TensorBytes<'_>> {
        Ok(self.src.bytes(&m.name).ok_or_else(|| ModelError::MissingTensor(m.name.clone()))?)
    }

    fn tick(&mut self, n: u64) -> Result<()> {
        self.done += n;
        self.unflushed += n;
        if !self.gpu.caps.unified_memory && self.unflushed >= STAGING_BOUND {
            self.gpu.queue.submit([]);
            self.gpu.wait()?;
            self.unflushed = 0;
        }
        (self.progress)(self.done, self.total);
        Ok(())
    }

    /// A matrix; stacked experts keep each expert (ne1 rows) inside one buffer.
    fn mat(&mut self, m: &TensorMeta) -> Result<GpuWeight> {
        let align = if m.dims.len() > 2 { m.dim(1) } else { 1 };
        let w = GpuWeight::upload_aligned(self.gpu, &self.bytes(m)?, align)?;
        self.tick(m.n_bytes())?;
        Ok(w)
    }

    /// Several matrices of one type and row length stacked by rows into one weight.
    fn stacked(&mut self, name: String, ms: &[&TensorMeta]) -> Result<GpuWeight> {
        if ms.len() == 1 {
            return self.mat(ms[0]);
        }
        let mut bytes = Vec::with_capacity(ms.iter().map(|m| m.n_bytes() as usize).sum());
        for m in ms {
            bytes.extend_from_slice(&self.bytes(m)?.bytes);
        }
        let rows: u64 = ms.iter().map(|m| m.n_elements() / m.dim(0)).sum();
        let meta = TensorMeta { name, ggml_type: ms[0].ggml_type, dims: vec![ms[0].dim(0), rows] };
        let w = GpuWeight::upload(self.gpu, &TensorBytes { meta, bytes: bytes.into() })?;
        self.tick(ms.iter().map(|m| m.n_bytes()).sum())?;
        Ok(w)
    }

    /// 1-D tensors concatenated into one f32 buffer (norm weights, biases).
    fn vecs(&mut self, label: &str, ms: &[&TensorMeta]) -> Result<wgpu::Buffer> {
        let mut all = Vec::new();
        for m in ms {
            let t = self.bytes(m)?;
            let mut v = vec![0f32; m.n_elements() as usize];
            wllm_loaders::quant::dequantize_row(m.ggml_type, &t.bytes, &mut v)
                .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", m.name)))?;
            all.extend(v);
            self.tick(m.n_bytes())?;
        }
        Ok(self.gpu.storage_init(label, bytemuck::cast_slice(&all)))
    }

    fn vec(&mut self, m: &TensorMeta) -> Result<wgpu::Buffer> {
        self.vecs(&m.name, &[m])
    }

    fn opt_vec(&mut self, m: &Option<TensorMeta>) -> Result<Option<wgpu::Buffer>> {
        m.as_ref().map(|m| self.vec(m)).transpose()
    }
}

/// Whether stacking these matrices gives one weight that fits a single binding.
fn stackable(gpu: &Gpu, ms: &[&TensorMeta]) -> bool {
    let same =
        ms.iter().all(|m| m.ggml_type == ms[0].ggml_type && m.dim(0) == ms[0].dim(0) && m.dims.len() <= 2);
    let bytes: u64 = ms.iter().map(|m| m.n_bytes()).sum();
    // The GPU layout adds a few percent of metadata padding to the file's bytes.
    same && bytes + bytes / 8 < gpu.max_binding()
}

impl GpuModel {
    /// Every layer and the head.
    pub fn load(
        gpu: Arc<Gpu>,
        cfg: ModelConfig,
        src: &dyn TensorSource,
        progress: Progress<'_>,
    ) -> Result<GpuModel> {
        Self::load_layers(gpu, cfg, src, 0, 0, progress)
    }

    /// Layers `first_layer..` and the head; at least one layer must be included. The experts
    /// of MoE layers below `cpu_moe_below` stay in host memory (see [`GpuFfn::CpuMoe`]).
    pub fn load_layers(
        gpu: Arc<Gpu>,
        cfg: ModelConfig,
        src: &dyn TensorSource,
        first_layer: u32,
        cpu_moe_below: u32,
        progress: Progress<'_>,
    ) -> Result<GpuModel> {
        if first_layer >= cfg.n_layer {
            return Err(EngineError::InvalidArgument(format!(
                "the GPU part must hold at least one layer (first layer {first_layer} of {})",
                cfg.n_layer
            )));
        }
        let metas = ModelWeights::resolve(&cfg, src)?;
        let first = first_layer as usize;
        let need_embd = first == 0 || metas.output.is_none();
        let on_cpu = |il: usize, l: &wllm_loaders::model::LayerWeights<TensorMeta>| {
            (il as u32) < cpu_moe_below && matches!(l.ffn, FfnWeights::Moe { .. })
        };
        let mut total: u64 = 0;
        for (il, l) in metas.layers.iter().enumerate().skip(first) {
            total += l.iter().map(|m| m.n_bytes()).sum::<u64>();
            if let (true, FfnWeights::Moe { router, gate_exps, up_exps, down_exps }) = (on_cpu(il, l), &l.ffn)
            {
                total -= [router, gate_exps, up_exps, down_exps].iter().map(|m| m.n_bytes()).sum::<u64>();
            }
        }
        total += metas.output_norm.n_bytes() + metas.output.as_ref().map_or(0, |m| m.n_bytes());
        if need_embd {
            total += metas.token_embd.n_bytes();
        }
        let mut up = Uploader { gpu: &gpu, src, done: 0, total, unflushed: 0, progress };
        let token_embd = if need_embd { Some(up.mat(&metas.token_embd)?) } else { None };
        let output = metas.output.as_ref().map(|m| up.mat(m)).transpose()?;
        let output_norm = up.vec(&metas.output_norm)?;
        let mut layers = Vec::with_capacity(metas.layers.len() - first);
        for (il, l) in metas.layers.iter().enumerate().skip(first) {
            let qk_norm = match (&l.attn_q_norm, &l.attn_k_norm) {
                (Some(q), Some(k)) => Some(up.vecs("qk_norm", &[q, k])?),
                _ => None,
            };
            // Group consecutive Q, K, V projections that can share one dispatch.
            let projs = [
                (&l.attn_q, &l.attn_q_bias, 0),
                (&l.attn_k, &l.attn_k_bias, cfg.n_embd_q()),
                (&l.attn_v, &l.attn_v_bias, cfg.n_embd_q() + cfg.n_embd_k()),
            ];
            let mut qkv = Vec::new();
            let mut i = 0;
            while i < projs.len() {
                let mut j = i + 1;
                while j < projs.len()
                    && stackable(&gpu, &projs[i..=j].iter().map(|p| p.0).collect::<Vec<_>>())
                {
                    j += 1;
                }
                let group = &projs[i..j];
                let ws: Vec<&TensorMeta> = group.iter().map(|p| p.0).collect();
                let w = up.stacked(format!("blk.{il}.attn_qkv[{i}..{j}]"), &ws)?;
                let bias = if group.iter().all(|p| p.1.is_some()) {
                    let bs: Vec<&TensorMeta> = group.iter().filter_map(|p| p.1.as_ref()).collect();
                    Some(up.vecs("qkv_bias", &bs)?)
                } else {
                    None
                };
                qkv.push(Proj { w, row0: group[0].2, bias });
                i = j;
            }
            let ffn = match &l.ffn {
                FfnWeights::Dense { gate, up: upw, down } => {
                    let gate_up = if stackable(&gpu, &[gate, upw]) {
                        GateUp::Fused(up.stacked(format!("blk.{il}.ffn_gate_up"), &[gate, upw])?)
                    } else {
                        GateUp::Split { gate: up.mat(gate)?, up: up.mat(upw)? }
                    };
                    GpuFfn::Dense { gate_up, down: up.mat(down)? }
                }
                FfnWeights::Moe { .. } if on_cpu(il, l) => GpuFfn::CpuMoe,
                FfnWeights::Moe { router, gate_exps, up_exps, down_exps } => GpuFfn::Moe {
                    router: up.mat(router)?,
                    gate_exps: up.mat(gate_exps)?,
                    up_exps: up.mat(up_exps)?,
                    down_exps: up.mat(down_exps)?,
                },
            };
            layers.push(GpuLayer {
                attn_norm: up.vec(&l.attn_norm)?,
                qkv,
                qk_norm,
                wo: up.mat(&l.attn_output)?,
                post_attn_norm: up.opt_vec(&l.post_attention_norm)?,
                ffn_norm: up.vec(&l.ffn_norm)?,
                ffn,
                post_ffw_norm: up.opt_vec(&l.post_ffw_norm)?,
            });
        }
        let cpu_moe_layers = metas
            .layers
            .iter()
            .enumerate()
            .skip(first)
            .filter(|(il, l)| on_cpu(*il, l))
            .map(|(il, _)| il as u32)
            .collect();
        Ok(GpuModel {
            gpu: gpu.clone(),
            cfg,
            first_layer,
            token_embd,
            output_norm,
            output,
            cpu_moe_layers,
            layers,
            weight_bytes: total,
        })
    }

    /// Bytes of every buffer this model allocated on the device (what memory plans predict).
    pub fn device_bytes(&self) -> u64 {
        let w = |w: &GpuWeight| w.device_bytes();
        let b = |b: &wgpu::Buffer| b.size();
        let ob = |o: &Option<wgpu::Buffer>| o.as_ref().map_or(0, b);
        let mut total = self.token_embd.as_ref().map_or(0, w) + self.output.as_ref().map_or(0, w);
        total += b(&self.output_norm);
        for l in &self.layers {
            total += b(&l.attn_norm) + ob(&l.qk_norm) + w(&l.wo) + ob(&l.post_attn_norm);
            total += b(&l.ffn_norm) + ob(&l.post_ffw_norm);
            total += l.qkv.iter().map(|p| w(&p.w) + ob(&p.bias)).sum::<u64>();
            total += match &l.ffn {
                GpuFfn::Dense { gate_up: GateUp::Fused(gu), down } => w(gu) + w(down),
                GpuFfn::Dense { gate_up: GateUp::Split { gate, up }, down } => w(gate) + w(up) + w(down),
                GpuFfn::Moe { router, gate_exps, up_exps, down_exps } => {
                    w(router) + w(gate_exps) + w(up_exps) + w(down_exps)
                }
                GpuFfn::CpuMoe => 0,
            };
        }
        total
    }

    pub fn head(&self) -> Result<&GpuWeight> {
        self.output
            .as_ref()
            .or(self.token_embd.as_ref())
            .ok_or_else(|| EngineError::InvalidArgument("the model has no output head on the GPU".into()))
    }
}
