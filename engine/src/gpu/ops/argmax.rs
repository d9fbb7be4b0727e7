//! Greedy sampling on the GPU; only the token id comes back to the host.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArgmaxKey {
    pub stage2: bool,
}

impl Kernel for ArgmaxKey {
    fn label(&self) -> String {
        format!("argmax.{}", if self.stage2 { "final" } else { "chunks" })
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("argmax.wgsl").define_if(self.stage2, "STAGE2").constant("WG", 256.0)
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    chunk: u32,
    logits_offset: u32,
    out_index: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(Params { n, chunk, logits_offset, out_index });

/// Buffers the two stages share.
pub struct ArgmaxOps {
    pub ops: [Op; 2],
    pub partials: wgpu::Buffer,
}

/// argmax of `logits[offset .. offset + n]` into `tokens[out_index]`.
pub fn argmax(
    gpu: &Gpu,
    logits: &wgpu::Buffer,
    offset: u32,
    n: u32,
    tokens: &wgpu::Buffer,
    out_index: u32,
) -> Result<ArgmaxOps> {
    let chunk = 4096u32;
    let groups = n.div_ceil(chunk).max(1);
    let partials = gpu.storage("argmax.partials", groups as u64 * 8);
    let p1 = gpu.pipeline(PipelineKey::Argmax(ArgmaxKey { stage2: false }))?;
    let p2 = gpu.pipeline(PipelineKey::Argmax(ArgmaxKey { stage2: true }))?;
    let u1 = gpu.uniform("argmax.params", &Params { n, chunk, logits_offset: offset, out_index });
    let u2 = gpu.uniform("argmax.params", &Params { n: groups, chunk, logits_offset: 0, out_index });
    let a = gpu.op(
        p1,
        &[(0, Res::Buf(logits)), (1, Res::Buf(&partials)), (2, Res::Buf(tokens)), (3, Res::Buf(&u1))],
        Grid::Fixed([groups, 1, 1]),
    );
    let b = gpu.op(
        p2,
        &[(0, Res::Buf(logits)), (1, Res::Buf(&partials)), (2, Res::Buf(tokens)), (3, Res::Buf(&u2))],
        Grid::Fixed([1, 1, 1]),
    );
    Ok(ArgmaxOps { ops: [a, b], partials })
}
