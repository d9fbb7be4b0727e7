//! Every ggml tensor type id a GGUF file can name, with its block geometry.
//!
//! Ids, block sizes and bytes per block follow `ggml/include/ggml.h` and `ggml-common.h` at
//! llama.cpp commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f. Ids that ggml retired are kept
//! apart so the error can say "removed" rather than "unknown".

use std::fmt;

/// A ggml tensor element type.
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// What an id that is not a current [`GgmlType`] means.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnknownType {
    /// ggml once defined this id and dropped it (Q4_2, Q4_3, the repacked Q4_0_x_y / IQ4_NL_x_y).
    Removed(&'static str),
    /// Not an id ggml has ever used (as far as this build knows).
    Unknown(u32),
}

impl fmt::Display for UnknownType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownType::Removed(name) => write!(f, "{name} (removed from ggml; re-quantize the model)"),
            UnknownType::Unknown(id) => write!(f, "unknown ggml type id {id}"),
        }
    }
}

use GgmlType::*;

/// (type, id, name, elements per block, bytes per block)
const TABLE: &[(GgmlType, u32, &str, u32, u32)] = &[
    (F32, 0, "F32", 1, 4),
    (F16, 1, "F16", 1, 2),
    (Q4_0, 2, "Q4_0", 32, 18),
    (Q4_1, 3, "Q4_1", 32, 20),
    (Q5_0, 6, "Q5_0", 32, 22),
    (Q5_1, 7, "Q5_1", 32, 24),
    (Q8_0, 8, "Q8_0", 32, 34),
    // ggml's block_q8_1 is two f16 plus 32 int8 = 36 bytes (gguf-py's table says 40; ggml is
    // what writes and reads the data).
    (Q8_1, 9, "Q8_1", 32, 36),
    (Q2_K, 10, "Q2_K", 256, 84),
    (Q3_K, 11, "Q3_K", 256, 110),
    (Q4_K, 12, "Q4_K", 256, 144),
    (Q5_K, 13, "Q5_K", 256, 176),
    (Q6_K, 14, "Q6_K", 256, 210),
    (Q8_K, 15, "Q8_K", 256, 292),
    (IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (IQ2_XS, 17, "IQ2_XS", 256, 74),
    (IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (IQ1_S, 19, "IQ1_S", 256, 50),
    (IQ4_NL, 20, "IQ4_NL", 32, 18),
    (IQ3_S, 21, "IQ3_S", 256, 110),
    (IQ2_S, 22, "IQ2_S", 256, 82),
    (IQ4_XS, 23, "IQ4_XS", 256, 136),
    (I8, 24, "I8", 1, 1),
    (I16, 25, "I16", 1, 2),
    (I32, 26, "I32", 1, 4),
    (I64, 27, "I64", 1, 8),
    (F64, 28, "F64", 1, 8),
    (IQ1_M, 29, "IQ1_M", 256, 56),
    (BF16, 30, "BF16", 1, 2),
    (TQ1_0, 34, "TQ1_0", 256, 54),
    (TQ2_0, 35, "TQ2_0", 256, 66),
    (MXFP4, 39, "MXFP4", 32, 17),
    (NVFP4, 40, "NVFP4", 64, 36),
    (Q1_0, 41, "Q1_0", 128, 18),
    (Q2_0, 42, "Q2_0", 64, 18),
];

const REMOVED: &[(u32, &str)] = &[
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

impl GgmlType {
    /// All current types, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|row| row.0)
    }

    /// Maps a GGUF type id to a type, or says why it cannot be read.
    pub fn from_id(id: u32) -> Result<GgmlType, UnknownType> {
        if let Some(row) = TABLE.iter().find(|row| row.1 == id) {
            return Ok(row.0);
        }
        match REMOVED.iter().find(|(rid, _)| *rid == id) {
            Some((_, name)) => Err(UnknownType::Removed(name)),
            None => Err(UnknownType::Unknown(id)),
        }
    }

    fn row(self) -> &'static (GgmlType, u32, &'static str, u32, u32) {
        // Every variant has exactly one row; the table test below keeps it that way.
        TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[0])
    }

    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The name llama.cpp prints (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for the plain float and integer types).
    pub fn block_size(self) -> u64 {
        self.row().3 as u64
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.row().4 as u64
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes taken by `n` consecutive elements, or `None` when `n` is not a whole number of
    /// blocks or the product overflows.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size())
    }

    /// Parses a name as llama.cpp prints it (case-insensitive).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().find(|row| row.2.eq_ignore_ascii_case(name)).map(|row| row.0)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_round_trips() {
        for (t, id, name, _, _) in TABLE {
            assert_eq!(GgmlType::from_id(*id), Ok(*t));
            assert_eq!(t.id(), *id);
            assert_eq!(t.name(), *name);
            assert_eq!(GgmlType::from_name(name), Some(*t));
        }
        let mut ids: Vec<u32> = TABLE.iter().map(|r| r.1).collect();
        ids.dedup();
        assert_eq!(ids.len(), TABLE.len(), "duplicate ids");
    }

    #[test]
    fn removed_and_unknown_ids_are_named() {
        assert_eq!(GgmlType::from_id(4), Err(UnknownType::Removed("Q4_2")));
        assert_eq!(GgmlType::from_id(99), Err(UnknownType::Unknown(99)));
        assert!(GgmlType::from_id(36).unwrap_err().to_string().contains("IQ4_NL_4_4"));
    }

    #[test]
    fn row_bytes() {
        assert_eq!(Q4_K.bytes_for(4096), Some(16 * 144));
        assert_eq!(Q4_K.bytes_for(100), None);
        assert_eq!(F32.bytes_for(3), Some(12));
        assert_eq!(Q8_0.bytes_for(u64::MAX / 32 * 32), None);
    }
}
