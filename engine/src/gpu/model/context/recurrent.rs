//! A context's Gated DeltaNet side (Qwen3.5, Qwen3-Next): the per-layer convolution and
//! delta-rule states of every sequence, the activations between the block's kernels, and a
//! checkpoint of sequence 0's states. Unlike a KV cache the states summarise every token so far
//! and cannot be cut back, so a truncation goes back to the checkpoint (taken at the end of the
//! last multi-token evaluation: a prompt, a chat turn) or to nothing.

use wllm_loaders::ModelConfig;
use wllm_loaders::model::DeltaNetConfig;

use crate::gpu::device::Gpu;
use crate::gpu::ops::delta_rule::{DeltaRuleScratch, scratch_bytes};

/// One layer's states: the convolution's last inputs and the delta rule's matrices, `n_seq`
/// blocks each (sequence `s` at block `s`).
pub(crate) struct LayerStates {
    pub conv: wgpu::Buffer,
    pub ssm: wgpu::Buffer,
}

pub(crate) struct DeltaNetBuffers {
    pub dims: DeltaNetConfig,
    /// The W_qkv projection, then the same after the convolution and SiLU (q, k, v channels).
    pub conv_in: wgpu::Buffer,
    pub conv_out: wgpu::Buffer,
    /// The output norm's z gate and the delta rule's output, `value_dim` per token.
    pub z: wgpu::Buffer,
    pub out: wgpu::Buffer,
    /// The beta and alpha projections, then beta and the log-decay g (`2 · n_v_heads` per token).
    pub beta_alpha: wgpu::Buffer,
    pub gates: wgpu::Buffer,
    /// Per GPU layer; `None` for attention layers.
    pub states: Vec<Option<LayerStates>>,
    pub rule: DeltaRuleScratch,
    /// Sequence 0's states of every recurrent layer after `checkpoint_at` tokens.
    checkpoint: Vec<LayerStates>,
    pub checkpoint_at: Option<u32>,
}

/// Floats per token of the block's activations: conv_in, conv_out, z, out, beta_alpha, gates.
fn activation_floats(d: &DeltaNetConfig) -> u64 {
    2 * d.conv_channels() as u64 + 2 * d.value_dim() as u64 + 4 * d.n_v_heads as u64
}

/// Bytes of one sequence's states in one layer.
fn state_bytes(d: &DeltaNetConfig) -> (u64, u64) {
    (4 * d.conv_state_len() as u64, 4 * d.state_len() as u64)
}

/// Device bytes of the DeltaNet side of a context over GPU layers `layers` with `n_seq`
/// sequences: (states, scratch). The checkpoint counts as state.
pub(crate) fn delta_net_bytes(
    c: &ModelConfig,
    layers: std::ops::Range<usize>,
    n_batch: u32,
    n_seq: u32,
) -> (u64, u64) {
    let Some(d) = &c.delta_net else { return (0, 0) };
    let recurrent = layers.filter(|&il| c.is_recurrent(il)).count() as u64;
    if recurrent == 0 {
        return (0, 0);
    }
    let (conv, ssm) = state_bytes(d);
    let states = recurrent * (conv + ssm) * (n_seq as u64 + 1);
    let scratch = n_batch as u64 * activation_floats(d) * 4 + scratch_bytes(d, n_batch, n_seq);
    (states, scratch)
}

impl DeltaNetBuffers {
    /// For GPU layers `first_layer..` of `c`; `None` when none of them is recurrent.
    pub fn new(gpu: &Gpu, c: &ModelConfig, first_layer: u32, n_batch: u32, n_seq: u32) -> Option<Self> {
        let d = c.delta_net.as_ref()?;
        let layers = first_layer as usize..c.n_layer as usize;
        if !layers.clone().any(|il| c.is_recurrent(il)) {
            return None;
        }
        let (conv, ssm) = state_bytes(d);
        let alloc = |n: u64| LayerStates {
            conv: gpu.storage("delta_net.conv_state", conv * n),
            ssm: gpu.storage("delta_net.state", ssm * n),
        };
        let nb = n_batch as u64;
        let per_token = |floats: u32| nb * floats as u64 * 4;
        Some(DeltaNetBuffers {
            dims: d.clone(),
            conv_in: gpu.storage("delta_net.conv_in", per_token(d.conv_channels())),
            conv_out: gpu.storage("delta_net.conv_out", per_token(d.conv_channels())),
            z: gpu.storage("delta_net.z", per_token(d.value_dim())),
            out: gpu.storage("delta_net.out", per_token(d.value_dim())),
            beta_alpha: gpu.storage("delta_net.beta_alpha", per_token(2 * d.n_v_heads)),
            gates: gpu.storage("delta_net.gates", per_token(2 * d.n_v_heads)),
            states: layers.clone().map(|il| c.is_recurrent(il).then(|| alloc(n_seq as u64))).collect(),
            rule: DeltaRuleScratch::new(gpu, d, n_batch, n_seq),
            checkpoint: layers.filter(|&il| c.is_recurrent(il)).map(|_| alloc(1)).collect(),
            checkpoint_at: None,
        })
    }

    /// Device bytes of every buffer, as [`delta_net_bytes`] predicts them: (states, scratch).
    pub fn bytes(&self) -> (u64, u64) {
        let states: u64 =
            self.states.iter().flatten().chain(&self.checkpoint).map(|s| s.conv.size() + s.ssm.size()).sum();
        let scratch = [&self.conv_in, &self.conv_out, &self.z, &self.out, &self.beta_alpha, &self.gates]
            .iter()
            .map(|b| b.size())
            .sum::<u64>()
            + self.rule.bytes();
        (states, scratch)
    }

    /// Copies sequence 0's states into the checkpoint (`to_checkpoint`) or back.
    pub fn copy_checkpoint(&self, enc: &mut wgpu::CommandEncoder, to_checkpoint: bool) {
        let (conv, ssm) = state_bytes(&self.dims);
        for (live, saved) in self.states.iter().flatten().zip(&self.checkpoint) {
            for (a, b, bytes) in [(&live.conv, &saved.conv, conv), (&live.ssm, &saved.ssm, ssm)] {
                match to_checkpoint {
                    true => enc.copy_buffer_to_buffer(a, 0, b, 0, bytes),
                    false => enc.copy_buffer_to_buffer(b, 0, a, 0, bytes),
                }
            }
        }
    }
}
