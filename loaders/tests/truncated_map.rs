//! A memory-mapped model file truncated while it is in use: reads past the new end must not
//! kill the process (SIGBUS), and the file's stamp must report what happened, naming the file.
#![cfg(target_os = "linux")]

use wllm_loaders::GgufFile;

#[test]
fn a_map_truncated_in_use_reads_zeros_and_reports_it() {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/tiny-llama-q8_0.gguf");
    let dir = std::env::temp_dir().join(format!("wllm-truncated-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shrinking.gguf");
    std::fs::copy(&src, &path).unwrap();

    let f = GgufFile::open(&path).unwrap();
    let last = f.tensors().iter().max_by_key(|t| f.tensor_data(t).as_ptr() as usize).unwrap().clone();
    let data = f.tensor_data(&last);
    let before: u64 = data.iter().map(|&b| b as u64).sum();
    assert!(before > 0, "the last tensor should hold non-zero bytes");
    f.stamp().unwrap().check().unwrap();

    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
    // Every page of the last tensor now lies past the end of the file: without the guard this
    // read ends the process with SIGBUS.
    let after: u64 = std::hint::black_box(data).iter().map(|&b| b as u64).sum();
    assert_eq!(after, 0, "pages past the new end read as zeros");

    let err = f.stamp().unwrap().check().unwrap_err().to_string();
    assert!(err.contains("truncated during a step") && err.contains("shrinking.gguf"), "{err}");
    drop(f);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn faults_outside_any_model_map_are_not_swallowed() {
    // A map the guard does not know: the fault must reach the default action. Run in a child
    // process, which must die of SIGBUS rather than read zeros.
    if std::env::var_os("WLLM_FOREIGN_FAULT_CHILD").is_some() {
        foreign_fault();
        return;
    }
    // Installs the guard in the child too (a model map is open when the foreign fault comes).
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "faults_outside_any_model_map_are_not_swallowed", "--nocapture"])
        .env("WLLM_FOREIGN_FAULT_CHILD", "1")
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(7), "the child should die of SIGBUS (7), got {status:?}");
}

fn foreign_fault() {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models/tiny-llama-q8_0.gguf");
    let _model = GgufFile::open(&src).unwrap();
    let dir = std::env::temp_dir().join(format!("wllm-foreign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("foreign.bin");
    std::fs::write(&path, vec![1u8; 1 << 16]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: a read-only map of a file this test owns; the fault it provokes is the point.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    let sum: u64 = std::hint::black_box(&map[..]).iter().map(|&b| b as u64).sum();
    println!("read {sum} without a fault");
}
