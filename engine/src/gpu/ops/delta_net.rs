//! The Gated DeltaNet's elementwise ops on the GPU (Qwen3.5, Qwen3-Next): the causal depthwise
//! convolution with SiLU and its per-sequence rolling state, the q/k L2 norm with the beta and
//! decay gates, and the z-gated RMS norm of the delta rule's output. The delta rule itself is a
//! separate op (`delta_rule`). The math and the state layouts are the CPU's
//! (`crate::cpu::ops::delta_net`); a step may carry several sequences, each token finding its
//! state slot as `positions[t].y / n_ctx`.

use bytemuck::{Pod, Zeroable};
use wllm_loaders::model::DeltaNetConfig;

use super::{Grid, Op, Res, pow2_clamp};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

/// Which of `delta_net.wgsl`'s ops, and its workgroup size.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeltaNetKey {
    /// Convolution and SiLU, one invocation per (token, channel).
    Conv { wg: u32 },
    /// Each run's last inputs into its sequence's convolution state.
    ConvState { wg: u32 },
    /// L2 norm of the q and k heads in place, and the gates; a workgroup per head row.
    QkNormGates { wg: u32 },
    /// `o = rms_norm(o) · w · silu(z)` in place; a workgroup per head row.
    GatedNorm { wg: u32 },
}

impl Kernel for DeltaNetKey {
    fn label(&self) -> String {
        let (name, wg) = match *self {
            DeltaNetKey::Conv { wg } => ("conv", wg),
            DeltaNetKey::ConvState { wg } => ("conv_state", wg),
            DeltaNetKey::QkNormGates { wg } => ("qk_norm_gates", wg),
            DeltaNetKey::GatedNorm { wg } => ("gated_norm", wg),
        };
        format!("delta_net.{name}.wg{wg}")
    }
    fn spec(&self) -> KernelSpec {
        let (define, wg) = match *self {
            DeltaNetKey::Conv { wg } => ("CONV", wg),
            DeltaNetKey::ConvState { wg } => ("CONV_STATE", wg),
            DeltaNetKey::QkNormGates { wg } => ("QK_GATES", wg),
            DeltaNetKey::GatedNorm { wg } => ("GATED_NORM", wg),
        };
        KernelSpec::new("delta_net.wgsl").define(define).constant("WG", wg as f64)
    }
}

/// Workgroup size of the convolution ops: channels are thousands wide in real models.
const CONV_WG: u32 = 256;

/// Workgroup size of the per-head ops: about two elements of a head per invocation, at least a
/// subgroup's worth.
fn head_wg(head_dim: u32) -> u32 {
    pow2_clamp(head_dim.div_ceil(2), 32, 256)
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    channels: u32,
    taps: u32,
    n_ctx: u32,
    n_seq: u32,
    n_k_heads: u32,
    n_v_heads: u32,
    head_dim: u32,
    group: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout = params_layout!(Params {
    channels,
    taps,
    n_ctx,
    n_seq,
    n_k_heads,
    n_v_heads,
    head_dim,
    group,
    eps,
    _pad0,
    _pad1,
    _pad2
});

impl Params {
    fn new(d: &DeltaNetConfig) -> Params {
        Params {
            channels: d.conv_channels(),
            taps: d.conv_kernel,
            n_ctx: 0,
            n_seq: 0,
            n_k_heads: d.n_k_heads,
            n_v_heads: d.n_v_heads,
            head_dim: d.head_dim,
            group: 0,
            eps: 0.0,
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }
    }
}

/// Refuses geometry the kernels cannot index: empty heads or taps, value heads that are not a
/// multiple of the key heads.
fn check_dims(op: &str, d: &DeltaNetConfig) -> Result<()> {
    if d.n_k_heads == 0 || d.n_v_heads == 0 || d.head_dim == 0 || d.conv_kernel == 0 {
        return Err(EngineError::InvalidArgument(format!(
            "{op}: empty Gated DeltaNet geometry ({} key heads, {} value heads, head size {}, {} taps)",
            d.n_k_heads, d.n_v_heads, d.head_dim, d.conv_kernel
        )));
    }
    if !d.n_v_heads.is_multiple_of(d.n_k_heads) {
        return Err(EngineError::InvalidArgument(format!(
            "{op}: {} value heads are not a multiple of {} key heads",
            d.n_v_heads, d.n_k_heads
        )));
    }
    Ok(())
}

/// Refuses a buffer shorter than `floats` f32s.
fn check_size(op: &str, what: &str, buf: &wgpu::Buffer, floats: u64) -> Result<()> {
    if buf.size() < floats * 4 {
        return Err(EngineError::InvalidArgument(format!(
            "{op}: {what} holds {} bytes, needs {} ({floats} floats)",
            buf.size(),
            floats * 4
        )));
    }
    Ok(())
}

/// The buffers of one layer's convolution over a step.
pub struct ConvArgs<'a> {
    pub dims: &'a DeltaNetConfig,
    /// Positions per sequence: a token's state slot is `positions[t].y / n_ctx`.
    pub n_ctx: u32,
    /// Sequences the state buffer holds (its size is checked against it).
    pub n_seq: u32,
    /// `conv_in`: the W_qkv projection, n × channels (q | k | v).
    pub input: &'a wgpu::Buffer,
    /// channels × taps, oldest tap first.
    pub weight: &'a wgpu::Buffer,
    /// `conv_state`: n_seq blocks of (taps − 1) × channels, oldest position first.
    pub state: &'a wgpu::Buffer,
    /// `conv_out`: n × channels after the convolution and SiLU.
    pub out: &'a wgpu::Buffer,
    /// The step uniform `(pos0, n_tokens, _, _)`.
    pub step: &'a wgpu::Buffer,
    /// Per token `(position, cache row of its sequence's position 0)` as `u32` pairs.
    pub positions: &'a wgpu::Buffer,
}

/// The convolution and SiLU into `out`, then each run's last taps − 1 inputs into its
/// sequence's `state` slot: two ops, in this order (the second overwrites what the first
/// reads). With a single tap there is no state and only the first op.
pub fn conv(gpu: &Gpu, a: &ConvArgs<'_>) -> Result<Vec<Op>> {
    const OP: &str = "DeltaNet convolution";
    let d = a.dims;
    check_dims(OP, d)?;
    if a.n_ctx == 0 || a.n_seq == 0 {
        return Err(EngineError::InvalidArgument(format!(
            "{OP}: {} sequences of {} positions",
            a.n_seq, a.n_ctx
        )));
    }
    if a.input == a.out {
        return Err(EngineError::InvalidArgument(format!(
            "{OP}: the output must not be the input (later tokens read earlier inputs)"
        )));
    }
    let ch = u64::from(d.conv_channels());
    let hist = u64::from(d.conv_kernel - 1);
    check_size(OP, "the input", a.input, ch)?;
    check_size(OP, "the output", a.out, ch)?;
    check_size(OP, "the weight", a.weight, ch * u64::from(d.conv_kernel))?;
    check_size(OP, "the state", a.state, u64::from(a.n_seq) * hist * ch)?;
    check_size(OP, "the positions", a.positions, 2)?;
    let params = Params { n_ctx: a.n_ctx, n_seq: a.n_seq, ..Params::new(d) };
    let ubuf = gpu.uniform("delta_net.conv.params", &params);
    let grid = Grid::TokensY { x: d.conv_channels().div_ceil(CONV_WG) };

    let conv = gpu.pipeline(PipelineKey::DeltaNet(DeltaNetKey::Conv { wg: CONV_WG }))?;
    let mut conv_op = gpu.op(
        conv,
        &[
            (0, Res::Buf(a.input)),
            (1, Res::Buf(a.weight)),
            (2, Res::Buf(a.state)),
            (3, Res::Buf(a.out)),
            (4, Res::Buf(&ubuf)),
            (5, Res::Buf(a.step)),
            (6, Res::Buf(a.positions)),
        ],
        grid,
    );
    // The weights once; per token its row in and out, and the older inputs (cached).
    conv_op.traffic = (ch * u64::from(d.conv_kernel) * 4, 2 * ch * 4 + 8);
    if hist == 0 {
        return Ok(vec![conv_op]);
    }
    let keep = gpu.pipeline(PipelineKey::DeltaNet(DeltaNetKey::ConvState { wg: CONV_WG }))?;
    let mut keep_op = gpu.op(
        keep,
        &[
            (0, Res::Buf(a.input)),
            (2, Res::Buf(a.state)),
            (4, Res::Buf(&ubuf)),
            (5, Res::Buf(a.step)),
            (6, Res::Buf(a.positions)),
        ],
        grid,
    );
    // One sequence's state written (and read where its run is shorter than the state).
    keep_op.traffic = (2 * hist * ch * 4, 8);
    Ok(vec![conv_op, keep_op])
}

/// The buffers of one layer's q/k norm and gates over a step.
pub struct GateArgs<'a> {
    pub dims: &'a DeltaNetConfig,
    /// L2 norm epsilon (the model's rms_eps): `x / sqrt(Σx² + eps)`.
    pub eps: f32,
    /// `conv_out`, n × channels; its q and k heads are normalised in place.
    pub conv_out: &'a wgpu::Buffer,
    /// n rows of 2·n_v_heads: per group of `group` value heads, their betas then their alphas.
    pub beta_alpha: &'a wgpu::Buffer,
    /// Value heads per beta/alpha group (n_v/n_k for a fused `ssm_ba`, n_v for separate ones).
    pub group: u32,
    /// n_v_heads.
    pub dt_bias: &'a wgpu::Buffer,
    /// n_v_heads, negative.
    pub a: &'a wgpu::Buffer,
    /// Out: n rows of `[beta_0..beta_{nv-1}, g_0..g_{nv-1}]`, beta = sigmoid(b) and the
    /// log-decay g = softplus(alpha + dt_bias) · a.
    pub gates: &'a wgpu::Buffer,
    /// The step uniform `(pos0, n_tokens, _, _)`.
    pub step: &'a wgpu::Buffer,
}

/// L2-normalises every q and k head of `conv_out` in place and writes the gates: one op, a
/// workgroup per (token, q or k head) and one per token for the gates.
pub fn qk_norm_gates(gpu: &Gpu, a: &GateArgs<'_>) -> Result<Vec<Op>> {
    const OP: &str = "DeltaNet q/k norm and gates";
    let d = a.dims;
    check_dims(OP, d)?;
    if a.group == 0 || !d.n_v_heads.is_multiple_of(a.group) {
        return Err(EngineError::InvalidArgument(format!(
            "{OP}: beta/alpha groups of {} do not divide {} value heads",
            a.group, d.n_v_heads
        )));
    }
    let nv = u64::from(d.n_v_heads);
    check_size(OP, "conv_out", a.conv_out, u64::from(d.conv_channels()))?;
    check_size(OP, "beta_alpha", a.beta_alpha, 2 * nv)?;
    check_size(OP, "dt_bias", a.dt_bias, nv)?;
    check_size(OP, "a", a.a, nv)?;
    check_size(OP, "gates", a.gates, 2 * nv)?;
    let wg = head_wg(d.head_dim);
    let pipeline = gpu.pipeline(PipelineKey::DeltaNet(DeltaNetKey::QkNormGates { wg }))?;
    let params = Params { group: a.group, eps: a.eps, ..Params::new(d) };
    let ubuf = gpu.uniform("delta_net.gates.params", &params);
    let mut op = gpu.op(
        pipeline,
        &[
            (0, Res::Buf(a.conv_out)),
            (1, Res::Buf(a.beta_alpha)),
            (2, Res::Buf(a.dt_bias)),
            (3, Res::Buf(a.a)),
            (4, Res::Buf(&ubuf)),
            (5, Res::Buf(a.step)),
            (7, Res::Buf(a.gates)),
        ],
        Grid::TokensY { x: 2 * d.n_k_heads + 1 },
    );
    op.traffic = (2 * nv * 4, (2 * u64::from(d.key_dim()) * 2 + 4 * nv) * 4);
    Ok(vec![op])
}

/// `o = rms_norm(o) · weight · silu(z)` per head_dim-wide head row of `o` (n × n_v·head_dim), in
/// place; `z` is shaped as `o`, `weight` holds head_dim values shared by every head.
pub fn gated_norm(
    gpu: &Gpu,
    dims: &DeltaNetConfig,
    eps: f32,
    o: &wgpu::Buffer,
    z: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    step: &wgpu::Buffer,
) -> Result<Op> {
    const OP: &str = "DeltaNet gated norm";
    check_dims(OP, dims)?;
    if o == z {
        return Err(EngineError::InvalidArgument(format!("{OP}: the gate z must not be the output")));
    }
    let row = u64::from(dims.value_dim());
    check_size(OP, "o", o, row)?;
    check_size(OP, "z", z, row)?;
    check_size(OP, "the weight", weight, u64::from(dims.head_dim))?;
    let wg = head_wg(dims.head_dim);
    let pipeline = gpu.pipeline(PipelineKey::DeltaNet(DeltaNetKey::GatedNorm { wg }))?;
    let ubuf = gpu.uniform("delta_net.gated_norm.params", &Params { eps, ..Params::new(dims) });
    let mut op = gpu.op(
        pipeline,
        &[
            (0, Res::Buf(o)),
            (1, Res::Buf(z)),
            (2, Res::Buf(weight)),
            (4, Res::Buf(&ubuf)),
            (5, Res::Buf(step)),
        ],
        Grid::TokensY { x: dims.n_v_heads },
    );
    op.traffic = (u64::from(dims.head_dim) * 4, 3 * row * 4);
    Ok(op)
}
