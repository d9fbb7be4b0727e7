//! The row-per-invocation linear kernel (CPU-like adapters): see linear.rs.

use wllm_loaders::GgmlType;

use super::linear::{Epilogue, ExpertIds, Grouped, LinearIo, entries, params, traffic, wtype_define};
use super::{Grid, Op, Res};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::gpu::tensor::GpuWeight;

/// How the ids variants find their pairs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum LaneIds {
    None,
    /// One pair per workgroup column, z = pair (decode).
    Direct,
    /// Tiles of pairs of one expert along y, dispatched indirectly (prompt batches).
    Tiles,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LaneKey {
    pub wtype: GgmlType,
    pub epilogue: Epilogue,
    pub bias: bool,
    pub ids: LaneIds,
    pub rows: u32,
    pub tokens: u32,
    pub wg: u32,
    pub broadcast: bool,
}

impl Kernel for LaneKey {
    fn label(&self) -> String {
        format!(
            "linear_lane{}.{}{}{}.r{}t{}{}",
            match self.ids {
                LaneIds::None => "",
                LaneIds::Direct => "_ids",
                LaneIds::Tiles => "_grouped",
            },
            self.wtype,
            self.epilogue.name(),
            if self.bias { ".bias" } else { "" },
            self.rows,
            self.tokens,
            if self.broadcast { ".bcast" } else { "" }
        )
    }
    fn spec(&self) -> KernelSpec {
        let spec = KernelSpec::new("linear_lane.wgsl")
            .define(&wtype_define(self.wtype))
            .define_if(self.bias, "BIAS")
            .define_if(self.ids != LaneIds::None, "IDS")
            .define_if(self.ids == LaneIds::Tiles, "IDS_TILES")
            .define_if(self.broadcast, "X_BROADCAST")
            .define_if(self.tokens == 8, "TOKENS8")
            .constant("WG", self.wg as f64);
        self.epilogue.apply(spec)
    }
}

pub const LANE_WG: u32 = 64;
/// Rows per invocation (spelled out in the shader).
pub const LANE_ROWS: u32 = 2;
/// Tokens per workgroup for prompt batches (and pairs per grouped tile).
pub const LANE_TOKENS: u32 = 8;

fn broadcast(gpu: &Gpu) -> bool {
    // Lanes 0..7 hand out the input; that needs subgroups of at least 8.
    gpu.caps.subgroups && gpu.info.subgroup_min_size >= 8
}

pub(crate) fn lane(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    batched: bool,
) -> Result<Vec<Op>> {
    let tokens = if batched { LANE_TOKENS } else { 1 };
    build(gpu, w, io, epi, step, LaneIds::None, tokens, None, None)
}

pub(crate) fn lane_ids(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    ex: &ExpertIds<'_>,
    grouped: Option<&Grouped<'_>>,
) -> Result<Vec<Op>> {
    match grouped {
        None => build(gpu, w, io, epi, step, LaneIds::Direct, 1, Some(ex), None),
        Some(g) => build(gpu, w, io, epi, step, LaneIds::Tiles, LANE_TOKENS, Some(ex), Some(g)),
    }
}

#[allow(clippy::too_many_arguments)]
fn build(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    ids: LaneIds,
    tokens: u32,
    ex: Option<&ExpertIds<'_>>,
    grouped: Option<&Grouped<'_>>,
) -> Result<Vec<Op>> {
    let key = LaneKey {
        wtype: w.ggml_type,
        epilogue: epi,
        bias: io.bias.is_some(),
        ids,
        rows: LANE_ROWS,
        tokens,
        wg: LANE_WG,
        broadcast: broadcast(gpu),
    };
    let pipeline = gpu.pipeline(PipelineKey::Lane(key))?;
    // Output rows per workgroup (a gate/up pair gives one output row per invocation).
    let per_group = if epi.is_pair() { LANE_WG } else { LANE_WG * LANE_ROWS };
    let mut ops = Vec::new();
    for part in &w.parts {
        let ubuf = gpu.uniform("linear_lane.params", &params(w, part, io, ex));
        let mut e = entries(w, part, io, &ubuf);
        e.push((6, Res::Buf(step)));
        let mut op = match (ex, grouped) {
            (Some(_), Some(g)) => {
                e.push((8, Res::Buf(g.pairs)));
                e.push((9, Res::Buf(g.tiles)));
                let mut op = gpu.op(pipeline.clone(), &e, Grid::Fixed([0, 0, 0]));
                op.indirect = Some((g.args.clone(), g.args_offset));
                op
            }
            (Some(x), None) => {
                e.push((7, Res::Buf(x.ids)));
                gpu.op(
                    pipeline.clone(),
                    &e,
                    Grid::PerTokenTimes { groups: x.expert_rows.div_ceil(per_group), per_token: x.k },
                )
            }
            _ => gpu.op(
                pipeline.clone(),
                &e,
                if tokens == 1 {
                    Grid::PerToken { groups: epi.out_rows(part.nrows).div_ceil(per_group) }
                } else {
                    Grid::PerTokenTiles { groups: epi.out_rows(part.nrows).div_ceil(per_group), tile: tokens }
                },
            ),
        };
        op.traffic = traffic(w, part, ex);
        ops.push(op);
    }
    Ok(ops)
}
