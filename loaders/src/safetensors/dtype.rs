//! The element types a safetensors header can name, as spelled by the format
//! (huggingface/safetensors `Dtype`, crate version 0.8).

use crate::ggml_type::GgmlType;

#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    BOOL,
    F4,
    F6_E2M3,
    F6_E3M2,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

use Dtype::*;

/// (dtype, name, bits per element)
const TABLE: &[(Dtype, &str, u64)] = &[
    (BOOL, "BOOL", 8),
    (F4, "F4", 4),
    (F6_E2M3, "F6_E2M3", 6),
    (F6_E3M2, "F6_E3M2", 6),
    (U8, "U8", 8),
    (I8, "I8", 8),
    (F8_E5M2, "F8_E5M2", 8),
    (F8_E4M3, "F8_E4M3", 8),
    (F8_E8M0, "F8_E8M0", 8),
    (F8_E4M3FNUZ, "F8_E4M3FNUZ", 8),
    (F8_E5M2FNUZ, "F8_E5M2FNUZ", 8),
    (I16, "I16", 16),
    (U16, "U16", 16),
    (F16, "F16", 16),
    (BF16, "BF16", 16),
    (I32, "I32", 32),
    (U32, "U32", 32),
    (F32, "F32", 32),
    (C64, "C64", 64),
    (F64, "F64", 64),
    (I64, "I64", 64),
    (U64, "U64", 64),
];

impl Dtype {
    pub fn from_name(name: &str) -> Option<Dtype> {
        TABLE.iter().find(|row| row.1 == name).map(|row| row.0)
    }

    fn row(self) -> &'static (Dtype, &'static str, u64) {
        // Every variant has a row; the test below keeps it that way.
        TABLE.iter().find(|row| row.0 == self).unwrap_or(&TABLE[0])
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Sub-byte types (F4, F6) pack several elements per byte, so sizes are kept in bits.
    pub fn bits(self) -> u64 {
        self.row().2
    }

    /// The ggml type with the same bytes, for the types wllm computes with.
    pub fn ggml_type(self) -> Option<GgmlType> {
        match self {
            F32 => Some(GgmlType::F32),
            F16 => Some(GgmlType::F16),
            BF16 => Some(GgmlType::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for &(d, name, bits) in TABLE {
            assert_eq!(Dtype::from_name(name), Some(d));
            assert_eq!(d.name(), name);
            assert_eq!(d.bits(), bits);
        }
        assert_eq!(TABLE.len(), 22);
        assert_eq!(Dtype::from_name("f32"), None);
    }
}
