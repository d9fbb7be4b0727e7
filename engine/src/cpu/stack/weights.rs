//! The CPU layers' weights, borrowed from the tensor source where it hands out borrowed bytes
//! (a memory-mapped GGUF or safetensors file) and owned where it converted them on load.

use std::borrow::Cow;
use std::sync::Arc;

use wllm_loaders::GgmlType;
use wllm_loaders::model::{FfnWeights, LayerWeights, ModelWeights, TensorMeta, TensorSource};
use wllm_loaders::{ModelConfig, ModelError};

use crate::cpu::linear::WeightView;
use crate::error::{EngineError, Result};

enum Bytes {
    /// Borrowed from the source, which the stack keeps alive (see [`Loader::matrix`]).
    Mapped(&'static [u8]),
    Owned(Box<[u8]>),
}

/// A matrix as the source stores it: `rows` of `cols` elements, experts stacked as rows.
pub(crate) struct Weight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Bytes,
}

impl Weight {
    pub fn view(&self) -> WeightView<'_> {
        let bytes = match &self.bytes {
            Bytes::Mapped(b) => b,
            Bytes::Owned(b) => &b[..],
        };
        WeightView { ty: self.ty, rows: self.rows, cols: self.cols, bytes }
    }
    pub fn n_bytes(&self) -> u64 {
        self.view().bytes.len() as u64
    }
}

pub(crate) enum Ffn {
    Dense { gate: Weight, up: Weight, down: Weight },
    Moe { router: Weight, gate_exps: Weight, up_exps: Weight, down_exps: Weight },
}

pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Weight,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
    pub post_ffw_norm: Option<Vec<f32>>,
}

impl Layer {
    pub fn n_bytes(&self) -> u64 {
        let mats: u64 = [&self.wq, &self.wk, &self.wv, &self.wo].iter().map(|w| w.n_bytes()).sum();
        let ffn: u64 = match &self.ffn {
            Ffn::Dense { gate, up, down } => gate.n_bytes() + up.n_bytes() + down.n_bytes(),
            Ffn::Moe { router, gate_exps, up_exps, down_exps } => {
                router.n_bytes() + gate_exps.n_bytes() + up_exps.n_bytes() + down_exps.n_bytes()
            }
        };
        let vecs: usize = [
            &self.bq,
            &self.bk,
            &self.bv,
            &self.q_norm,
            &self.k_norm,
            &self.post_attn_norm,
            &self.post_ffw_norm,
        ]
        .iter()
        .filter_map(|v| v.as_ref().map(Vec::len))
        .sum::<usize>()
            + self.attn_norm.len()
            + self.ffn_norm.len();
        mats + ffn + 4 * vecs as u64
    }
}

/// Everything a stack reads: the embedding, its layers and (optionally) the head.
pub(crate) struct StackWeights {
    pub token_embd: Weight,
    pub layers: Vec<Layer>,
    /// Output norm and head (`None` for the head when it is tied to `token_embd`).
    pub head: Option<(Vec<f32>, Option<Weight>)>,
}

pub(crate) struct Loader<'a> {
    pub src: &'a Arc<dyn TensorSource>,
}

impl Loader<'_> {
    fn bytes(&self, m: &TensorMeta) -> Result<Cow<'_, [u8]>> {
        Ok(self.src.bytes(&m.name).ok_or_else(|| ModelError::MissingTensor(m.name.clone()))?.bytes)
    }

    pub(crate) fn matrix(&self, m: &TensorMeta) -> Result<Weight> {
        let cols = m.dim(0) as usize;
        let rows = if cols == 0 { 0 } else { (m.n_elements() / cols as u64) as usize };
        let bytes = match self.bytes(m)? {
            // SAFETY: the slice borrows from `*self.src`, and the stack that owns this weight
            // holds a clone of that `Arc` for as long as it lives, so the source is neither
            // dropped nor moved nor mutably borrowed. A source hands out `&self`-borrowed bytes
            // without knowing how long the borrow lasts, so it must keep them valid until it is
            // dropped or mutably borrowed, which cannot happen here; the slice never leaves the
            // stack with a lifetime longer than the stack's (see `Weight::view`).
            Cow::Borrowed(b) => Bytes::Mapped(unsafe { std::slice::from_raw_parts(b.as_ptr(), b.len()) }),
            Cow::Owned(v) => Bytes::Owned(v.into_boxed_slice()),
        };
        let w = Weight { ty: m.ggml_type, rows, cols, bytes };
        let v = w.view();
        WeightView::new(v.ty, v.rows, v.cols, v.bytes)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", m.name)))?;
        Ok(w)
    }

    fn vector(&self, m: &TensorMeta) -> Result<Vec<f32>> {
        let b = self.bytes(m)?;
        wllm_loaders::quant::dequantize(m.ggml_type, &b, m.n_elements() as usize)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", m.name)))
    }

    fn opt_vector(&self, m: &Option<TensorMeta>) -> Result<Option<Vec<f32>>> {
        m.as_ref().map(|m| self.vector(m)).transpose()
    }

    fn layer(&self, l: &LayerWeights<TensorMeta>) -> Result<Layer> {
        let ffn = match &l.ffn {
            FfnWeights::Dense { gate, up, down } => {
                Ffn::Dense { gate: self.matrix(gate)?, up: self.matrix(up)?, down: self.matrix(down)? }
            }
            FfnWeights::Moe { router, gate_exps, up_exps, down_exps } => Ffn::Moe {
                router: self.matrix(router)?,
                gate_exps: self.matrix(gate_exps)?,
                up_exps: self.matrix(up_exps)?,
                down_exps: self.matrix(down_exps)?,
            },
        };
        Ok(Layer {
            attn_norm: self.vector(&l.attn_norm)?,
            wq: self.matrix(&l.attn_q)?,
            wk: self.matrix(&l.attn_k)?,
            wv: self.matrix(&l.attn_v)?,
            bq: self.opt_vector(&l.attn_q_bias)?,
            bk: self.opt_vector(&l.attn_k_bias)?,
            bv: self.opt_vector(&l.attn_v_bias)?,
            q_norm: self.opt_vector(&l.attn_q_norm)?,
            k_norm: self.opt_vector(&l.attn_k_norm)?,
            wo: self.matrix(&l.attn_output)?,
            post_attn_norm: self.opt_vector(&l.post_attention_norm)?,
            ffn_norm: self.vector(&l.ffn_norm)?,
            ffn,
            post_ffw_norm: self.opt_vector(&l.post_ffw_norm)?,
        })
    }

    /// The embedding, layers `0..n_layers` and, if `with_head`, the output norm and head.
    pub fn load(&self, cfg: &ModelConfig, n_layers: usize, with_head: bool) -> Result<StackWeights> {
        let metas = ModelWeights::resolve(cfg, self.src.as_ref())?;
        let layers = metas.layers[..n_layers].iter().map(|l| self.layer(l)).collect::<Result<Vec<_>>>()?;
        let head = if with_head {
            Some((
                self.vector(&metas.output_norm)?,
                metas.output.as_ref().map(|m| self.matrix(m)).transpose()?,
            ))
        } else {
            None
        };
        Ok(StackWeights { token_embd: self.matrix(&metas.token_embd)?, layers, head })
    }
}
