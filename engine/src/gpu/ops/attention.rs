//! Fused flash-style attention over the KV cache.

use bytemuck::{Pod, Zeroable};

use super::{Grid, Op, Res};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};
use crate::kv_type::{CacheTypes, v_rotation};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttentionKey {
    pub cache: CacheTypes,
    pub head_dim: u32,
    pub head_dim_v: u32,
    /// Invocations per (token, head) row.
    pub team: u32,
    /// The team is exactly one subgroup: reduce with subgroupAdd, no barriers.
    pub team_is_subgroup: bool,
    /// The team is an aligned part of a subgroup: reduce with subgroup shuffles.
    pub team_shuffle: bool,
    pub wg: u32,
    /// Per-head logits join the softmax denominator (gpt-oss).
    pub sinks: bool,
    /// Each q head is followed by its output-gate logits; the output is multiplied by their
    /// sigmoid (Qwen3.5).
    pub gated: bool,
    /// With `gated`: the output is left rotated (a rotated V cache) and ungated, for
    /// [`super::hadamard::hadamard64`] to turn back and gate.
    pub gate_after: bool,
    pub pass: AttentionPass,
    /// Keys per tile staged in workgroup memory ([`AttentionPass::Tiled`]; 0 otherwise).
    pub tile_keys: u32,
    /// Q heads of one kv group a team serves together, so each key and value it loads serves
    /// them all (1 for the tiled and reduce passes).
    pub heads: u32,
}

/// Which kernel of the family: the whole attention walking each row's keys, flash-decoding's
/// two passes, or the tiled prompt pass.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum AttentionPass {
    #[default]
    Whole,
    /// Each of `splits` workgroups per row group takes a share of the keys and writes partial
    /// softmaxes.
    Split,
    /// Combines a row's partials into its output.
    Reduce,
    /// Prompts: consecutive tokens of one head share tiles of keys and values staged in
    /// workgroup memory.
    Tiled,
}

impl Kernel for AttentionKey {
    fn label(&self) -> String {
        format!(
            "attention.hd{}{}{}.team{}{}.wg{}",
            self.head_dim,
            if self.head_dim_v != self.head_dim { format!("v{}", self.head_dim_v) } else { String::new() },
            kv_label(self.cache),
            self.team,
            if self.team_is_subgroup {
                "sg"
            } else if self.team_shuffle {
                "shuf"
            } else {
                ""
            },
            self.wg
        ) + if self.sinks { ".sinks" } else { "" }
            + if self.gated { ".gated" } else { "" }
            + if self.gate_after { ".gate_after" } else { "" }
            + match self.pass {
                AttentionPass::Whole => "",
                AttentionPass::Split => ".split",
                AttentionPass::Reduce => ".reduce",
                AttentionPass::Tiled => ".tiled",
            }
            + &if self.tile_keys > 0 { format!("{}", self.tile_keys) } else { String::new() }
            + &if self.heads > 1 { format!(".heads{}", self.heads) } else { String::new() }
    }
    fn spec(&self) -> KernelSpec {
        KernelSpec::new("attention.wgsl")
            .kv_side("K", self.cache.k)
            .kv_side("V", self.cache.v)
            .define_if(self.team_is_subgroup, "TEAM_SUBGROUP")
            .define_if(self.sinks, "SINKS")
            .define_if(self.gated, "GATED")
            .define_if(self.gate_after, "GATE_AFTER")
            .define_if(self.pass == AttentionPass::Split, "SPLIT")
            .define_if(self.pass == AttentionPass::Reduce, "REDUCE")
            .define_if(self.pass == AttentionPass::Tiled, "TILED")
            .define_if(self.team_shuffle, "TEAM_SHUFFLE")
            .define_value("ROWS", format!("{}u", self.wg / self.team))
            .define_value("TILE_KEYS", format!("{}u", self.tile_keys.max(4)))
            .define_value("RB", format!("{}u", self.heads.max(1)))
            .define_value("HEAD_DIM", format!("{}u", self.head_dim))
            .define_value("HEAD_DIM_V", format!("{}u", self.head_dim_v))
            .define_value("TEAM", format!("{}u", self.team))
            .constant("WG", self.wg as f64)
    }
}

/// `.f16`, or `.q8_0.f16` when K and V differ.
pub(crate) fn kv_label(c: CacheTypes) -> String {
    if c.k == c.v { format!(".{}", c.k) } else { format!(".{}.{}", c.k, c.v) }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n_head: u32,
    n_kv: u32,
    ctx: u32,
    qkv_stride: u32,
    o_stride: u32,
    window: u32,
    scale: f32,
    splits: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout =
    params_layout!(Params { n_head, n_kv, ctx, qkv_stride, o_stride, window, scale, splits });

pub struct AttentionArgs<'a> {
    pub n_head: u32,
    pub n_kv: u32,
    pub head_dim: u32,
    pub head_dim_v: u32,
    /// Cache rows per kv head: positions of every sequence.
    pub ctx: u32,
    pub window: u32,
    pub scale: f32,
    pub cache: CacheTypes,
    pub qkv: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    pub step: &'a wgpu::Buffer,
    /// Per token: (position, cache row of its sequence's position 0), as `u32` pairs.
    pub positions: &'a wgpu::Buffer,
    /// One logit per q head that joins its softmax denominator (gpt-oss).
    pub sinks: Option<&'a wgpu::Buffer>,
    /// Each q head is followed by its output-gate logits (see [`AttentionKey::gated`]).
    /// With a quantized V (stored rotated, see [`crate::kv_type::v_rotation`]) the output is
    /// left rotated and ungated: [`super::hadamard::hadamard64`] must follow.
    pub gated: bool,
}

pub fn attention(gpu: &Gpu, a: &AttentionArgs<'_>) -> Result<Op> {
    let (key, p) = shape(gpu, a, AttentionPass::Whole, 1)?;
    let ubuf = gpu.uniform("attention.params", &p);
    let entries = entries(a, &ubuf, None)?;
    let rows_per_group = key.wg / key.team;
    let rows_per_token = a.n_head / key.heads;
    let pipeline = gpu.pipeline(PipelineKey::Attention(key))?;
    Ok(gpu.op(pipeline, &entries, Grid::Rows { rows_per_token, rows_per_group }))
}

/// Tokens per workgroup of the tiled pass: each staged key is read by this many query rows.
const TILE_ROWS: u32 = 16;
/// Workgroup memory of the tiled pass's key and value tiles, in f32: what WebGPU guarantees
/// (16 KiB) less the 4 KiB the team reduction's fallback takes.
const TILE_BYTES: u32 = 12 * 1024;

/// Attention of a prompt step: [`attention_tiled`] where the device can hold its tiles and the
/// tuning asks for it, otherwise [`attention`].
pub fn attention_prefill(gpu: &Gpu, a: &AttentionArgs<'_>) -> Result<Op> {
    let tiled = gpu.tuning.tiled_prefill_attention
        && tiled_workgroup_bytes(a.head_dim, a.head_dim_v) <= gpu.limits.max_compute_workgroup_storage_size;
    if tiled { attention_tiled(gpu, a) } else { attention(gpu, a) }
}

/// Attention with keys and values staged in tiles that 16 consecutive tokens of a
/// head share (flash attention's prompt form): one workgroup per (head, block of tokens).
pub fn attention_tiled(gpu: &Gpu, a: &AttentionArgs<'_>) -> Result<Op> {
    let (key, p) = shape(gpu, a, AttentionPass::Tiled, 1)?;
    let need = tiled_workgroup_bytes(a.head_dim, a.head_dim_v);
    if need > gpu.limits.max_compute_workgroup_storage_size {
        return Err(EngineError::Unsupported(format!(
            "tiled attention over heads of {} needs {need} bytes of workgroup memory; the adapter has {}",
            a.head_dim, gpu.limits.max_compute_workgroup_storage_size
        )));
    }
    let ubuf = gpu.uniform("attention.params", &p);
    let entries = entries(a, &ubuf, None)?;
    let pipeline = gpu.pipeline(PipelineKey::Attention(key))?;
    Ok(gpu.op(pipeline, &entries, Grid::TokenTiles { x: a.n_head, tile: TILE_ROWS }))
}

/// Keys per tile of the tiled pass: as many whole groups of four as fit [`TILE_BYTES`].
fn tile_keys(head_dim: u32, head_dim_v: u32) -> u32 {
    let per_key = (head_dim + head_dim_v) * 4;
    (TILE_BYTES / per_key / 4 * 4).clamp(4, 64)
}

/// Workgroup memory of the tiled pass: its tiles, and the team reduction's fallback.
fn tiled_workgroup_bytes(head_dim: u32, head_dim_v: u32) -> u32 {
    tile_keys(head_dim, head_dim_v) * (head_dim + head_dim_v) * 4 + 256 * 16
}

/// The tiled pass's team, workgroup size and keys per tile for heads of these sizes.
pub(crate) fn tiled_shape(head_dim: u32, head_dim_v: u32) -> (u32, u32, u32) {
    let team = tiled_team(head_dim, head_dim_v);
    (team, TILE_ROWS * team, tile_keys(head_dim, head_dim_v))
}

/// The tiled pass's team: a power of two that divides both heads' vec4 counts, about four
/// vec4s of q and of the output per lane (registers), at most 16 lanes.
fn tiled_team(head_dim: u32, head_dim_v: u32) -> u32 {
    let (c, cv) = (head_dim / 4, head_dim_v / 4);
    let mut team = 16;
    while team > 1 && (!c.is_multiple_of(team) || !cv.is_multiple_of(team) || team * 4 > c.min(cv)) {
        team /= 2;
    }
    team
}

/// Attention for one-token steps over a deep cache, flash-decoding style: `splits`
/// workgroups per group of rows each take a share of the keys and write partial softmaxes to
/// `partials` (at least [`partials_bytes`]), then a reduction writes the output.
pub fn attention_split(
    gpu: &Gpu,
    a: &AttentionArgs<'_>,
    splits: u32,
    partials: &wgpu::Buffer,
    max_tokens: u32,
) -> Result<[Op; 2]> {
    let need = partials_bytes(a.n_head, a.head_dim_v, splits, max_tokens);
    if splits == 0 || partials.size() < need {
        return Err(EngineError::InvalidArgument(format!(
            "{splits} attention splits need {need} bytes of partials, got {}",
            partials.size()
        )));
    }
    let (split_key, p) = shape(gpu, a, AttentionPass::Split, splits)?;
    let ubuf = gpu.uniform("attention.params", &p);
    let rows_per_group = split_key.wg / split_key.team;
    let rows_per_token = a.n_head / split_key.heads;
    let split = gpu.op(
        gpu.pipeline(PipelineKey::Attention(split_key.clone()))?,
        &entries(a, &ubuf, Some(partials))?,
        Grid::RowsSplit { rows_per_token, rows_per_group, splits },
    );
    let reduce_key = AttentionKey { pass: AttentionPass::Reduce, wg: 64, heads: 1, ..split_key };
    let reduce = gpu.op(
        gpu.pipeline(PipelineKey::Attention(reduce_key))?,
        &entries(a, &ubuf, Some(partials))?,
        Grid::Rows { rows_per_token: a.n_head, rows_per_group: 1 },
    );
    Ok([split, reduce])
}

/// Bytes of the partials of `splits` splits for steps of up to `max_tokens` tokens.
pub fn partials_bytes(n_head: u32, head_dim_v: u32, splits: u32, max_tokens: u32) -> u64 {
    (max_tokens * n_head) as u64 * splits as u64 * (head_dim_v as u64 / 4 + 1) * 16
}

/// The kernel for `a` and `pass`, and its parameters.
fn shape(
    gpu: &Gpu,
    a: &AttentionArgs<'_>,
    pass: AttentionPass,
    splits: u32,
) -> Result<(AttentionKey, Params)> {
    if !a.head_dim.is_multiple_of(4) || !a.head_dim_v.is_multiple_of(4) {
        return Err(EngineError::Unsupported(format!("head size {} is not a multiple of 4", a.head_dim)));
    }
    a.cache.check_dims(a.head_dim, a.head_dim_v)?;
    if a.gated && a.head_dim != a.head_dim_v {
        return Err(EngineError::Unsupported(format!(
            "an output gate of {} logits per head for values of {}",
            a.head_dim, a.head_dim_v
        )));
    }
    // The team and how it reduces, the q heads it serves, the workgroup, the keys per tile.
    let (team, team_is_subgroup, heads, wg, tile_keys) = match pass {
        AttentionPass::Tiled => {
            let (team, wg, keys) = tiled_shape(a.head_dim, a.head_dim_v);
            (team, false, 1, wg, keys)
        }
        _ => {
            let (team, team_is_subgroup) = row_team(gpu, a);
            let heads = group_heads(a.n_head, a.n_kv);
            (team, team_is_subgroup, heads, row_workgroup(team, heads), 0)
        }
    };
    let team_shuffle =
        pass == AttentionPass::Tiled && gpu.caps.subgroups && gpu.caps.min_subgroup_size >= team;
    let key = AttentionKey {
        cache: a.cache,
        head_dim: a.head_dim,
        head_dim_v: a.head_dim_v,
        team,
        team_is_subgroup,
        team_shuffle,
        wg,
        sinks: a.sinks.is_some(),
        gated: a.gated,
        gate_after: a.gated && v_rotation(a.cache.v, a.head_dim_v).is_some(),
        pass,
        tile_keys,
        heads,
    };
    let p = Params {
        n_head: a.n_head,
        n_kv: a.n_kv,
        ctx: a.ctx,
        qkv_stride: super::rope::qkv_stride(a.n_head, a.n_kv, a.head_dim, a.head_dim_v, a.gated),
        o_stride: a.n_head * a.head_dim_v,
        window: a.window,
        scale: a.scale,
        splits,
    };
    Ok((key, p))
}

/// The workgroup of a row-walking pass. A team serves `heads` q heads, so a token has that many
/// times fewer rows: fewer rows per workgroup keep a one-token step spread over as many
/// workgroups (lavapipe, SmolLM2 at depth 2048: 8 rows of 3 heads decoded 7.8 tokens/s, 2 rows
/// 15-16).
fn row_workgroup(team: u32, heads: u32) -> u32 {
    if heads == 1 { (team * 8).clamp(32, 256).max(team) } else { (team * (8 / heads)).min(256) }
}

/// Q heads a row-walking team serves at once: the largest divisor of a kv group's heads up to
/// four (registers: each holds its query and output share).
fn group_heads(n_head: u32, n_kv: u32) -> u32 {
    let group = if n_kv > 0 && n_head.is_multiple_of(n_kv) { n_head / n_kv } else { 1 };
    (1..=4).rev().find(|d| group.is_multiple_of(*d)).unwrap_or(1)
}

/// The team of the row-walking passes: a whole subgroup where one divides both head sizes'
/// vec4 counts, otherwise up to 8 lanes reducing through workgroup memory.
fn row_team(gpu: &Gpu, a: &AttentionArgs<'_>) -> (u32, bool) {
    // The team splits a head into vec4 chunks; it must divide both head sizes.
    let chunks = (a.head_dim / 4).min(a.head_dim_v / 4);
    let sg = if gpu.caps.subgroups { gpu.caps.fixed_subgroup_size } else { None };
    match sg {
        Some(s)
            if chunks.is_multiple_of(s)
                && (a.head_dim_v / 4).is_multiple_of(s)
                && (a.head_dim / 4).is_multiple_of(s) =>
        {
            (s, true)
        }
        _ => {
            let mut t = 8;
            while t > 1 && (!(a.head_dim / 4).is_multiple_of(t) || !(a.head_dim_v / 4).is_multiple_of(t)) {
                t /= 2;
            }
            (t, false)
        }
    }
}

/// The bindings of a pass (each declares them all), with the partials of the split ones.
fn entries<'a>(
    a: &AttentionArgs<'a>,
    ubuf: &'a wgpu::Buffer,
    partials: Option<&'a wgpu::Buffer>,
) -> Result<Vec<(u32, Res<'a>)>> {
    let mut entries = vec![
        (0, Res::Buf(a.qkv)),
        (1, Res::Buf(a.k_cache)),
        (2, Res::Buf(a.v_cache)),
        (3, Res::Buf(a.out)),
        (4, Res::Buf(ubuf)),
        (5, Res::Buf(a.step)),
        (6, Res::Buf(a.positions)),
    ];
    if let Some(sinks) = a.sinks {
        if sinks.size() < u64::from(a.n_head) * 4 {
            return Err(EngineError::InvalidArgument(format!(
                "attention sinks of {} bytes for {} heads",
                sinks.size(),
                a.n_head
            )));
        }
        entries.push((7, Res::Buf(sinks)));
    }
    if let Some(p) = partials {
        entries.push((8, Res::Buf(p)));
    }
    Ok(entries)
}
