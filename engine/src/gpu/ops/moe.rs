//! Mixture-of-experts routing ops: router softmax + top-k, grouping pairs by expert for
//! prefill, and the weighted sum of the experts' outputs.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MoeKey {
    Route { renormalize: bool },
    Plan { tile: u32 },
    Combine,
}

impl Kernel for MoeKey {
    fn label(&self) -> String {
        match self {
            MoeKey::Route { renormalize } => {
                format!("moe.route{}", if *renormalize { ".renorm" } else { "" })
            }
            MoeKey::Plan { tile } => format!("moe.plan.tile{tile}"),
            MoeKey::Combine => "moe.combine".into(),
        }
    }
    fn spec(&self) -> KernelSpec {
        let s = KernelSpec::new("moe.wgsl");
        match self {
            MoeKey::Route { renormalize } => s.define("ROUTE").define_if(*renormalize, "RENORM"),
            MoeKey::Plan { tile } => s.define("PLAN").define_value("TILE", format!("{tile}u")),
            MoeKey::Combine => s.define("COMBINE"),
        }
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n_expert: u32,
    k: u32,
    n_embd: u32,
    scale: f32,
    row_tiles_a: u32,
    row_tiles_b: u32,
    n_pairs: u32,
    _pad: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout =
    params_layout!(Params { n_expert, k, n_embd, scale, row_tiles_a, row_tiles_b, n_pairs, _pad });

/// Buffers of one MoE layer's routing, sized for `max_tokens`.
pub struct MoeBuffers {
    pub ids: wgpu::Buffer,
    pub weights: wgpu::Buffer,
    pub pairs: wgpu::Buffer,
    pub tiles: wgpu::Buffer,
    /// Two indirect dispatch triples: gate/up shape at 0, down shape at 12.
    pub args: wgpu::Buffer,
    /// Pairs per tile `tiles` is sized for: a smaller tile would write past its end.
    pub tile: u32,
}

impl MoeBuffers {
    pub fn new(gpu: &Gpu, max_tokens: u32, n_expert: u32, k: u32, tile: u32) -> MoeBuffers {
        let pairs = (max_tokens * k) as u64;
        let max_tiles = pairs.div_ceil(tile.max(1) as u64) + n_expert as u64;
        MoeBuffers {
            ids: gpu.storage("moe.ids", pairs * 4),
            weights: gpu.storage("moe.weights", pairs * 4),
            pairs: gpu.storage("moe.pairs", pairs * 4),
            tiles: gpu.storage("moe.tiles", max_tiles * 16),
            args: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("moe.args"),
                size: 32,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::INDIRECT
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            tile,
        }
    }
}

pub struct MoeShape {
    pub n_expert: u32,
    pub k: u32,
    pub n_embd: u32,
    pub scale: f32,
    pub renormalize: bool,
}

fn params(s: &MoeShape, row_tiles_a: u32, row_tiles_b: u32) -> Params {
    Params {
        n_expert: s.n_expert,
        k: s.k,
        n_embd: s.n_embd,
        scale: s.scale,
        row_tiles_a,
        row_tiles_b,
        n_pairs: 0,
        _pad: 0,
    }
}

/// Router logits [tokens x n_expert] -> ids/weights [tokens x k].
pub fn route(
    gpu: &Gpu,
    s: &MoeShape,
    logits: &wgpu::Buffer,
    b: &MoeBuffers,
    step: &wgpu::Buffer,
) -> Result<Op> {
    if s.k == 0 || s.k > 16 || s.k > s.n_expert {
        return Err(EngineError::Unsupported(format!(
            "{} experts per token (the GPU router handles 1..=16)",
            s.k
        )));
    }
    let p = gpu.pipeline(PipelineKey::Moe(MoeKey::Route { renormalize: s.renormalize }))?;
    let u = gpu.uniform("moe.params", &params(s, 0, 0));
    Ok(gpu.op(
        p,
        &[
            (0, Res::Buf(&u)),
            (1, Res::Buf(step)),
            (2, Res::Buf(&b.ids)),
            (3, Res::Buf(logits)),
            (4, Res::Buf(&b.weights)),
        ],
        Grid::TokenTilesX { tile: 64 },
    ))
}

/// Groups the batch's pairs by expert and writes the grouped matmuls' dispatch sizes.
pub fn plan(
    gpu: &Gpu,
    s: &MoeShape,
    tile: u32,
    row_tiles: (u32, u32),
    b: &MoeBuffers,
    step: &wgpu::Buffer,
) -> Result<Op> {
    if s.n_expert > 512 {
        return Err(EngineError::Unsupported(format!(
            "{} experts (the GPU planner handles up to 512)",
            s.n_expert
        )));
    }
    if tile == 0 || tile < b.tile {
        return Err(EngineError::InvalidArgument(format!(
            "moe plan: tiles of {tile} pairs, but the buffers hold tiles of at least {}",
            b.tile
        )));
    }
    let p = gpu.pipeline(PipelineKey::Moe(MoeKey::Plan { tile }))?;
    let u = gpu.uniform("moe.params", &params(s, row_tiles.0, row_tiles.1));
    Ok(gpu.op(
        p,
        &[
            (0, Res::Buf(&u)),
            (1, Res::Buf(step)),
            (2, Res::Buf(&b.ids)),
            (3, Res::Buf(&b.pairs)),
            (4, Res::Buf(&b.tiles)),
            (5, Res::Buf(&b.args)),
        ],
        Grid::Fixed([1, 1, 1]),
    ))
}

/// x\[t\] += sum over slots of weight * expert output.
pub fn combine(
    gpu: &Gpu,
    s: &MoeShape,
    b: &MoeBuffers,
    expert_out: &wgpu::Buffer,
    x: &wgpu::Buffer,
    step: &wgpu::Buffer,
) -> Result<Op> {
    let p = gpu.pipeline(PipelineKey::Moe(MoeKey::Combine))?;
    let u = gpu.uniform("moe.params", &params(s, 0, 0));
    Ok(gpu.op(
        p,
        &[
            (0, Res::Buf(&u)),
            (1, Res::Buf(step)),
            (2, Res::Buf(&b.ids)),
            (3, Res::Buf(&b.weights)),
            (4, Res::Buf(expert_out)),
            (5, Res::Buf(x)),
        ],
        Grid::TokensY { x: s.n_embd.div_ceil(256) },
    ))
}
