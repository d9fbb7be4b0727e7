//! What `GgufWriter` writes reads back through the parser unchanged, matches what llama.cpp
//! wrote for the reference models, and (when python's `gguf` package is installed) reads the
//! same in gguf-py.

use std::path::Path;

use wllm_loaders::GgmlType;
use wllm_loaders::gguf::{GgufFile, GgufWriteError, GgufWriter, MetaValue, Scalar, ValueType};

fn models_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models")
}

/// Deterministic filler so that misplaced tensor bytes show up as a mismatch.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn every_kind_of_metadata() -> Vec<(&'static str, MetaValue)> {
    vec![
        ("u8", 200u8.into()),
        ("i8", (-100i8).into()),
        ("u16", 60000u16.into()),
        ("i16", (-30000i16).into()),
        ("u32", 4_000_000_000u32.into()),
        ("i32", (-2_000_000_000i32).into()),
        ("f32", 1.5f32.into()),
        ("bool", true.into()),
        ("u64", u64::MAX.into()),
        ("i64", i64::MIN.into()),
        ("f64", (-0.25f64).into()),
        ("string", "héllo".into()),
        ("string.not_utf8", MetaValue::bytes(vec![0xff, 0xfe, b'a'])),
        ("string.empty", "".into()),
        ("array.u8", vec![1u8, 2, 3].into()),
        ("array.i8", vec![-1i8, 0, 1].into()),
        ("array.u16", vec![1u16, 65535].into()),
        ("array.i16", vec![-32768i16].into()),
        ("array.u32", vec![7u32; 5].into()),
        ("array.i32", vec![-7i32, 7].into()),
        ("array.f32", vec![0.5f32, -1e30].into()),
        ("array.bool", vec![true, false, true].into()),
        ("array.u64", vec![u64::MAX, 0].into()),
        ("array.i64", vec![i64::MIN, i64::MAX].into()),
        ("array.f64", vec![1e300f64].into()),
        ("array.string", vec!["a", "", "ccc"].into()),
        ("array.empty", MetaValue::array(ValueType::F32, vec![])),
        (
            "array.nested",
            MetaValue::array(
                ValueType::Array,
                vec![
                    MetaValue::strings(["x", "yy"]),
                    MetaValue::array(ValueType::String, vec![]),
                    MetaValue::strings([&b"\xff"[..]]),
                ],
            ),
        ),
    ]
}

#[test]
fn metadata_of_every_type_round_trips() {
    let mut w = GgufWriter::new();
    for (k, v) in every_kind_of_metadata() {
        w.add_metadata(k, v).unwrap();
    }
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!(f.version(), 3);
    let keys: Vec<&str> = f.keys().collect();
    let expected = every_kind_of_metadata();
    assert_eq!(keys, expected.iter().map(|(k, _)| *k).collect::<Vec<_>>(), "key order");
    for (k, v) in expected {
        assert_eq!(MetaValue::from(f.value(k).unwrap()), v, "{k}");
    }
    assert_eq!(f.get_u32("u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_str("string").unwrap(), "héllo");
    assert_eq!(f.opt_i64_array("array.i64").unwrap().unwrap(), vec![i64::MIN, i64::MAX]);
}

#[test]
fn tensors_of_every_type_round_trip_aligned() {
    for alignment in [1u32, 32, 64, 4096] {
        let mut w = GgufWriter::new();
        w.set_alignment(alignment).unwrap();
        let mut expected = Vec::new();
        for (i, t) in GgmlType::all().enumerate() {
            // 1 to 4 dims, two blocks per row.
            let dims: Vec<u64> = [t.block_size() * 2, 3, 1, 2].into_iter().take(1 + i % 4).collect();
            let n: u64 = dims.iter().product();
            let data = pattern(t.bytes_for(n).unwrap() as usize, i as u8);
            let name = format!("t{i}.{}", t.name());
            w.add_tensor(name.clone(), t, &dims, data.clone()).unwrap();
            expected.push((name, t, dims, data));
        }
        // A zero-element tensor and a scalar (no dims) are legal too.
        w.add_tensor("empty", GgmlType::Q4_K, &[256, 0], vec![]).unwrap();
        w.add_tensor("scalar", GgmlType::F32, &[], 7f32.to_le_bytes().to_vec()).unwrap();
        let bytes = w.to_bytes().unwrap();
        assert_eq!(bytes.len() as u64 % alignment as u64, 0, "file is padded to the alignment");

        let f = GgufFile::from_bytes(bytes).unwrap();
        assert_eq!(f.alignment(), alignment as u64);
        assert_eq!(f.header().data_offset % alignment as u64, 0);
        assert_eq!(f.tensors().len(), expected.len() + 2);
        for (name, t, dims, data) in &expected {
            let info = f.tensor(name).unwrap();
            assert_eq!((info.ggml_type, &info.dims), (*t, dims), "{name}");
            assert_eq!((info.data.start - f.header().data_offset) % alignment as u64, 0, "{name}");
            assert_eq!(f.tensor_data(info), &data[..], "{name}");
        }
        assert_eq!(f.tensor_data(f.tensor("empty").unwrap()), &[] as &[u8]);
        assert_eq!(f.tensor_data(f.tensor("scalar").unwrap()), 7f32.to_le_bytes());
    }
}

/// Rewriting a llama.cpp-written file reproduces it byte for byte: same layout, same padding.
#[test]
fn rewrites_reference_models_byte_for_byte() {
    for name in ["tiny-llama-q4_k_m", "tiny-gemma3-q4_k_m", "tiny-qwen3moe-q4_k_m"] {
        let original = std::fs::read(models_dir().join(format!("{name}.gguf"))).unwrap();
        let f = GgufFile::from_bytes(original.clone()).unwrap();
        let mut w = GgufWriter::new();
        for k in f.keys() {
            w.add_metadata(k, f.value(k).unwrap()).unwrap();
        }
        for t in f.tensors() {
            w.add_tensor(t.name.clone(), t.ggml_type, &t.dims, f.tensor_data(t)).unwrap();
        }
        let rewritten = w.to_bytes().unwrap();
        assert_eq!(rewritten.len(), original.len(), "{name}");
        let first_diff = rewritten.iter().zip(&original).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: first differing byte");
    }
}

#[test]
fn refuses_what_the_reader_would_reject() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", 1u32).unwrap();
    assert!(matches!(w.add_metadata("k", 2u32), Err(GgufWriteError::DuplicateKey(_))));
    let mixed = MetaValue::array(ValueType::U32, vec![1u32.into(), "x".into()]);
    assert!(matches!(w.add_metadata("mixed", mixed), Err(GgufWriteError::ArrayItemType { .. })));
    let mut deep = MetaValue::array(ValueType::U8, vec![]);
    for _ in 0..8 {
        deep = MetaValue::array(ValueType::Array, vec![deep]);
    }
    assert!(matches!(w.add_metadata("deep", deep), Err(GgufWriteError::NestingTooDeep { .. })));
    assert!(matches!(w.set_alignment(48), Err(GgufWriteError::BadAlignment(_))));
    assert!(matches!(w.set_alignment(0), Err(GgufWriteError::BadAlignment(_))));
    assert!(matches!(w.add_metadata("general.alignment", 64u64), Err(GgufWriteError::BadAlignment(_))));

    let f32s = |n: usize| vec![0u8; 4 * n];
    w.add_tensor("a", GgmlType::F32, &[2], f32s(2)).unwrap();
    assert!(matches!(
        w.add_tensor("a", GgmlType::F32, &[2], f32s(2)),
        Err(GgufWriteError::DuplicateTensor(_))
    ));
    assert!(matches!(
        w.add_tensor("b", GgmlType::F32, &[1, 1, 1, 1, 1], f32s(1)),
        Err(GgufWriteError::TooManyDims { .. })
    ));
    assert!(matches!(
        w.add_tensor("b", GgmlType::F32, &[1 << 32, 1 << 32], vec![]),
        Err(GgufWriteError::DimOverflow { .. })
    ));
    assert!(matches!(
        w.add_tensor("b", GgmlType::Q4_0, &[16], vec![0; 9]),
        Err(GgufWriteError::NotWholeBlocks { .. })
    ));
    assert!(matches!(w.add_tensor("b", GgmlType::F32, &[3], f32s(2)), Err(GgufWriteError::DataSize { .. })));
    // Nothing refused above made it into the file.
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    assert_eq!((f.n_keys(), f.tensors().len()), (1, 1));
}

#[test]
fn write_file_reports_the_path() {
    let w = GgufWriter::new();
    let err = w.write_file("/nonexistent-dir/x.gguf").unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/x.gguf"), "{err}");
}

/// gguf-py reads our file the same way. Skips (with a message) when python3 or its `gguf`
/// package is not installed.
#[test]
fn python_gguf_reads_what_we_write() {
    let probe = std::process::Command::new("python3").args(["-c", "import gguf"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipping: python3 with the gguf package is not available");
        return;
    }
    let mut w = GgufWriter::new();
    w.set_alignment(64).unwrap();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_metadata("n", 42u32).unwrap();
    w.add_metadata("f", -2.5f64).unwrap();
    w.add_metadata("toks", vec!["<s>", "hi"]).unwrap();
    w.add_metadata("scores", vec![0.5f32, -1.0]).unwrap();
    w.add_tensor("w", GgmlType::Q8_0, &[32, 2], pattern(68, 1)).unwrap();
    w.add_tensor("b", GgmlType::F16, &[3], pattern(6, 2)).unwrap();
    let dir = std::env::temp_dir().join(format!("wllm-gguf-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("py.gguf");
    w.write_file(&path).unwrap();
    let ours = GgufFile::open(&path).unwrap();
    let start = |name: &str| ours.tensor(name).unwrap().data.start;

    let script = r#"
import sys, json, gguf
r = gguf.GGUFReader(sys.argv[1])
out = {"fields": {}, "tensors": []}
for name, field in r.fields.items():
    if name.startswith("GGUF."):
        continue
    out["fields"][name] = field.contents()
for t in r.tensors:
    out["tensors"].append([t.name, t.tensor_type.name, [int(d) for d in t.shape], int(t.data_offset), bytes(t.data.tobytes()).hex()])
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "gguf-py failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = serde_json::json!({
        "fields": {
            "general.alignment": 64,
            "general.architecture": "llama",
            "n": 42,
            "f": -2.5,
            "toks": ["<s>", "hi"],
            "scores": [0.5, -1.0],
        },
        "tensors": [
            ["w", "Q8_0", [32, 2], start("w"), hex(&pattern(68, 1))],
            ["b", "F16", [3], start("b"), hex(&pattern(6, 2))],
        ],
    });
    assert_eq!(got, expected);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn scalar_conversions_pick_the_gguf_type() {
    assert_eq!(MetaValue::from(1u16), MetaValue::Scalar(Scalar::U16(1)));
    assert_eq!(MetaValue::from(vec![1i64]).value_type(), ValueType::Array);
    assert_eq!(MetaValue::from("s"), MetaValue::String(b"s".to_vec()));
}

/// v2 differs from v3 only in what v3 allowed (big-endian files), so a v2 header over the same
/// bytes reads the same.
#[test]
fn version_2_reads_like_version_3() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    w.add_tensor("t", GgmlType::F16, &[4], pattern(8, 3)).unwrap();
    let mut bytes = w.to_bytes().unwrap();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.version(), 2);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.tensor_data(f.tensor("t").unwrap()), &pattern(8, 3)[..]);
}

/// Generated tensors come out as their fill wrote them; zero tensors read back as zeros and,
/// written to a file, take (almost) no disk: a 64 MiB hole between two small tensors.
#[test]
fn generated_and_zero_tensors_round_trip_and_zeros_stay_holes() {
    let dir = std::env::temp_dir().join(format!("wllm-gguf-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sparse.gguf");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", "llama").unwrap();
    // 3 MiB + 1 block: the fill is called for more than one chunk, with a short last one.
    let gen_elems = (3u64 << 20) / 34 * 32 + 32;
    w.add_tensor_with("gen", GgmlType::Q8_0, &[32, gen_elems / 32], |at, chunk| {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = ((at + i as u64) % 251) as u8;
        }
    })
    .unwrap();
    w.add_tensor_zeros("hole", GgmlType::F32, &[4096, 4096]).unwrap();
    w.add_tensor("tail", GgmlType::F32, &[2], vec![1u8; 8]).unwrap();
    w.add_tensor_zeros("end", GgmlType::F16, &[64, 64]).unwrap();
    let n = w.write_file(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), n);
    let f = GgufFile::open(&path).unwrap();
    let data = |name: &str| f.tensor_data(f.tensor(name).unwrap()).to_vec();
    let generated = data("gen");
    assert_eq!(generated.len() as u64, gen_elems / 32 * 34);
    assert!(generated.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "generated bytes");
    assert!(data("hole").iter().all(|&b| b == 0) && data("end").iter().all(|&b| b == 0));
    assert_eq!(data("tail"), vec![1u8; 8]);
    // The same writer without a file writes every zero.
    assert_eq!(w.to_bytes().unwrap(), std::fs::read(&path).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let on_disk = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(on_disk < 32 << 20, "{on_disk} bytes on disk for a {n}-byte file with a 64 MiB hole");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
