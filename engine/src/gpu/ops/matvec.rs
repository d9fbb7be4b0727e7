//! The reduction matvec kernel (decode on GPUs): see linear.rs.

use wllm_loaders::GgmlType;

use super::linear::{Epilogue, ExpertIds, LinearIo, entries, params, traffic, wtype_define};
use super::{Grid, Op, Res, pow2_clamp};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::gpu::tensor::GpuWeight;

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
    fn spec(&self) -> KernelSpec {
        let spec = KernelSpec::new("matvec.wgsl")
            .define(&wtype_define(self.wtype))
            .define_if(self.bias, "BIAS")
            .define_if(self.ids, "IDS")
            .constant("WG", self.wg as f64)
            .constant("NR", self.nr as f64);
        self.epilogue.apply(spec)
    }
}

/// Workgroup shape: enough invocations to cover a row's 32-element runs once.
fn shape(w: &GpuWeight) -> (u32, u32) {
    (pow2_clamp(w.ncols / 32, 16, 128), 2)
}

pub(crate) fn matvec(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    ids: Option<&ExpertIds<'_>>,
) -> Result<Vec<Op>> {
    let (wg, nr) = shape(w);
    let key =
        MatvecKey { wtype: w.ggml_type, epilogue: epi, bias: io.bias.is_some(), ids: ids.is_some(), wg, nr };
    let pipeline = gpu.pipeline(PipelineKey::Matvec(key))?;
    let mut ops = Vec::with_capacity(w.parts.len());
    for part in &w.parts {
        let ubuf = gpu.uniform("matvec.params", &params(w, part, io, ids));
        let mut e = entries(w, part, io, &ubuf);
        let grid = match ids {
            Some(x) => {
                e.push((7, Res::Buf(x.ids)));
                Grid::PerTokenTimes { groups: x.expert_rows.div_ceil(nr), per_token: x.k }
            }
            None if epi.is_pair() => Grid::PerToken { groups: epi.out_rows(part.nrows) },
            None => Grid::PerToken { groups: part.nrows.div_ceil(nr) },
        };
        let mut op = gpu.op(pipeline.clone(), &e, grid);
        op.traffic = traffic(w, part, ids);
        ops.push(op);
    }
    Ok(ops)
}
