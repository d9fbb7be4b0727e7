//! Reads the header JSON in one streaming pass. Each tensor entry is checked as soon as it has
//! been read, so the first problem comes back as a typed error naming the tensor, and memory
//! grows only with entries that passed (a list can never be longer than [`MAX_DIMS`] + 1 when
//! stored, however long it is in the file).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::dtype::Dtype;
use super::error::SafetensorsError;

/// More than any real checkpoint uses (Conv3d weights have 5); ggml itself stops at 4.
pub const MAX_DIMS: usize = 8;

/// One checked header entry; offsets are relative to the start of the data section.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub start: u64,
    pub end: u64,
}

/// Parses the header JSON, checking every entry against a data section of `data_len` bytes.
pub(super) fn read_entries(json: &[u8], data_len: u64) -> Result<Vec<Entry>, SafetensorsError> {
    let mut problem = None;
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = HeaderSeed { data_len, problem: &mut problem }.deserialize(&mut de).and_then(|entries| {
        de.end()?;
        Ok(entries)
    });
    // A recorded problem is the real cause; the serde error it produced only stopped the parse.
    match (problem, result) {
        (Some(p), _) => Err(p),
        (None, Ok(entries)) => Ok(entries),
        (None, Err(e)) => Err(SafetensorsError::HeaderJson(e)),
    }
}

struct HeaderSeed<'p> {
    data_len: u64,
    problem: &'p mut Option<SafetensorsError>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = Vec<Entry>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Entry>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = Vec<Entry>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensors")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Entry>, A::Error> {
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if name == "__metadata__" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let raw = map.next_value::<RawEntry>()?;
            let checked = check_entry(name, raw, self.data_len).and_then(|entry| {
                if seen.insert(entry.name.clone()) {
                    Ok(entry)
                } else {
                    Err(SafetensorsError::DuplicateTensor { tensor: entry.name })
                }
            });
            match checked {
                Ok(entry) => entries.push(entry),
                Err(p) => {
                    *self.problem = Some(p);
                    return Err(de::Error::custom("invalid tensor entry"));
                }
            }
        }
        Ok(entries)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Vec<Entry>, E> {
        self.not_object("a bool")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Vec<Entry>, E> {
        self.not_object("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Vec<Entry>, E> {
        self.not_object("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Vec<Entry>, E> {
        self.not_object("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Vec<Entry>, E> {
        self.not_object("a string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Vec<Entry>, E> {
        self.not_object("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Vec<Entry>, A::Error> {
        self.not_object("an array")
    }
}

impl HeaderSeed<'_> {
    fn not_object<E: de::Error>(self, found: &'static str) -> Result<Vec<Entry>, E> {
        *self.problem = Some(SafetensorsError::HeaderNotObject { found });
        Err(E::custom("header is not an object"))
    }
}

fn check_entry(name: String, raw: RawEntry, data_len: u64) -> Result<Entry, SafetensorsError> {
    let (dtype, shape, offsets) = match raw {
        RawEntry::Other(found) => return Err(SafetensorsError::EntryNotObject { tensor: name, found }),
        RawEntry::Object { twice: Some(field), .. } => {
            return Err(bad(name, field, "a single value", "given twice".into()));
        }
        RawEntry::Object { dtype, shape, offsets, twice: None } => (dtype, shape, offsets),
    };

    let dtype = match dtype {
        None => return Err(SafetensorsError::MissingField { tensor: name, field: "dtype" }),
        Some(Json::Str(s)) => match Dtype::from_name(&s) {
            Some(d) => d,
            None => return Err(SafetensorsError::UnknownDtype { tensor: name, dtype: s }),
        },
        Some(other) => return Err(bad(name, "dtype", "a string", other.describe())),
    };

    let shape = match shape {
        None => return Err(SafetensorsError::MissingField { tensor: name, field: "shape" }),
        Some(Json::Uints { values, len }) if len as usize <= MAX_DIMS => values,
        Some(Json::Uints { len, .. }) => {
            return Err(SafetensorsError::TooManyDims { tensor: name, n_dims: len as usize, max: MAX_DIMS });
        }
        Some(other) => return Err(bad(name, "shape", "an array of non-negative integers", other.describe())),
    };

    let (start, end) = match offsets {
        None => return Err(SafetensorsError::MissingField { tensor: name, field: "data_offsets" }),
        Some(Json::Uints { values, len: 2 }) => (values[0], values[1]),
        Some(other) => {
            return Err(bad(
                name,
                "data_offsets",
                "two non-negative integers [begin, end]",
                other.describe(),
            ));
        }
    };

    let n_elements = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let n_bits = n_elements.and_then(|n| n.checked_mul(dtype.bits()));
    let (Some(n_elements), Some(n_bits)) = (n_elements, n_bits) else {
        return Err(SafetensorsError::ShapeOverflow { tensor: name, shape });
    };
    if n_bits % 8 != 0 {
        return Err(SafetensorsError::NotWholeBytes { tensor: name, dtype: dtype.name(), n_elements });
    }
    if end < start {
        return Err(SafetensorsError::BadOffsets { tensor: name, start, end });
    }
    if end > data_len {
        return Err(SafetensorsError::OutOfBounds { tensor: name, start, end, data_len });
    }
    if end - start != n_bits / 8 {
        return Err(SafetensorsError::SizeMismatch {
            tensor: name,
            dtype: dtype.name(),
            shape,
            expected: n_bits / 8,
            found: end - start,
        });
    }
    Ok(Entry { name, dtype, shape, start, end })
}

fn bad(tensor: String, field: &'static str, expected: &'static str, found: String) -> SafetensorsError {
    SafetensorsError::BadField { tensor, field, expected, found }
}

/// A tensor entry as written, before any check.
enum RawEntry {
    Object { dtype: Option<Json>, shape: Option<Json>, offsets: Option<Json>, twice: Option<&'static str> },
    Other(&'static str),
}

/// A field value, reduced to what the checks need.
enum Json {
    Str(String),
    /// An array whose elements are all non-negative integers; only the first
    /// [`MAX_DIMS`] + 1 are kept, `len` counts them all.
    Uints {
        values: Vec<u64>,
        len: u64,
    },
    Other(&'static str),
}

impl Json {
    fn describe(&self) -> String {
        match self {
            Json::Str(s) => format!("the string {s:?}"),
            Json::Uints { values, len } if *len as usize == values.len() => format!("{values:?}"),
            Json::Uints { len, .. } => format!("an array of {len} integers"),
            Json::Other(kind) => (*kind).into(),
        }
    }
}

impl<'de> de::Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawEntry, D::Error> {
        d.deserialize_any(RawEntryVisitor)
    }
}

struct RawEntryVisitor;

impl<'de> Visitor<'de> for RawEntryVisitor {
    type Value = RawEntry;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntry, A::Error> {
        let (mut dtype, mut shape, mut offsets, mut twice) = (None, None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let (slot, field) = match key.as_str() {
                "dtype" => (&mut dtype, "dtype"),
                "shape" => (&mut shape, "shape"),
                "data_offsets" => (&mut offsets, "data_offsets"),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value::<Json>()?).is_some() {
                twice.get_or_insert(field);
            }
        }
        Ok(RawEntry::Object { dtype, shape, offsets, twice })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawEntry, A::Error> {
        drain_seq(seq)?;
        Ok(RawEntry::Other("an array"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<RawEntry, E> {
        Ok(RawEntry::Other("a bool"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<RawEntry, E> {
        Ok(RawEntry::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<RawEntry, E> {
        Ok(RawEntry::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<RawEntry, E> {
        Ok(RawEntry::Other("a number"))
    }
    fn visit_str<E>(self, _: &str) -> Result<RawEntry, E> {
        Ok(RawEntry::Other("a string"))
    }
    fn visit_unit<E>(self) -> Result<RawEntry, E> {
        Ok(RawEntry::Other("null"))
    }
}

impl<'de> de::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut values = Vec::new();
        let mut len = 0u64;
        let mut all_uints = true;
        while let Some(elem) = seq.next_element::<Elem>()? {
            len += 1;
            match elem {
                Elem::Uint(v) if values.len() <= MAX_DIMS => values.push(v),
                Elem::Uint(_) => {}
                Elem::Other => all_uints = false,
            }
        }
        Ok(if all_uints {
            Json::Uints { values, len }
        } else {
            Json::Other("an array with a non-integer element")
        })
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Json, A::Error> {
        drain_map(map)?;
        Ok(Json::Other("an object"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        // No field value is long; a cut one still fails every check and keeps errors short.
        Ok(Json::Str(if s.len() <= MAX_STR { s.to_string() } else { format!("{}…", cut(s, MAX_STR)) }))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Other("a bool"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Other("a negative number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Other("a number"))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Other("null"))
    }
}

const MAX_STR: usize = 64;

fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An array element: a non-negative integer, or anything else (consumed, not kept).
enum Elem {
    Uint(u64),
    Other,
}

impl<'de> de::Deserialize<'de> for Elem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Elem, D::Error> {
        d.deserialize_any(ElemVisitor)
    }
}

struct ElemVisitor;

impl<'de> Visitor<'de> for ElemVisitor {
    type Value = Elem;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array element")
    }

    fn visit_u64<E>(self, v: u64) -> Result<Elem, E> {
        Ok(Elem::Uint(v))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Elem, E> {
        Ok(Elem::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Elem, E> {
        Ok(Elem::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Elem, E> {
        Ok(Elem::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Elem, E> {
        Ok(Elem::Other)
    }
    fn visit_unit<E>(self) -> Result<Elem, E> {
        Ok(Elem::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Elem, A::Error> {
        drain_seq(seq)?;
        Ok(Elem::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Elem, A::Error> {
        drain_map(map)?;
        Ok(Elem::Other)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}
