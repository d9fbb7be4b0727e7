//! Arbitrary bytes as a safetensors file: parsing must return a typed error or files whose
//! every view lies inside the input with the size its dtype and shape imply. Files that parse
//! are then presented as a model under each committed tiny config, and every GGUF-named tensor
//! is produced (which runs the conversions: widening, norm shifts, expert stacking).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wllm_loaders::{ModelWeights, SafetensorsFiles, SafetensorsModel, TensorSource};

/// Configs of the committed tiny checkpoints: one dense, one with post-norms, one MoE.
const CONFIGS: &[&str] = &[
    include_str!("../../tests/data/safetensors/tiny-llama/config.json"),
    include_str!("../../tests/data/safetensors/tiny-gemma3/config.json"),
    include_str!("../../tests/data/safetensors/tiny-qwen3moe/config.json"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(files) = SafetensorsFiles::from_bytes(data.to_vec()) else { return };
    check_files(&files, data.len());
    for config in CONFIGS {
        let config: Value = serde_json::from_str(config).expect("committed config parses");
        let files = SafetensorsFiles::from_bytes(data.to_vec()).expect("parsed once already");
        if let Ok(model) = SafetensorsModel::new(files, config) {
            check_model(&model);
        }
    }
});

fn check_files(files: &SafetensorsFiles, len: usize) {
    for t in files.tensors() {
        assert!(t.data.start <= t.data.end && t.data.end <= len as u64, "{:?} outside the file", t.name);
        let by_name = files.tensor(&t.name).expect("every listed tensor is found by name");
        assert_eq!(by_name, t);
        let bytes = files.data(t);
        assert_eq!(bytes.len() as u64, t.data.end - t.data.start);
        let bits = t.n_elements().checked_mul(t.dtype.bits()).expect("size was checked at parse time");
        assert_eq!(bits.div_ceil(8), bytes.len() as u64, "{:?}: size disagrees with dtype and shape", t.name);
        let _ = t.dtype.ggml_type();
    }
    for v in files.views() {
        let again = files.view(v.name).expect("view by name");
        assert_eq!(again.bytes.len(), v.bytes.len());
    }
}

fn check_model(model: &SafetensorsModel) {
    let _ = model.unmapped();
    for meta in model.tensor_metas() {
        let produced = model.bytes(&meta.name).expect("listed tensors can be produced");
        assert_eq!(produced.meta, *meta);
        assert_eq!(produced.bytes.len() as u64, meta.n_bytes(), "{:?}: bytes disagree with meta", meta.name);
        assert_eq!(model.meta(&meta.name).as_ref(), Some(meta));
    }
    let _ = ModelWeights::resolve(model.config(), model);
}
