//! Dequantizing matrix-vector product (decode), one shader frame for every weight type.

use bytemuck::{Pod, Zeroable};
use wllm_loaders::GgmlType;

use super::{Grid, Op, Res, pow2_clamp};
use crate::device::Gpu;
use crate::error::{EngineError, Result};
use crate::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::tensor::GpuWeight;

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
}

impl Epilogue {
    pub fn name(self) -> &'static str {
        match self {
            Epilogue::Store => "",
            Epilogue::Add => ".add",
            Epilogue::GluSilu => ".swiglu",
            Epilogue::GluGelu => ".geglu",
        }
    }
    pub fn is_glu(self) -> bool {
        matches!(self, Epilogue::GluSilu | Epilogue::GluGelu)
    }
    pub(crate) fn apply(self, spec: KernelSpec) -> KernelSpec {
        match self {
            Epilogue::Store => spec,
            Epilogue::Add => spec.define("ACC"),
            Epilogue::GluSilu => spec.define("GLU").define("GLU_SILU"),
            Epilogue::GluGelu => spec.define("GLU").define("GLU_GELU"),
        }
    }
}

pub fn wtype_define(t: GgmlType) -> String {
    format!("WTYPE_{}", t.name())
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatvecKey {
    pub wtype: GgmlType,
    pub epilogue: Epilogue,
    pub bias: bool,
    pub ids: bool,
    pub wg: u32,
    pub nr: u32,
}

impl Kernel for MatvecKey {
    fn label(&self) -> String {
        format!(
            "matvec{}.{}{}{}.wg{}.nr{}",
            if self.ids { "_ids" } else { "" },
            self.wtype,
            self.epilogue.name(),
            if self.bias { ".bias" } else { "" },
            self.wg,
            self.nr
        )
    }
    fn spec(&self, _gpu: &Gpu) -> KernelSpec {
        let spec = KernelSpec::new("matvec.wgsl")
            .define(&wtype_define(self.wtype))
            .define_if(self.bias, "BIAS")
            .define_if(self.ids, "IDS")
            .constant("WG", self.wg as f64)
            .constant("NR", self.nr as f64);
        self.epilogue.apply(spec)
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
pub(crate) struct LinearParams {
    pub ncols: u32,
    pub nrows: u32,
    pub row_bytes: u32,
    pub y_row0: u32,
    pub x_offset: u32,
    pub x_stride: u32,
    pub y_offset: u32,
    pub y_stride: u32,
    /// Rows per expert (ids variants only).
    pub expert_rows: u32,
    /// Pairs per input row (ids variants: k reads the token's row, 1 the pair's own row).
    pub x_div: u32,
    pub _pad: [u32; 2],
}

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
    Ok(())
}

/// Default workgroup shape: enough invocations to cover a row's 32-element runs once.
pub fn matvec_shape(w: &GpuWeight) -> (u32, u32) {
    let units = w.ncols / 32;
    (pow2_clamp(units, 16, 128), 2)
}

/// y[t, r] (op)= W[r, :] . x[t, :] for each token t, one op per weight part.
pub fn matvec(gpu: &Gpu, w: &GpuWeight, io: &LinearIo<'_>, epilogue: Epilogue) -> Result<Vec<Op>> {
    check_io(w, io, epilogue)?;
    let (wg, nr) = matvec_shape(w);
    let key = MatvecKey { wtype: w.ggml_type, epilogue, bias: io.bias.is_some(), ids: false, wg, nr };
    let pipeline = gpu.pipeline(PipelineKey::Matvec(key))?;
    let mut ops = Vec::with_capacity(w.parts.len());
    for part in &w.parts {
        let params = LinearParams {
            ncols: w.ncols,
            nrows: part.nrows,
            row_bytes: w.row_bytes,
            y_row0: part.row0,
            x_offset: io.x_offset,
            x_stride: io.x_stride,
            y_offset: io.y_offset,
            y_stride: io.y_stride,
            expert_rows: 0,
            x_div: 1,
            _pad: [0; 2],
        };
        let ubuf = gpu.uniform("matvec.params", &params);
        let mut entries =
            vec![(0, Res::Buf(&part.buffer)), (1, Res::Buf(io.x)), (2, Res::Buf(io.y)), (3, Res::Buf(&ubuf))];
        if let Some(b) = io.bias {
            entries.push((4, Res::Buf(b)));
        }
        if let Some(g) = io.gate {
            entries.push((5, Res::Buf(g)));
        }
        ops.push(gpu.op(pipeline.clone(), &entries, Grid::PerToken { groups: part.nrows.div_ceil(nr) }));
    }
    Ok(ops)
}

/// Where a stacked-experts product finds its experts: `ids[pair]` is the expert of each
/// (token, slot) pair, `k` pairs per token.
#[derive(Copy, Clone, Debug)]
pub struct ExpertIds<'a> {
    pub ids: &'a wgpu::Buffer,
    pub k: u32,
    /// Rows of one expert in the stacked weight.
    pub expert_rows: u32,
    /// Input rows are per token (`true`: gate/up read the token's normed state) or per pair.
    pub x_per_token: bool,
}

/// The "ids" variant of matvec: for every (token, slot) pair, y[pair] = W[expert] . x.
/// The expert comes from a GPU buffer, so routing never waits on the host.
pub fn matvec_ids(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epilogue: Epilogue,
    ex: &ExpertIds<'_>,
) -> Result<Vec<Op>> {
    check_io(w, io, epilogue)?;
    if io.bias.is_some() || ex.expert_rows == 0 || !w.nrows.is_multiple_of(ex.expert_rows) {
        return Err(EngineError::InvalidArgument(format!("{}: bad expert layout", w.name)));
    }
    let (wg, nr) = matvec_shape(w);
    let key = MatvecKey { wtype: w.ggml_type, epilogue, bias: false, ids: true, wg, nr };
    let pipeline = gpu.pipeline(PipelineKey::Matvec(key))?;
    let mut ops = Vec::with_capacity(w.parts.len());
    for part in &w.parts {
        let params = LinearParams {
            ncols: w.ncols,
            nrows: part.nrows,
            row_bytes: w.row_bytes,
            y_row0: part.row0,
            x_offset: io.x_offset,
            x_stride: io.x_stride,
            y_offset: io.y_offset,
            y_stride: io.y_stride,
            expert_rows: ex.expert_rows,
            x_div: if ex.x_per_token { ex.k } else { 1 },
            _pad: [0; 2],
        };
        let ubuf = gpu.uniform("matvec_ids.params", &params);
        let mut entries = vec![
            (0, Res::Buf(&part.buffer)),
            (1, Res::Buf(io.x)),
            (2, Res::Buf(io.y)),
            (3, Res::Buf(&ubuf)),
            (7, Res::Buf(ex.ids)),
        ];
        if let Some(g) = io.gate {
            entries.push((5, Res::Buf(g)));
        }
        ops.push(gpu.op(
            pipeline.clone(),
            &entries,
            Grid::PerTokenTimes { groups: ex.expert_rows.div_ceil(nr), per_token: ex.k },
        ));
    }
    Ok(ops)
}
