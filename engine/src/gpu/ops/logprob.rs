//! Log-softmax and gather on the GPU: the log-probability of one chosen token per row of
//! logits, so that scoring a text reads back one float per position instead of a row of the
//! vocabulary.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

/// The target id of a row that has none (the last position of a scored input): the kernel
/// writes 0 there.
pub const NO_TARGET: u32 = u32::MAX;

/// Workgroup size of the kernel; its reduction array in `logprob.wgsl` holds this many lanes.
const WG: u32 = 256;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogprobKey;

impl Kernel for LogprobKey {
    fn label(&self) -> String {
        "logprob".into()
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("logprob.wgsl").constant("WG", WG as f64)
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n_vocab: u32,
    n_rows: u32,
    _pad1: u32,
    _pad2: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(Params { n_vocab, n_rows, _pad1, _pad2 });

/// `out[r] = log_softmax(logits[r])[targets[r]]` for the step's rows (one workgroup per
/// token, at most `max_rows`): `logits` holds rows of `n_vocab`, `targets` one id per row.
pub fn logprob(
    gpu: &Gpu,
    logits: &wgpu::Buffer,
    n_vocab: u32,
    max_rows: u32,
    targets: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<Op> {
    let need = |rows: u64| rows * 4;
    if n_vocab == 0
        || logits.size() < need(max_rows as u64 * n_vocab as u64)
        || targets.size() < need(max_rows as u64)
        || out.size() < need(max_rows as u64)
    {
        return Err(EngineError::InvalidArgument(format!(
            "logprob over {max_rows} rows of {n_vocab}: buffers of {}, {} and {} bytes",
            logits.size(),
            targets.size(),
            out.size()
        )));
    }
    let pipeline = gpu.pipeline(PipelineKey::Logprob(LogprobKey))?;
    let params = gpu.uniform("logprob.params", &Params { n_vocab, n_rows: max_rows, _pad1: 0, _pad2: 0 });
    let mut op = gpu.op(
        pipeline,
        &[(0, Res::Buf(logits)), (1, Res::Buf(targets)), (2, Res::Buf(out)), (3, Res::Buf(&params))],
        Grid::TokensX { y: 1 },
    );
    op.traffic = (0, n_vocab as u64 * 4 + 8);
    Ok(op)
}
