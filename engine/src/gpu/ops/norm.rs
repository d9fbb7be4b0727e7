//! RMS norm, optionally fused with Gemma's post-norm and residual add.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res, pow2_clamp};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NormKey {
    pub post_add: bool,
    pub last_row: bool,
    /// Rows read from a list (`NormArgs::rows_from`).
    pub listed: bool,
    pub wg: u32,
}

impl Kernel for NormKey {
    fn label(&self) -> String {
        format!(
            "rms_norm{}{}{}.wg{}",
            if self.post_add { ".post_add" } else { "" },
            if self.last_row { ".last" } else { "" },
            if self.listed { ".rows" } else { "" },
            self.wg
        )
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("norm.wgsl")
            .define_if(self.post_add, "POST_ADD")
            .define_if(self.last_row, "LAST_ROW")
            .define_if(self.listed, "ROWS")
            .constant("WG", self.wg as f64)
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    x_stride: u32,
    out_stride: u32,
    eps: f32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(Params { n, x_stride, out_stride, eps });

pub struct NormArgs<'a> {
    pub n: u32,
    pub eps: f32,
    /// Rows to normalise (read-write when `post` is set: the residual stream).
    pub x: &'a wgpu::Buffer,
    pub weight: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    /// Gemma post-norm: `x += rms(a) * w_post` before normalising.
    pub post: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// Normalise only the batch's last row (read from `step`), written as row 0.
    pub last_row_of: Option<&'a wgpu::Buffer>,
    /// Normalise the rows whose indices this buffer lists (`u32`s; the op is recorded with
    /// their count), written in list order.
    pub rows_from: Option<&'a wgpu::Buffer>,
}

pub fn rms_norm(gpu: &Gpu, a: &NormArgs<'_>) -> Result<Op> {
    let key = NormKey {
        post_add: a.post.is_some(),
        last_row: a.last_row_of.is_some(),
        listed: a.rows_from.is_some(),
        wg: pow2_clamp(a.n / 4, 32, 256),
    };
    let pipeline = gpu.pipeline(PipelineKey::Norm(key))?;
    let ubuf = gpu.uniform("norm.params", &Params { n: a.n, x_stride: a.n, out_stride: a.n, eps: a.eps });
    let mut e = vec![(0, Res::Buf(a.x)), (1, Res::Buf(a.weight)), (2, Res::Buf(a.out)), (3, Res::Buf(&ubuf))];
    if let Some((src, w)) = a.post {
        e.push((4, Res::Buf(src)));
        e.push((5, Res::Buf(w)));
    }
    if let Some(step) = a.last_row_of {
        e.push((6, Res::Buf(step)));
    }
    if let Some(rows) = a.rows_from {
        e.push((6, Res::Buf(rows)));
    }
    let grid = if a.last_row_of.is_some() { Grid::Fixed([1, 1, 1]) } else { Grid::TokensX { y: 1 } };
    let mut op = gpu.op(pipeline, &e, grid);
    // Bytes per row: x in, out written, and with a post-norm its input read and x written back.
    let row = a.n as u64 * 4;
    let per_row = if a.post.is_some() { 4 * row } else { 2 * row };
    let weights = if a.post.is_some() { 2 * row } else { row };
    op.traffic = if a.last_row_of.is_some() { (weights + per_row, 0) } else { (weights, per_row) };
    Ok(op)
}
