//! Owned GGUF metadata values: what [`GgufWriter`](super::GgufWriter) takes, and what a borrowed
//! [`Value`] becomes when metadata is carried from one file into another.

use super::value::{Scalar, Value, ValueType};

/// One metadata value, owned.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    Scalar(Scalar),
    /// Raw bytes: GGUF strings should be UTF-8, but tokenizer pieces are not always.
    String(Vec<u8>),
    /// Every item must have type `elem`; the writer checks. `elem` is explicit so that an empty
    /// array still has a type.
    Array {
        elem: ValueType,
        items: Vec<MetaValue>,
    },
}

impl MetaValue {
    pub fn value_type(&self) -> ValueType {
        match self {
            MetaValue::Scalar(s) => s.value_type(),
            MetaValue::String(_) => ValueType::String,
            MetaValue::Array { .. } => ValueType::Array,
        }
    }

    pub fn array(elem: ValueType, items: Vec<MetaValue>) -> MetaValue {
        MetaValue::Array { elem, items }
    }

    /// An array of strings from anything byte-like (`&str`, `String`, `Vec<u8>`).
    pub fn strings<S: AsRef<[u8]>>(items: impl IntoIterator<Item = S>) -> MetaValue {
        let items = items.into_iter().map(|s| MetaValue::String(s.as_ref().to_vec())).collect();
        MetaValue::Array { elem: ValueType::String, items }
    }

    /// A string that may not be UTF-8.
    pub fn bytes(b: impl Into<Vec<u8>>) -> MetaValue {
        MetaValue::String(b.into())
    }
}

impl From<Scalar> for MetaValue {
    fn from(s: Scalar) -> MetaValue {
        MetaValue::Scalar(s)
    }
}

impl From<&str> for MetaValue {
    fn from(s: &str) -> MetaValue {
        MetaValue::String(s.as_bytes().to_vec())
    }
}

impl From<String> for MetaValue {
    fn from(s: String) -> MetaValue {
        MetaValue::String(s.into_bytes())
    }
}

impl From<Vec<String>> for MetaValue {
    fn from(v: Vec<String>) -> MetaValue {
        MetaValue::strings(v)
    }
}

impl From<Vec<&str>> for MetaValue {
    fn from(v: Vec<&str>) -> MetaValue {
        MetaValue::strings(v)
    }
}

/// Scalars and typed arrays of them, for every GGUF scalar type.
macro_rules! scalar_conversions {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for MetaValue {
            fn from(v: $t) -> MetaValue {
                MetaValue::Scalar(Scalar::$variant(v))
            }
        }
        impl From<Vec<$t>> for MetaValue {
            fn from(v: Vec<$t>) -> MetaValue {
                let items = v.into_iter().map(|x| MetaValue::Scalar(Scalar::$variant(x))).collect();
                MetaValue::Array { elem: ValueType::$variant, items }
            }
        }
    )*};
}

scalar_conversions! {
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    f32 => F32, bool => Bool, u64 => U64, i64 => I64, f64 => F64,
}

impl From<Value<'_>> for MetaValue {
    fn from(v: Value<'_>) -> MetaValue {
        match v {
            Value::Scalar(s) => MetaValue::Scalar(s),
            Value::String(b) => MetaValue::String(b.to_vec()),
            Value::Array(a) => {
                MetaValue::Array { elem: a.elem_type(), items: a.iter().map(MetaValue::from).collect() }
            }
        }
    }
}
