//! Tiled dequantizing matrix-matrix product for prefill batches.

use wllm_loaders::GgmlType;

use super::matvec::{Epilogue, LinearIo, LinearParams, check_io, wtype_define};
use super::{Grid, Op, Res};
use crate::device::Gpu;
use crate::error::Result;
use crate::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::tensor::GpuWeight;

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
    fn spec(&self, _gpu: &Gpu) -> KernelSpec {
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

/// Builds the batched product; the number of tokens is read from the `step` uniform.
pub fn matmul(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epilogue: Epilogue,
    step: &wgpu::Buffer,
) -> Result<Vec<Op>> {
    check_io(w, io, epilogue)?;
    let key = MatmulKey {
        wtype: w.ggml_type,
        epilogue,
        bias: io.bias.is_some(),
        ids: false,
        tile_rows: TILE_ROWS,
        tile_tokens: TILE_TOKENS,
    };
    let pipeline = gpu.pipeline(PipelineKey::Matmul(key))?;
    let mut ops = Vec::new();
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
        let ubuf = gpu.uniform("matmul.params", &params);
        let mut entries = vec![
            (0, Res::Buf(&part.buffer)),
            (1, Res::Buf(io.x)),
            (2, Res::Buf(io.y)),
            (3, Res::Buf(&ubuf)),
            (6, Res::Buf(step)),
        ];
        if let Some(b) = io.bias {
            entries.push((4, Res::Buf(b)));
        }
        if let Some(g) = io.gate {
            entries.push((5, Res::Buf(g)));
        }
        ops.push(gpu.op(
            pipeline.clone(),
            &entries,
            Grid::TokenTiles { x: part.nrows.div_ceil(TILE_ROWS), tile: TILE_TOKENS },
        ));
    }
    Ok(ops)
}

/// Grouped products for mixture-of-experts prefill: the (token, slot) pairs were grouped by
/// expert into `pairs`/`tiles` on the GPU, and `args` (at `args_offset`) holds the indirect
/// dispatch size, so each expert's weights are read once per tile of up to TILE_TOKENS pairs.
pub struct GroupedIds<'a> {
    pub pairs: &'a wgpu::Buffer,
    pub tiles: &'a wgpu::Buffer,
    pub args: &'a wgpu::Buffer,
    pub args_offset: u64,
    pub k: u32,
    pub expert_rows: u32,
    pub x_per_token: bool,
}

pub fn matmul_ids(
    gpu: &Gpu,
    w: &GpuWeight,
    io: &LinearIo<'_>,
    epilogue: Epilogue,
    step: &wgpu::Buffer,
    g: &GroupedIds<'_>,
) -> Result<Vec<Op>> {
    check_io(w, io, epilogue)?;
    let key = MatmulKey {
        wtype: w.ggml_type,
        epilogue,
        bias: false,
        ids: true,
        tile_rows: TILE_ROWS,
        tile_tokens: TILE_TOKENS,
    };
    let pipeline = gpu.pipeline(PipelineKey::Matmul(key))?;
    let mut ops = Vec::new();
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
            expert_rows: g.expert_rows,
            x_div: if g.x_per_token { g.k } else { 1 },
            _pad: [0; 2],
        };
        let ubuf = gpu.uniform("matmul_ids.params", &params);
        let mut entries = vec![
            (0, Res::Buf(&part.buffer)),
            (1, Res::Buf(io.x)),
            (2, Res::Buf(io.y)),
            (3, Res::Buf(&ubuf)),
            (6, Res::Buf(step)),
            (7, Res::Buf(g.pairs)),
            (8, Res::Buf(g.tiles)),
        ];
        if let Some(gate) = io.gate {
            entries.push((5, Res::Buf(gate)));
        }
        let mut op = gpu.op(pipeline.clone(), &entries, Grid::Fixed([0, 0, 0]));
        op.indirect = Some((g.args.clone(), g.args_offset));
        ops.push(op);
    }
    Ok(ops)
}
