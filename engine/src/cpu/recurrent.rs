//! The recurrent states of the CPU's Gated DeltaNet layers: per layer and sequence, the last
//! `conv_kernel - 1` convolution inputs and one square matrix per value head. Unlike a KV
//! cache they have a fixed size and summarize every token so far, so they cannot be cut back
//! to an earlier position: a sequence either continues from where its state ends or starts
//! again from position 0.

use wllm_loaders::ModelConfig;

/// Every recurrent layer's (convolution, delta-rule) state of one sequence.
pub(crate) type Snapshot = Vec<(Vec<f32>, Vec<f32>)>;

struct LayerState {
    /// `n_seq` blocks of `conv_len` floats.
    conv: Vec<f32>,
    /// `n_seq` blocks of `state_len` floats.
    ssm: Vec<f32>,
}

pub(crate) struct RecurrentStates {
    /// Per CPU layer; `None` for attention layers.
    layers: Vec<Option<LayerState>>,
    conv_len: usize,
    state_len: usize,
}

impl RecurrentStates {
    pub fn new(cfg: &ModelConfig, n_layers: usize, n_seq: usize) -> RecurrentStates {
        let (conv_len, state_len) =
            cfg.delta_net.as_ref().map_or((0, 0), |d| (d.conv_state_len(), d.state_len()));
        let layers = (0..n_layers)
            .map(|il| {
                cfg.is_recurrent(il).then(|| LayerState {
                    conv: vec![0.0; n_seq * conv_len],
                    ssm: vec![0.0; n_seq * state_len],
                })
            })
            .collect();
        RecurrentStates { layers, conv_len, state_len }
    }

    /// Whether any layer has a state.
    pub fn any(&self) -> bool {
        self.layers.iter().any(Option::is_some)
    }

    pub fn bytes(&self) -> u64 {
        self.layers.iter().flatten().map(|l| 4 * (l.conv.len() + l.ssm.len()) as u64).sum()
    }

    /// Layer `il`'s (convolution, delta-rule) state of sequence `seq`.
    pub fn get(&mut self, il: usize, seq: usize) -> Option<(&mut [f32], &mut [f32])> {
        let (c, s) = (self.conv_len, self.state_len);
        let l = self.layers.get_mut(il)?.as_mut()?;
        let conv = l.conv.get_mut(seq * c..(seq + 1) * c)?;
        let ssm = l.ssm.get_mut(seq * s..(seq + 1) * s)?;
        Some((conv, ssm))
    }

    /// A copy of sequence `seq`'s states in every layer.
    pub fn snapshot(&self, seq: usize) -> Snapshot {
        let (c, s) = (self.conv_len, self.state_len);
        self.layers
            .iter()
            .flatten()
            .map(|l| (l.conv[seq * c..(seq + 1) * c].to_vec(), l.ssm[seq * s..(seq + 1) * s].to_vec()))
            .collect()
    }

    /// Puts back what [`snapshot`](Self::snapshot) took.
    pub fn restore(&mut self, seq: usize, snap: &[(Vec<f32>, Vec<f32>)]) {
        let (c, s) = (self.conv_len, self.state_len);
        for (l, (conv, ssm)) in self.layers.iter_mut().flatten().zip(snap) {
            l.conv[seq * c..(seq + 1) * c].copy_from_slice(conv);
            l.ssm[seq * s..(seq + 1) * s].copy_from_slice(ssm);
        }
    }
}
