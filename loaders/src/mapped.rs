//! Opening files to memory-map, and noticing when one changes under us.
//!
//! A memory map reads the file as it is on disk at every access: truncating the file makes
//! the next access to a page past the end fault (SIGBUS), and overwriting it in place changes
//! the weights the CPU reads mid-run. Replacing it by a rename is harmless (the map keeps the
//! old inode). [`FileStamp`] remembers the size and modification time of the inode that was
//! mapped, through the open descriptor, so a caller can check it at safe points.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};

mod sigbus;

/// A read-only memory map of a whole file, guarded against the file shrinking under it (see
/// `sigbus`): a read past the new end gives zeros and marks the map, and the file's
/// [`FileStamp`] reports it.
pub struct GuardedMap {
    map: memmap2::Mmap,
    slot: Option<usize>,
}

impl GuardedMap {
    /// Maps `file` and ties the map's fault mark to `stamp`.
    pub fn new(path: &Path, file: &File, stamp: &mut FileStamp) -> Result<GuardedMap> {
        // SAFETY: the map is read-only. Another process writing the file in place changes what
        // we read (the stamp notices at the next check); truncating it makes reads past the
        // new end fault, which the guard turns into zeros and a mark the stamp reports.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))?;
        let slot = sigbus::register(map.as_ptr(), map.len());
        stamp.slot = slot;
        Ok(GuardedMap { map, slot })
    }

    /// Drops the whole pages within bytes `start..end` from this process's page tables: for
    /// a file map that costs nothing but a fault on the next read (the page cache keeps
    /// them), and it stops a copy of those bytes from counting twice in the resident memory.
    /// Pages shared with bytes outside the range are kept.
    pub fn release(&self, start: u64, end: u64) {
        #[cfg(unix)]
        {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
            let first = start.next_multiple_of(page);
            let last = end.min(self.map.len() as u64) / page * page;
            if last > first {
                // SAFETY: the map is a shared, read-only file mapping; MADV_DONTNEED only
                // unmaps its pages, and a later read faults the file's unchanged bytes back
                // in, so no reference into the map sees different data.
                let done = unsafe {
                    self.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first as usize,
                        (last - first) as usize,
                    )
                };
                if let Err(e) = done {
                    log::debug!("could not release mapped pages: {e}");
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (start, end);
    }
}

impl std::ops::Deref for GuardedMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for GuardedMap {
    fn drop(&mut self) {
        // Before the map itself is unmapped (fields drop after this).
        if let Some(slot) = self.slot {
            sigbus::unregister(slot);
        }
    }
}

/// Opens `path` for reading after checking that it is a regular file: opening a FIFO blocks
/// until a writer appears, and devices or sockets are no model.
pub fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    refuse_non_regular(path, &meta)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // The path may have been replaced between the two calls.
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    refuse_non_regular(path, &meta)?;
    Ok(file)
}

fn refuse_non_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let kind = file_kind(meta);
    Err(Error::NotAFile { path: path.to_path_buf(), kind })
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
    }
    if meta.is_dir() { "a directory" } else { "not a regular file" }
}

/// The size and modification time a mapped file had when it was opened.
#[derive(Clone, Debug)]
pub struct FileStamp {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    modified: Option<SystemTime>,
    /// The fault mark of the file's guarded map, once mapped.
    slot: Option<usize>,
}

impl FileStamp {
    /// Records `file` (opened from `path`) as it is now.
    pub fn new(path: &Path, file: &File) -> Result<FileStamp> {
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        let file = file.try_clone().map_err(|e| Error::io(path, e))?;
        Ok(FileStamp {
            path: path.to_path_buf(),
            file: Arc::new(file),
            len: meta.len(),
            modified: meta.modified().ok(),
            slot: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Errors with [`Error::FileChanged`] if the mapped file was truncated, grown or written
    /// since it was opened. One `fstat`: cheap enough for every step.
    pub fn check(&self) -> Result<()> {
        if self.slot.is_some_and(sigbus::faulted) {
            let what = "truncated during a step (reads past its new end gave zeros, and the step's output was discarded)";
            return Err(Error::FileChanged { path: self.path.clone(), what: what.into() });
        }
        let meta = self.file.metadata().map_err(|e| Error::io(&self.path, e))?;
        let what = if meta.len() < self.len {
            format!("truncated from {} to {} bytes", self.len, meta.len())
        } else if meta.len() != self.len {
            format!("resized from {} to {} bytes", self.len, meta.len())
        } else if meta.modified().ok() != self.modified {
            "overwritten in place".to_string()
        } else {
            return Ok(());
        };
        Err(Error::FileChanged { path: self.path.clone(), what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_sees_truncation_and_overwrites() {
        let dir = std::env::temp_dir().join(format!("wllm-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.bin");
        std::fs::write(&p, [1u8; 64]).unwrap();
        let f = open_regular(&p).unwrap();
        let s = FileStamp::new(&p, &f).unwrap();
        s.check().unwrap();
        // A rename over the path leaves the opened inode alone.
        let q = dir.join("n.bin");
        std::fs::write(&q, [2u8; 10]).unwrap();
        std::fs::rename(&q, &p).unwrap();
        s.check().unwrap();
        let f = open_regular(&p).unwrap();
        let s = FileStamp::new(&p, &f).unwrap();
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(4).unwrap();
        let e = s.check().unwrap_err().to_string();
        assert!(e.contains("truncated from 10 to 4 bytes") && e.contains("m.bin"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("wllm-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("model.gguf");
        let ok = std::process::Command::new("mkfifo").arg(&p).status().is_ok_and(|s| s.success());
        if ok {
            let e = open_regular(&p).unwrap_err().to_string();
            assert!(e.contains("FIFO"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
