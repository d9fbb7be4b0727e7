//! The wgpu engine of wllm.
