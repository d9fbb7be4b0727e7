//! The gated delta rule of a Gated DeltaNet layer on the GPU: the recurrent form for decode
//! steps and the chunked parallel form for prefill (`shaders/delta_rule.wgsl`). Both update the
//! layer's recurrent state in place, one `head_dim²` matrix per value head and sequence slot,
//! laid out as the CPU's (row `j`, a value dim, holding `S[i][j]` for every key dim `i`).

use bytemuck::{Pod, Zeroable};
use wllm_loaders::model::{DeltaNetConfig, KeyHeadMap};

use super::{Grid, MAX_GRID, Op, Res, pow2_clamp};
use crate::error::{EngineError, Result};
use crate::gpu::device::Gpu;
use crate::gpu::pipeline::{Kernel, KernelSpec, PipelineKey};

/// Most tokens of one chunk of the chunked form (`CHUNK` in the shader).
pub const CHUNK: u32 = 64;

/// Largest head size the kernels take: the chunked form keeps a `head_dim × cols` state block
/// and `CHUNK × cols` deltas in workgroup memory, which must stay under WebGPU's 16 KiB.
pub const MAX_HEAD_DIM: u32 = 256;

/// Value columns per workgroup of the chunked state pass: 16 while the state block and deltas
/// fit in 16 KiB of workgroup memory (head sizes up to 128), else 8.
fn state_cols(hd: u32) -> u32 {
    if hd <= 128 { 16 } else { 8 }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeltaRulePass {
    /// Token by token; `team` invocations per state row, reducing with one subgroup when
    /// `team_is_subgroup`.
    Recurrent { team: u32, team_is_subgroup: bool, wg: u32 },
    /// Per chunk: decays, A, the triangular solve and the q·k products.
    ChunkPrepare,
    /// Per run, chunk after chunk: deltas, inter-chunk outputs and the state, `cols` value
    /// columns per workgroup.
    ChunkState { cols: u32, wg: u32 },
    /// Per token: the intra-chunk outputs.
    ChunkOutput { wg: u32 },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeltaRuleKey {
    pub head_dim: u32,
    pub pass: DeltaRulePass,
}

impl Kernel for DeltaRuleKey {
    fn label(&self) -> String {
        let hd = self.head_dim;
        match self.pass {
            DeltaRulePass::Recurrent { team, team_is_subgroup, wg } => format!(
                "delta_rule.recurrent.hd{hd}.team{team}{}.wg{wg}",
                if team_is_subgroup { "sg" } else { "" }
            ),
            DeltaRulePass::ChunkPrepare => format!("delta_rule.chunk_prepare.hd{hd}"),
            DeltaRulePass::ChunkState { cols, wg } => {
                format!("delta_rule.chunk_state.hd{hd}.cols{cols}.wg{wg}")
            }
            DeltaRulePass::ChunkOutput { wg } => format!("delta_rule.chunk_output.hd{hd}.wg{wg}"),
        }
    }
    fn spec(&self) -> KernelSpec {
        let spec = KernelSpec::new("delta_rule.wgsl").define_value("HEAD_DIM", format!("{}u", self.head_dim));
        match self.pass {
            DeltaRulePass::Recurrent { team, team_is_subgroup, wg } => spec
                .define("RECURRENT")
                .define_if(team_is_subgroup, "TEAM_SUBGROUP")
                .define_value("TEAM", format!("{team}u"))
                .constant("WG", wg as f64),
            DeltaRulePass::ChunkPrepare => spec.define("CHUNK_PREPARE"),
            DeltaRulePass::ChunkState { cols, wg } => {
                spec.define("CHUNK_STATE").define_value("COLS", format!("{cols}u")).constant("WG", wg as f64)
            }
            DeltaRulePass::ChunkOutput { wg } => spec.define("CHUNK_OUTPUT").constant("WG", wg as f64),
        }
    }
}

#[repr(C)]
#[derive(Copy, Clone, Debug, Pod, Zeroable)]
struct Params {
    n_k_heads: u32,
    n_v_heads: u32,
    n_ctx: u32,
    n_seq: u32,
    grouped: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
}

#[doc(hidden)]
pub const PARAMS_LAYOUT: super::ParamsLayout =
    params_layout!(Params { n_k_heads, n_v_heads, n_ctx, n_seq, grouped, scale, _pad0, _pad1 });

pub struct DeltaRuleArgs<'a> {
    pub dims: &'a DeltaNetConfig,
    /// Cache rows per sequence: token t's state slot is `positions[t].y / n_ctx`.
    pub n_ctx: u32,
    /// Sequences the state buffer holds; runs of a slot at or past it are skipped.
    pub n_seq: u32,
    /// Per token: q | k (L2-normalised) | v, `2·n_k_heads·head_dim + n_v_heads·head_dim`.
    pub conv_out: &'a wgpu::Buffer,
    /// Per token: `[beta(nv) | g(nv)]`, g the log-decay.
    pub gates: &'a wgpu::Buffer,
    /// `n_seq` blocks of `n_v_heads × head_dim²`, updated in place.
    pub state: &'a wgpu::Buffer,
    /// Per token: `n_v_heads × head_dim`, already multiplied by `1/√head_dim`.
    pub out: &'a wgpu::Buffer,
    pub step: &'a wgpu::Buffer,
    /// Per token: (position in its sequence, cache row of the sequence's position 0).
    pub positions: &'a wgpu::Buffer,
    /// The chunked form's intermediates; required when `chunked`.
    pub scratch: Option<&'a DeltaRuleScratch>,
}

/// Scratch the chunked form needs for steps of up to `n_batch` tokens (allocated once per
/// context and shared by the layers, which run one after the other). Everything is per token,
/// so its size does not depend on how many sequences a step carries.
pub struct DeltaRuleScratch {
    n_batch: u32,
    n_v_heads: u32,
    head_dim: u32,
    /// Per (token, value head): `[U | W]` of the solve, `2·head_dim`; U becomes delta.
    solved: wgpu::Buffer,
    /// Per (token, value head): `D_ts (q_t·k_s)` for the chunk's tokens s ≤ t, `CHUNK` wide.
    mqk: wgpu::Buffer,
    /// Per (token, value head): the cumulative log-decay within the chunk.
    gcum: wgpu::Buffer,
    /// Per token: the step index of its chunk's first token (`u32`).
    chunk_start: wgpu::Buffer,
}

/// Bytes of the four scratch buffers, as `Gpu::storage` rounds them.
fn scratch_sizes(dims: &DeltaNetConfig, n_batch: u32) -> [u64; 4] {
    let rows = n_batch as u64 * dims.n_v_heads as u64;
    [rows * 2 * dims.head_dim as u64 * 4, rows * CHUNK as u64 * 4, rows * 4, n_batch as u64 * 4]
        .map(|b| b.max(4).next_multiple_of(4))
}

/// What [`DeltaRuleScratch::new`] allocates, for the memory plan.
pub fn scratch_bytes(dims: &DeltaNetConfig, n_batch: u32, _n_seq: u32) -> u64 {
    scratch_sizes(dims, n_batch).iter().sum()
}

impl DeltaRuleScratch {
    /// `_n_seq` is taken for the memory plan's symmetry with the states; the scratch is per
    /// token, so it does not change the size.
    pub fn new(gpu: &Gpu, dims: &DeltaNetConfig, n_batch: u32, _n_seq: u32) -> DeltaRuleScratch {
        let [solved, mqk, gcum, chunk_start] = scratch_sizes(dims, n_batch);
        DeltaRuleScratch {
            n_batch,
            n_v_heads: dims.n_v_heads,
            head_dim: dims.head_dim,
            solved: gpu.storage("delta_rule.solved", solved),
            mqk: gpu.storage("delta_rule.mqk", mqk),
            gcum: gpu.storage("delta_rule.gcum", gcum),
            chunk_start: gpu.storage("delta_rule.chunk_start", chunk_start),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.solved.size() + self.mqk.size() + self.gcum.size() + self.chunk_start.size()
    }
}

fn invalid(msg: String) -> EngineError {
    EngineError::InvalidArgument(format!("delta rule: {msg}"))
}

/// Checks that `buf` holds `rows` rows of `row_bytes`.
fn check_rows(what: &str, buf: &wgpu::Buffer, rows: u64, row_bytes: u64) -> Result<()> {
    if buf.size() < rows * row_bytes {
        return Err(invalid(format!(
            "{what} of {} bytes is shorter than {rows} rows of {row_bytes} bytes",
            buf.size()
        )));
    }
    Ok(())
}

/// The recurrent pass's team and workgroup size for head size `hd`: a whole subgroup per state
/// row where the device guarantees one size, else a power of two near `hd / 4` (each
/// invocation then holds about four key elements), with rows filling 128 invocations.
/// Returns the pass and its state rows per workgroup.
fn recurrent_pass(gpu: &Gpu, hd: u32) -> (DeltaRulePass, u32) {
    let sg = if gpu.caps.subgroups { gpu.caps.fixed_subgroup_size } else { None };
    let (team, team_is_subgroup) = match sg {
        Some(s) if s.is_power_of_two() && (4..=128).contains(&s) => (s, true),
        _ => (pow2_clamp(hd.div_ceil(4), 1, 32), false),
    };
    let rows = (128 / team).clamp(1, hd.next_power_of_two());
    (DeltaRulePass::Recurrent { team, team_is_subgroup, wg: team * rows }, rows)
}

/// `chunked == false`: the recurrent form, each sequence run token by token (decode steps:
/// one token per sequence). `chunked == true`: the chunked parallel form over chunks of at most
/// [`CHUNK`] tokens of each run (three dispatches), equal to the recurrent form within f32
/// error, for prefill steps of up to the scratch's `n_batch` tokens. Either way a run that
/// starts at position 0 starts from a zero state, and the state of each run's slot is left
/// holding its last token's state.
pub fn delta_rule(gpu: &Gpu, a: &DeltaRuleArgs<'_>, chunked: bool) -> Result<Vec<Op>> {
    let d = a.dims;
    let (nk, nv, hd) = (d.n_k_heads, d.n_v_heads, d.head_dim);
    if nk == 0 || nv == 0 || !nv.is_multiple_of(nk) {
        return Err(invalid(format!("{nv} value heads are not a multiple of {nk} key heads")));
    }
    if hd == 0 || hd > MAX_HEAD_DIM {
        return Err(EngineError::Unsupported(format!(
            "delta rule with head size {hd} (the GPU kernels take 1 to {MAX_HEAD_DIM})"
        )));
    }
    if a.n_ctx == 0 || a.n_seq == 0 {
        return Err(invalid(format!("n_ctx {} and n_seq {} must be positive", a.n_ctx, a.n_seq)));
    }
    let state_bytes = d.state_len() as u64 * 4;
    check_rows("state", a.state, a.n_seq as u64, state_bytes)?;
    check_rows("step", a.step, 1, 16)?;
    // The kernels read as many rows as the step has tokens; the buffers must hold a whole
    // batch of them (one token at least for the recurrent form).
    let scratch = match (chunked, a.scratch) {
        (false, _) => None,
        (true, None) => return Err(invalid("the chunked form needs its scratch".into())),
        (true, Some(s)) if s.n_v_heads != nv || s.head_dim != hd => {
            return Err(invalid(format!(
                "scratch made for {} value heads of {}, used with {nv} of {hd}",
                s.n_v_heads, s.head_dim
            )));
        }
        (true, Some(s)) if s.n_batch > MAX_GRID => {
            return Err(invalid(format!("a batch of {} tokens (at most {MAX_GRID})", s.n_batch)));
        }
        (true, Some(s)) => Some(s),
    };
    let rows = scratch.map_or(1, |s| s.n_batch as u64);
    let ch = d.conv_channels() as u64;
    check_rows("conv output", a.conv_out, rows, ch * 4)?;
    check_rows("gates", a.gates, rows, 2 * nv as u64 * 4)?;
    check_rows("output", a.out, rows, d.value_dim() as u64 * 4)?;
    check_rows("positions", a.positions, rows, 8)?;

    let params = gpu.uniform(
        "delta_rule.params",
        &Params {
            n_k_heads: nk,
            n_v_heads: nv,
            n_ctx: a.n_ctx,
            n_seq: a.n_seq,
            grouped: u32::from(d.key_heads == KeyHeadMap::Grouped),
            scale: 1.0 / (hd as f32).sqrt(),
            _pad0: 0,
            _pad1: 0,
        },
    );
    let pipeline = |pass| gpu.pipeline(PipelineKey::DeltaRule(DeltaRuleKey { head_dim: hd, pass }));
    let shared = [(4, Res::Buf(&params)), (5, Res::Buf(a.step)), (6, Res::Buf(a.positions))];
    // Bytes per token besides the state: its q, k, v and gates read, its output written.
    let token_bytes = (ch + 2 * nv as u64 + d.value_dim() as u64) * 4;

    let Some(s) = scratch else {
        let (pass, rows_per_group) = recurrent_pass(gpu, hd);
        let mut entries = vec![
            (0, Res::Buf(a.conv_out)),
            (1, Res::Buf(a.gates)),
            (2, Res::Buf(a.state)),
            (3, Res::Buf(a.out)),
        ];
        entries.extend(shared);
        let mut op =
            gpu.op(pipeline(pass)?, &entries, Grid::PerToken { groups: nv * hd.div_ceil(rows_per_group) });
        // A decode token reads and writes its sequence's whole state.
        op.traffic = (0, 2 * state_bytes + token_bytes);
        return Ok(vec![op]);
    };

    let mut prepare_entries = vec![
        (0, Res::Buf(a.conv_out)),
        (1, Res::Buf(a.gates)),
        (7, Res::Buf(&s.solved)),
        (8, Res::Buf(&s.mqk)),
        (9, Res::Buf(&s.gcum)),
        (10, Res::Buf(&s.chunk_start)),
    ];
    prepare_entries.extend(shared);
    let mut prepare =
        gpu.op(pipeline(DeltaRulePass::ChunkPrepare)?, &prepare_entries, Grid::PerToken { groups: nv });
    let solved_row = 2 * hd as u64 * 4;
    prepare.traffic = (0, (ch + 2 * nv as u64) * 4 + nv as u64 * (solved_row + (CHUNK as u64 + 1) * 4));

    let cols = state_cols(hd);
    let mut state_entries = vec![
        (0, Res::Buf(a.conv_out)),
        (2, Res::Buf(a.state)),
        (3, Res::Buf(a.out)),
        (7, Res::Buf(&s.solved)),
        (9, Res::Buf(&s.gcum)),
    ];
    state_entries.extend(shared);
    let mut state = gpu.op(
        pipeline(DeltaRulePass::ChunkState { cols, wg: 256 })?,
        &state_entries,
        Grid::PerToken { groups: nv * hd.div_ceil(cols) },
    );
    state.traffic = (2 * state_bytes, token_bytes + nv as u64 * (solved_row + 4));

    let output_wg = pow2_clamp(hd, 32, 128);
    let mut output_entries = vec![
        (3, Res::Buf(a.out)),
        (7, Res::Buf(&s.solved)),
        (8, Res::Buf(&s.mqk)),
        (10, Res::Buf(&s.chunk_start)),
    ];
    output_entries.extend(shared);
    let mut output = gpu.op(
        pipeline(DeltaRulePass::ChunkOutput { wg: output_wg })?,
        &output_entries,
        Grid::PerToken { groups: nv },
    );
    output.traffic = (0, nv as u64 * (2 * hd as u64 * 4 + CHUNK as u64 * 4));
    Ok(vec![prepare, state, output])
}
