use wllm_loaders::GgufFile;

#[test]
fn opens_reference_tiny_models() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "gguf") {
            let f = GgufFile::open(&p).unwrap();
            assert!(f.tensors().len() > 10);
            assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
            let toks = f.opt_bytes_array("tokenizer.ggml.tokens").unwrap().unwrap();
            assert_eq!(toks.len(), 512);
            for t in f.tensors() {
                assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes());
            }
            n += 1;
        }
    }
    assert_eq!(n, 9);
}

#[test]
fn resolves_weights_of_every_tiny_model() {
    use wllm_loaders::{ModelConfig, ModelWeights};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/models");
    for name in [
        "tiny-llama-q4_k_m",
        "tiny-qwen2-q4_k_m",
        "tiny-qwen3-q4_k_m",
        "tiny-qwen3moe-q4_k_m",
        "tiny-llama-moe-q4_k_m",
        "tiny-gemma3-q4_k_m",
        "tiny-llama-ropefreqs-q8_0",
        "tiny-gemma3-62l-q8_0",
    ] {
        let f = GgufFile::open(dir.join(format!("{name}.gguf"))).unwrap();
        let cfg = ModelConfig::from_gguf(&f).unwrap();
        let w = ModelWeights::resolve(&cfg, &f).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(w.layers.len(), cfg.n_layer as usize);
        assert_eq!(w.rope_freqs.is_some(), name.contains("ropefreqs"), "{name}");
        if name.contains("62l") {
            // llama.cpp's 27B rule: 1/sqrt(n_embd / n_head), not 1/sqrt(head_dim 32).
            assert_eq!(cfg.attn_scale, 1.0 / 8.0);
            assert_eq!(cfg.final_logit_softcap, Some(10.0));
        } else if name.contains("gemma") {
            assert_eq!(cfg.swa_layers, vec![true, true, true, true, true, false]);
            assert_eq!(cfg.sliding_window, 8);
        }
        if name.contains("moe") {
            assert!(cfg.moe.is_some(), "{name}");
        }
    }
}
