//! RoPE (normal or NeoX pairs), optional per-head q/k RMS norm, and the KV-cache write.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res, pow2_clamp};
use crate::error::Result;
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::kv_type::{CacheTypes, k_rotation, v_rotation};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RopeKey {
    pub neox: bool,
    pub qk_norm: bool,
    pub cache: CacheTypes,
    /// Walsh-Hadamard blocks of q and K, and of V (0: none), see [`crate::kv_type::k_rotation`].
    pub k_rot: u32,
    pub v_rot: u32,
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
            super::attention::kv_label(self.cache),
            self.wg
        ) + if self.gated { ".gated" } else { "" }
            + &if self.k_rot + self.v_rot > 0 {
                format!(".rot{}.{}", self.k_rot, self.v_rot)
            } else {
                String::new()
            }
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("rope.wgsl")
            .define_if(self.neox, "NEOX")
            .define_if(self.qk_norm, "QK_NORM")
            .kv_side("K", self.cache.k)
            .kv_side("V", self.cache.v)
            .define_value("K_ROT", format!("{}u", self.k_rot))
            .define_value("V_ROT", format!("{}u", self.v_rot))
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
    pub cache: CacheTypes,
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
    a.cache.check_dims(a.head_dim, a.head_dim_v)?;
    let key = RopeKey {
        neox: a.neox,
        qk_norm: a.qk_norm.is_some(),
        cache: a.cache,
        k_rot: k_rotation(a.cache.k, a.head_dim).unwrap_or(0),
        v_rot: v_rotation(a.cache.v, a.head_dim_v).unwrap_or(0),
        gated: a.gated,
        wg,
    };
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
    op.traffic = (
        0,
        p.qkv_stride as u64 * 4
            + (a.n_head * a.head_dim) as u64 * 4
            + a.n_kv as u64 * (a.cache.k.gpu_row_bytes(a.head_dim) + a.cache.v.gpu_row_bytes(a.head_dim_v))
            + (a.n_rot / 2) as u64 * 8,
    );
    Ok(op)
}

/// Floats per token of the packed [q (+ gate) | k | v] rows.
pub fn qkv_stride(n_head: u32, n_kv: u32, head_dim: u32, head_dim_v: u32, gated: bool) -> u32 {
    let q = if gated { 2 * head_dim } else { head_dim };
    n_head * q + n_kv * (head_dim + head_dim_v)
}
