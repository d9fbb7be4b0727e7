use crate::model::ModelError;

/// Everything that can be wrong with a safetensors file, a sharded directory or its index, named
/// by tensor, shard or byte range. The file it came from is in the wrapping [`crate::Error`].
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    #[error("file is {file_len} bytes; a safetensors file starts with an 8-byte header length")]
    TooShort { file_len: u64 },

    #[error("header length {header_len} is larger than the {max}-byte limit")]
    HeaderTooLarge { header_len: u64, max: u64 },

    #[error("header length {header_len} runs past the end of the file ({file_len} bytes)")]
    HeaderPastEnd { header_len: u64, file_len: u64 },

    #[error("header is not valid JSON: {0}")]
    HeaderJson(#[source] serde_json::Error),

    #[error("header is {found}, expected a JSON object of tensors")]
    HeaderNotObject { found: &'static str },

    #[error("tensor {tensor:?}: entry is {found}, expected an object")]
    EntryNotObject { tensor: String, found: &'static str },

    #[error("tensor {tensor:?}: {field:?} is missing")]
    MissingField { tensor: String, field: &'static str },

    #[error("tensor {tensor:?}: {field:?} is {found}, expected {expected}")]
    BadField { tensor: String, field: &'static str, expected: &'static str, found: String },

    #[error("tensor {tensor:?}: unknown dtype {dtype:?}")]
    UnknownDtype { tensor: String, dtype: String },

    #[error("tensor {tensor:?} has {n_dims} dimensions; at most {max} are allowed")]
    TooManyDims { tensor: String, n_dims: usize, max: usize },

    #[error("tensor {tensor:?}: shape {shape:?} overflows when multiplied")]
    ShapeOverflow { tensor: String, shape: Vec<u64> },

    #[error("tensor {tensor:?}: {n_elements} elements of {dtype} do not fill whole bytes")]
    NotWholeBytes { tensor: String, dtype: &'static str, n_elements: u64 },

    #[error("tensor {tensor:?}: data_offsets [{start}, {end}] end before they start")]
    BadOffsets { tensor: String, start: u64, end: u64 },

    #[error("tensor {tensor:?}: data_offsets [{start}, {end}] run past the data section ({data_len} bytes)")]
    OutOfBounds { tensor: String, start: u64, end: u64, data_len: u64 },

    #[error(
        "tensor {tensor:?}: data_offsets span {found} bytes, but {dtype} with shape {shape:?} needs {expected}"
    )]
    SizeMismatch { tensor: String, dtype: &'static str, shape: Vec<u64>, expected: u64, found: u64 },

    #[error("duplicate tensor name {tensor:?}")]
    DuplicateTensor { tensor: String },

    #[error("tensor {tensor:?}: data bytes {start}..{end} overlap tensor {other:?}")]
    Overlap { tensor: String, other: String, start: u64, end: u64 },

    #[error("data section bytes {start}..{end} belong to no tensor (the format forbids holes)")]
    Uncovered { start: u64, end: u64 },

    #[error("no .safetensors files in this directory")]
    NoSafetensors,

    #[error("{what} is {len} bytes, larger than the {max}-byte limit")]
    JsonTooLarge { what: &'static str, len: u64, max: u64 },

    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),

    #[error("index has no \"weight_map\" object")]
    IndexNoWeightMap,

    #[error("index entry for tensor {tensor:?} is {found}, expected a shard file name")]
    IndexBadEntry { tensor: String, found: &'static str },

    #[error("index names shard {shard:?}, which is not a plain file name in the model directory")]
    BadShardName { shard: String },

    #[error("shard {shard:?} (holding tensor {tensor:?} per the index) does not exist")]
    MissingShard { shard: String, tensor: String },

    #[error("the index puts tensor {tensor:?} in shard {shard:?}, but that shard does not hold it")]
    NotInShard { tensor: String, shard: String },

    #[error("tensor {tensor:?} appears in both {first:?} and {second:?}")]
    DuplicateAcrossShards { tensor: String, first: String, second: String },

    #[error("tensor {tensor:?} has dtype {dtype}; wllm reads F32, F16 and BF16 safetensors")]
    UnsupportedDtype { tensor: String, dtype: &'static str },

    #[error("{target}: expert {expert} ({tensor:?}) is missing")]
    MissingExpert { target: String, expert: u32, tensor: String },

    #[error("tensor {tensor:?}: expert index {expert} is not below the {n_expert} experts of the config")]
    ExpertOutOfRange { tensor: String, expert: u64, n_expert: u32 },

    #[error("tensors {tensor:?} and {other:?} both map to {target}")]
    SameTarget { target: String, tensor: String, other: String },

    #[error("{target}: expert tensor {tensor:?} is {found}, but expert 0 is {expected}")]
    ExpertMismatch { target: String, tensor: String, found: String, expected: String },

    #[error("tensor {tensor:?} comes with {missing:?}, which is missing")]
    MissingCompanion { tensor: String, missing: String },

    #[error("tensor {tensor:?} has shape {shape:?}, which cannot be {expected}")]
    BadShape { tensor: String, shape: Vec<u64>, expected: &'static str },

    #[error("{0}")]
    Config(#[source] ModelError),
}
