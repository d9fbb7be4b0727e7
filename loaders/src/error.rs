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

    /// The path names a FIFO, device, socket or directory where a file was expected.
    #[error("{}: is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },

    /// A memory-mapped model file changed on disk while in use.
    #[error(
        "{}: the model file was {what} while in use; its weights can no longer be trusted (replace a model in use by renaming a new file over it, never by writing into it)",
        path.display()
    )]
    FileChanged { path: PathBuf, what: String },
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
