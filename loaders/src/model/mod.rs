//! Model-level description: hyperparameters and the tensor inventory, independent of the file
//! format and of where the model will run.

pub mod arch;
pub mod config;
pub mod hf_config;
pub mod hyper;
pub mod quantizing;
pub mod resident;
pub mod weights;

pub use arch::{
    Arch, ArchTraits, AttnScaleRule, DeltaNetTraits, ExpertGating, FfnActivation, FfnKind, KeyHeadMap,
    RopeLayout, SWIGLU_OAI_ALPHA, SWIGLU_OAI_LIMIT, SwaRule,
};
pub use config::{DeltaNetConfig, ModelConfig, MoeConfig, Yarn};
pub use hyper::{DeltaNetHyper, Hyperparams, KeyFormat};
pub use quantizing::QuantizingSource;
pub use resident::ResidentSource;
pub use weights::{
    BetaAlpha, DeltaNetWeights, FfnWeights, LayerMetas, LayerWeights, ModelWeights, MoeBiases, Packer,
    SharedExpert, TensorBytes, TensorMeta, TensorSource,
};

use crate::gguf::GgufError;

/// Problems with a model that parsed fine as a file but cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model has no general.architecture key")]
    MissingArchitecture,
    #[error("architecture {0:?} is not supported (supported: {supported})", supported = Arch::SUPPORTED)]
    UnknownArchitecture(String),
    #[error("required tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("tensor {tensor:?} has shape {found:?}, but the hyperparameters call for {expected:?}")]
    ShapeMismatch { tensor: String, found: Vec<u64>, expected: Vec<u64> },
    #[error("bad hyperparameter: {0}")]
    BadHyperparameter(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Metadata(#[from] GgufError),
    #[error("cannot reserve {bytes} bytes of memory for the CPU's copy of the weights: {source}")]
    Memory { bytes: u64, source: std::io::Error },
}
