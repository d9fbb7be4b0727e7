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
    assert_eq!(n, 20);
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
        "tiny-gptoss-f32",
        "tiny-gptoss-mxfp4",
        "tiny-llama-iq4_nl",
        "tiny-llama-iq4_xs",
        "tiny-llama-iq3_xxs",
        "tiny-llama-iq3_s",
        "tiny-llama-iq2_xxs",
        "tiny-llama-iq2_xs",
        "tiny-llama-iq2_s",
        "tiny-llama-iq1_s",
        "tiny-llama-iq1_m",
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
        if name.contains("gptoss") {
            gpt_oss_config(&cfg, &w);
        }
    }
}

/// What sets gpt-oss apart, read from the tiny model's metadata and tensors.
fn gpt_oss_config(
    cfg: &wllm_loaders::ModelConfig,
    w: &wllm_loaders::ModelWeights<wllm_loaders::model::TensorMeta>,
) {
    use wllm_loaders::model::{ExpertGating, FfnActivation, FfnWeights, RopeLayout, Yarn};
    // Period 2: even layers windowed.
    assert_eq!(cfg.swa_layers, vec![true, false, true, false]);
    assert_eq!(cfg.sliding_window, 8);
    assert_eq!(cfg.rope_layout, RopeLayout::Neox);
    assert_eq!(cfg.rope_freq_scale, 0.25);
    let yarn = Yarn { orig_ctx: 1024, beta_fast: 32.0, beta_slow: 1.0, attn_factor: 1.0 };
    assert_eq!(cfg.rope_yarn, Some(yarn.clone()));
    // The fixture's numbers: pairs 2..7 ramp, cos/sin scaled by 1 + 0.1 ln 4.
    assert_eq!(yarn.corr_dims(cfg.rope_dim, cfg.rope_base), [2.0, 7.0]);
    assert!((yarn.mscale(cfg.rope_freq_scale) - 1.138_629_4).abs() < 1e-6);
    assert_eq!(cfg.ffn_act, FfnActivation::SwigluOai);
    assert_eq!(cfg.moe.as_ref().unwrap().gating, ExpertGating::SoftmaxTopK { renormalize: true });
    assert_eq!(cfg.attn_scale, 1.0 / (cfg.head_dim as f32).sqrt());
    for (il, l) in w.layers.iter().enumerate() {
        assert_eq!(l.ffn_norm.name, format!("blk.{il}.post_attention_norm.weight"));
        assert_eq!(l.attn_sinks.as_ref().unwrap().dims, [cfg.n_head as u64]);
        assert!(l.attn_output_bias.is_some() && l.attn_q_bias.is_some());
        let FfnWeights::Moe { biases: Some(b), .. } = &l.ffn else { panic!("layer {il}: no expert biases") };
        assert_eq!(b.gate.dims, [cfg.moe.as_ref().unwrap().n_ff_expert as u64, 8]);
    }
}
