//! Quick engine-level speed check (no tokenizer): pp N / tg M on a GGUF file.
use std::sync::Arc;
use std::time::Instant;

use wllm::engine::{Context, ContextOptions, DeviceOptions, Gpu, GpuModel, Logits};
use wllm::loaders::{GgufFile, ModelConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = &args[1];
    let pp: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let tg: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(32);
    let gpu = Gpu::new(&DeviceOptions::default()).unwrap();
    let f = GgufFile::open(path).unwrap();
    let cfg = ModelConfig::from_gguf(&f).unwrap();
    let t = Instant::now();
    let model = Arc::new(GpuModel::load(gpu, cfg, &f, &mut |_, _| {}).unwrap());
    eprintln!("load {:?}", t.elapsed());
    let mut ctx = Context::new(model, &ContextOptions { n_ctx: 1024, n_batch: 256 }).unwrap();
    let prompt: Vec<u32> = (0..pp as u32).map(|i| 100 + i * 7).collect();
    ctx.eval(&prompt[..8], Logits::None, true).unwrap();
    ctx.clear();
    let t = Instant::now();
    let mut tok = ctx.eval(&prompt, Logits::None, true).unwrap().token.unwrap();
    let dt = t.elapsed();
    eprintln!("pp{pp}: {:.2} t/s ({dt:?})", pp as f64 / dt.as_secs_f64());
    let t = Instant::now();
    for _ in 0..tg {
        tok = ctx.eval(&[tok], Logits::None, true).unwrap().token.unwrap();
    }
    let dt = t.elapsed();
    eprintln!("tg{tg}: {:.2} t/s ({:?}/token)", tg as f64 / dt.as_secs_f64(), dt / tg as u32);
}
