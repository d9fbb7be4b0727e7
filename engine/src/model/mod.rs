//! One transformer implementation for every supported architecture. What differs between
//! llama, qwen2/3, qwen3moe and gemma3 is data in [`ModelConfig`] and which optional tensors
//! exist; the graph in `graph.rs` reads those and nothing else.

mod context;
mod graph;

use std::sync::Arc;

pub use context::{Context, ContextOptions, Logits, PendingStep, StepOutput, StepTimings};
use wllm_loaders::model::{FfnWeights, ModelWeights, TensorBytes, TensorMeta, TensorSource};
use wllm_loaders::{ModelConfig, ModelError};

use crate::device::Gpu;
use crate::error::{EngineError, Result};
use crate::tensor::GpuWeight;

/// A layer's feed-forward weights on the GPU.
#[derive(Debug)]
pub enum GpuFfn {
    Dense { gate_up: GateUp, down: GpuWeight },
    Moe { router: GpuWeight, gate_exps: GpuWeight, up_exps: GpuWeight, down_exps: GpuWeight },
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

/// A model whose weights live on one GPU. It is shared (read-only) by any number of contexts.
#[derive(Debug)]
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub cfg: ModelConfig,
    pub token_embd: GpuWeight,
    pub output_norm: wgpu::Buffer,
    /// `None`: the head is tied to `token_embd`.
    pub output: Option<GpuWeight>,
    pub layers: Vec<GpuLayer>,
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
    progress: Progress<'a>,
}

impl Uploader<'_> {
    fn bytes(&self, m: &TensorMeta) -> Result<TensorBytes<'_>> {
        Ok(self.src.bytes(&m.name).ok_or_else(|| ModelError::MissingTensor(m.name.clone()))?)
    }

    fn tick(&mut self, n: u64) {
        self.done += n;
        (self.progress)(self.done, self.total);
    }

    /// A matrix; stacked experts keep each expert (ne1 rows) inside one buffer.
    fn mat(&mut self, m: &TensorMeta) -> Result<GpuWeight> {
        let align = if m.dims.len() > 2 { m.dim(1) } else { 1 };
        let w = GpuWeight::upload_aligned(self.gpu, &self.bytes(m)?, align)?;
        self.tick(m.n_bytes());
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
        self.tick(ms.iter().map(|m| m.n_bytes()).sum());
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
            self.tick(m.n_bytes());
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
    pub fn load(
        gpu: Arc<Gpu>,
        cfg: ModelConfig,
        src: &dyn TensorSource,
        progress: Progress<'_>,
    ) -> Result<GpuModel> {
        let metas = ModelWeights::resolve(&cfg, src)?;
        let total: u64 = metas.all().iter().map(|m| m.n_bytes()).sum();
        let mut up = Uploader { gpu: &gpu, src, done: 0, total, progress };
        let token_embd = up.mat(&metas.token_embd)?;
        let output = metas.output.as_ref().map(|m| up.mat(m)).transpose()?;
        let output_norm = up.vec(&metas.output_norm)?;
        let mut layers = Vec::with_capacity(metas.layers.len());
        for (il, l) in metas.layers.iter().enumerate() {
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
        Ok(GpuModel { gpu: gpu.clone(), cfg, token_embd, output_norm, output, layers, weight_bytes: total })
    }

    pub fn head(&self) -> &GpuWeight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}
