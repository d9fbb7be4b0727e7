//! Builds the malformed-GGUF regression corpus (`tests/data/malformed/gguf/`): each case is a
//! small file from `GgufWriter`, then byte surgery where the writer (rightly) refuses to produce
//! the fault. Shared by the regression test and the `#[ignore]`d test that rewrites the files.

use wllm_loaders::GgmlType;
use wllm_loaders::gguf::{GgufFile, GgufWriter, MetaValue, ValueType};

pub struct Case {
    pub file: &'static str,
    /// `GgufError::<Variant>` or `ModelError::<Variant>`; `None` for the valid control file.
    pub error: Option<&'static str>,
    /// Text the error message must contain: the offset, key or tensor it points at.
    pub mentions: String,
    pub description: &'static str,
    pub bytes: Vec<u8>,
}

fn case(
    file: &'static str,
    error: &'static str,
    mentions: impl Into<String>,
    description: &'static str,
    bytes: Vec<u8>,
) -> Case {
    Case { file, error: Some(error), mentions: mentions.into(), description, bytes }
}

fn bytes(w: &GgufWriter) -> Vec<u8> {
    w.to_bytes().expect("the corpus writer is given only valid input")
}

/// A small, valid, model-free file: a few keys and two tensors.
fn base() -> GgufWriter<'static> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.name", "malformed-corpus").unwrap();
    w.add_metadata("test.count", 7u32).unwrap();
    w.add_metadata("test.names", vec!["a", "bb"]).unwrap();
    w.add_tensor("first.weight", GgmlType::F32, &[4, 2], vec![0u8; 32]).unwrap();
    w.add_tensor("second.weight", GgmlType::Q8_0, &[32, 2], vec![0u8; 68]).unwrap();
    w
}

// ---- byte surgery ----

/// The position of the only occurrence of `needle`; generators rely on unique markers.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    let mut hits = hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i);
    let first =
        hits.next().unwrap_or_else(|| panic!("marker {:?} not found", String::from_utf8_lossy(needle)));
    assert!(hits.next().is_none(), "marker {:?} is not unique", String::from_utf8_lossy(needle));
    first
}

/// Offset just past a GGUF string (u64 length + bytes) holding `s`: for a key, where its value
/// type id sits; for a tensor name, where its n_dims sits.
fn after_string(b: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    find(b, &needle) + needle.len()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn rename(b: &mut [u8], from: &str, to: &str) {
    assert_eq!(from.len(), to.len(), "renames keep the layout");
    let at = after_string(b, from) - from.len();
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
}

/// Field offsets inside one tensor-table entry.
struct TensorEntry {
    n_dims: usize,
    dims: usize,
    type_id: usize,
    offset: usize,
}

fn tensor_entry(b: &[u8], name: &str) -> TensorEntry {
    let n_dims = after_string(b, name);
    let n = u32::from_le_bytes(b[n_dims..n_dims + 4].try_into().unwrap()) as usize;
    let dims = n_dims + 4;
    let type_id = dims + 8 * n;
    TensorEntry { n_dims, dims, type_id, offset: type_id + 4 }
}

fn parsed(b: &[u8]) -> GgufFile {
    GgufFile::from_bytes(b.to_vec()).expect("surgery starts from a valid file")
}

// ---- the cases ----

pub fn cases() -> Vec<Case> {
    let mut out = header_cases();
    out.extend(metadata_cases());
    out.extend(tensor_cases());
    out.extend(model_cases());
    out
}

fn header_cases() -> Vec<Case> {
    let valid = bytes(&base());
    let mut out = vec![case("empty.gguf", "GgufError::Truncated", "offset 0", "a zero-byte file", vec![])];

    let mut b = valid.clone();
    b[..4].copy_from_slice(b"GGML");
    out.push(case("bad-magic.gguf", "GgufError::BadMagic", "\"GGML\"", "magic is GGML, not GGUF", b));

    let mut b = valid.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    b[8..16].copy_from_slice(&2u64.to_be_bytes());
    b[16..24].copy_from_slice(&3u64.to_be_bytes());
    out.push(case(
        "big-endian.gguf",
        "GgufError::BigEndian",
        "big-endian",
        "version and counts stored big-endian (as gguf-py writes with --bigendian)",
        b,
    ));

    let mut b = valid.clone();
    put_u32(&mut b, 4, 1);
    out.push(case(
        "version-1.gguf",
        "GgufError::UnsupportedVersion",
        "version 1",
        "GGUF v1 (32-bit counts)",
        b,
    ));

    let mut b = valid.clone();
    put_u32(&mut b, 4, 4);
    out.push(case(
        "version-4.gguf",
        "GgufError::UnsupportedVersion",
        "version 4",
        "a version from the future",
        b,
    ));

    out.push(case(
        "truncated-header.gguf",
        "GgufError::Truncated",
        "offset 8",
        "ends inside the tensor count",
        valid[..12].to_vec(),
    ));

    let mut b = valid.clone();
    put_u64(&mut b, 16, 1 << 40);
    out.push(case(
        "kv-count-too-large.gguf",
        "GgufError::CountTooLarge",
        "offset 24",
        "2^40 metadata entries claimed in a 300-byte file",
        b,
    ));

    let mut b = valid;
    put_u64(&mut b, 8, u64::MAX);
    out.push(case(
        "tensor-count-too-large.gguf",
        "GgufError::CountTooLarge",
        "tensor count 18446744073709551615",
        "u64::MAX tensors claimed (count times entry size overflows)",
        b,
    ));
    out
}

fn metadata_cases() -> Vec<Case> {
    let mut out = Vec::new();

    // A string cut short is StringTooLong; a fixed-size value cut short is Truncated.
    let b = bytes(&base());
    let value_at = after_string(&b, "test.count") + 4;
    out.push(case(
        "truncated-metadata.gguf",
        "GgufError::Truncated",
        format!("truncated metadata: need 4 bytes at offset {value_at}"),
        "ends inside a u32 metadata value",
        b[..value_at + 2].to_vec(),
    ));

    let mut b = bytes(&base());
    let at = after_string(&b, "test.count") - "test.count".len() - 8;
    put_u64(&mut b, at, 1 << 50);
    out.push(case(
        "key-length-too-long.gguf",
        "GgufError::StringTooLong",
        format!("offset {at}"),
        "a key whose length field claims 2^50 bytes",
        b,
    ));

    let mut b = bytes(&base());
    let at = after_string(&b, "general.name") + 4;
    put_u64(&mut b, at, 100_000);
    out.push(case(
        "string-value-too-long.gguf",
        "GgufError::StringTooLong",
        "string of 100000 bytes",
        "a string value longer than the rest of the file",
        b,
    ));

    let mut b = bytes(&base());
    let at = after_string(&b, "test.names") + 4 + 4;
    put_u64(&mut b, at, 1 << 60);
    out.push(case(
        "array-count-too-large.gguf",
        "GgufError::CountTooLarge",
        "array element count 1152921504606846976",
        "a string array claiming 2^60 elements",
        b,
    ));

    let mut b = bytes(&base());
    let at = after_string(&b, "test.count");
    put_u32(&mut b, at, 13);
    out.push(case(
        "unknown-value-type.gguf",
        "GgufError::UnknownValueType",
        "\"test.count\"",
        "value type id 13 (ids end at 12, f64)",
        b,
    ));

    let mut b = bytes(&base());
    let at = after_string(&b, "test.names") + 4;
    put_u32(&mut b, at, 99);
    out.push(case(
        "unknown-array-element-type.gguf",
        "GgufError::UnknownValueType",
        "\"test.names\"",
        "an array whose element type id is 99",
        b,
    ));

    // The writer refuses more than 8 levels, so write 8 and splice in a ninth.
    let mut w = base();
    let mut deep = MetaValue::array(ValueType::U8, vec![]);
    for _ in 0..7 {
        deep = MetaValue::array(ValueType::Array, vec![deep]);
    }
    w.add_metadata("test.deep", deep).unwrap();
    let mut b = bytes(&w);
    let at = after_string(&b, "test.deep") + 4;
    let mut level = 9u32.to_le_bytes().to_vec();
    level.extend_from_slice(&1u64.to_le_bytes());
    b.splice(at..at, level);
    out.push(case(
        "nested-array-too-deep.gguf",
        "GgufError::NestingTooDeep",
        "\"test.deep\"",
        "arrays nested nine deep (the limit is eight)",
        b,
    ));

    let mut b = bytes(&base());
    let key_at = after_string(&b, "test.count") - "test.count".len();
    b[key_at + 5] = 0xff;
    out.push(case(
        "invalid-utf8-key.gguf",
        "GgufError::InvalidUtf8",
        format!("metadata key at offset {key_at}"),
        "a key containing the byte 0xff",
        b,
    ));

    let mut w = base();
    w.add_metadata("dup.a", 1u32).unwrap();
    w.add_metadata("dup.b", 2u32).unwrap();
    let mut b = bytes(&w);
    rename(&mut b, "dup.b", "dup.a");
    out.push(case("duplicate-key.gguf", "GgufError::DuplicateKey", "\"dup.a\"", "the key dup.a twice", b));

    for (file, value, description) in [
        ("alignment-zero.gguf", 0, "general.alignment = 0"),
        ("alignment-not-power-of-two.gguf", 48, "general.alignment = 48"),
    ] {
        let mut w = base();
        w.set_alignment(32).unwrap();
        let mut b = bytes(&w);
        let at = after_string(&b, "general.alignment") + 4;
        put_u32(&mut b, at, value);
        out.push(case(file, "GgufError::BadAlignment", "general.alignment", description, b));
    }

    let mut w = base();
    w.add_metadata("general.alignmenX", 32u64).unwrap();
    let mut b = bytes(&w);
    rename(&mut b, "general.alignmenX", "general.alignment");
    out.push(case(
        "alignment-wrong-type.gguf",
        "GgufError::BadAlignment",
        "general.alignment",
        "general.alignment stored as u64 (ggml requires u32)",
        b,
    ));
    out
}

fn tensor_cases() -> Vec<Case> {
    let mut out = Vec::new();
    let valid = bytes(&base());

    // The tensor count check wants 24 bytes per tensor, so cut late enough to pass it and
    // reach the truncated read itself.
    let e = tensor_entry(&valid, "second.weight");
    out.push(case(
        "truncated-tensor-table.gguf",
        "GgufError::Truncated",
        format!("truncated tensor table: need 8 bytes at offset {}", e.dims),
        "ends inside the second tensor's first dim",
        valid[..e.dims + 4].to_vec(),
    ));

    let second = parsed(&valid).tensor("second.weight").unwrap().data.clone();
    out.push(case(
        "truncated-data.gguf",
        "GgufError::TensorOutOfBounds",
        "\"second.weight\"",
        "ends inside the last tensor's data",
        valid[..second.start as usize + 10].to_vec(),
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "first.weight");
    put_u32(&mut b, e.n_dims, 5);
    out.push(case(
        "too-many-dims.gguf",
        "GgufError::TooManyDims",
        "\"first.weight\"",
        "a tensor with 5 dims",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "first.weight");
    put_u64(&mut b, e.dims, 1 << 32);
    put_u64(&mut b, e.dims + 8, 1 << 32);
    out.push(case(
        "dim-overflow.gguf",
        "GgufError::DimOverflow",
        "\"first.weight\"",
        "dims 2^32 x 2^32 exceed i64 elements",
        b,
    ));

    let mut w = base();
    w.add_tensor("zero.weight", GgmlType::F32, &[0, 1, 1], vec![]).unwrap();
    let mut b = bytes(&w);
    let e = tensor_entry(&b, "zero.weight");
    put_u64(&mut b, e.dims + 8, 1 << 40);
    put_u64(&mut b, e.dims + 16, 1 << 40);
    out.push(case(
        "dim-overflow-with-zero.gguf",
        "GgufError::DimOverflow",
        "\"zero.weight\"",
        "dims 0 x 2^40 x 2^40: no elements, but the row count overflows",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "first.weight");
    put_u32(&mut b, e.type_id, 99);
    out.push(case(
        "unknown-tensor-type.gguf",
        "GgufError::UnknownTensorType",
        "\"first.weight\"",
        "ggml type id 99",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "first.weight");
    put_u32(&mut b, e.type_id, 4);
    out.push(case(
        "removed-tensor-type.gguf",
        "GgufError::UnknownTensorType",
        "Q4_2",
        "ggml type id 4 (Q4_2, removed from ggml)",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "second.weight");
    put_u64(&mut b, e.dims, 48);
    out.push(case(
        "not-whole-blocks.gguf",
        "GgufError::NotWholeBlocks",
        "\"second.weight\"",
        "a Q8_0 row of 48 elements (blocks are 32)",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "second.weight");
    put_u64(&mut b, e.offset, 36);
    out.push(case(
        "tensor-misaligned.gguf",
        "GgufError::TensorMisaligned",
        "\"second.weight\"",
        "data offset 36 with alignment 32",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "second.weight");
    put_u64(&mut b, e.offset, 1 << 20);
    out.push(case(
        "tensor-out-of-bounds.gguf",
        "GgufError::TensorOutOfBounds",
        "\"second.weight\"",
        "data offset 1 MiB into a file of a few hundred bytes",
        b,
    ));

    let mut b = valid.clone();
    let e = tensor_entry(&b, "second.weight");
    put_u64(&mut b, e.offset, u64::MAX - 31);
    out.push(case(
        "tensor-offset-overflow.gguf",
        "GgufError::TensorOutOfBounds",
        "\"second.weight\"",
        "data offset near u64::MAX (start + size overflows)",
        b,
    ));

    let mut w = base();
    w.add_tensor("dup.x", GgmlType::F32, &[1], vec![0u8; 4]).unwrap();
    w.add_tensor("dup.y", GgmlType::F32, &[1], vec![0u8; 4]).unwrap();
    let mut b = bytes(&w);
    rename(&mut b, "dup.y", "dup.x");
    out.push(case(
        "duplicate-tensor.gguf",
        "GgufError::DuplicateTensor",
        "\"dup.x\"",
        "two tensors named dup.x",
        b,
    ));

    let mut b = valid;
    let name_at = after_string(&b, "first.weight") - "first.weight".len();
    b[name_at + 9] = 0xc3; // a UTF-8 lead byte followed by ASCII
    out.push(case(
        "invalid-utf8-tensor-name.gguf",
        "GgufError::InvalidUtf8",
        format!("tensor name at offset {name_at}"),
        "a tensor name with a broken UTF-8 sequence",
        b,
    ));
    out
}

// ---- model level: files that parse, but cannot become a model ----

/// llama, 1 layer, n_embd 8, 2 heads of 4, 1 KV head, FFN 16, vocabulary 4.
struct TinyLlama {
    keys: Vec<(&'static str, MetaValue)>,
    tensors: Vec<(String, Vec<u64>)>,
}

impl TinyLlama {
    fn new() -> TinyLlama {
        let keys: Vec<(&'static str, MetaValue)> = vec![
            ("general.architecture", "llama".into()),
            ("llama.block_count", 1u32.into()),
            ("llama.context_length", 64u32.into()),
            ("llama.embedding_length", 8u32.into()),
            ("llama.feed_forward_length", 16u32.into()),
            ("llama.attention.head_count", 2u32.into()),
            ("llama.attention.head_count_kv", 1u32.into()),
            ("llama.attention.layer_norm_rms_epsilon", 1e-5f32.into()),
            ("tokenizer.ggml.model", "llama".into()),
            ("tokenizer.ggml.tokens", vec!["<unk>", "<s>", "</s>", "a"].into()),
        ];
        let mut tensors: Vec<(String, Vec<u64>)> =
            vec![("token_embd.weight".into(), vec![8, 4]), ("output_norm.weight".into(), vec![8])];
        for (name, dims) in [
            ("attn_norm", vec![8]),
            ("attn_q", vec![8, 8]),
            ("attn_k", vec![8, 4]),
            ("attn_v", vec![8, 4]),
            ("attn_output", vec![8, 8]),
            ("ffn_norm", vec![8]),
            ("ffn_gate", vec![8, 16]),
            ("ffn_up", vec![8, 16]),
            ("ffn_down", vec![16, 8]),
        ] {
            tensors.push((format!("blk.0.{name}.weight"), dims));
        }
        TinyLlama { keys, tensors }
    }

    fn set(mut self, key: &'static str, value: impl Into<MetaValue>) -> Self {
        let value = value.into();
        match self.keys.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.keys.push((key, value)),
        }
        self
    }

    fn remove_key(mut self, key: &str) -> Self {
        self.keys.retain(|(k, _)| *k != key);
        self
    }

    fn remove_tensor(mut self, name: &str) -> Self {
        self.tensors.retain(|(n, _)| n != name);
        self
    }

    fn reshape(mut self, name: &str, dims: Vec<u64>) -> Self {
        self.tensors.iter_mut().find(|(n, _)| n == name).expect("known tensor").1 = dims;
        self
    }

    fn bytes(self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (k, v) in self.keys {
            w.add_metadata(k, v).unwrap();
        }
        for (name, dims) in self.tensors {
            let n: u64 = dims.iter().product();
            w.add_tensor(name, GgmlType::F32, &dims, vec![0u8; 4 * n as usize]).unwrap();
        }
        bytes(&w)
    }
}

fn model_cases() -> Vec<Case> {
    vec![
        Case {
            file: "valid-tiny-llama.gguf",
            error: None,
            mentions: String::new(),
            description: "control: the valid model every model-level case is a variation of",
            bytes: TinyLlama::new().bytes(),
        },
        case(
            "model-missing-architecture.gguf",
            "ModelError::MissingArchitecture",
            "general.architecture",
            "no general.architecture key",
            TinyLlama::new().remove_key("general.architecture").bytes(),
        ),
        case(
            "model-unknown-architecture.gguf",
            "ModelError::UnknownArchitecture",
            "\"mamba\"",
            "general.architecture = mamba",
            TinyLlama::new().set("general.architecture", "mamba").bytes(),
        ),
        case(
            "model-architecture-not-a-string.gguf",
            "ModelError::Metadata",
            "general.architecture",
            "general.architecture stored as u32",
            TinyLlama::new().set("general.architecture", 1u32).bytes(),
        ),
        case(
            "model-missing-hyperparameter.gguf",
            "ModelError::Metadata",
            "llama.embedding_length",
            "no llama.embedding_length key",
            TinyLlama::new().remove_key("llama.embedding_length").bytes(),
        ),
        case(
            "model-missing-tensor.gguf",
            "ModelError::MissingTensor",
            "\"blk.0.ffn_down.weight\"",
            "blk.0.ffn_down.weight is absent",
            TinyLlama::new().remove_tensor("blk.0.ffn_down.weight").bytes(),
        ),
        case(
            "model-wrong-shape.gguf",
            "ModelError::ShapeMismatch",
            "\"blk.0.attn_k.weight\"",
            "attn_k is [8, 8], but 1 KV head of 4 calls for [8, 4]",
            TinyLlama::new().reshape("blk.0.attn_k.weight", vec![8, 8]).bytes(),
        ),
        case(
            "model-zero-heads.gguf",
            "ModelError::BadHyperparameter",
            "attention.head_count 0",
            "llama.attention.head_count = 0",
            TinyLlama::new().set("llama.attention.head_count", 0u32).bytes(),
        ),
        case(
            "model-heads-not-multiple-of-kv.gguf",
            "ModelError::BadHyperparameter",
            "head_count_kv 3",
            "4 query heads cannot share 3 KV heads",
            TinyLlama::new()
                .set("llama.attention.head_count", 4u32)
                .set("llama.attention.head_count_kv", 3u32)
                .bytes(),
        ),
        case(
            "model-huge-block-count.gguf",
            "ModelError::BadHyperparameter",
            "block_count 4000000000",
            "4e9 layers: must fail before anything is sized by it",
            TinyLlama::new().set("llama.block_count", 4_000_000_000u32).bytes(),
        ),
    ]
}
