//! CPU execution: vectorized, rayon-parallel kernels for every weight type the GPU reads, and
//! a transformer stack ([`CpuStack`]) that runs some or all layers with its KV cache in RAM.
//!
//! Kernels are written once over a small SIMD vocabulary (`simd`) and compiled per
//! instruction set (AVX-512, AVX2+FMA, NEON, scalar), chosen at run time ([`Isa`]). The
//! scalar oracle `wllm_loaders::quant` is what the tests hold them to. Activations stay f32.

#[cfg(target_arch = "x86_64")]
mod amx;
mod bandwidth;
mod exec;
mod isa;
mod kv;
pub mod linear;
pub mod ops;
pub(crate) mod quant;
mod recurrent;
pub(crate) mod simd;
mod stack;

pub use bandwidth::read_bandwidth;
pub use isa::Isa;
pub use linear::{
    LinearJob, WeightView, dequantize_rows, int_activation_block, linear, linear_multi, pack, packs,
};
pub use quant::is_supported;
pub use stack::{CpuExperts, CpuOptions, CpuPacker, CpuStack, LogitRows, Profile, softcap};
