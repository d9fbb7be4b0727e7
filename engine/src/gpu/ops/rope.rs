//! RoPE (normal or NeoX pairs), optional per-head q/k RMS norm, and the KV-cache write.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res, pow2_clamp};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RopeKey {
    pub neox: bool,
    pub qk_norm: bool,
    pub kv_f16: bool,
    /// Each q head is followed by its output-gate logits (Qwen3.5), skipped here.
    pub gated: bool,
    pub wg: u32,
}

impl Kernel for RopeKey {
    fn label(&self) -> String {
        format!(
            "rope_kv{}{}{}.wg{}",
            if self.neox { ".neox" } else { ".normal" },
            if self.qk_norm { ".qknorm" } else { "" },
            if self.kv_f16 { ".f16" } else { ".f32" },
            self.wg
        ) + if self.gated { ".gated" } else { "" }
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("rope.wgsl")
            .define_if(self.neox, "NEOX")
            .define_if(self.qk_norm, "QK_NORM")
            .define_if(self.kv_f16, "KV_F16")
            .define_if(self.gated, "GATED")
            .constant("WG", self.wg as f64)
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n_head: u32,
    n_kv: u32,
    hd: u32,
    hd_v: u32,
    n_rot: u32,
    ctx: u32,
    qkv_stride: u32,
    eps: f32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout =
    params_layout!(Params { n_head, n_kv, hd, hd_v, n_rot, ctx, qkv_stride, eps });

pub struct RopeArgs<'a> {
    pub n_head: u32,
    pub n_kv: u32,
    pub head_dim: u32,
    pub head_dim_v: u32,
    pub n_rot: u32,
    pub neox: bool,
    /// Cache rows per kv head: positions of every sequence.
    pub ctx: u32,
    pub eps: f32,
    pub kv_f16: bool,
    /// Each q head is followed by as many output-gate logits (Qwen3.5).
    pub gated: bool,
    /// Packed rows [q | k | v] per token.
    pub qkv: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    /// (cos, sin) per position and pair.
    pub table: &'a wgpu::Buffer,
    /// Per token: (position, cache row of its sequence's position 0), as `u32` pairs.
    pub positions: &'a wgpu::Buffer,
    /// q-norm then k-norm weights, `head_dim` each.
    pub qk_norm: Option<&'a wgpu::Buffer>,
}

pub fn rope_kv(gpu: &Gpu, a: &RopeArgs<'_>) -> Result<Op> {
    let wg = pow2_clamp(a.head_dim.max(a.head_dim_v).div_ceil(2), 16, 256);
    let key = RopeKey { neox: a.neox, qk_norm: a.qk_norm.is_some(), kv_f16: a.kv_f16, gated: a.gated, wg };
    let pipeline = gpu.pipeline(PipelineKey::Rope(key))?;
    let p = Params {
        n_head: a.n_head,
        n_kv: a.n_kv,
        hd: a.head_dim,
        hd_v: a.head_dim_v,
        n_rot: a.n_rot,
        ctx: a.ctx,
        qkv_stride: qkv_stride(a.n_head, a.n_kv, a.head_dim, a.head_dim_v, a.gated),
        eps: a.eps,
    };
    let ubuf = gpu.uniform("rope.params", &p);
    let mut e = vec![
        (0, Res::Buf(a.qkv)),
        (1, Res::Buf(a.k_cache)),
        (2, Res::Buf(a.v_cache)),
        (3, Res::Buf(a.table)),
        (4, Res::Buf(&ubuf)),
        (5, Res::Buf(a.positions)),
    ];
    if let Some(n) = a.qk_norm {
        e.push((6, Res::Buf(n)));
    }
    let mut op = gpu.op(pipeline, &e, Grid::TokensY { x: a.n_head + 2 * a.n_kv });
    // Per token: the packed q|k|v row read, rotated q written back, k and v stored in the cache,
    // and a (cos, sin) pair per rotated pair.
    let elem = if a.kv_f16 { 2 } else { 4 };
    op.traffic = (
        0,
        p.qkv_stride as u64 * 4
            + (a.n_head * a.head_dim) as u64 * 4
            + (a.n_kv * (a.head_dim + a.head_dim_v)) as u64 * elem
            + (a.n_rot / 2) as u64 * 8,
    );
    Ok(op)
}

/// Floats per token of the packed [q (+ gate) | k | v] rows.
pub fn qkv_stride(n_head: u32, n_kv: u32, head_dim: u32, head_dim_v: u32, gated: bool) -> u32 {
    let q = if gated { 2 * head_dim } else { head_dim };
    n_head * q + n_kv * (head_dim + head_dim_v)
}
