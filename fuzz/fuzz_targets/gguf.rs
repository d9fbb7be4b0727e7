//! Arbitrary bytes as a GGUF file: parsing must return a typed error or a file whose every
//! accessor, tensor view and model-building step runs without panicking, and which the writer
//! reproduces (write -> parse -> write gives the same bytes).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wllm_loaders::gguf::{ArrayView, GgufFile, GgufHeader, GgufWriter, MetaValue, Value};
use wllm_loaders::{ModelConfig, ModelWeights, TensorSource};

fuzz_target!(|data: &[u8]| {
    let header = GgufHeader::parse(data);
    let file = GgufFile::from_bytes(data.to_vec());
    match (header, file) {
        (Ok(_), Ok(file)) => {
            metadata(&file);
            tensors(&file);
            model(&file);
            rewrite(&file);
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("GgufHeader::parse and GgufFile::from_bytes disagree"),
    }
});

fn metadata(f: &GgufFile) {
    let keys: Vec<String> = f.keys().map(str::to_string).collect();
    assert_eq!(keys.len(), f.n_keys());
    for key in keys.iter().map(String::as_str).chain(["no.such.key"]) {
        if let Some(v) = f.value(key) {
            assert!(f.contains_key(key));
            let _ = v.type_name();
            walk(&v, 0);
        }
        // Every typed getter on every key: a wrong type is an error, never a panic.
        let _ = f.opt_u32(key);
        let _ = f.get_u32(key);
        let _ = f.opt_u64(key);
        let _ = f.opt_i64(key);
        let _ = f.opt_f32(key);
        let _ = f.get_f32(key);
        let _ = f.opt_bool(key);
        let _ = f.opt_str(key);
        let _ = f.get_str(key);
        let _ = f.opt_array(key);
        let _ = f.opt_bytes_array(key).map(|a| a.map(|v| v.len()));
        let _ = f.opt_f32_array(key);
        let _ = f.opt_i64_array(key);
    }
}

/// Iterates arrays all the way down; each must yield exactly the length it claims.
fn walk(v: &Value<'_>, depth: u32) {
    assert!(depth <= 8, "the parser admitted arrays nested deeper than its limit");
    if let Value::Array(a) = v {
        let n = count(a, depth);
        assert_eq!(n, a.len(), "array yielded {n} of {} elements", a.len());
    }
}

fn count(a: &ArrayView<'_>, depth: u32) -> u64 {
    let mut n = 0;
    for item in a.iter() {
        assert_eq!(value_type(&item), a.elem_type());
        walk(&item, depth + 1);
        n += 1;
    }
    n
}

fn value_type(v: &Value<'_>) -> wllm_loaders::gguf::ValueType {
    match v {
        Value::Scalar(s) => s.value_type(),
        Value::String(_) => wllm_loaders::gguf::ValueType::String,
        Value::Array(_) => wllm_loaders::gguf::ValueType::Array,
    }
}

fn tensors(f: &GgufFile) {
    for t in f.tensors() {
        let by_name = f.tensor(&t.name).expect("every listed tensor is found by name");
        assert_eq!(by_name.data, t.data);
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes());
        assert_eq!(t.ggml_type.bytes_for(t.n_elements()), Some(t.n_bytes()));
        assert!(t.data.end <= f.file_len());
        let _ = (t.n_rows(), t.dim(0), t.dim(3), t.dim(usize::MAX));
        let meta = f.meta(&t.name).expect("TensorSource sees every tensor");
        assert_eq!(meta.n_bytes(), t.n_bytes());
        assert_eq!(TensorSource::bytes(f, &t.name).map(|b| b.bytes.len()), Some(bytes.len()));
    }
    assert!(f.tensor("no.such.tensor").is_none());
}

fn model(f: &GgufFile) {
    let Ok(cfg) = ModelConfig::from_gguf(f) else { return };
    let _ = (cfg.n_embd_q(), cfg.n_embd_k(), cfg.n_embd_v());
    for il in 0..cfg.n_layer as usize + 1 {
        let _ = (cfg.is_swa(il), cfg.rope_base_for(il));
    }
    if let Ok(w) = ModelWeights::resolve(&cfg, f) {
        assert_eq!(w.layers.len(), cfg.n_layer as usize);
        for t in w.all() {
            assert!(f.tensor(&t.name).is_some());
        }
        let _ = w.output_head();
    }
}

/// Everything the parser accepts, the writer can write, and the result reads back the same.
fn rewrite(f: &GgufFile) {
    let once = write(f);
    let reread = GgufFile::from_bytes(once.clone()).expect("the writer's output parses");
    assert_eq!(reread.n_keys(), f.n_keys());
    assert_eq!(reread.tensors().len(), f.tensors().len());
    for (a, b) in f.tensors().iter().zip(reread.tensors()) {
        assert_eq!((&a.name, a.ggml_type, &a.dims), (&b.name, b.ggml_type, &b.dims));
        assert!(f.tensor_data(a) == reread.tensor_data(b), "tensor {:?} changed", a.name);
    }
    assert!(write(&reread) == once, "write -> parse -> write changed the bytes");
}

fn write(f: &GgufFile) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for key in f.keys() {
        let value = MetaValue::from(f.value(key).expect("listed key"));
        w.add_metadata(key, value).expect("the writer takes every value the parser accepts");
    }
    for t in f.tensors() {
        w.add_tensor(t.name.clone(), t.ggml_type, &t.dims, f.tensor_data(t))
            .expect("the writer takes every tensor the parser accepts");
    }
    w.to_bytes().expect("writing to memory")
}
