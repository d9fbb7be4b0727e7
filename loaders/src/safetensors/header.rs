//! The safetensors layout: a little-endian u64 header length, that many bytes of JSON (an object
//! mapping tensor names to `dtype`, `shape` and `data_offsets`, plus an optional
//! `__metadata__`), then the data section. Offsets are relative to the data section, and the
//! tensors must tile it exactly: no overlaps, no holes.

use super::error::SafetensorsError;
use super::header_json::{Entry, read_entries};

/// The reference implementation's limit; real headers are a few hundred KB.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// A checked header.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// File offset of the first data byte.
    pub data_start: u64,
    pub entries: Vec<Entry>,
}

pub(super) fn parse_header(bytes: &[u8]) -> Result<Header, SafetensorsError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(SafetensorsError::TooShort { file_len });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge { header_len, max: MAX_HEADER_LEN });
    }
    // Bounded by MAX_HEADER_LEN above, so the sum cannot overflow.
    let data_start = 8 + header_len;
    if data_start > file_len {
        return Err(SafetensorsError::HeaderPastEnd { header_len, file_len });
    }
    let json = &bytes[8..data_start as usize];
    let data_len = file_len - data_start;
    let entries = read_entries(json, data_len)?;
    check_tiling(&entries, data_len)?;
    Ok(Header { data_start, entries })
}

fn check_tiling(entries: &[Entry], data_len: u64) -> Result<(), SafetensorsError> {
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by_key(|e| (e.start, e.end));
    let mut covered = 0u64;
    let mut last: Option<&Entry> = None;
    for e in order {
        if e.start < covered {
            let other = last.map(|l| l.name.clone()).unwrap_or_default();
            return Err(SafetensorsError::Overlap {
                tensor: e.name.clone(),
                other,
                start: e.start,
                end: e.end,
            });
        }
        if e.start > covered {
            return Err(SafetensorsError::Uncovered { start: covered, end: e.start });
        }
        // Zero-sized tensors sit at the boundary without claiming bytes; the last tensor that
        // did is the one a later overlap collides with.
        if e.end > e.start {
            last = Some(e);
        }
        covered = e.end;
    }
    if covered != data_len {
        return Err(SafetensorsError::Uncovered { start: covered, end: data_len });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.resize(out.len() + data_len, 0);
        out
    }

    fn err(header: &str, data_len: usize) -> SafetensorsError {
        parse_header(&file(header, data_len)).unwrap_err()
    }

    #[test]
    fn parses_a_valid_header() {
        let h = parse_header(&file(
            r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F16","shape":[2,3],"data_offsets":[8,20]},
                "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}  "#,
            20,
        ))
        .unwrap();
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.entries[0].name, "b");
        assert_eq!(h.entries[0].shape, vec![2, 3]);
        assert_eq!((h.entries[1].start, h.entries[1].end), (0, 8));
    }

    #[test]
    fn rejects_bad_headers_with_the_reason() {
        let e = |h: &str, n| format!("{:?}", err(h, n));
        assert!(e("[]", 0).starts_with("HeaderNotObject"));
        assert!(e("{\"a\":1}", 0).starts_with("EntryNotObject"));
        assert!(e(r#"{"a":{"shape":[],"data_offsets":[0,4]}}"#, 4).starts_with("MissingField"));
        assert!(e(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, 4).starts_with("BadField"));
        assert!(
            e(r#"{"a":{"dtype":"F32","dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, 4)
                .starts_with("BadField")
        );
        assert!(
            e(r#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}"#, 4)
                .starts_with("TooManyDims")
        );
        assert!(
            e(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, 2).starts_with("NotWholeBytes")
        );
        assert!(
            e(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, 4)
                .starts_with("ShapeOverflow")
        );
        assert!(e(r#"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[],"data_offsets":[2,6]}}"#, 6)
            .starts_with("Overlap"));
        assert!(e(r#"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#, 8).starts_with("Uncovered"));
        assert!(e(r#"{"a":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}"#, 8).starts_with("Uncovered"));
        assert!(format!("{:?}", parse_header(&[1, 0, 0]).unwrap_err()).starts_with("TooShort"));
    }

    #[test]
    fn long_strings_are_cut_in_errors() {
        let h = format!(r#"{{"a":{{"dtype":"{}","shape":[],"data_offsets":[0,4]}}}}"#, "é".repeat(5000));
        match err(&h, 4) {
            SafetensorsError::UnknownDtype { dtype, .. } => assert!(dtype.len() < 80, "{dtype}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_sized_tensors_may_share_a_boundary() {
        let h = r#"{"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},
                   "a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                   "b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        assert_eq!(parse_header(&file(h, 8)).unwrap().entries.len(), 3);
    }
}
