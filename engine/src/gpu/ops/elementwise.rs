//! Element-wise add, GLU and softcapping over f32 rows.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res, fold};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ElementwiseKey {
    /// y += x
    Add,
    /// y = silu(x) * y
    GluSilu,
    /// y = gelu_tanh(x) * y
    GluGelu,
    /// y = cap * tanh(y / cap) (final logit softcapping; `x` is not read)
    Softcap,
    /// y += sigmoid(gate\[row\]) * x, one gate logit per row (a shared expert's output)
    AddGated,
}

impl Kernel for ElementwiseKey {
    fn label(&self) -> String {
        match self {
            ElementwiseKey::Add => "add".into(),
            ElementwiseKey::GluSilu => "swiglu".into(),
            ElementwiseKey::GluGelu => "geglu".into(),
            ElementwiseKey::Softcap => "softcap".into(),
            ElementwiseKey::AddGated => "add_gated".into(),
        }
    }
    fn spec(&self) -> KernelSpec {
        let s = KernelSpec::new("elementwise.wgsl").constant("WG", 256.0);
        match self {
            ElementwiseKey::Add => s.define("ADD"),
            ElementwiseKey::GluSilu => s.define("GLU").define("GLU_SILU"),
            ElementwiseKey::GluGelu => s.define("GLU").define("GLU_GELU"),
            ElementwiseKey::Softcap => s.define("SOFTCAP"),
            ElementwiseKey::AddGated => s.define("ADD_GATED"),
        }
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n: u32,
    /// Softcap only.
    cap: f32,
    /// Elements per gated row (AddGated only).
    row: u32,
    _pad2: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(Params { n, cap, row, _pad2 });

/// An element-wise op over the first `n` elements (a fixed-size op, for tests and tools).
pub fn elementwise(gpu: &Gpu, op: ElementwiseKey, x: &wgpu::Buffer, y: &wgpu::Buffer, n: u32) -> Result<Op> {
    let pipeline = gpu.pipeline(PipelineKey::Elementwise(op))?;
    let ubuf = gpu.uniform("elementwise.params", &Params { n, cap: 0.0, row: 0, _pad2: 0 });
    let (gx, gy) = fold(n.div_ceil(256));
    Ok(gpu.op(
        pipeline,
        &[(0, Res::Buf(x)), (1, Res::Buf(y)), (2, Res::Buf(&ubuf))],
        Grid::Fixed([gx, gy, 1]),
    ))
}

/// logits = cap · tanh(logits / cap) over the first `n` elements.
pub fn softcap(gpu: &Gpu, logits: &wgpu::Buffer, cap: f32, n: u32) -> Result<Op> {
    let pipeline = gpu.pipeline(PipelineKey::Elementwise(ElementwiseKey::Softcap))?;
    let ubuf = gpu.uniform("softcap.params", &Params { n, cap, row: 0, _pad2: 0 });
    let (gx, gy) = fold(n.div_ceil(256));
    Ok(gpu.op(pipeline, &[(1, Res::Buf(logits)), (2, Res::Buf(&ubuf))], Grid::Fixed([gx, gy, 1])))
}

/// `y += sigmoid(gate[t]) · x` over rows of `row` elements, for the step's tokens: a shared
/// expert's output (`x`) added to the residual (`y`) through its per-token gate logit.
pub fn add_gated(
    gpu: &Gpu,
    x: &wgpu::Buffer,
    gate: &wgpu::Buffer,
    y: &wgpu::Buffer,
    row: u32,
    step: &wgpu::Buffer,
) -> Result<Op> {
    if row == 0 || y.size() < x.size() || gate.size() * u64::from(row) < x.size() {
        return Err(crate::error::EngineError::InvalidArgument(format!(
            "gated add: rows of {row} in {} bytes with {} bytes of gate logits",
            x.size(),
            gate.size()
        )));
    }
    let pipeline = gpu.pipeline(PipelineKey::Elementwise(ElementwiseKey::AddGated))?;
    // `n` covers every row the buffers hold; a step dispatches only its own tokens' rows.
    let n = u32::try_from(x.size() / 4).unwrap_or(u32::MAX);
    let ubuf = gpu.uniform("add_gated.params", &Params { n, cap: 0.0, row, _pad2: 0 });
    let entries =
        [(0, Res::Buf(x)), (1, Res::Buf(y)), (2, Res::Buf(&ubuf)), (3, Res::Buf(gate)), (4, Res::Buf(step))];
    Ok(gpu.op(pipeline, &entries, Grid::Rows { rows_per_token: row, rows_per_group: 256 }))
}
