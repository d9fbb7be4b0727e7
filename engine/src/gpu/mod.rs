//! The GPU backend: adapter and device, the WGSL kernels as typed ops, weights on the device,
//! and the step graph that turns the layer plan into dispatches.

pub mod codebook;
pub mod device;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod profile;
pub mod repack;
pub mod shader;
pub mod tensor;
pub mod variants;
