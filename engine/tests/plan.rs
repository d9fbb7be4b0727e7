//! The memory plan: its arithmetic against what loading really allocates, `auto` choosing the
//! most layers under a budget, and refusals (with the plan and advice) before any allocation.

use std::path::PathBuf;
use std::sync::Arc;

use wllm_engine::plan::{GpuFacts, HostFacts, PlanRequest, parse_size, plan};
use wllm_engine::{
    CacheRequest, Context, ContextOptions, DeviceOptions, EngineError, Gpu, GpuLayers, GpuModel, KvType,
    context_bytes,
};
use wllm_loaders::model::{FfnWeights, ModelWeights};
use wllm_loaders::{GgufFile, ModelConfig};

/// A file of tests/data/models, or a path under tests/data.
fn tiny(name: &str) -> PathBuf {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    if name.contains('/') { data.join(name) } else { data.join("models").join(name) }
}

fn facts(budget: Option<u64>, max_binding: u64) -> GpuFacts {
    GpuFacts {
        name: "test".into(),
        kv_f16: true,
        max_binding,
        unified: false,
        budget,
        budget_source: "test".into(),
    }
}

const PLENTY: HostFacts = HostFacts { available: Some(1 << 40) };

fn req(g: GpuLayers, n_ctx: u32) -> PlanRequest {
    PlanRequest {
        gpu_layers: g,
        n_ctx,
        n_batch: 64,
        cpu_batch: 64,
        cpu_moe_below: 0,
        cache: CacheRequest::default(),
        n_seq: 1,
    }
}

#[test]
fn sizes_and_layer_counts_parse() {
    assert_eq!(parse_size("6GiB").unwrap(), 6 << 30);
    assert_eq!(parse_size("512M").unwrap(), 512 << 20);
    assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
    assert_eq!(parse_size("1000").unwrap(), 1000);
    for bad in ["", "GiB", "6 parsecs", "-1G", "1e999G"] {
        assert!(parse_size(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!("auto".parse::<GpuLayers>().unwrap(), GpuLayers::Auto);
    assert_eq!("all".parse::<GpuLayers>().unwrap(), GpuLayers::All);
    assert_eq!("12".parse::<GpuLayers>().unwrap(), GpuLayers::Count(12));
    assert!("some".parse::<GpuLayers>().is_err());
}

#[test]
fn auto_takes_the_most_layers_that_fit_and_explicit_requests_over_budget_are_refused() {
    for name in [
        "tiny-llama-q4_k_m.gguf",
        "tiny-gemma3-q4_k_m.gguf",
        "tiny-qwen3moe-q4_k_m.gguf",
        "tiny-gptoss-mxfp4.gguf",
    ] {
        let f = GgufFile::open(tiny(name)).unwrap();
        let cfg = ModelConfig::from_gguf(&f).unwrap();
        let w = ModelWeights::resolve(&cfg, &f).unwrap();
        let n = cfg.n_layer;
        let unlimited = facts(None, 128 << 20);
        let all = plan(&cfg, &w, &req(GpuLayers::All, 256), Some(&unlimited), &PLENTY).unwrap();
        assert_eq!(all.gpu_layers, n);
        let gpu_total = |g: u32| {
            let p = plan(&cfg, &w, &req(GpuLayers::Count(g), 256), Some(&unlimited), &PLENTY).unwrap();
            p.gpu.map_or(0, |(_, u)| u.total())
        };
        // GPU memory grows with every layer it takes.
        for g in 1..=n {
            assert!(gpu_total(g) > gpu_total(g - 1), "{name}: {g} layers take no more than {}", g - 1);
        }
        // A budget one byte short of k layers gives auto k-1 layers.
        for k in 1..=n {
            let budget = gpu_total(k) - 1;
            let f = facts(Some(budget), 128 << 20);
            let p = plan(&cfg, &w, &req(GpuLayers::Auto, 256), Some(&f), &PLENTY).unwrap();
            assert_eq!(p.gpu_layers, k - 1, "{name}: budget {budget}");
            assert!(p.fits);
            assert_eq!(p.cpu_layers(), n - (k - 1));
            if k == n {
                let e = plan(&cfg, &w, &req(GpuLayers::All, 256), Some(&f), &PLENTY).unwrap_err();
                let EngineError::OverBudget { plan, advice } = &e else { panic!("{name}: {e}") };
                assert!(plan.contains("does NOT fit") && advice.contains("fewer GPU layers"), "{e}");
            }
        }
        // The CPU side holds what the GPU does not: every layer's weights sum to the file's.
        let none = plan(&cfg, &w, &req(GpuLayers::Count(0), 256), Some(&unlimited), &PLENTY).unwrap();
        assert_eq!(none.cpu.weights, w.all().iter().map(|m| m.n_bytes()).sum::<u64>(), "{name}");
        assert!(none.gpu.is_none());
        // No GPU at all: auto and 0 run on the CPU; asking for GPU layers is an error.
        assert_eq!(plan(&cfg, &w, &req(GpuLayers::Auto, 256), None, &PLENTY).unwrap().gpu_layers, 0);
        assert!(plan(&cfg, &w, &req(GpuLayers::All, 256), None, &PLENTY).is_err());
        // A context whose KV cache fits nowhere is refused, with the context in the advice.
        let small_host = HostFacts { available: Some(none.cpu.weights + 1) };
        let e = plan(&cfg, &w, &req(GpuLayers::Count(0), 4096), None, &small_host).unwrap_err();
        assert!(e.to_string().contains("a smaller context"), "{e}");
        // One layer's cache larger than a binding: the GPU cannot take that context.
        let tiny_binding = facts(None, 1 << 10);
        let e = plan(&cfg, &w, &req(GpuLayers::All, 4096), Some(&tiny_binding), &PLENTY).unwrap_err();
        assert!(e.to_string().contains("a smaller context"), "{e}");
    }
}

#[test]
fn the_plan_predicts_what_loading_allocates() {
    let gpu = match Gpu::new(&DeviceOptions::default()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let host = HostFacts::probe();
    let f = GpuFacts::of(&gpu, None, &host);
    for name in [
        "tiny-llama-q4_k_m.gguf",
        "tiny-gemma3-q4_k_m.gguf",
        "tiny-qwen3moe-q4_k_m.gguf",
        "tiny-gptoss-mxfp4.gguf",
        // DeltaNet layers keep states (and a checkpoint of them) instead of K and V; a shared
        // expert beside the routed ones.
        "hybrid/models/tiny-qwen35-q8_0.gguf",
        "hybrid/models/tiny-qwen35moe-q8_0.gguf",
    ] {
        let file = GgufFile::open(tiny(name)).unwrap();
        let cfg = ModelConfig::from_gguf(&file).unwrap();
        let w = ModelWeights::resolve(&cfg, &file).unwrap();
        // The default cache, and a quantized one (on models whose heads are whole blocks).
        let quantized = CacheRequest { k: Some(KvType::Q8_0), v: Some(KvType::Q4_0) };
        let caches = [CacheRequest::default(), quantized]
            .into_iter()
            .filter(|c| c.for_gpu(f.kv_f16).check_dims(cfg.head_dim, cfg.head_dim_v).is_ok());
        // One sequence, and three sharing the context as a server's do (a DeltaNet state each).
        let shapes = [cfg.n_layer, 1, cfg.n_layer / 2].into_iter().flat_map(|g| [(g, 1), (g, 3)]);
        for (cache, (g, n_seq)) in caches.flat_map(|c| shapes.clone().map(move |s| (c, s))) {
            let n_ctx = 200 * n_seq;
            let request = PlanRequest { cache, n_seq, ..req(GpuLayers::Count(g), n_ctx) };
            let p = plan(&cfg, &w, &request, Some(&f), &host).unwrap();
            let (_, predicted) = p.gpu.clone().unwrap();
            let m = Arc::new(
                GpuModel::load_layers(gpu.clone(), cfg.clone(), &file, cfg.n_layer - g, 0, &mut |_, _| {})
                    .unwrap(),
            );
            assert_eq!(predicted.weights, m.device_bytes(), "{name} with {g} GPU layers: weights");
            let ctx =
                Context::new(m.clone(), &ContextOptions { n_ctx: 200, n_batch: 64, n_seq, cache }).unwrap();
            let got = ctx.device_bytes();
            let want = context_bytes(&cfg, g, n_ctx, 64, n_seq, cache.for_gpu(gpu.caps.f16), false);
            assert_eq!(want.kv, got.kv, "{name} with {g} GPU layers, {n_seq} sequences, {cache:?}: KV cache");
            assert_eq!(predicted.kv, got.kv);
            // Scratch is predicted from above, within a few KiB of routing bookkeeping.
            assert!(
                want.scratch >= got.scratch && want.scratch - got.scratch <= 8 << 10,
                "{name}: scratch predicted {} allocated {}",
                want.scratch,
                got.scratch
            );
        }
    }
}

/// DeltaNet layers on the CPU keep a state per sequence and a checkpoint of sequence 0's, so a
/// context shared by three sequences needs two states more per recurrent layer than one holding
/// the same positions for a single sequence (their K and V are the same either way), and RoPE
/// tables for a third of the positions.
#[test]
fn recurrent_states_are_planned_per_sequence() {
    let file = GgufFile::open(tiny("hybrid/models/tiny-qwen35-q8_0.gguf")).unwrap();
    let cfg = ModelConfig::from_gguf(&file).unwrap();
    let w = ModelWeights::resolve(&cfg, &file).unwrap();
    let d = cfg.delta_net.as_ref().expect("a hybrid model");
    let recurrent = (0..cfg.n_layer as usize).filter(|&il| cfg.is_recurrent(il)).count() as u64;
    assert!(recurrent > 0);
    let state = 4 * (d.state_len() + d.conv_state_len()) as u64;
    let cpu_kv = |n_seq| {
        let request = PlanRequest { n_seq, ..req(GpuLayers::Count(0), 600) };
        plan(&cfg, &w, &request, None, &PLENTY).unwrap().cpu.kv
    };
    let rope = |positions: u64| 2 * positions * (cfg.rope_dim as u64 / 2) * 8;
    assert_eq!(cpu_kv(3) + rope(600), cpu_kv(1) + rope(200) + 2 * recurrent * state);
    assert_eq!(cpu_kv(0), cpu_kv(1), "0 sequences count as one");
}

/// A gpt-oss-120b-shaped file (59 GiB of MXFP4 experts and Q8_0 matrices, written sparse, so it
/// takes no disk): the plan counts its weights and its KV cache per device, refuses it on a
/// 24 GiB host with the plan and advice, and fits it on a 128 GiB unified-memory box. Loading
/// its last layer and head on the GPU splits every tensor larger than a binding into parts,
/// experts whole, and allocates what the plan predicted.
#[test]
fn a_gpt_oss_120b_shaped_file_is_planned_and_refused_without_being_read() {
    use wllm_loaders::synthetic::{Fill, SyntheticModel};
    let dir = std::env::temp_dir().join(format!("wllm-plan-120b-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpt-oss-120b-sparse.gguf");
    let model = SyntheticModel::preset("gpt-oss-120b").unwrap();
    model.write(&path, Fill::Zeros).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let cfg = ModelConfig::from_gguf(&file).unwrap();
    let w = ModelWeights::resolve(&cfg, &file).unwrap();
    let file_weights: u64 = w.all().iter().map(|m| m.n_bytes()).sum();
    assert_eq!(file_weights, model.weight_bytes());
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;

    // This machine's size: 24 GiB of RAM, lavapipe-like (unified, 128 MiB bindings).
    let small = HostFacts { available: Some(24 << 30) };
    let lavapipe = GpuFacts { unified: true, ..facts(None, 128 << 20) };
    let err = plan(&cfg, &w, &req(GpuLayers::Auto, 4096), Some(&lavapipe), &small).unwrap_err();
    let EngineError::OverBudget { plan: shown, advice } = &err else { panic!("{err}") };
    assert!(shown.contains("MiB") && advice.contains("weights alone take 59.0 GiB"), "{err}");
    assert!(plan(&cfg, &w, &req(GpuLayers::Count(0), 4096), None, &small).is_err(), "CPU only on 24 GiB");

    // A 128 GiB Strix Halo with 96 GiB for the GPU: everything fits at the full 131072 context.
    let halo = HostFacts { available: Some(120 << 30) };
    let igpu = GpuFacts { unified: true, budget: Some(96 << 30), ..facts(None, (2u64 << 30) - 4) };
    let p = plan(&cfg, &w, &req(GpuLayers::All, 131_072), Some(&igpu), &halo).unwrap();
    let (_, usage) = p.gpu.clone().unwrap();
    assert_eq!(p.gpu_layers, 36);
    // Repacked weights stay within 1% of the file's bytes.
    assert!(usage.weights >= file_weights && gib(usage.weights) < gib(file_weights) * 1.01, "{p}");
    // K and V of 8 heads of 64 in f16, every layer, every position: 72 KiB a token.
    assert_eq!(usage.kv, 36 * 131_072 * 2 * 8 * 64 * 2, "{p}");
    eprintln!("gpt-oss-120b-shaped: file weights {:.2} GiB\n{p}", gib(file_weights));

    // The last layer and the head on a real adapter: parts of at most one binding, experts
    // whole, and the bytes the plan predicted.
    if let Ok(gpu) = Gpu::new(&DeviceOptions::default()) {
        let host = HostFacts { available: Some(1 << 40) };
        let f = GpuFacts::of(&gpu, None, &host);
        let p = plan(&cfg, &w, &req(GpuLayers::Count(1), 256), Some(&f), &host).unwrap();
        let m = GpuModel::load_layers(gpu.clone(), cfg.clone(), &file, 35, 0, &mut |_, _| {}).unwrap();
        assert_eq!(p.gpu.unwrap().1.weights, m.device_bytes(), "plan vs allocation");
        let l = &m.layers[0];
        let mut split = 0;
        for weight in l.matrices().map(|mat| &*mat.weight).chain(m.output.as_ref()) {
            split += usize::from(weight.parts.len() > 1);
            for part in &weight.parts {
                assert!(part.buffer.size() <= gpu.max_binding(), "{}: a part over one binding", weight.name);
            }
        }
        assert!(split >= 4, "the experts and the head span several bindings");
        let FfnWeights::Moe { gate_exps, .. } = &l.ffn else { panic!("not MoE") };
        assert!(gate_exps.weight.parts.iter().all(|p| p.nrows % 2880 == 0), "an expert straddles two parts");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
