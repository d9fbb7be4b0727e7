//! GGUF (versions 2 and 3, little-endian), memory-mapped, with zero-copy tensor views.
//!
//! Layout (ggml `docs/gguf.md`): magic `GGUF`, u32 version, u64 tensor count, u64 metadata
//! count, the metadata key/value pairs, the tensor table (name, dims, type, offset), padding to
//! `general.alignment`, then tensor data. Parsing walks the header once, checking every count
//! against the bytes left before it sizes anything, and never touches tensor data.

mod cursor;
mod error;
mod meta_value;
mod value;
mod writer;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cursor::{Cursor, capacity_for};
pub use error::GgufError;
pub use meta_value::MetaValue;
pub use value::{ArrayIter, ArrayView, Scalar, Value, ValueType};
use value::{Stored, read_value, view};
pub use writer::{GgufWriteError, GgufWriter};

use crate::error::{Error, Result};
use crate::ggml_type::GgmlType;

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
pub const MAX_DIMS: u32 = 4;

/// One entry of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order: `dims[0]` is the contiguous row length (ne0).
    pub dims: Vec<u64>,
    /// Absolute byte range of the data inside the file.
    pub data: Range<u64>,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // The parser rejects dims whose product overflows; saturating keeps a hand-built
        // TensorInfo from panicking.
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
    pub fn n_bytes(&self) -> u64 {
        self.data.end.saturating_sub(self.data.start)
    }
    /// Rows of `dims[0]` elements (all higher dims flattened).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
    pub fn dim(&self, i: usize) -> u64 {
        self.dims.get(i).copied().unwrap_or(1)
    }
}

/// The parsed header: everything but the tensor bytes, as offsets into the file.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub alignment: u64,
    /// Offset of the first tensor byte.
    pub data_offset: u64,
    keys: Vec<(String, Stored)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Parses and validates the header of a whole GGUF file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> std::result::Result<GgufHeader, GgufError> {
        let file_len = bytes.len() as u64;
        let mut c = Cursor::new(bytes);
        let magic: [u8; 4] = {
            let m = c.take(4)?;
            [m[0], m[1], m[2], m[3]]
        };
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = c.u32()?;
        if version != 2 && version != 3 {
            let swapped = version.swap_bytes();
            if swapped == 2 || swapped == 3 {
                return Err(GgufError::BigEndian { version: swapped });
            }
            return Err(GgufError::UnsupportedVersion(version));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;

        c.section = "metadata";
        // key (8-byte length) + value type (4) + smallest value (1)
        c.check_count("metadata key/value", n_kv, 13)?;
        let mut keys = Vec::with_capacity(capacity_for(n_kv));
        let mut key_index = HashMap::with_capacity(capacity_for(n_kv));
        for _ in 0..n_kv {
            let key = c.utf8("metadata key")?.to_string();
            let type_offset = c.pos() as u64;
            let type_id = c.u32()?;
            let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: key.clone(),
                type_id,
                offset: type_offset,
            })?;
            let value = read_value(&mut c, ty, &key, 0)?;
            if key_index.insert(key.clone(), keys.len()).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
            keys.push((key, value));
        }

        let alignment = match key_index.get("general.alignment").map(|&i| &keys[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Stored::Scalar(Scalar::U32(a))) if *a != 0 && a.is_power_of_two() => *a as u64,
            Some(Stored::Scalar(s)) => {
                return Err(GgufError::BadAlignment(format!("{} {s}", s.value_type().name())));
            }
            Some(_) => return Err(GgufError::BadAlignment("a non-scalar value".into())),
        };

        c.section = "tensor table";
        // name length (8) + n_dims (4) + type (4) + offset (8)
        c.check_count("tensor", n_tensors, 24)?;
        let mut raw = Vec::with_capacity(capacity_for(n_tensors));
        for _ in 0..n_tensors {
            let name = c.utf8("tensor name")?.to_string();
            let n_dims = c.u32()?;
            if n_dims > MAX_DIMS {
                return Err(GgufError::TooManyDims { tensor: name, n_dims });
            }
            let mut dims = Vec::with_capacity(MAX_DIMS as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let type_id = c.u32()?;
            let offset = c.u64()?;
            raw.push((name, dims, type_id, offset));
        }

        let data_offset = align_up(c.pos() as u64, alignment);
        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (name, dims, type_id, offset) in raw {
            let ggml_type = GgmlType::from_id(type_id)
                .map_err(|reason| GgufError::UnknownTensorType { tensor: name.clone(), reason })?;
            let Some(n) = element_count(&dims) else {
                return Err(GgufError::DimOverflow { tensor: name, dims });
            };
            let ne0 = dims.first().copied().unwrap_or(1);
            if ne0 % ggml_type.block_size() != 0 {
                return Err(GgufError::NotWholeBlocks {
                    tensor: name,
                    ggml_type,
                    ne0,
                    block_size: ggml_type.block_size(),
                });
            }
            let Some(n_bytes) = ggml_type.bytes_for(n) else {
                return Err(GgufError::DimOverflow { tensor: name, dims });
            };
            if offset % alignment != 0 {
                return Err(GgufError::TensorMisaligned { tensor: name, offset, alignment });
            }
            let start = data_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(n_bytes));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: name,
                    start: offset,
                    end: u64::MAX,
                    file_len,
                });
            };
            if end > file_len {
                return Err(GgufError::TensorOutOfBounds { tensor: name, start, end, file_len });
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::DuplicateTensor(name));
            }
            tensors.push(TensorInfo { name, ggml_type, dims, data: start..end });
        }

        Ok(GgufHeader { version, alignment, data_offset, keys, key_index, tensors, tensor_index })
    }
}

/// The element count of `dims`, or `None` when ggml could not represent it. ggml keeps counts
/// in int64_t. Zero dims are skipped in the overflow check so that no partial product (row
/// counts, strides) can overflow either: `[0, 2^40, 2^40]` holds nothing but would still wrap
/// the moment anyone multiplies its higher dims.
fn element_count(dims: &[u64]) -> Option<u64> {
    let nonzero = dims.iter().filter(|&&d| d != 0).try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
    if nonzero > i64::MAX as u64 {
        return None;
    }
    Some(if dims.contains(&0) { 0 } else { nonzero })
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a).saturating_mul(a)
}

/// The bytes behind a GGUF file: a read-only memory map, or an owned buffer (tests, fuzzing).
#[derive(Clone)]
pub enum Backing {
    Mmap(Arc<crate::mapped::GuardedMap>),
    Owned(Arc<[u8]>),
}

impl Backing {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Owned(b) => b,
        }
    }
}

/// An open GGUF file.
#[derive(Clone)]
pub struct GgufFile {
    path: Option<PathBuf>,
    backing: Backing,
    header: Arc<GgufHeader>,
    stamp: Option<crate::mapped::FileStamp>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = crate::mapped::open_regular(path)?;
        let mut stamp = crate::mapped::FileStamp::new(path, &file)?;
        let map = crate::mapped::GuardedMap::new(path, &file, &mut stamp)?;
        let header = GgufHeader::parse(&map).map_err(|e| Error::gguf(path, e))?;
        Ok(GgufFile {
            path: Some(path.to_path_buf()),
            backing: Backing::Mmap(Arc::new(map)),
            header: Arc::new(header),
            stamp: Some(stamp),
        })
    }

    /// Parses a GGUF image held in memory.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> std::result::Result<GgufFile, GgufError> {
        let bytes: Arc<[u8]> = bytes.into();
        let header = GgufHeader::parse(&bytes)?;
        Ok(GgufFile { path: None, backing: Backing::Owned(bytes), header: Arc::new(header), stamp: None })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    /// The mapped file's size and time when opened (`None` for an image held in memory).
    pub fn stamp(&self) -> Option<&crate::mapped::FileStamp> {
        self.stamp.as_ref()
    }
    pub fn backing(&self) -> &Backing {
        &self.backing
    }
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }
    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }
    pub fn version(&self) -> u32 {
        self.header.version
    }
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    // ---- tensors ----

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor_index.get(name).map(|&i| &self.header.tensors[i])
    }
    /// The tensor's bytes inside the map (bounds were checked when the file was opened; a
    /// `TensorInfo` from elsewhere that does not fit gets an empty slice).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let (Ok(s), Ok(e)) = (usize::try_from(t.data.start), usize::try_from(t.data.end)) else {
            return &[];
        };
        self.bytes().get(s..e).unwrap_or(&[])
    }

    // ---- metadata ----

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.header.keys.iter().map(|(k, _)| k.as_str())
    }
    pub fn n_keys(&self) -> usize {
        self.header.keys.len()
    }
    pub fn value(&self, key: &str) -> Option<Value<'_>> {
        let i = *self.header.key_index.get(key)?;
        Some(view(&self.header.keys[i].1, self.bytes()))
    }
    pub fn contains_key(&self, key: &str) -> bool {
        self.header.key_index.contains_key(key)
    }

    fn scalar(&self, key: &str, expected: &'static str) -> std::result::Result<Option<Scalar>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Scalar(s)) => Ok(Some(s)),
            Some(other) => Err(wrong(key, expected, &other)),
        }
    }

    fn int(&self, key: &str, expected: &'static str) -> std::result::Result<Option<i128>, GgufError> {
        match self.scalar(key, expected)? {
            None => Ok(None),
            Some(s) => s.as_int().map(Some).ok_or_else(|| GgufError::WrongType {
                key: key.into(),
                expected,
                found: s.value_type().name().into(),
            }),
        }
    }

    /// An integer of any GGUF integer type that fits in u32.
    pub fn opt_u32(&self, key: &str) -> std::result::Result<Option<u32>, GgufError> {
        self.int(key, "an unsigned 32-bit integer")?
            .map(|v| {
                u32::try_from(v).map_err(|_| GgufError::WrongType {
                    key: key.into(),
                    expected: "an unsigned 32-bit integer",
                    found: v.to_string(),
                })
            })
            .transpose()
    }
    pub fn get_u32(&self, key: &str) -> std::result::Result<u32, GgufError> {
        self.opt_u32(key)?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }
    pub fn opt_u64(&self, key: &str) -> std::result::Result<Option<u64>, GgufError> {
        self.int(key, "an unsigned integer")?
            .map(|v| {
                u64::try_from(v).map_err(|_| GgufError::WrongType {
                    key: key.into(),
                    expected: "an unsigned integer",
                    found: v.to_string(),
                })
            })
            .transpose()
    }
    pub fn opt_i64(&self, key: &str) -> std::result::Result<Option<i64>, GgufError> {
        self.int(key, "an integer")?
            .map(|v| {
                i64::try_from(v).map_err(|_| GgufError::WrongType {
                    key: key.into(),
                    expected: "an integer",
                    found: v.to_string(),
                })
            })
            .transpose()
    }
    /// A float (f32 or f64; integers are accepted too, as some converters write them).
    pub fn opt_f32(&self, key: &str) -> std::result::Result<Option<f32>, GgufError> {
        match self.scalar(key, "a number")? {
            None => Ok(None),
            Some(s) => s.as_f64().map(|v| Some(v as f32)).ok_or_else(|| GgufError::WrongType {
                key: key.into(),
                expected: "a number",
                found: s.value_type().name().into(),
            }),
        }
    }
    pub fn get_f32(&self, key: &str) -> std::result::Result<f32, GgufError> {
        self.opt_f32(key)?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }
    pub fn opt_bool(&self, key: &str) -> std::result::Result<Option<bool>, GgufError> {
        match self.scalar(key, "a bool")? {
            None => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(b)),
            Some(s) => Err(GgufError::WrongType {
                key: key.into(),
                expected: "a bool",
                found: s.value_type().name().into(),
            }),
        }
    }
    pub fn opt_str(&self, key: &str) -> std::result::Result<Option<&str>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(b)) => std::str::from_utf8(b).map(Some).map_err(|_| GgufError::WrongType {
                key: key.into(),
                expected: "a UTF-8 string",
                found: "a string that is not UTF-8".into(),
            }),
            Some(other) => Err(wrong(key, "a string", &other)),
        }
    }
    pub fn get_str(&self, key: &str) -> std::result::Result<&str, GgufError> {
        self.opt_str(key)?.ok_or_else(|| GgufError::MissingKey(key.into()))
    }
    pub fn opt_array(&self, key: &str) -> std::result::Result<Option<ArrayView<'_>>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(wrong(key, "an array", &other)),
        }
    }

    /// A string array as raw byte slices into the map (tokenizer pieces).
    pub fn opt_bytes_array(&self, key: &str) -> std::result::Result<Option<Vec<&[u8]>>, GgufError> {
        let Some(a) = self.opt_array(key)? else { return Ok(None) };
        if a.elem_type() != ValueType::String {
            return Err(array_wrong(key, "an array of strings", &a));
        }
        Ok(Some(
            a.iter()
                .map(|v| match v {
                    Value::String(b) => b,
                    _ => &[][..],
                })
                .collect(),
        ))
    }

    /// A numeric array converted to f32 (f32, f64 or integer elements).
    pub fn opt_f32_array(&self, key: &str) -> std::result::Result<Option<Vec<f32>>, GgufError> {
        let Some(a) = self.opt_array(key)? else { return Ok(None) };
        let mut out = Vec::with_capacity(capacity_for(a.len()));
        for v in a.iter() {
            match v {
                Value::Scalar(s) => match s.as_f64() {
                    Some(x) => out.push(x as f32),
                    None => return Err(array_wrong(key, "an array of numbers", &a)),
                },
                _ => return Err(array_wrong(key, "an array of numbers", &a)),
            }
        }
        Ok(Some(out))
    }

    /// An integer array converted to i64.
    pub fn opt_i64_array(&self, key: &str) -> std::result::Result<Option<Vec<i64>>, GgufError> {
        let Some(a) = self.opt_array(key)? else { return Ok(None) };
        let mut out = Vec::with_capacity(capacity_for(a.len()));
        for v in a.iter() {
            match v {
                Value::Scalar(s) => match s.as_int().and_then(|i| i64::try_from(i).ok()) {
                    Some(i) => out.push(i),
                    None => return Err(array_wrong(key, "an array of integers", &a)),
                },
                _ => return Err(array_wrong(key, "an array of integers", &a)),
            }
        }
        Ok(Some(out))
    }
}

fn wrong(key: &str, expected: &'static str, found: &Value<'_>) -> GgufError {
    GgufError::WrongType { key: key.into(), expected, found: found.type_name() }
}

fn array_wrong(key: &str, expected: &'static str, a: &ArrayView<'_>) -> GgufError {
    GgufError::WrongType { key: key.into(), expected, found: format!("an array of {}", a.elem_type().name()) }
}
