//! Writes GGUF version 3, little-endian: the layout [`GgufHeader::parse`](super::GgufHeader)
//! reads. Everything is checked as it is added, so a file this writer produces always parses.

use std::borrow::Cow;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::meta_value::MetaValue;
use super::value::{MAX_NESTING, Scalar};
use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_DIMS, align_up, element_count};
use crate::ggml_type::GgmlType;

const VERSION: u32 = 3;
const ALIGNMENT_KEY: &str = "general.alignment";

/// What [`GgufWriter`] refuses, named by key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),

    #[error("metadata key {key:?}: an array of {elem} holds an item of type {found}")]
    ArrayItemType { key: String, elem: &'static str, found: &'static str },

    #[error("metadata key {key:?}: arrays nested deeper than {max} levels")]
    NestingTooDeep { key: String, max: u32 },

    #[error("general.alignment must be a non-zero power of two stored as u32, got {0}")]
    BadAlignment(String),

    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),

    #[error("tensor {tensor:?} has {n_dims} dimensions; at most 4 are allowed")]
    TooManyDims { tensor: String, n_dims: usize },

    #[error("tensor {tensor:?}: dimensions {dims:?} overflow when multiplied")]
    DimOverflow { tensor: String, dims: Vec<u64> },

    #[error(
        "tensor {tensor:?}: row length {ne0} is not a whole number of {ggml_type} blocks ({block_size} elements each)"
    )]
    NotWholeBlocks { tensor: String, ggml_type: GgmlType, ne0: u64, block_size: u64 },

    #[error("tensor {tensor:?}: {ggml_type} data for dims {dims:?} is {expected} bytes, got {found}")]
    DataSize { tensor: String, ggml_type: GgmlType, dims: Vec<u64>, expected: u64, found: u64 },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Write(#[from] std::io::Error),
}

struct PendingTensor<'a> {
    name: String,
    ggml_type: GgmlType,
    dims: Vec<u64>,
    data: Payload<'a>,
}

/// Writes bytes `offset..offset + chunk.len()` of a generated tensor into `chunk`.
type Fill<'a> = Box<dyn Fn(u64, &mut [u8]) + 'a>;

/// A tensor's bytes as the writer holds them until it writes.
enum Payload<'a> {
    Bytes(Cow<'a, [u8]>),
    /// Made a chunk at a time while writing (synthetic weights larger than memory):
    /// `fill(offset, chunk)` writes bytes `offset..offset + chunk.len()`.
    Generated(u64, Fill<'a>),
    /// Zeros: a hole in a file written by [`GgufWriter::write_file`] (a sparse file where the
    /// file system has them), written out elsewhere.
    Zeros(u64),
}

impl Payload<'_> {
    fn len(&self) -> u64 {
        match self {
            Payload::Bytes(b) => b.len() as u64,
            Payload::Generated(n, _) | Payload::Zeros(n) => *n,
        }
    }
}

/// Bytes generated or zeroed at a time.
const CHUNK: usize = 1 << 20;

/// Builds a GGUF file from metadata and tensors. Tensor bytes may be borrowed (from a memory
/// map, say) for `'a`, so saving a model does not copy its weights twice.
///
/// ```
/// use wllm_loaders::GgmlType;
/// use wllm_loaders::gguf::{GgufFile, GgufWriter};
///
/// let mut w = GgufWriter::new();
/// w.add_metadata("general.architecture", "llama")?;
/// w.add_tensor("x", GgmlType::F32, &[2], vec![0u8; 8])?;
/// let file = GgufFile::from_bytes(w.to_bytes()?)?;
/// assert_eq!(file.get_str("general.architecture")?, "llama");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct GgufWriter<'a> {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    pub fn new() -> Self {
        GgufWriter::default()
    }

    /// Adds a key. `general.alignment` sets the data alignment and must be a power-of-two u32.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetaValue>,
    ) -> Result<&mut Self, GgufWriteError> {
        let (key, value) = (key.into(), value.into());
        if self.metadata.iter().any(|(k, _)| *k == key) {
            return Err(GgufWriteError::DuplicateKey(key));
        }
        if key == ALIGNMENT_KEY {
            check_alignment(&value)?;
        }
        check_value(&key, &value, 0)?;
        self.metadata.push((key, value));
        Ok(self)
    }

    /// Sets `general.alignment`, replacing an earlier value.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self, GgufWriteError> {
        let value = MetaValue::from(alignment);
        check_alignment(&value)?;
        self.metadata.retain(|(k, _)| k != ALIGNMENT_KEY);
        self.metadata.push((ALIGNMENT_KEY.to_string(), value));
        Ok(self)
    }

    /// Adds a tensor. `dims` are in ggml order (`dims[0]` is the row length); `data` must be
    /// exactly the bytes `ggml_type` takes for them.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        data: impl Into<Cow<'a, [u8]>>,
    ) -> Result<&mut Self, GgufWriteError> {
        self.push(name.into(), ggml_type, dims, Payload::Bytes(data.into()))
    }

    /// Adds a tensor whose bytes `fill(offset, chunk)` produces while the file is written, a
    /// chunk at a time, so files larger than memory can be made (synthetic weights of a real
    /// model's shapes).
    pub fn add_tensor_with(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
        fill: impl Fn(u64, &mut [u8]) + 'a,
    ) -> Result<&mut Self, GgufWriteError> {
        let len = element_count(dims).and_then(|n| ggml_type.bytes_for(n)).unwrap_or(0);
        self.push(name.into(), ggml_type, dims, Payload::Generated(len, Box::new(fill)))
    }

    /// Adds an all-zero tensor, left as a hole by [`write_file`](Self::write_file): a file of
    /// a big model's shapes that takes no disk (for memory plans and load-path checks).
    pub fn add_tensor_zeros(
        &mut self,
        name: impl Into<String>,
        ggml_type: GgmlType,
        dims: &[u64],
    ) -> Result<&mut Self, GgufWriteError> {
        let len = element_count(dims).and_then(|n| ggml_type.bytes_for(n)).unwrap_or(0);
        self.push(name.into(), ggml_type, dims, Payload::Zeros(len))
    }

    fn push(
        &mut self,
        name: String,
        ggml_type: GgmlType,
        dims: &[u64],
        data: Payload<'a>,
    ) -> Result<&mut Self, GgufWriteError> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(GgufWriteError::DuplicateTensor(name));
        }
        if dims.len() > MAX_DIMS as usize {
            return Err(GgufWriteError::TooManyDims { tensor: name, n_dims: dims.len() });
        }
        let Some(n) = element_count(dims) else {
            return Err(GgufWriteError::DimOverflow { tensor: name, dims: dims.to_vec() });
        };
        let ne0 = dims.first().copied().unwrap_or(1);
        let block_size = ggml_type.block_size();
        if ne0 % block_size != 0 {
            return Err(GgufWriteError::NotWholeBlocks { tensor: name, ggml_type, ne0, block_size });
        }
        let Some(expected) = ggml_type.bytes_for(n) else {
            return Err(GgufWriteError::DimOverflow { tensor: name, dims: dims.to_vec() });
        };
        if expected != data.len() {
            return Err(GgufWriteError::DataSize {
                tensor: name,
                ggml_type,
                dims: dims.to_vec(),
                expected,
                found: data.len(),
            });
        }
        self.tensors.push(PendingTensor { name, ggml_type, dims: dims.to_vec(), data });
        Ok(self)
    }

    pub fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, MetaValue::Scalar(Scalar::U32(a)))) => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        }
    }

    /// Writes the whole file; returns the number of bytes written.
    pub fn write_to(&self, out: &mut impl Write) -> Result<u64, GgufWriteError> {
        self.write_with(out, &mut |out, n| write_zeros(out, n))
    }

    /// Writes everything, `zeros(out, n)` standing for each run of `n` zero bytes.
    fn write_with<W: Write>(
        &self,
        out: &mut W,
        zeros: &mut dyn FnMut(&mut W, u64) -> std::io::Result<()>,
    ) -> Result<u64, GgufWriteError> {
        let alignment = self.alignment();
        let mut out = Counting { inner: out, written: 0 };
        out.write_all(&GGUF_MAGIC)?;
        out.write_all(&VERSION.to_le_bytes())?;
        out.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        out.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_str(&mut out, key.as_bytes())?;
            out.write_all(&value.value_type().id().to_le_bytes())?;
            write_value(&mut out, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_str(&mut out, t.name.as_bytes())?;
            out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                out.write_all(&d.to_le_bytes())?;
            }
            out.write_all(&t.ggml_type.id().to_le_bytes())?;
            out.write_all(&offset.to_le_bytes())?;
            offset = align_up(offset + t.data.len(), alignment);
        }
        pad_to(&mut out, alignment)?;
        for t in &self.tensors {
            match &t.data {
                Payload::Bytes(b) => out.write_all(b)?,
                Payload::Zeros(n) => {
                    zeros(out.inner, *n)?;
                    out.written += n;
                }
                Payload::Generated(n, fill) => {
                    let mut chunk = vec![0u8; CHUNK];
                    let mut at = 0;
                    while at < *n {
                        let len = (*n - at).min(CHUNK as u64) as usize;
                        fill(at, &mut chunk[..len]);
                        out.write_all(&chunk[..len])?;
                        at += len as u64;
                    }
                }
            }
            pad_to(&mut out, alignment)?;
        }
        Ok(out.written)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, GgufWriteError> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<u64, GgufWriteError> {
        let path = path.as_ref();
        let io = |source| GgufWriteError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut buf = std::io::BufWriter::new(file);
        // Zero runs become holes: seek past them (the buffer is flushed first).
        let mut hole = |out: &mut std::io::BufWriter<std::fs::File>, n: u64| -> std::io::Result<()> {
            out.seek(SeekFrom::Current(i64::try_from(n).map_err(std::io::Error::other)?))?;
            Ok(())
        };
        let n = self.write_with(&mut buf, &mut hole).map_err(|e| match e {
            GgufWriteError::Write(source) => io(source),
            other => other,
        })?;
        buf.flush().map_err(io)?;
        // A hole at the very end is not in the file until its length says so.
        buf.get_ref().set_len(n).map_err(io)?;
        Ok(n)
    }
}

fn check_alignment(value: &MetaValue) -> Result<(), GgufWriteError> {
    match value {
        MetaValue::Scalar(Scalar::U32(a)) if a.is_power_of_two() => Ok(()),
        MetaValue::Scalar(s) => Err(GgufWriteError::BadAlignment(format!("{} {s}", s.value_type().name()))),
        other => Err(GgufWriteError::BadAlignment(format!("a {}", other.value_type().name()))),
    }
}

/// Mirrors what the reader accepts, so nothing written can fail to read back.
fn check_value(key: &str, value: &MetaValue, depth: u32) -> Result<(), GgufWriteError> {
    let MetaValue::Array { elem, items } = value else { return Ok(()) };
    if depth >= MAX_NESTING {
        return Err(GgufWriteError::NestingTooDeep { key: key.to_string(), max: MAX_NESTING });
    }
    for item in items {
        if item.value_type() != *elem {
            return Err(GgufWriteError::ArrayItemType {
                key: key.to_string(),
                elem: elem.name(),
                found: item.value_type().name(),
            });
        }
        check_value(key, item, depth + 1)?;
    }
    Ok(())
}

fn write_zeros(out: &mut impl Write, n: u64) -> std::io::Result<()> {
    let zeros = [0u8; 4096];
    let mut left = n;
    while left > 0 {
        let k = left.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn write_str(out: &mut impl Write, s: &[u8]) -> std::io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s)
}

/// The value's payload, without its type id (arrays carry their element type inside).
fn write_value(out: &mut impl Write, value: &MetaValue) -> std::io::Result<()> {
    match value {
        MetaValue::Scalar(s) => write_scalar(out, *s),
        MetaValue::String(b) => write_str(out, b),
        MetaValue::Array { elem, items } => {
            out.write_all(&elem.id().to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(out, item))
        }
    }
}

fn write_scalar(out: &mut impl Write, s: Scalar) -> std::io::Result<()> {
    use Scalar::*;
    match s {
        U8(v) => out.write_all(&[v]),
        I8(v) => out.write_all(&v.to_le_bytes()),
        U16(v) => out.write_all(&v.to_le_bytes()),
        I16(v) => out.write_all(&v.to_le_bytes()),
        U32(v) => out.write_all(&v.to_le_bytes()),
        I32(v) => out.write_all(&v.to_le_bytes()),
        F32(v) => out.write_all(&v.to_le_bytes()),
        Bool(v) => out.write_all(&[v as u8]),
        U64(v) => out.write_all(&v.to_le_bytes()),
        I64(v) => out.write_all(&v.to_le_bytes()),
        F64(v) => out.write_all(&v.to_le_bytes()),
    }
}

/// Tracks the file position so padding can be computed without `Seek`.
struct Counting<'w, W: Write> {
    inner: &'w mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn pad_to<W: Write>(out: &mut Counting<'_, W>, alignment: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 256] = [0; 256];
    let mut pad = align_up(out.written, alignment) - out.written;
    while pad > 0 {
        let n = pad.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..n])?;
        pad -= n as u64;
    }
    Ok(())
}
