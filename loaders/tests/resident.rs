//! The CPU's copy of a model's matrices (`ResidentSource`): the copy reads as the file, and
//! the file's pages it copied leave this process's mapping, so resident memory is not
//! doubled, while the map still reads right afterwards.
#![cfg(target_os = "linux")]

use std::borrow::Cow;
use std::sync::Arc;

use wllm_loaders::GgufFile;
use wllm_loaders::model::{ResidentSource, TensorSource};

fn model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/hybrid/models/tiny-qwen35-f32.gguf")
}

/// Resident KiB of the mapping that holds `addr`, from this process's smaps.
fn mapping_rss_kib(addr: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
        if let Some((lo, hi)) = range
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            inside = (lo..hi).contains(&addr);
            continue;
        }
        if inside && let Some(kib) = line.strip_prefix("Rss:") {
            return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping holds {addr:#x}");
}

#[test]
fn the_copy_reads_as_the_file_and_releases_the_mapped_pages() {
    let file = GgufFile::open(model()).unwrap();
    let reference = GgufFile::open(model()).unwrap();
    let base = file.bytes().as_ptr() as usize;
    // Fault the whole map in, as a run reading the weights in place would.
    let sum: u64 = file.bytes().iter().map(|&b| b as u64).sum();
    std::hint::black_box(sum);
    let before = mapping_rss_kib(base);
    assert!(before * 1024 >= file.file_len() * 9 / 10, "the map holds {before} KiB after a full read");

    let names: Vec<String> = file.tensors().iter().map(|t| t.name.clone()).collect();
    let source: Arc<dyn TensorSource> = Arc::new(file.clone());
    let copy = ResidentSource::new(source, &names, None).unwrap();
    let copied: u64 = file.tensors().iter().map(|t| t.data.end - t.data.start).sum();
    assert_eq!(copy.resident_bytes(), copied);

    let after = mapping_rss_kib(base);
    let pages_left = after * 1024;
    // What may stay: the header and each tensor's partial first and last page.
    let page = 4096;
    let allowed = file.tensors()[0].data.start + 2 * page * names.len() as u64;
    assert!(pages_left <= allowed, "the map still holds {after} KiB of {before} (allowed {allowed} bytes)");

    for name in &names {
        let got = copy.bytes(name).unwrap();
        assert!(matches!(got.bytes, Cow::Borrowed(_)), "{name} not served from the copy");
        let want = reference.tensor_data(reference.tensor(name).unwrap());
        assert!(*got.bytes == *want, "{name}: the copy differs from the file");
        // The released map faults the file's bytes back in.
        assert!(
            *file.tensor_data(file.tensor(name).unwrap()) == *want,
            "{name}: the map reads wrong after release"
        );
    }
}
