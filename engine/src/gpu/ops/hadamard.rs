//! The Walsh-Hadamard rotation back of an attention output computed from a rotated V cache.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

/// Blocks of 64, the only size V rotates by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HadamardKey {
    /// Then multiply by the sigmoid of the output-gate logits in the packed QKV rows.
    pub gated: bool,
}

impl Kernel for HadamardKey {
    fn label(&self) -> String {
        format!("hadamard64{}", if self.gated { ".gated" } else { "" })
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("hadamard.wgsl").define_if(self.gated, "GATED")
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    row: u32,
    qkv_stride: u32,
    head_dim: u32,
    _pad: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(Params { row, qkv_stride, head_dim, _pad });

/// Output-gate logits for [`hadamard64`]: each q head of `head_dim` in the packed rows of
/// `qkv_stride` floats is followed by as many gate logits.
pub struct Gate<'a> {
    pub qkv: &'a wgpu::Buffer,
    pub qkv_stride: u32,
    pub head_dim: u32,
}

/// Rotates each 64-element block of the step's rows of `row` floats in `x`, in place, then
/// applies `gate` if given.
pub fn hadamard64(gpu: &Gpu, x: &wgpu::Buffer, row: u32, gate: Option<Gate<'_>>) -> Result<Op> {
    if row == 0 || !row.is_multiple_of(64) {
        return Err(EngineError::InvalidArgument(format!("Walsh-Hadamard blocks of 64 in rows of {row}")));
    }
    let pipeline = gpu.pipeline(PipelineKey::Hadamard(HadamardKey { gated: gate.is_some() }))?;
    let (qkv_stride, head_dim) = gate.as_ref().map_or((0, 1), |g| (g.qkv_stride, g.head_dim));
    let ubuf = gpu.uniform("hadamard.params", &Params { row, qkv_stride, head_dim, _pad: 0 });
    let mut entries = vec![(0, Res::Buf(x)), (1, Res::Buf(&ubuf))];
    if let Some(g) = &gate {
        entries.push((2, Res::Buf(g.qkv)));
    }
    let mut op = gpu.op(pipeline, &entries, Grid::TokensY { x: row / 64 });
    op.traffic = (0, 8 * row as u64 + if gate.is_some() { 4 * row as u64 } else { 0 });
    Ok(op)
}
