use crate::ggml_type::{GgmlType, UnknownType};

/// Everything that can be wrong with a GGUF file, with the byte offset or the name of the
/// tensor or key where it was found.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: magic bytes at offset 0 are \"{}\", expected \"GGUF\"", found.escape_ascii())]
    BadMagic { found: [u8; 4] },

    #[error(
        "big-endian GGUF (version {version} byte-swapped) is not supported; convert the model on a little-endian machine"
    )]
    BigEndian { version: u32 },

    #[error("unsupported GGUF version {0} (wllm reads versions 2 and 3)")]
    UnsupportedVersion(u32),

    #[error("truncated {section}: need {needed} bytes at offset {offset}, file has {file_len}")]
    Truncated { section: &'static str, offset: u64, needed: u64, file_len: u64 },

    #[error("{what} count {count} at offset {offset} is larger than the {remaining} bytes left could hold")]
    CountTooLarge { what: &'static str, count: u64, offset: u64, remaining: u64 },

    #[error(
        "string of {len} bytes at offset {offset} runs past the end of the file ({remaining} bytes left)"
    )]
    StringTooLong { len: u64, offset: u64, remaining: u64 },

    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str, offset: u64 },

    #[error("metadata key {key:?}: unknown value type {type_id} at offset {offset}")]
    UnknownValueType { key: String, type_id: u32, offset: u64 },

    #[error("metadata key {key:?}: arrays nested deeper than {max} levels at offset {offset}")]
    NestingTooDeep { key: String, max: u32, offset: u64 },

    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),

    #[error("general.alignment must be a non-zero power of two stored as u32, found {0}")]
    BadAlignment(String),

    #[error("tensor {tensor:?} has {n_dims} dimensions; at most 4 are allowed")]
    TooManyDims { tensor: String, n_dims: u32 },

    #[error("tensor {tensor:?}: dimensions {dims:?} overflow when multiplied")]
    DimOverflow { tensor: String, dims: Vec<u64> },

    #[error("tensor {tensor:?} has a type wllm cannot read: {reason}")]
    UnknownTensorType { tensor: String, reason: UnknownType },

    #[error(
        "tensor {tensor:?}: row length {ne0} is not a whole number of {ggml_type} blocks ({block_size} elements each)"
    )]
    NotWholeBlocks { tensor: String, ggml_type: GgmlType, ne0: u64, block_size: u64 },

    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),

    #[error("tensor {tensor:?}: data offset {offset} is not a multiple of the alignment {alignment}")]
    TensorMisaligned { tensor: String, offset: u64, alignment: u64 },

    #[error(
        "tensor {tensor:?}: data bytes {start}..{end} lie outside the file ({file_len} bytes); the file is truncated or corrupt"
    )]
    TensorOutOfBounds { tensor: String, start: u64, end: u64, file_len: u64 },

    #[error("metadata key {0:?} is missing")]
    MissingKey(String),

    #[error("metadata key {key:?} holds {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: String },
}
