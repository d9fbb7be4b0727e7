//! Embedding lookup from (possibly quantized, possibly split) rows.

use bytemuck::{Pod, Zeroable};
use wllm_loaders::GgmlType;

use super::linear::{weight_entries, wtype_define};
use super::{Grid, Op, Res};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::gpu::tensor::GpuWeight;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GetRowsKey {
    pub wtype: GgmlType,
}

impl Kernel for GetRowsKey {
    fn label(&self) -> String {
        format!("get_rows.{}", self.wtype)
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("get_rows.wgsl").define(&wtype_define(self.wtype)).constant("WG", 64.0)
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    ncols: u32,
    nb: u32,
    meta_off: u32,
    row0: u32,
    nrows: u32,
    out_stride: u32,
    scale: f32,
    _pad: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout =
    params_layout!(Params { ncols, nb, meta_off, row0, nrows, out_stride, scale, _pad });

/// out\[t, :\] = W\[ids\[t\], :\] * scale for every token of the batch.
pub fn get_rows(
    gpu: &Gpu,
    w: &GpuWeight,
    ids: &wgpu::Buffer,
    out: &wgpu::Buffer,
    out_stride: u32,
    scale: f32,
) -> Result<Vec<Op>> {
    let pipeline = gpu.pipeline(PipelineKey::GetRows(GetRowsKey { wtype: w.ggml_type }))?;
    Ok(w.parts
        .iter()
        .map(|part| {
            let p = Params {
                ncols: w.ncols,
                nb: w.nb,
                meta_off: part.meta_off,
                row0: part.row0,
                nrows: part.nrows,
                out_stride,
                scale,
                _pad: 0,
            };
            let ubuf = gpu.uniform("get_rows.params", &p);
            // Per token: one weight row read and one f32 row written, by whichever part holds
            // the row (so split evenly over the parts' dispatches).
            let row_bytes = (w.n_bytes() / w.nrows.max(1) as u64 + w.ncols as u64 * 4) / w.parts.len() as u64;
            let mut entries = weight_entries(w, part);
            entries.extend([(1, Res::Buf(ids)), (2, Res::Buf(out)), (3, Res::Buf(&ubuf))]);
            let mut op = gpu.op(pipeline.clone(), &entries, Grid::TokensX { y: 1 });
            op.traffic = (0, row_bytes);
            op
        })
        .collect())
}
