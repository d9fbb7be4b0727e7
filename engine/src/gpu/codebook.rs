//! The codebooks of the IQ1/IQ2/IQ3 types on the device: one uniform buffer per table, made on
//! first use and shared by every weight of the types that index it (IQ1_S and IQ1_M share one).
//!
//! A uniform binding rather than a storage one: the linear kernels' expert variants already use
//! the eight storage bindings wgpu guarantees, and the largest table (IQ1's, 16 KiB) is well
//! inside the guaranteed 64 KiB of a uniform binding. Kernels declare it as `GRID` (binding 11
//! in quant.wgsl).

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;
use wllm_loaders::GgmlType;
use wllm_loaders::quant::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};

use crate::gpu::device::Gpu;

/// Binding number of the codebook in the kernels that read quantized weights.
pub const CODEBOOK_BINDING: u32 = 11;

/// The table `t` indexes, as little-endian 32-bit words (a u64 entry is two words, low first).
pub fn codebook_words(t: GgmlType) -> Option<&'static [u32]> {
    use GgmlType::*;
    Some(match t {
        IQ2_XXS => bytemuck::cast_slice(&IQ2XXS_GRID),
        IQ2_XS => bytemuck::cast_slice(&IQ2XS_GRID),
        IQ2_S => bytemuck::cast_slice(&IQ2S_GRID),
        IQ3_XXS => &IQ3XXS_GRID,
        IQ3_S => &IQ3S_GRID,
        IQ1_S | IQ1_M => bytemuck::cast_slice(&IQ1S_GRID),
        _ => return None,
    })
}

/// Uniform buffers made so far, keyed by the table's address (types sharing a table share one).
#[derive(Default)]
pub struct Codebooks {
    made: Mutex<HashMap<usize, wgpu::Buffer>>,
}

impl Gpu {
    /// The codebook of `t` on this device, or `None` for types without one.
    pub fn codebook(&self, t: GgmlType) -> Option<wgpu::Buffer> {
        let words = codebook_words(t)?;
        let mut made = self.codebooks.made.lock().unwrap_or_else(|e| e.into_inner());
        let buffer = made.entry(words.as_ptr() as usize).or_insert_with(|| {
            self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&format!("codebook.{t}")),
                contents: bytemuck::cast_slice(words),
                usage: wgpu::BufferUsages::UNIFORM,
            })
        });
        Some(buffer.clone())
    }
}
