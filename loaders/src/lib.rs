//! File formats for wllm: GGUF and safetensors readers, ggml quant block layouts with CPU
//! reference dequantization, and tokenizers built from model metadata. No GPU code lives here.

pub mod chat;
pub mod error;
pub mod ggml_type;
pub mod gguf;
pub mod mapped;
pub mod model;
pub mod quant;
pub mod safetensors;
pub mod synthetic;
pub mod tokenizer;

pub use error::{Error, Result};
pub use ggml_type::GgmlType;
pub use gguf::{GgufError, GgufFile, TensorInfo};
pub use model::{Arch, ModelConfig, ModelError, ModelWeights, QuantizingSource, TensorSource};
pub use quant::QuantError;
pub use safetensors::{SafetensorsError, SafetensorsFiles, SafetensorsModel};
pub use tokenizer::{StreamDecoder, TokenAttr, TokenType, Tokenizer, TokenizerError, Utf8Stream};
