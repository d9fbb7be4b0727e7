use std::path::{Path, PathBuf};

use crate::gguf::GgufError;
use crate::model::ModelError;
use crate::quant::QuantError;
use crate::safetensors::SafetensorsError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from the loaders crate. File-format errors carry the path they came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },

    #[error(transparent)]
    GgufBytes(#[from] GgufError),

    #[error(transparent)]
    Model(#[from] ModelError),

    #[error("{}: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: SafetensorsError,
    },

    #[error(transparent)]
    Quant(#[from] QuantError),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub fn gguf(path: &Path, source: GgufError) -> Error {
        Error::Gguf { path: path.to_path_buf(), source }
    }
    pub fn safetensors(path: &Path, source: SafetensorsError) -> Error {
        Error::Safetensors { path: path.to_path_buf(), source }
    }
}
