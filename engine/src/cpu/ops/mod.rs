//! The transformer's non-matrix ops on row-major f32 activations (`n_tok` rows).

mod act;
mod attention;
mod attention_tile;
mod delta_net;
mod logprob;
mod moe;
mod norm;
mod rope;

pub(crate) use act::glu_on;
pub use act::{Activation, add_in_place, glu};
pub(crate) use attention::attention_at;
pub use attention::{Attention, KvLayer, KvRows, attention};
pub(crate) use delta_net::delta_rule_on;
pub use delta_net::{conv_silu, delta_rule, gated_rms_norm, gates, l2_norm_heads};
pub use logprob::{log_softmax_at, log_softmax_gather};
pub use moe::{Route, route};
pub use norm::{add_rms_normed, rms_norm, rms_norm_in_place};
pub use rope::{Rope, rope_in_place};

use crate::error::{EngineError, Result};

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(EngineError::InvalidArgument(format!("{what}: {got} values, expected {want}")))
    }
}
