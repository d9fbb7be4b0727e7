//! safetensors models: one `.safetensors` file or a Hugging Face directory (sharded through
//! `model.safetensors.index.json` or not), memory-mapped, with `config.json` read into a
//! [`crate::ModelConfig`].
//!
//! Two layers: [`SafetensorsFiles`] is the file format (every tensor under its Hugging Face
//! name, zero-copy); [`SafetensorsModel`] adds the config and presents the tensors as a
//! [`crate::TensorSource`] in GGUF naming and semantics, so the engine cannot tell it from a
//! GGUF file. The header parser is our own (see README.md, Dependencies) so that every defect
//! comes back as a [`SafetensorsError`] naming the tensor and byte range.

mod convert;
mod dtype;
mod error;
mod files;
mod header;
mod header_json;
mod index;
mod model;
mod names;
mod plan;
mod rope_freqs;

pub use dtype::Dtype;
pub use error::SafetensorsError;
pub use files::{RawTensor, SafetensorsFiles, TensorView};
pub use header::MAX_HEADER_LEN;
pub use header_json::MAX_DIMS;
pub use index::INDEX_FILE;
pub use model::SafetensorsModel;
