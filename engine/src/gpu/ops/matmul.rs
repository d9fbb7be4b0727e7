//! The tiled matmul kernel (prompt batches on GPUs): see linear.rs.

use wllm_loaders::GgmlType;

use super::linear::{Epilogue, ExpertIds, Grouped, LinearIo, entries, params, traffic, wtype_define};
use super::{Grid, Op, Res};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::gpu::tensor::GpuWeight;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MatmulKey {
    pub wtype: GgmlType,
    pub epilogue: Epilogue,
    pub bias: bool,
    pub ids: bool,
    pub tile_rows: u32,
    pub tile_tokens: u32,
}

impl Kernel for MatmulKey {
    fn label(&self) -> String {
        format!(
            "matmul{}.{}{}{}.{}x{}",
            if self.ids { "_ids" } else { "" },
            self.wtype,
            self.epilogue.name(),
            if self.bias { ".bias" } else { "" },
            self.tile_rows,
            self.tile_tokens
        )
    }
    fn spec(&self) -> KernelSpec {
        let spec = KernelSpec::new("matmul.wgsl")
            .define(&wtype_define(self.wtype))
            .define_if(self.bias, "BIAS")
            .define_if(self.ids, "IDS")
            .define_value("TILE_ROWS", format!("{}u", self.tile_rows))
            .define_value("TILE_TOKENS", format!("{}u", self.tile_tokens));
        self.epilogue.apply(spec)
    }
}

pub const TILE_ROWS: u32 = 64;
pub const TILE_TOKENS: u32 = 32;

pub(crate) fn matmul(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epi: Epilogue,
    step: &wgpu::Buffer,
    grouped: Option<(&ExpertIds<'_>, &Grouped<'_>)>,
) -> Result<Vec<Op>> {
    let key = MatmulKey {
        wtype: w.ggml_type,
        epilogue: epi,
        bias: io.bias.is_some(),
        ids: grouped.is_some(),
        tile_rows: TILE_ROWS,
        tile_tokens: TILE_TOKENS,
    };
    let pipeline = gpu.pipeline(PipelineKey::Matmul(key))?;
    let mut ops = Vec::new();
    for part in &w.parts {
        let ubuf = gpu.uniform("matmul.params", &params(w, part, io, grouped.map(|g| g.0)));
        let mut e = entries(w, part, io, &ubuf);
        e.push((6, Res::Buf(step)));
        match grouped {
            Some((_, g)) => {
                e.push((7, Res::Buf(g.pairs)));
                e.push((8, Res::Buf(g.tiles)));
                let mut op = gpu.op(pipeline.clone(), &e, Grid::Fixed([0, 0, 0]));
                op.indirect = Some((g.args.clone(), g.args_offset));
                op.traffic = traffic(w, part, grouped.map(|g| g.0));
                ops.push(op);
            }
            None => {
                let mut op = gpu.op(
                    pipeline.clone(),
                    &e,
                    Grid::TokenTiles {
                        x: if epi.is_pair() {
                            epi.out_rows(part.nrows).div_ceil(TILE_ROWS / 2)
                        } else {
                            part.nrows.div_ceil(TILE_ROWS)
                        },
                        tile: TILE_TOKENS,
                    },
                );
                op.traffic = traffic(w, part, None);
                ops.push(op);
            }
        }
    }
    Ok(ops)
}
