//! Weights on the GPU. The quant type travels with the tensor; a tensor larger than one storage
//! binding is split by rows across several buffers, and every op over it dispatches per part.

use wllm_loaders::GgmlType;
use wllm_loaders::model::TensorBytes;

use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::repack::{gpu_bytes, layout, repack};

#[derive(Debug)]
pub struct WeightPart {
    /// Payload region, then metadata region (see `repack`).
    pub buffer: wgpu::Buffer,
    /// First row held by this buffer.
    pub row0: u32,
    pub nrows: u32,
    /// Index of the first metadata word in the buffer.
    pub meta_off: u32,
}

/// A 2-D view of a weight: `nrows` rows of `ncols` elements (higher ggml dims are folded into
/// rows, so stacked experts are rows too).
#[derive(Debug)]
pub struct GpuWeight {
    pub name: String,
    pub ggml_type: GgmlType,
    pub ncols: u32,
    pub nrows: u32,
    /// Bytes of one row in the file (GGUF layout).
    pub row_bytes: u32,
    /// Blocks per row.
    pub nb: u32,
    pub parts: Vec<WeightPart>,
    /// The codebook its kernels read (the IQ1/IQ2/IQ3 types; see `codebook.rs`).
    pub codebook: Option<wgpu::Buffer>,
}

/// Types the GPU kernels can read.
pub const GPU_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::MXFP4,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_XS,
    GgmlType::IQ2_XXS,
    GgmlType::IQ2_XS,
    GgmlType::IQ2_S,
    GgmlType::IQ3_XXS,
    GgmlType::IQ3_S,
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
];

pub fn gpu_supports(t: GgmlType) -> bool {
    GPU_TYPES.contains(&t)
}

impl GpuWeight {
    pub fn upload(gpu: &Gpu, t: &TensorBytes<'_>) -> Result<GpuWeight> {
        Self::upload_aligned(gpu, t, 1)
    }

    /// Uploads with part boundaries on multiples of `row_align` rows, so that one expert of a
    /// stacked-experts tensor never straddles two buffers.
    pub fn upload_aligned(gpu: &Gpu, t: &TensorBytes<'_>, row_align: u64) -> Result<GpuWeight> {
        let meta = &t.meta;
        let ty = meta.ggml_type;
        if !gpu_supports(ty) {
            return Err(EngineError::Unsupported(format!(
                "tensor {} has type {ty}, which wllm's GPU kernels cannot read yet",
                meta.name
            )));
        }
        let ncols = meta.dim(0);
        let nrows: u64 = meta.dims.iter().skip(1).product();
        if !ncols.is_multiple_of(32) {
            return Err(EngineError::Unsupported(format!(
                "tensor {}: rows of {ncols} elements are not a multiple of 32",
                meta.name
            )));
        }
        let row_bytes = ty
            .bytes_for(ncols)
            .ok_or_else(|| EngineError::InvalidArgument(format!("tensor {}: bad row length", meta.name)))?;
        if t.bytes.len() as u64 != row_bytes * nrows {
            return Err(EngineError::InvalidArgument(format!(
                "tensor {}: {} bytes of data for {nrows} rows of {row_bytes} bytes",
                meta.name,
                t.bytes.len()
            )));
        }
        let too_big =
            |what: &str| EngineError::Unsupported(format!("tensor {}: {what} exceeds 2^32", meta.name));
        let Some(lay) = layout(ty) else {
            return Err(EngineError::Unsupported(format!("tensor {}: no GPU layout for {ty}", meta.name)));
        };
        let nb = ncols / lay.elems as u64;
        let gpu_row = gpu_bytes(&lay, nb).1;
        let ncols32 = u32::try_from(ncols).map_err(|_| too_big("row length"))?;
        let nrows32 = u32::try_from(nrows).map_err(|_| too_big("row count"))?;
        let row_bytes32 = u32::try_from(row_bytes).map_err(|_| too_big("row size"))?;
        // Byte offsets inside one part are computed in u32 by the kernels.
        let max = gpu.max_binding();
        let align = row_align.max(1);
        let rows_per_part = rows_per_part(gpu_row, max, align);
        if rows_per_part == 0 {
            return Err(EngineError::Unsupported(format!(
                "tensor {}: {align} rows of {row_bytes} bytes exceed one {max}-byte storage binding",
                meta.name
            )));
        }
        let mut parts = Vec::new();
        let mut row0 = 0u64;
        while row0 < nrows {
            let n = rows_per_part.min(nrows - row0);
            let bytes = &t.bytes[(row0 * row_bytes) as usize..((row0 + n) * row_bytes) as usize];
            let label =
                if nrows <= rows_per_part { meta.name.clone() } else { format!("{}[{row0}..]", meta.name) };
            let (meta_at, total) = gpu_bytes(&lay, n * nb);
            let buffer = gpu.storage_with(&label, total, |put| repack(ty, bytes, put));
            parts.push(WeightPart {
                buffer,
                row0: row0 as u32,
                nrows: n as u32,
                meta_off: (meta_at / 4) as u32,
            });
            row0 += n;
        }
        Ok(GpuWeight {
            name: meta.name.clone(),
            ggml_type: ty,
            ncols: ncols32,
            nrows: nrows32,
            row_bytes: row_bytes32,
            nb: nb as u32,
            parts,
            codebook: gpu.codebook(ty),
        })
    }

    /// Bytes of the weight in the file.
    pub fn n_bytes(&self) -> u64 {
        self.row_bytes as u64 * self.nrows as u64
    }

    /// Bytes it occupies on the device.
    pub fn device_bytes(&self) -> u64 {
        self.parts.iter().map(|p| p.buffer.size()).sum()
    }
}

/// A 1-D f32 vector on the GPU (norm weights, biases), converted from any float type.
pub fn upload_f32(gpu: &Gpu, t: &TensorBytes<'_>) -> Result<wgpu::Buffer> {
    let n = t.meta.n_elements() as usize;
    let mut v = vec![0f32; n];
    wllm_loaders::quant::dequantize_row(t.meta.ggml_type, &t.bytes, &mut v)
        .map_err(|e| EngineError::InvalidArgument(format!("tensor {}: {e}", t.meta.name)))?;
    Ok(gpu.storage_init(&t.meta.name, bytemuck::cast_slice(&v)))
}

/// Rows of `gpu_row` bytes one part (buffer) of a weight holds under a `max_binding`-byte
/// binding limit, a multiple of `align` (one expert of stacked experts never straddles two
/// parts); 0 when not even `align` rows fit. Byte offsets inside one part are computed in u32
/// by the kernels, hence the 4 GiB cap.
pub fn rows_per_part(gpu_row: u64, max_binding: u64, align: u64) -> u64 {
    let max = max_binding.min(u32::MAX as u64 & !255);
    (max / gpu_row.max(1)) / align.max(1) * align.max(1)
}
