//! A bounds-checked little-endian reader over the file bytes. Every read names the section it
//! belongs to so a truncation error can say where the file ended.

use super::error::GgufError;

/// Most entries a parser pre-allocates for, whatever count the file claims. A checked count can
/// still be a million times larger than the entries' in-memory size warrants (a 13-byte key
/// becomes a ~100-byte map entry), so vectors start small and grow as entries actually parse.
const MAX_PREALLOC: u64 = 1024;

/// A capacity to pre-allocate for `count` entries read from the file.
pub(crate) fn capacity_for(count: u64) -> usize {
    // Fits every usize: MAX_PREALLOC is tiny.
    count.min(MAX_PREALLOC) as usize
}

pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    pub section: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0, section: "header" }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    pub fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                section: self.section,
                offset: self.pos as u64,
                needed: n,
                file_len: self.bytes.len() as u64,
            });
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Checks that `count` items of at least `min_size` bytes each could still fit before any
    /// allocation or loop is sized by `count`.
    pub fn check_count(&self, what: &'static str, count: u64, min_size: u64) -> Result<(), GgufError> {
        let fits = match count.checked_mul(min_size) {
            Some(bytes) => bytes <= self.remaining(),
            None => false,
        };
        if fits {
            Ok(())
        } else {
            Err(GgufError::CountTooLarge {
                what,
                count,
                offset: self.pos as u64,
                remaining: self.remaining(),
            })
        }
    }

    /// A GGUF string (u64 length + bytes), returned as the byte range it occupies.
    pub fn string_span(&mut self) -> Result<std::ops::Range<usize>, GgufError> {
        let len_offset = self.pos as u64;
        let len = self.u64()?;
        if len > self.remaining() {
            return Err(GgufError::StringTooLong { len, offset: len_offset, remaining: self.remaining() });
        }
        let start = self.pos;
        self.take(len)?;
        Ok(start..self.pos)
    }

    /// A GGUF string that must be UTF-8 (keys and tensor names).
    pub fn utf8(&mut self, what: &'static str) -> Result<&'a str, GgufError> {
        let span = self.string_span()?;
        std::str::from_utf8(&self.bytes[span.clone()])
            .map_err(|_| GgufError::InvalidUtf8 { what, offset: span.start as u64 })
    }
}
