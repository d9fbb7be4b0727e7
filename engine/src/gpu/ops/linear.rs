//! Linear layers: the shared types, and the choice of kernel for a device and batch size.
//!
//! Three kernels compute y = W x over the GPU weight layout of `repack.rs`:
//! - `matvec.wgsl`: a workgroup per few rows, invocations striding over a row (coalesced on
//!   GPUs), a workgroup reduction at the end: decode on GPUs;
//! - `matmul.wgsl`: tiles through workgroup memory: prompt batches on GPUs;
//! - `linear_lane.wgsl`: a row per invocation, the input shared by subgroup broadcast, no
//!   barriers: both on CPU-like adapters (lavapipe, SwiftShader), where a subgroup is one SIMD
//!   register and scattered per-lane loads cost the same as contiguous ones.

use bytemuck::{Pod, Zeroable};
use wllm_loaders::GgmlType;
use wllm_loaders::model::FfnActivation;

use super::{Op, Res, lane, matmul, matvec};
use crate::error::{EngineError, Result};
use crate::gpu::codebook::CODEBOOK_BINDING;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::KernelSpec;
use crate::gpu::tensor::{GpuWeight, WeightPart};

/// What happens to a row's dot product before it is stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    Store,
    /// `y += v`: the residual add.
    Add,
    /// `y = silu(g) * v` with `g` the gate computed earlier into `y`'s layout.
    GluSilu,
    /// `y = gelu_tanh(g) * v`.
    GluGelu,
    /// The weight stacks gate rows over up rows; `y[r] = silu(gate[r]) * up[r]` for the
    /// first half of the rows (one dispatch for both projections).
    PairSilu,
    /// As `PairSilu` with GELU (tanh approximation).
    PairGelu,
    /// `y = silu_oai(g) * (clamp(v) + 1)`: gpt-oss's clamped SwiGLU (see activation.wgsl).
    GluOai,
    /// As `PairSilu` with gpt-oss's clamped SwiGLU.
    PairOai,
}

impl Epilogue {
    pub fn name(self) -> &'static str {
        match self {
            Epilogue::Store => "",
            Epilogue::Add => ".add",
            Epilogue::GluSilu => ".swiglu",
            Epilogue::GluGelu => ".geglu",
            Epilogue::PairSilu => ".swiglu_pair",
            Epilogue::PairGelu => ".geglu_pair",
            Epilogue::GluOai => ".swiglu_oai",
            Epilogue::PairOai => ".swiglu_oai_pair",
        }
    }
    /// The GLU epilogue of an activation (the up projection, on a gate computed before).
    pub fn glu(act: FfnActivation) -> Epilogue {
        match act {
            FfnActivation::Silu => Epilogue::GluSilu,
            FfnActivation::GeluTanh => Epilogue::GluGelu,
            FfnActivation::SwigluOai => Epilogue::GluOai,
        }
    }
    /// The epilogue of an activation over a stacked gate/up weight.
    pub fn pair(act: FfnActivation) -> Epilogue {
        match act {
            FfnActivation::Silu => Epilogue::PairSilu,
            FfnActivation::GeluTanh => Epilogue::PairGelu,
            FfnActivation::SwigluOai => Epilogue::PairOai,
        }
    }
    pub fn is_pair(self) -> bool {
        matches!(self, Epilogue::PairSilu | Epilogue::PairGelu | Epilogue::PairOai)
    }
    /// Output rows for a weight of `nrows` rows.
    pub fn out_rows(self, nrows: u32) -> u32 {
        if self.is_pair() { nrows / 2 } else { nrows }
    }
    pub fn is_glu(self) -> bool {
        matches!(self, Epilogue::GluSilu | Epilogue::GluGelu | Epilogue::GluOai)
    }
    pub(crate) fn apply(self, spec: KernelSpec) -> KernelSpec {
        match self {
            Epilogue::Store => spec,
            Epilogue::Add => spec.define("ACC"),
            Epilogue::GluSilu => spec.define("GLU").define("GLU_SILU"),
            Epilogue::GluGelu => spec.define("GLU").define("GLU_GELU"),
            Epilogue::PairSilu => spec.define("GLU_PAIR").define("GLU_SILU"),
            Epilogue::PairGelu => spec.define("GLU_PAIR").define("GLU_GELU"),
            Epilogue::GluOai => spec.define("GLU").define("GLU_OAI"),
            Epilogue::PairOai => spec.define("GLU_PAIR").define("GLU_OAI"),
        }
    }
}

pub fn wtype_define(t: GgmlType) -> String {
    format!("WTYPE_{}", t.name())
}

/// Mirrors `Params` in linear_common.wgsl.
#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
pub(crate) struct LinearParams {
    pub ncols: u32,
    pub nrows: u32,
    pub nb: u32,
    pub meta_off: u32,
    pub y_row0: u32,
    pub x_offset: u32,
    pub x_stride: u32,
    pub y_offset: u32,
    pub y_stride: u32,
    pub expert_rows: u32,
    pub x_div: u32,
    pub _pad: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(LinearParams {
    ncols,
    nrows,
    nb,
    meta_off,
    y_row0,
    x_offset,
    x_stride,
    y_offset,
    y_stride,
    expert_rows,
    x_div,
    _pad
});

/// Where a linear layer reads and writes. Offsets and strides count f32 elements.
#[derive(Copy, Clone, Debug)]
pub struct LinearIo<'a> {
    pub x: &'a wgpu::Buffer,
    pub x_offset: u32,
    pub x_stride: u32,
    pub y: &'a wgpu::Buffer,
    pub y_offset: u32,
    pub y_stride: u32,
    pub bias: Option<&'a wgpu::Buffer>,
    /// The gate values for GLU epilogues, laid out like `y`.
    pub gate: Option<&'a wgpu::Buffer>,
}

/// Stacked experts, chosen per (token, slot) pair by `ids` on the GPU, `k` pairs per token.
#[derive(Copy, Clone, Debug)]
pub struct ExpertIds<'a> {
    pub ids: &'a wgpu::Buffer,
    pub k: u32,
    /// Rows of one expert in the stacked weight.
    pub expert_rows: u32,
    /// `true`: the input row is the token's (gate/up); `false`: the pair's own (down).
    pub x_per_token: bool,
}

/// Pairs grouped by expert into tiles on the GPU (moe.wgsl PLAN), dispatched indirectly.
#[derive(Copy, Clone, Debug)]
pub struct Grouped<'a> {
    pub pairs: &'a wgpu::Buffer,
    pub tiles: &'a wgpu::Buffer,
    pub args: &'a wgpu::Buffer,
    pub args_offset: u64,
}

pub(crate) fn check_io(w: &GpuWeight, io: &LinearIo<'_>, epilogue: Epilogue) -> Result<()> {
    if !io.x_offset.is_multiple_of(4) || !io.x_stride.is_multiple_of(4) {
        return Err(EngineError::InvalidArgument(format!(
            "{}: activations must start on 16-byte boundaries",
            w.name
        )));
    }
    if io.x_stride < w.ncols && io.x_stride != 0 {
        return Err(EngineError::InvalidArgument(format!("{}: x stride below row length", w.name)));
    }
    if epilogue.is_glu() != io.gate.is_some() {
        return Err(EngineError::InvalidArgument(format!("{}: GLU epilogue needs exactly a gate", w.name)));
    }
    if w.nrows == 0 {
        return Err(EngineError::InvalidArgument(format!("{} has no rows", w.name)));
    }
    if epilogue.is_pair() && (w.parts.len() != 1 || !w.nrows.is_multiple_of(2) || io.bias.is_some()) {
        return Err(EngineError::InvalidArgument(format!(
            "{}: a gate/up pair must be one buffer of an even number of rows, without bias",
            w.name
        )));
    }
    Ok(())
}

/// Bytes a linear dispatch moves: its weights once, plus each token's input and output rows.
pub(crate) fn traffic(w: &GpuWeight, part: &WeightPart, ids: Option<&ExpertIds<'_>>) -> (u64, u64) {
    let rows = ids.map(|e| e.expert_rows).unwrap_or(part.nrows) as u64;
    let per_token = (w.ncols as u64 + rows) * 4 * ids.map(|e| e.k as u64).unwrap_or(1);
    (part.buffer.size(), per_token)
}

pub(crate) fn params(
    w: &GpuWeight,
    part: &WeightPart,
    io: &LinearIo<'_>,
    ids: Option<&ExpertIds<'_>>,
) -> LinearParams {
    LinearParams {
        ncols: w.ncols,
        nrows: part.nrows,
        nb: w.nb,
        meta_off: part.meta_off,
        y_row0: part.row0,
        x_offset: io.x_offset,
        x_stride: io.x_stride,
        y_offset: io.y_offset,
        y_stride: io.y_stride,
        expert_rows: ids.map(|e| e.expert_rows).unwrap_or(0),
        x_div: ids.map(|e| if e.x_per_token { e.k } else { 1 }).unwrap_or(1),
        _pad: 0,
    }
}

/// The bindings every linear kernel shares.
pub(crate) fn entries<'a>(
    w: &'a GpuWeight,
    part: &'a WeightPart,
    io: &LinearIo<'a>,
    ubuf: &'a wgpu::Buffer,
) -> Vec<(u32, Res<'a>)> {
    let mut e = weight_entries(w, part);
    e.extend([(1, Res::Buf(io.x)), (2, Res::Buf(io.y)), (3, Res::Buf(ubuf))]);
    if let Some(b) = io.bias {
        e.push((4, Res::Buf(b)));
    }
    if let Some(g) = io.gate {
        e.push((5, Res::Buf(g)));
    }
    e
}

/// The bindings through which kernels read one part of a weight: its payload and metadata
/// views and, for the codebook types, the codebook.
pub(crate) fn weight_entries<'a>(w: &'a GpuWeight, part: &'a WeightPart) -> Vec<(u32, Res<'a>)> {
    let mut e = vec![(0, Res::Buf(&part.buffer)), (10, Res::Buf(&part.buffer))];
    if let Some(codebook) = &w.codebook {
        e.push((CODEBOOK_BINDING, Res::Buf(codebook)));
    }
    e
}

/// y (op)= W x for every token of the batch, with the kernel that suits the device: the
/// number of tokens is read from `step` (batched) or is the dispatch's grid (decode).
pub fn linear(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    batched: bool,
) -> Result<Vec<Op>> {
    check_io(w, io, epi)?;
    match (gpu.tuning.row_per_lane, batched) {
        (true, _) => lane::lane(gpu, w, io, epi, step, batched),
        (false, false) => matvec::matvec(gpu, w, io, epi, None),
        (false, true) => matmul::matmul(gpu, w, io, epi, step, None),
    }
}

/// The stacked-experts product for decode: every (token, slot) pair computed directly.
pub fn linear_ids(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    ex: &ExpertIds<'_>,
) -> Result<Vec<Op>> {
    check_io(w, io, epi)?;
    check_experts(w, io, ex)?;
    if gpu.tuning.row_per_lane {
        lane::lane_ids(gpu, w, io, epi, step, ex, None)
    } else {
        matvec::matvec(gpu, w, io, epi, Some(ex))
    }
}

/// The stacked-experts product for prompt batches, over pairs grouped by expert.
pub fn linear_grouped(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    ex: &ExpertIds<'_>,
    g: &Grouped<'_>,
) -> Result<Vec<Op>> {
    check_io(w, io, epi)?;
    check_experts(w, io, ex)?;
    if gpu.tuning.row_per_lane {
        lane::lane_ids(gpu, w, io, epi, step, ex, Some(g))
    } else {
        matmul::matmul(gpu, w, io, epi, step, Some((ex, g)))
    }
}

/// How the grouped product is dispatched for `expert_rows` rows: (row groups, pairs per tile).
pub fn grouped_shape(gpu: &Gpu, expert_rows: u32) -> (u32, u32) {
    if gpu.tuning.row_per_lane {
        (expert_rows.div_ceil(lane::LANE_WG * lane::LANE_ROWS), lane::LANE_TOKENS)
    } else {
        (expert_rows.div_ceil(matmul::TILE_ROWS), matmul::TILE_TOKENS)
    }
}

/// Expert biases (gpt-oss) are stacked like the experts' rows: one per row of the weight.
fn check_experts(w: &GpuWeight, io: &LinearIo<'_>, ex: &ExpertIds<'_>) -> Result<()> {
    if ex.expert_rows == 0 || !w.nrows.is_multiple_of(ex.expert_rows) {
        return Err(EngineError::InvalidArgument(format!("{}: bad expert layout", w.name)));
    }
    if let Some(b) = io.bias
        && b.size() < u64::from(w.nrows) * 4
    {
        return Err(EngineError::InvalidArgument(format!(
            "{}: an expert bias of {} bytes for {} rows",
            w.name,
            b.size(),
            w.nrows
        )));
    }
    Ok(())
}
