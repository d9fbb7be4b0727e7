//! One safetensors file or the shards of a Hugging Face model directory, memory-mapped, with
//! zero-copy views of the tensors under their Hugging Face names.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::dtype::Dtype;
use super::error::SafetensorsError;
use super::header::parse_header;
use super::index::{INDEX_FILE, MAX_JSON_LEN, parse_index};
use crate::error::{Error, Result};

/// A tensor as stored, under its Hugging Face name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTensor {
    pub name: String,
    pub dtype: Dtype,
    /// Row-major (PyTorch) order: the last dim is contiguous.
    pub shape: Vec<u64>,
    /// Which shard holds it (index into [`SafetensorsFiles::shard_paths`]).
    pub shard: usize,
    /// Absolute byte range inside that shard.
    pub data: Range<u64>,
}

impl RawTensor {
    pub fn n_elements(&self) -> u64 {
        // Checked when the header was parsed.
        self.shape.iter().product()
    }
}

/// A tensor with its bytes.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [u64],
    pub bytes: &'a [u8],
}

enum Bytes {
    Map(crate::mapped::GuardedMap),
    Owned(Vec<u8>),
}

struct Shard {
    path: PathBuf,
    bytes: Bytes,
}

impl Shard {
    fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Map(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Every tensor of a safetensors model, across its shards.
pub struct SafetensorsFiles {
    root: PathBuf,
    shards: Vec<Shard>,
    tensors: Vec<RawTensor>,
    by_name: HashMap<String, usize>,
    stamps: Vec<crate::mapped::FileStamp>,
}

impl std::fmt::Debug for SafetensorsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFiles")
            .field("root", &self.root)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafetensorsFiles {
    /// Opens a `.safetensors` file, or a directory: the shards its
    /// `model.safetensors.index.json` names, else `model.safetensors`, else every
    /// `*.safetensors` file in it.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFiles> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_dir() {
            let mut files = SafetensorsFiles::empty(path);
            let bytes = files.map_file(path)?;
            files.add_shard(path, bytes)?;
            return Ok(files);
        }
        let index = path.join(INDEX_FILE);
        if index.is_file() {
            return SafetensorsFiles::open_indexed(path, &index);
        }
        let single = path.join("model.safetensors");
        let shard_paths = if single.is_file() { vec![single] } else { list_safetensors(path)? };
        if shard_paths.is_empty() {
            return Err(Error::safetensors(path, SafetensorsError::NoSafetensors));
        }
        let mut files = SafetensorsFiles::empty(path);
        for shard in shard_paths {
            let bytes = files.map_file(&shard)?;
            files.add_shard(&shard, bytes)?;
        }
        Ok(files)
    }

    /// Parses one safetensors image held in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> std::result::Result<SafetensorsFiles, SafetensorsError> {
        let mut files = SafetensorsFiles::empty(Path::new("<memory>"));
        files.add_entries(Path::new("<memory>"), Bytes::Owned(bytes))?;
        Ok(files)
    }

    fn open_indexed(dir: &Path, index: &Path) -> Result<SafetensorsFiles> {
        let json = read_json_file(index, "the index", MAX_JSON_LEN)?;
        let weight_map = parse_index(&json).map_err(|e| Error::safetensors(index, e))?;
        let mut files = SafetensorsFiles::empty(dir);
        let mut shard_of: HashMap<&str, usize> = HashMap::new();
        for (tensor, shard) in &weight_map {
            if shard_of.contains_key(shard.as_str()) {
                continue;
            }
            let shard_path = dir.join(shard);
            if !shard_path.is_file() {
                let e = SafetensorsError::MissingShard { shard: shard.clone(), tensor: tensor.clone() };
                return Err(Error::safetensors(index, e));
            }
            shard_of.insert(shard, files.shards.len());
            let bytes = files.map_file(&shard_path)?;
            files.add_shard(&shard_path, bytes)?;
        }
        for (tensor, shard) in &weight_map {
            let holds = files
                .by_name
                .get(tensor)
                .is_some_and(|&i| Some(&files.tensors[i].shard) == shard_of.get(shard.as_str()));
            if !holds {
                let e = SafetensorsError::NotInShard { tensor: tensor.clone(), shard: shard.clone() };
                return Err(Error::safetensors(index, e));
            }
        }
        Ok(files)
    }

    fn empty(root: &Path) -> SafetensorsFiles {
        SafetensorsFiles {
            root: root.to_path_buf(),
            shards: Vec::new(),
            tensors: Vec::new(),
            by_name: HashMap::new(),
            stamps: Vec::new(),
        }
    }

    fn add_shard(&mut self, path: &Path, bytes: Bytes) -> Result<()> {
        self.add_entries(path, bytes).map_err(|e| Error::safetensors(path, e))
    }

    fn add_entries(&mut self, path: &Path, bytes: Bytes) -> std::result::Result<(), SafetensorsError> {
        let shard = Shard { path: path.to_path_buf(), bytes };
        let header = parse_header(shard.bytes())?;
        let index = self.shards.len();
        for e in header.entries {
            if let Some(&prev) = self.by_name.get(&e.name) {
                let first = self.shard_name(self.tensors[prev].shard);
                let error = SafetensorsError::DuplicateAcrossShards {
                    tensor: e.name,
                    first,
                    second: file_name(path),
                };
                return Err(error);
            }
            self.by_name.insert(e.name.clone(), self.tensors.len());
            self.tensors.push(RawTensor {
                name: e.name,
                dtype: e.dtype,
                shape: e.shape,
                shard: index,
                data: header.data_start + e.start..header.data_start + e.end,
            });
        }
        self.shards.push(shard);
        Ok(())
    }

    fn shard_name(&self, shard: usize) -> String {
        self.shards.get(shard).map(|s| file_name(&s.path)).unwrap_or_default()
    }

    /// The file or directory this was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn shard_paths(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }
    /// Every tensor, shard by shard, in header order.
    pub fn tensors(&self) -> &[RawTensor] {
        &self.tensors
    }
    pub fn tensor(&self, name: &str) -> Option<&RawTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
    /// The tensor's bytes inside its shard's map (bounds were checked when it was opened).
    pub fn data(&self, t: &RawTensor) -> &[u8] {
        let Some(shard) = self.shards.get(t.shard) else { return &[] };
        shard.bytes().get(t.data.start as usize..t.data.end as usize).unwrap_or(&[])
    }
    pub fn view(&self, name: &str) -> Option<TensorView<'_>> {
        let t = self.tensor(name)?;
        Some(TensorView { name: &t.name, dtype: t.dtype, shape: &t.shape, bytes: self.data(t) })
    }
    pub fn views(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors.iter().map(|t| TensorView {
            name: &t.name,
            dtype: t.dtype,
            shape: &t.shape,
            bytes: self.data(t),
        })
    }
}

impl SafetensorsFiles {
    /// Size and time of every mapped shard when opened (empty for an image held in memory).
    pub fn stamps(&self) -> &[crate::mapped::FileStamp] {
        &self.stamps
    }

    fn map_file(&mut self, path: &Path) -> Result<Bytes> {
        let file = crate::mapped::open_regular(path)?;
        let mut stamp = crate::mapped::FileStamp::new(path, &file)?;
        let map = crate::mapped::GuardedMap::new(path, &file, &mut stamp)?;
        self.stamps.push(stamp);
        Ok(Bytes::Map(map))
    }
}

fn list_safetensors(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let p = entry.map_err(|e| Error::io(dir, e))?.path();
        if p.extension().is_some_and(|e| e == "safetensors") && p.is_file() {
            out.push(p);
        }
    }
    // Shard names sort in shard order (model-00001-of-00003, ...).
    out.sort();
    Ok(out)
}

/// Reads a small JSON file, refusing one too large to be what it claims to be.
pub(super) fn read_json_file(path: &Path, what: &'static str, max: u64) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        // Reading a FIFO would block until a writer appears.
        return Err(Error::NotAFile { path: path.to_path_buf(), kind: "not a regular file" });
    }
    let len = meta.len();
    if len > max {
        return Err(Error::safetensors(path, SafetensorsError::JsonTooLarge { what, len, max }));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}
