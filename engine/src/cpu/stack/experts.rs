//! Expert FFNs of MoE layers on the CPU while the rest of those layers runs on the GPU
//! (`--cpu-moe`, `--n-cpu-moe N`): the router, top-k and the routed experts, from the hidden
//! state the GPU hands over, with the weights read in place from the model file.

use std::sync::Arc;

use wllm_loaders::ModelConfig;
use wllm_loaders::model::{FfnWeights, ModelWeights, TensorSource};

use super::forward::{Experts, activation};
use super::weights::{Loader, Weight};
use crate::cpu::Isa;
use crate::cpu::exec::Team;
use crate::error::{EngineError, Result};

pub struct CpuExperts {
    cfg: ModelConfig,
    isa: Isa,
    team: Team,
    /// Indexed by model layer; `None` where the experts are not on the CPU.
    layers: Vec<Option<FfnWeights<Weight, Vec<f32>>>>,
    // Last: the weights may borrow from the source.
    _src: Arc<dyn TensorSource>,
}

impl CpuExperts {
    /// The experts of the MoE layers among `layers`, with a pool of `threads` (0: one per core).
    pub fn new(
        cfg: &ModelConfig,
        src: Arc<dyn TensorSource>,
        layers: &[u32],
        threads: usize,
    ) -> Result<Self> {
        if cfg.moe.is_none() {
            return Err(EngineError::InvalidArgument(
                "expert offload asked for a model without experts".into(),
            ));
        }
        let threads =
            if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let team = Team::new(threads)
            .map_err(|e| EngineError::InvalidArgument(format!("cannot start {threads} CPU threads: {e}")))?;
        let metas = ModelWeights::resolve(cfg, src.as_ref())?;
        let loader = Loader { src: &src };
        let mut out: Vec<Option<FfnWeights<Weight, Vec<f32>>>> = (0..cfg.n_layer).map(|_| None).collect();
        for &il in layers {
            let l = metas.layers.get(il as usize).ok_or_else(|| {
                EngineError::InvalidArgument(format!("layer {il} of a {}-layer model", cfg.n_layer))
            })?;
            if let FfnWeights::Moe { .. } = &l.ffn {
                out[il as usize] = Some(l.ffn.try_map(|m| loader.matrix(m), |v| loader.vector(v))?);
            }
        }
        Ok(CpuExperts { cfg: cfg.clone(), isa: Isa::best(), team, layers: out, _src: src })
    }

    /// Whether layer `il`'s experts run here.
    pub fn has(&self, il: usize) -> bool {
        self.layers.get(il).is_some_and(Option::is_some)
    }

    /// `out` (n rows of `n_embd`) = layer `il`'s routed, weighted expert outputs for `h`.
    pub fn run(&self, il: usize, h: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let e = self.cfg.n_embd as usize;
        let (
            Some(Some(FfnWeights::Moe { router, gate_exps, up_exps, down_exps, biases, shared })),
            Some(moe),
        ) = (self.layers.get(il), &self.cfg.moe)
        else {
            return Err(EngineError::InvalidArgument(format!("layer {il} has no experts on the CPU")));
        };
        if !h.len().is_multiple_of(e) {
            return Err(EngineError::InvalidArgument(format!("{} values are not rows of {e}", h.len())));
        }
        let n = h.len() / e;
        out.clear();
        out.resize(n * e, 0.0);
        let x = Experts {
            router,
            gate: gate_exps,
            up: up_exps,
            down: down_exps,
            biases: biases.as_ref(),
            shared: shared.as_ref(),
        };
        x.run(&self.team, self.isa, moe, activation(self.cfg.ffn_act), e, h, n, out)
    }
}
