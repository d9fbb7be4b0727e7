//! One transformer implementation for every supported architecture. What differs between
//! llama, qwen2/3, qwen3moe and gemma3 is data in [`ModelConfig`] and which optional tensors
//! exist; the graph in `graph.rs` reads those and nothing else.

mod context;
mod graph;

use std::sync::Arc;

pub use context::{Context, ContextOptions, Logits, StepOutput, StepTimings};
use wllm_loaders::model::{FfnWeights, ModelWeights, TensorMeta, TensorSource};
use wllm_loaders::{ModelConfig, ModelError};

use crate::device::Gpu;
use crate::error::{EngineError, Result};
use crate::tensor::{GpuWeight, upload_f32};

/// A layer's feed-forward weights on the GPU.
#[derive(Debug)]
pub enum GpuFfn {
    Dense { gate: GpuWeight, up: GpuWeight, down: GpuWeight },
    Moe { router: GpuWeight, gate_exps: GpuWeight, up_exps: GpuWeight, down_exps: GpuWeight },
}

#[derive(Debug)]
pub struct GpuLayer {
    pub attn_norm: wgpu::Buffer,
    pub wq: GpuWeight,
    pub wk: GpuWeight,
    pub wv: GpuWeight,
    pub bq: Option<wgpu::Buffer>,
    pub bk: Option<wgpu::Buffer>,
    pub bv: Option<wgpu::Buffer>,
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
    pub weight_bytes: u64,
}

/// Load progress: bytes uploaded so far and in total.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

impl GpuModel {
    pub fn load(
        gpu: Arc<Gpu>,
        cfg: ModelConfig,
        src: &dyn TensorSource,
        progress: Progress<'_>,
    ) -> Result<GpuModel> {
        let metas = ModelWeights::resolve(&cfg, src)?;
        let total: u64 = metas.all().iter().map(|m| m.n_bytes()).sum();
        let mut done = 0u64;
        let mut mat_aligned = |m: &TensorMeta, align: u64| -> Result<GpuWeight> {
            let t = src.bytes(&m.name).ok_or_else(|| ModelError::MissingTensor(m.name.clone()))?;
            let w = GpuWeight::upload_aligned(&gpu, &t, align)?;
            done += m.n_bytes();
            progress(done, total);
            Ok(w)
        };
        // Expert stacks keep each expert (ne1 rows) inside one buffer.
        let mut mat = |m: &TensorMeta| mat_aligned(m, if m.dims.len() > 2 { m.ne(1) } else { 1 });
        let vecf = |m: &TensorMeta| -> Result<wgpu::Buffer> {
            let t = src.bytes(&m.name).ok_or_else(|| ModelError::MissingTensor(m.name.clone()))?;
            upload_f32(&gpu, &t)
        };
        let token_embd = mat(&metas.token_embd)?;
        let output = metas.output.as_ref().map(&mut mat).transpose()?;
        let output_norm = vecf(&metas.output_norm)?;
        let mut layers = Vec::with_capacity(metas.layers.len());
        for l in &metas.layers {
            let qk_norm = match (&l.attn_q_norm, &l.attn_k_norm) {
                (Some(q), Some(k)) => {
                    let mut both = vec![0f32; (q.n_elements() + k.n_elements()) as usize];
                    let (qa, ka) = both.split_at_mut(q.n_elements() as usize);
                    for (meta, out) in [(q, qa), (k, ka)] {
                        let t = src
                            .bytes(&meta.name)
                            .ok_or_else(|| ModelError::MissingTensor(meta.name.clone()))?;
                        wllm_loaders::quant::dequantize_row(meta.ggml_type, &t.bytes, out)
                            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", meta.name)))?;
                    }
                    Some(gpu.storage_init("qk_norm", bytemuck::cast_slice(&both)))
                }
                _ => None,
            };
            let ffn = match &l.ffn {
                FfnWeights::Dense { gate, up, down } => {
                    GpuFfn::Dense { gate: mat(gate)?, up: mat(up)?, down: mat(down)? }
                }
                FfnWeights::Moe { router, gate_exps, up_exps, down_exps } => GpuFfn::Moe {
                    router: mat(router)?,
                    gate_exps: mat(gate_exps)?,
                    up_exps: mat(up_exps)?,
                    down_exps: mat(down_exps)?,
                },
            };
            layers.push(GpuLayer {
                attn_norm: vecf(&l.attn_norm)?,
                wq: mat(&l.attn_q)?,
                wk: mat(&l.attn_k)?,
                wv: mat(&l.attn_v)?,
                bq: l.attn_q_bias.as_ref().map(vecf).transpose()?,
                bk: l.attn_k_bias.as_ref().map(vecf).transpose()?,
                bv: l.attn_v_bias.as_ref().map(vecf).transpose()?,
                qk_norm,
                wo: mat(&l.attn_output)?,
                post_attn_norm: l.post_attention_norm.as_ref().map(vecf).transpose()?,
                ffn_norm: vecf(&l.ffn_norm)?,
                ffn,
                post_ffw_norm: l.post_ffw_norm.as_ref().map(vecf).transpose()?,
            });
        }
        Ok(GpuModel { gpu: gpu.clone(), cfg, token_embd, output_norm, output, layers, weight_bytes: total })
    }

    pub fn head(&self) -> &GpuWeight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}
