//! The CPU layers' weights, borrowed from the tensor source where it hands out borrowed bytes
//! (a memory-mapped GGUF or safetensors file) and owned where it converted them on load.

use std::borrow::Cow;
use std::sync::Arc;

use wllm_loaders::GgmlType;
use wllm_loaders::model::{LayerMetas, LayerWeights, ModelWeights, Packer, TensorMeta, TensorSource};
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
    /// In the CPU's packed layout (`linear::pack`) rather than the file's.
    packed: bool,
}

impl Weight {
    pub fn view(&self) -> WeightView<'_> {
        let bytes = match &self.bytes {
            Bytes::Mapped(b) => b,
            Bytes::Owned(b) => &b[..],
        };
        WeightView { ty: self.ty, rows: self.rows, cols: self.cols, bytes, packed: self.packed }
    }
    pub fn n_bytes(&self) -> u64 {
        self.view().bytes.len() as u64
    }
}

/// A CPU layer: matrices as stored, vectors as f32.
pub(crate) type Layer = LayerWeights<Weight, Vec<f32>>;

pub(crate) fn layer_bytes(l: &Layer) -> u64 {
    l.matrices().map(Weight::n_bytes).sum::<u64>() + l.vectors().map(|v| 4 * v.len() as u64).sum::<u64>()
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
        let packed = self.src.packed(&m.name);
        let w = Weight { ty: m.ggml_type, rows, cols, bytes, packed };
        let v = w.view();
        let check = if packed { WeightView::new_packed } else { WeightView::new };
        check(v.ty, v.rows, v.cols, v.bytes)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", m.name)))?;
        Ok(w)
    }

    pub(crate) fn vector(&self, m: &TensorMeta) -> Result<Vec<f32>> {
        let b = self.bytes(m)?;
        wllm_loaders::quant::dequantize(m.ggml_type, &b, m.n_elements() as usize)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", m.name)))
    }

    fn layer(&self, l: &LayerMetas) -> Result<Layer> {
        l.try_map(|m| self.matrix(m), |v| self.vector(v))
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

/// The loader's [`Packer`] for the CPU kernels of `isa`: rewrites the matrices they read
/// faster in the packed layout ([`crate::cpu::pack`]) as the loader copies them.
pub struct CpuPacker(pub crate::cpu::Isa);

impl Packer for CpuPacker {
    fn packs(&self, meta: &TensorMeta) -> bool {
        // Matrices store `cols` first; a stack of experts has its rows per expert second.
        meta.dims.len() >= 2 && crate::cpu::packs(self.0, meta.ggml_type, meta.dim(1) as usize)
    }

    fn pack(&self, meta: &TensorMeta, src: &[u8], dst: &mut [u8]) -> std::result::Result<(), String> {
        crate::cpu::pack(meta.ggml_type, meta.dim(0) as usize, src, dst).map_err(|e| e.to_string())
    }
}
