use crate::ggml_type::GgmlType;

/// Why a buffer could not be (de)quantized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{ty} {op} is not implemented")]
    Unsupported { ty: GgmlType, op: Op },

    #[error("{ty}: {n_elements} elements is not a whole number of {block_size}-element blocks")]
    PartialBlock { ty: GgmlType, n_elements: usize, block_size: usize },

    #[error("{ty}: {n_elements} elements take {expected} bytes, got {actual}")]
    ByteLength { ty: GgmlType, n_elements: usize, expected: usize, actual: usize },

    #[error("{ty}: {n_elements} elements do not fit in memory")]
    TooLarge { ty: GgmlType, n_elements: usize },
}

/// The operation a [`QuantError::Unsupported`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Dequantization,
    Quantization,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Dequantization => "dequantization",
            Op::Quantization => "quantization",
        })
    }
}
