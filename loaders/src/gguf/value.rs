//! GGUF metadata values. Scalars are decoded when the header is parsed; strings and arrays are
//! validated then and kept as byte ranges into the file, so a 262144-entry vocabulary costs an
//! index entry, not a quarter of a million allocations, until someone asks for it.

use std::fmt;
use std::ops::Range;

use super::cursor::Cursor;
use super::error::GgufError;

/// The GGUF value type ids.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The id stored in the file; the inverse of [`ValueType::from_id`].
    pub fn id(self) -> u32 {
        use ValueType::*;
        match self {
            U8 => 0,
            I8 => 1,
            U16 => 2,
            I16 => 3,
            U32 => 4,
            I32 => 5,
            F32 => 6,
            Bool => 7,
            String => 8,
            Array => 9,
            U64 => 10,
            I64 => 11,
            F64 => 12,
        }
    }

    /// Smallest number of bytes one value of this type occupies in the file.
    pub(crate) fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 => 8,
            String => 8,
            Array => 12,
        }
    }

    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// How a value is stored after parsing: scalars decoded, strings and arrays as spans.
#[derive(Clone, Debug)]
pub(crate) enum Stored {
    Scalar(Scalar),
    String(Range<usize>),
    Array { elem: ValueType, len: u64, span: Range<usize> },
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Scalar {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Scalar {
    /// The value as a signed 128-bit integer, for integer types only.
    pub fn as_int(self) -> Option<i128> {
        use Scalar::*;
        Some(match self {
            U8(v) => v as i128,
            I8(v) => v as i128,
            U16(v) => v as i128,
            I16(v) => v as i128,
            U32(v) => v as i128,
            I32(v) => v as i128,
            U64(v) => v as i128,
            I64(v) => v as i128,
            F32(_) | F64(_) | Bool(_) => return None,
        })
    }

    pub fn as_f64(self) -> Option<f64> {
        match self {
            Scalar::F32(v) => Some(v as f64),
            Scalar::F64(v) => Some(v),
            other => other.as_int().map(|v| v as f64),
        }
    }

    pub fn value_type(self) -> ValueType {
        use Scalar::*;
        match self {
            U8(_) => ValueType::U8,
            I8(_) => ValueType::I8,
            U16(_) => ValueType::U16,
            I16(_) => ValueType::I16,
            U32(_) => ValueType::U32,
            I32(_) => ValueType::I32,
            F32(_) => ValueType::F32,
            Bool(_) => ValueType::Bool,
            U64(_) => ValueType::U64,
            I64(_) => ValueType::I64,
            F64(_) => ValueType::F64,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Scalar::*;
        match self {
            U8(v) => write!(f, "{v}"),
            I8(v) => write!(f, "{v}"),
            U16(v) => write!(f, "{v}"),
            I16(v) => write!(f, "{v}"),
            U32(v) => write!(f, "{v}"),
            I32(v) => write!(f, "{v}"),
            F32(v) => write!(f, "{v}"),
            Bool(v) => write!(f, "{v}"),
            U64(v) => write!(f, "{v}"),
            I64(v) => write!(f, "{v}"),
            F64(v) => write!(f, "{v}"),
        }
    }
}

/// A borrowed view of one metadata value.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    Scalar(Scalar),
    /// Raw bytes; GGUF says UTF-8 but tokenizer pieces are not always, so the caller decides.
    String(&'a [u8]),
    Array(ArrayView<'a>),
}

impl Value<'_> {
    pub fn type_name(&self) -> String {
        match self {
            Value::Scalar(s) => s.value_type().name().to_string(),
            Value::String(_) => "string".to_string(),
            Value::Array(a) => format!("array of {} {}", a.len(), a.elem_type().name()),
        }
    }
}

/// An array whose elements were validated at parse time; iterating re-reads them from the file.
#[derive(Clone, Debug)]
pub struct ArrayView<'a> {
    pub(crate) elem: ValueType,
    pub(crate) len: u64,
    pub(crate) bytes: &'a [u8],
}

impl<'a> ArrayView<'a> {
    pub fn elem_type(&self) -> ValueType {
        self.elem
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter { cursor: Cursor::new(self.bytes), elem: self.elem, left: self.len, bytes: self.bytes }
    }
}

pub struct ArrayIter<'a> {
    cursor: Cursor<'a>,
    bytes: &'a [u8],
    elem: ValueType,
    left: u64,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Value<'a>;
    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The span was walked once when the file was opened, so this cannot fail; stopping is
        // the safe answer if it somehow did.
        let stored = read_value(&mut self.cursor, self.elem, "", 1).ok()?;
        Some(view(&stored, self.bytes))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.left).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

/// Spans always come from parsing these same bytes; an empty slice is the non-panicking answer
/// should that ever not hold.
pub(crate) fn view<'a>(stored: &Stored, bytes: &'a [u8]) -> Value<'a> {
    match stored {
        Stored::Scalar(s) => Value::Scalar(*s),
        Stored::String(span) => Value::String(bytes.get(span.clone()).unwrap_or(&[])),
        Stored::Array { elem, len, span } => {
            Value::Array(ArrayView { elem: *elem, len: *len, bytes: bytes.get(span.clone()).unwrap_or(&[]) })
        }
    }
}

/// Arrays of arrays are legal GGUF; nothing real nests deeper than two.
pub(crate) const MAX_NESTING: u32 = 8;

pub(crate) fn read_value(
    c: &mut Cursor<'_>,
    ty: ValueType,
    key: &str,
    depth: u32,
) -> Result<Stored, GgufError> {
    use ValueType as T;
    Ok(match ty {
        T::U8 => Stored::Scalar(Scalar::U8(c.u8()?)),
        T::I8 => Stored::Scalar(Scalar::I8(c.u8()? as i8)),
        T::U16 => Stored::Scalar(Scalar::U16(c.u16()?)),
        T::I16 => Stored::Scalar(Scalar::I16(c.u16()? as i16)),
        T::U32 => Stored::Scalar(Scalar::U32(c.u32()?)),
        T::I32 => Stored::Scalar(Scalar::I32(c.u32()? as i32)),
        T::F32 => Stored::Scalar(Scalar::F32(f32::from_bits(c.u32()?))),
        T::Bool => Stored::Scalar(Scalar::Bool(c.u8()? != 0)),
        T::U64 => Stored::Scalar(Scalar::U64(c.u64()?)),
        T::I64 => Stored::Scalar(Scalar::I64(c.u64()? as i64)),
        T::F64 => Stored::Scalar(Scalar::F64(f64::from_bits(c.u64()?))),
        T::String => Stored::String(c.string_span()?),
        T::Array => {
            if depth >= MAX_NESTING {
                return Err(GgufError::NestingTooDeep {
                    key: key.to_string(),
                    max: MAX_NESTING,
                    offset: c.pos() as u64,
                });
            }
            let type_offset = c.pos() as u64;
            let type_id = c.u32()?;
            let elem = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.to_string(),
                type_id,
                offset: type_offset,
            })?;
            let len = c.u64()?;
            c.check_count("array element", len, elem.min_size())?;
            let start = c.pos();
            match elem {
                // Fixed-size elements: one bounds check covers them all.
                T::String | T::Array => {
                    for _ in 0..len {
                        read_value(c, elem, key, depth + 1)?;
                    }
                }
                _ => {
                    c.take(len * elem.min_size())?;
                }
            }
            Stored::Array { elem, len, span: start..c.pos() }
        }
    })
}
