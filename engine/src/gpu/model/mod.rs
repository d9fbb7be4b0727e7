//! The GPU's share of a model: its layers' weights on the device (the one per-layer weights
//! type, [`LayerWeights`], over device matrices and vectors) and the layer plan that
//! `graph.rs` turns into dispatches.

mod context;
mod graph;

use std::sync::Arc;

pub use context::{
    Context, ContextBytes, ContextOptions, Logits, PendingStep, StepOutput, StepTimings, context_bytes,
};
use wllm_loaders::model::{
    FfnWeights, LayerMetas, LayerWeights, ModelWeights, TensorBytes, TensorMeta, TensorSource,
};
use wllm_loaders::{ModelConfig, ModelError};

use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::tensor::GpuWeight;
use crate::layers::{ModelPlan, required};

/// A matrix on the GPU: rows `row0..row0 + rows` of a weight that may hold neighbours
/// stacked with it (q, k and v; gate and up), so that neighbours of one type take one dispatch.
#[derive(Clone, Debug)]
pub struct GpuMat {
    pub weight: Arc<GpuWeight>,
    pub row0: u32,
    pub rows: u32,
}

impl GpuMat {
    fn whole(w: GpuWeight) -> GpuMat {
        GpuMat { rows: w.nrows, row0: 0, weight: Arc::new(w) }
    }

    /// Whether `next` continues this matrix inside the same stacked weight.
    pub fn followed_by(&self, next: &GpuMat) -> bool {
        Arc::ptr_eq(&self.weight, &next.weight) && self.row0 + self.rows == next.row0
    }
}

/// A vector (norm weights, a bias) on the GPU: f32 elements `offset..offset + len` of a buffer
/// that may hold neighbours (the q then the k norm; the q, k and v biases of a stacked weight).
#[derive(Clone, Debug)]
pub struct GpuVec {
    pub buffer: Arc<wgpu::Buffer>,
    pub offset: u32,
    pub len: u32,
}

/// A GPU layer: the one per-layer weights type, holding device matrices and vectors. A MoE
/// layer whose experts run on the CPU (`--cpu-moe`) has [`FfnWeights::Elsewhere`].
pub type GpuLayer = LayerWeights<GpuMat, GpuVec>;

/// The GPU's share of a model: layers `first_layer..n_layer` and the output head. It is shared
/// (read-only) by any number of contexts. When `first_layer > 0` the layers before it run
/// elsewhere (the CPU) and each step starts from their hidden state instead of token ids.
#[derive(Debug)]
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub cfg: ModelConfig,
    /// What every step computes; the graph builder turns it into dispatches.
    pub plan: ModelPlan,
    /// Model layer index of `layers[0]`.
    pub first_layer: u32,
    /// Present when the GPU embeds the tokens (`first_layer == 0`) or the head is tied to it.
    pub token_embd: Option<GpuWeight>,
    pub output_norm: GpuVec,
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

    /// 1-D tensors concatenated into one f32 buffer (norm weights, biases), one view each.
    fn vecs(&mut self, label: &str, ms: &[&TensorMeta]) -> Result<Vec<GpuVec>> {
        let mut all = Vec::new();
        let mut spans = Vec::with_capacity(ms.len());
        for m in ms {
            let t = self.bytes(m)?;
            let mut v = vec![0f32; m.n_elements() as usize];
            wllm_loaders::quant::dequantize_row(m.ggml_type, &t.bytes, &mut v)
                .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", m.name)))?;
            spans.push((all.len() as u32, v.len() as u32));
            all.extend(v);
            self.tick(m.n_bytes())?;
        }
        let buffer = Arc::new(self.gpu.storage_init(label, bytemuck::cast_slice(&all)));
        Ok(spans.into_iter().map(|(offset, len)| GpuVec { buffer: buffer.clone(), offset, len }).collect())
    }

    fn vec(&mut self, m: &TensorMeta) -> Result<GpuVec> {
        Ok(self.vecs(&m.name, &[m])?.remove(0))
    }

    /// Matrices (with their optional biases) stacked into as few weights as their types allow:
    /// runs of neighbours that share a type and row length and fit one binding.
    fn stacked_run<const N: usize>(
        &mut self,
        name: &str,
        ms: [(&TensorMeta, Option<&TensorMeta>); N],
    ) -> Result<[(GpuMat, Option<GpuVec>); N]> {
        let mut out = Vec::with_capacity(ms.len());
        let mut i = 0;
        while i < ms.len() {
            let mut j = i + 1;
            while j < ms.len() && stackable(self.gpu, &ms[i..=j].iter().map(|p| p.0).collect::<Vec<_>>()) {
                j += 1;
            }
            let group: Vec<&TensorMeta> = ms[i..j].iter().map(|p| p.0).collect();
            let weight = Arc::new(self.stacked(format!("{name}[{i}..{j}]"), &group)?);
            let biases: Vec<&TensorMeta> = ms[i..j].iter().filter_map(|p| p.1).collect();
            let mut biases = if biases.len() == j - i {
                self.vecs(&format!("{name}.bias"), &biases)?.into_iter().map(Some).collect()
            } else {
                vec![None; j - i]
            };
            let mut row0 = 0;
            for (m, bias) in group.iter().zip(biases.drain(..)) {
                let rows = (m.n_elements() / m.dim(0)) as u32;
                out.push((GpuMat { weight: weight.clone(), row0, rows }, bias));
                row0 += rows;
            }
            i = j;
        }
        out.try_into().map_err(|_| EngineError::InvalidArgument(format!("{name}: stacking lost a matrix")))
    }

    /// One layer, with the attention projections and the gate/up pair stacked where they can.
    fn layer(&mut self, il: usize, l: &LayerMetas, experts_elsewhere: bool) -> Result<GpuLayer> {
        // A Gated DeltaNet layer has its own projections in place of attention's.
        let delta_net = match &l.delta_net {
            // Matrices first, then vectors: each pass's closure borrows the uploader alone.
            Some(d) => {
                let mats =
                    d.try_map(|m| self.mat(m).map(GpuMat::whole), |v| Ok::<_, EngineError>(v.clone()))?;
                Some(mats.try_map(|m| Ok::<_, EngineError>(m.clone()), |v| self.vec(v))?)
            }
            None => None,
        };
        let attention = match delta_net {
            Some(_) => None,
            None => Some(self.stacked_run(
                &format!("blk.{il}.attn_qkv"),
                [
                    (required(&l.attn_q, il, "q projection")?, l.attn_q_bias.as_ref()),
                    (required(&l.attn_k, il, "k projection")?, l.attn_k_bias.as_ref()),
                    (required(&l.attn_v, il, "v projection")?, l.attn_v_bias.as_ref()),
                ],
            )?),
        };
        let ([attn_q, attn_k, attn_v], [attn_q_bias, attn_k_bias, attn_v_bias]) = match attention {
            Some([(q, qb), (k, kb), (v, vb)]) => ([Some(q), Some(k), Some(v)], [qb, kb, vb]),
            None => ([None, None, None], [None, None, None]),
        };
        // The RoPE kernel reads the q norm and then the k norm from one buffer.
        let (attn_q_norm, attn_k_norm) = match (&l.attn_q_norm, &l.attn_k_norm) {
            (Some(q), Some(k)) => match <[GpuVec; 2]>::try_from(self.vecs("qk_norm", &[q, k])?) {
                Ok([q, k]) => (Some(q), Some(k)),
                Err(_) => return Err(EngineError::InvalidArgument(format!("layer {il}: q/k norms"))),
            },
            _ => (None, None),
        };
        let ffn = match &l.ffn {
            FfnWeights::Dense { gate, up, down } => {
                let [(gate, _), (up, _)] =
                    self.stacked_run(&format!("blk.{il}.ffn_gate_up"), [(gate, None), (up, None)])?;
                FfnWeights::Dense { gate, up, down: GpuMat::whole(self.mat(down)?) }
            }
            FfnWeights::Moe { .. } if experts_elsewhere => FfnWeights::Elsewhere,
            other => {
                let biases = other.vectors().map(|v| self.vec(v)).collect::<Result<Vec<_>>>()?;
                let mut biases = biases.into_iter();
                let missing = || EngineError::InvalidArgument(format!("layer {il}: expert biases"));
                other.try_map(|m| self.mat(m).map(GpuMat::whole), |_| biases.next().ok_or_else(missing))?
            }
        };
        let attn_output = match &l.attn_output {
            Some(m) => Some(GpuMat::whole(self.mat(m)?)),
            None if l.delta_net.is_some() => None,
            None => return Err(EngineError::InvalidArgument(format!("layer {il} has no output projection"))),
        };
        let mut vec = |m: &Option<TensorMeta>| m.as_ref().map(|m| self.vec(m)).transpose();
        let (attn_output_bias, attn_sinks) = (vec(&l.attn_output_bias)?, vec(&l.attn_sinks)?);
        let post_attention_norm = l.post_attention_norm.as_ref().map(|m| self.vec(m)).transpose()?;
        let post_ffw_norm = l.post_ffw_norm.as_ref().map(|m| self.vec(m)).transpose()?;
        Ok(GpuLayer {
            post_attention_norm,
            post_ffw_norm,
            attn_norm: self.vec(&l.attn_norm)?,
            ffn_norm: self.vec(&l.ffn_norm)?,
            attn_output,
            attn_q,
            attn_k,
            attn_v,
            delta_net,
            attn_q_bias,
            attn_k_bias,
            attn_v_bias,
            attn_q_norm,
            attn_k_norm,
            attn_output_bias,
            attn_sinks,
            ffn,
        })
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
    /// of MoE layers below `cpu_moe_below` stay in host memory (see [`FfnWeights::Elsewhere`]).
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
        let plan = ModelPlan::new(&cfg, src)?;
        let first = first_layer as usize;
        let need_embd = first == 0 || metas.output.is_none();
        let on_cpu = |il: usize, l: &LayerMetas| {
            (il as u32) < cpu_moe_below && matches!(l.ffn, FfnWeights::Moe { .. })
        };
        let mut total: u64 = 0;
        for (il, l) in metas.layers.iter().enumerate().skip(first) {
            total += l.iter().map(|m| m.n_bytes()).sum::<u64>();
            if on_cpu(il, l) {
                total -= l.ffn.iter().chain(l.ffn.vectors()).map(|m| m.n_bytes()).sum::<u64>();
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
            layers.push(up.layer(il, l, on_cpu(il, l))?);
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
            plan,
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
    /// Stacked weights and packed vectors are counted once.
    pub fn device_bytes(&self) -> u64 {
        let mut weights: Vec<&Arc<GpuWeight>> = Vec::new();
        let mut vectors: Vec<&Arc<wgpu::Buffer>> = Vec::new();
        for l in &self.layers {
            weights.extend(l.matrices().map(|m| &m.weight));
            vectors.extend(l.vectors().map(|v| &v.buffer));
        }
        weights.dedup_by(|a, b| Arc::ptr_eq(a, b));
        vectors.dedup_by(|a, b| Arc::ptr_eq(a, b));
        let w = |w: &GpuWeight| w.device_bytes();
        let mut total = self.token_embd.as_ref().map_or(0, w) + self.output.as_ref().map_or(0, w);
        total += self.output_norm.buffer.size();
        total
            + weights.iter().map(|x| x.device_bytes()).sum::<u64>()
            + vectors.iter().map(|b| b.size()).sum::<u64>()
    }

    pub fn head(&self) -> Result<&GpuWeight> {
        self.output
            .as_ref()
            .or(self.token_embd.as_ref())
            .ok_or_else(|| EngineError::InvalidArgument("the model has no output head on the GPU".into()))
    }
}
