//! CPU path speed.
//!
//! `cpu_bench model FILE.gguf [-t 2] [-p 128] [-n 64] [-r 5]` measures prompt processing (a
//! batch of `p` random tokens at position 0, logits of the last) and generation (`n` tokens
//! one at a time from an empty cache) the way `llama-bench -p 128 -n 64` does, and prints the
//! median tokens per second of `r` runs after a warm-up. `cpu_bench kernels [-t 2] [--type
//! Q4_1,Q4_K] [--tokens 1,128] [--shape 4096x14336]` times the linear kernels on synthetic
//! weights (one shape of the list with `--shape`). `cpu_bench batch FILE.gguf [-t 2]
//! [--seqs 8] [-d 128] [-c CTX] [-n 32] [-r 3]` times the decode steps of continuous batching:
//! `seqs` sequences, each first filled with `d` tokens, then `n` steps that carry one token of
//! every sequence and return every sequence's logits (what `wllm serve` runs), in an f16 cache
//! of `CTX` positions per sequence (default: just what the run needs; a server's is larger,
//! and the cache's size decides whether it gets huge pages).

use std::sync::Arc;
use std::time::Instant;

use wllm::engine::SeqSpan;
use wllm::engine::cpu::ops::{Activation, glu};
use wllm::engine::cpu::{CpuOptions, CpuPacker, CpuStack, Isa, LogitRows, WeightView, linear, packs};
use wllm::engine::kv_type::{CacheTypes, KvType};
use wllm::loaders::model::{ResidentSource, TensorBytes, TensorMeta, TensorSource};
use wllm::loaders::{GgmlType, GgufFile, ModelConfig};

/// Random blocks with small finite scales.
fn weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let n = ty.bytes_for((rows * cols) as u64).expect("whole blocks") as usize;
    let mut b = vec![0u8; n];
    wllm::loaders::synthetic::random_blocks(ty, 7, 0, &mut b);
    b
}

/// One `ty` matrix named "w", for a [`ResidentSource`] to copy as the loader does.
struct OneTensor(GgmlType, usize, usize, Vec<u8>);

impl TensorSource for OneTensor {
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        (name == "w").then(|| TensorMeta {
            name: name.into(),
            ggml_type: self.0,
            dims: vec![self.2 as u64, self.1 as u64],
        })
    }
    fn bytes(&self, name: &str) -> Option<TensorBytes<'_>> {
        Some(TensorBytes { meta: self.meta(name)?, bytes: std::borrow::Cow::Borrowed(&self.3) })
    }
}

fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn kernels(threads: usize, only: Option<&str>, toks: &[usize], shape: Option<(usize, usize)>) {
    let listed = |ty: GgmlType| only.is_none_or(|o| o.split(',').any(|o| ty.name().eq_ignore_ascii_case(o)));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let isa = Isa::best();
    println!("isa {isa}, {threads} threads");
    for act in [Activation::Silu, Activation::GeluTanh] {
        let n = 1536;
        let mut g: Vec<f32> = (0..n).map(|i| (i as f32 - 700.0) / 100.0).collect();
        let mut u = vec![1f32; n];
        let dt = pool.install(|| time(1000, || glu(isa, act, &mut g, &mut u).unwrap()));
        println!("glu {act:?} {n}: {:.2} us ({:.2} ns/element)", dt * 1e6, dt * 1e9 / n as f64);
    }
    for &(ty, rows, cols) in &[
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q8_0, 49152, 576),
        (GgmlType::Q8_0, 262144, 640),
        (GgmlType::Q5_0, 2048, 640),
        (GgmlType::Q4_K, 640, 1024),
        (GgmlType::Q6_K, 640, 2048),
        // The 4-bit formats on one 4096 x 4096 weight, for GB/s side by side.
        (GgmlType::Q4_K, 4096, 4096),
        // A 7B model's FFN matrix: 33 MB, streamed from memory rather than the last-level cache.
        (GgmlType::Q4_K, 14336, 4096),
        // Its down projection (Q6_K in a Q4_K_M file): rows of 14336, whose activations
        // outgrow the L1 cache.
        (GgmlType::Q4_K, 4096, 14336),
        (GgmlType::Q6_K, 4096, 14336),
        // A quarter of it, which the L3 cache holds: long rows without DRAM's latency.
        (GgmlType::Q4_K, 1024, 14336),
        // Four FFN matrices' worth (151 MB), short and long rows: the stream a decode step
        // reads from DRAM.
        (GgmlType::Q4_K, 65536, 4096),
        (GgmlType::Q4_K, 16384, 14336),
        (GgmlType::MXFP4, 4096, 4096),
        (GgmlType::IQ4_NL, 4096, 4096),
        (GgmlType::IQ4_XS, 4096, 4096),
        // The codebook formats on the same weight.
        (GgmlType::IQ2_XXS, 4096, 4096),
        (GgmlType::IQ2_XS, 4096, 4096),
        (GgmlType::IQ2_S, 4096, 4096),
        (GgmlType::IQ3_XXS, 4096, 4096),
        (GgmlType::IQ3_S, 4096, 4096),
        (GgmlType::IQ1_S, 4096, 4096),
        (GgmlType::IQ1_M, 4096, 4096),
    ] {
        if !listed(ty) || shape.is_some_and(|s| s != (rows, cols)) {
            continue;
        }
        let wb = weights(ty, rows, cols);
        let w = WeightView::new(ty, rows, cols, &wb).unwrap();
        // The floor for a memory-bound kernel: reading the same bytes once.
        let dt_read = time(50, || {
            let s = wb
                .chunks_exact(64)
                .fold(0u64, |a, c| a.wrapping_add(u64::from_le_bytes(c[..8].try_into().unwrap())));
            std::hint::black_box(s);
        });
        // As the loader holds them: copied into huge-page memory, in the file's layout and (where
        // this CPU's kernels want it) packed.
        let copied = |packer: Option<&CpuPacker>| {
            let source = Arc::new(OneTensor(ty, rows, cols, wb.clone()));
            ResidentSource::new(source, &["w".to_string()], packer.map(|p| p as _)).unwrap()
        };
        let huge = copied(None);
        let packer = CpuPacker(isa);
        let huge_packed = packs(isa, ty, rows).then(|| copied(Some(&packer)));
        let bytes = |r: &ResidentSource| match r.bytes("w").unwrap().bytes {
            std::borrow::Cow::Borrowed(b) => b.as_ptr() as usize,
            _ => unreachable!("the copy lends its bytes"),
        };
        let (huge_at, packed_at) = (bytes(&huge), huge_packed.as_ref().map(bytes));
        // SAFETY: the sources live to the end of this iteration and are never written again.
        let view = |at: usize| unsafe { std::slice::from_raw_parts(at as *const u8, wb.len()) };
        let views = [
            Some((w, "")),
            Some((WeightView::new(ty, rows, cols, view(huge_at)).unwrap(), " huge pages")),
            packed_at
                .map(|at| (WeightView::new_packed(ty, rows, cols, view(at)).unwrap(), " huge pages, packed")),
        ];
        for (w, layout) in views.into_iter().flatten() {
            for &n_tok in toks {
                let x: Vec<f32> = (0..n_tok * cols).map(|i| ((i % 97) as f32 - 48.0) / 50.0).collect();
                let mut y = vec![0f32; n_tok * rows];
                let reps = if n_tok == 1 { 200 } else { 10 };
                let dt = pool.install(|| time(reps, || linear(isa, w, &x, n_tok, &mut y).unwrap()));
                let flops = 2.0 * (rows * cols * n_tok) as f64;
                println!(
                    "{ty:>5} {rows:>6}x{cols:<5} T={n_tok:<4} {:>8.3} ms  {:>7.1} GFLOP/s  {:>6.2} GB/s  (1-thread read of the bytes {:.3} ms){layout}",
                    dt * 1e3,
                    flops / dt / 1e9,
                    wb.len() as f64 / dt / 1e9,
                    dt_read * 1e3
                );
            }
        }
    }
}

fn print_profile(what: &str, p: Option<&wllm::engine::cpu::Profile>) {
    if let Some(p) = p {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        println!(
            "{what}: total {:.2} ms = embed {:.2} norms {:.2} qkv {:.2} rope {:.2} attention {:.2} attn_out {:.2} ffn_in {:.2} glu {:.2} ffn_out {:.2} head {:.2}",
            ms(p.total()),
            ms(p.embed),
            ms(p.norms),
            ms(p.qkv),
            ms(p.rope),
            ms(p.attention),
            ms(p.attn_out),
            ms(p.ffn_in),
            ms(p.glu),
            ms(p.ffn_out),
            ms(p.head)
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The model in `path` on the CPU as `wllm` loads it, with a cache of `n_seq` sequences of
/// `n_ctx` positions.
fn load_stack(
    path: &str,
    threads: usize,
    n_ctx: u32,
    n_seq: u32,
    cache: CacheTypes,
) -> (ModelConfig, CpuStack) {
    let f = GgufFile::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cfg = ModelConfig::from_gguf(&f).unwrap();
    let mut src: Arc<dyn TensorSource> = Arc::new(f.clone());
    if std::env::var_os("WLLM_MMAP").is_none() {
        // As `wllm` loads by default: the weights in huge-page memory, the embedding table
        // only where it is the head too (env WLLM_MMAP: read the file map in place).
        let tied = f.tensor("output.weight").is_none();
        let names: Vec<String> = f
            .tensors()
            .iter()
            .filter(|t| tied || t.name != "token_embd.weight")
            .map(|t| t.name.clone())
            .collect();
        // WLLM_UNPACKED: the file's layout on every CPU.
        let packer = std::env::var_os("WLLM_UNPACKED").is_none().then_some(CpuPacker(Isa::best()));
        src = Arc::new(ResidentSource::new(src, &names, packer.as_ref().map(|p| p as _)).unwrap());
    }
    let opts = CpuOptions { threads, cache, n_seq, ..CpuOptions::default() };
    let st = CpuStack::with_options(&cfg, src, cfg.n_layer, true, n_ctx, &opts).unwrap();
    (cfg, st)
}

/// Decode steps of `seqs` sequences at depth `depth`, as the server batches them.
fn batch(path: &str, threads: usize, seqs: usize, (depth, ctx): (usize, usize), n_gen: usize, reps: usize) {
    let f16 = CacheTypes { k: KvType::F16, v: KvType::F16 };
    let (cfg, mut st) = load_stack(path, threads, ctx as u32, seqs as u32, f16);
    let tok = |i: usize| ((i * 7919 + 13) % cfg.n_vocab as usize) as u32;
    let mut steps = Vec::new();
    for rep in 0..=reps {
        st.clear();
        for seq in 0..seqs {
            let prompt: Vec<u32> = (0..depth).map(|i| tok(i + 1000 * seq)).collect();
            let span = [SeqSpan { seq: seq as u32, pos0: 0, len: depth as u32, logits: true }];
            if depth > 0 {
                st.logits_seqs(&prompt, &span).unwrap();
            }
        }
        if rep == reps && std::env::var_os("WLLM_CPU_PROFILE").is_some() {
            st.enable_profile();
        }
        let t = Instant::now();
        for i in 0..n_gen {
            let tokens: Vec<u32> = (0..seqs).map(|seq| tok(i + 77 * seq)).collect();
            let spans: Vec<SeqSpan> = (0..seqs)
                .map(|seq| SeqSpan { seq: seq as u32, pos0: (depth + i) as u32, len: 1, logits: true })
                .collect();
            st.logits_seqs(&tokens, &spans).unwrap();
        }
        // The first run warms caches and the thread pool.
        if rep > 0 {
            steps.push(t.elapsed().as_secs_f64() / n_gen as f64);
        }
    }
    print_profile(&format!("{n_gen} steps"), st.profile());
    let name = std::path::Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path);
    let step = median(steps);
    println!(
        "{name} [{} x{}]  {seqs} sequences at depth {depth}: {:.2} ms per step, {:.1} tokens/s",
        st.isa(),
        st.threads(),
        step * 1e3,
        seqs as f64 / step
    );
}

fn model(path: &str, threads: usize, n_prompt: usize, n_gen: usize, reps: usize) {
    let n_ctx = (n_prompt.max(n_gen) + 16) as u32;
    let (cfg, mut st) = load_stack(path, threads, n_ctx, 1, CacheTypes::F32);
    let mut seed = 12345u64;
    let mut rand_tok = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % cfg.n_vocab as u64) as u32
    };
    let prompt: Vec<u32> = (0..n_prompt).map(|_| rand_tok()).collect();
    let decode: Vec<u32> = (0..n_gen).map(|_| rand_tok()).collect();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    for rep in 0..=reps {
        st.clear();
        let t = Instant::now();
        st.logits(&prompt, 0, LogitRows::Last).unwrap();
        let dt_pp = t.elapsed().as_secs_f64();
        st.clear();
        let t = Instant::now();
        for (i, &tok) in decode.iter().enumerate() {
            st.logits(&[tok], i as u32, LogitRows::Last).unwrap();
        }
        let dt_tg = t.elapsed().as_secs_f64();
        // The first run warms caches and the thread pool, as llama-bench's does.
        if rep > 0 {
            pp.push(n_prompt as f64 / dt_pp);
            tg.push(n_gen as f64 / dt_tg);
        }
    }
    if std::env::var_os("WLLM_CPU_PROFILE").is_some() {
        st.enable_profile();
        st.clear();
        st.logits(&prompt, 0, LogitRows::Last).unwrap();
        print_profile("pp", st.profile());
        st.enable_profile();
        st.clear();
        for (i, &tok) in decode.iter().enumerate() {
            st.logits(&[tok], i as u32, LogitRows::Last).unwrap();
        }
        print_profile("tg", st.profile());
    }
    let name = std::path::Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path);
    println!(
        "{name} [{} x{}]  pp{n_prompt} {:8.2} t/s   tg{n_gen} {:8.2} t/s   (median of {reps}; pp {:?} tg {:?})",
        st.isa(),
        st.threads(),
        median(pp.clone()),
        median(tg.clone()),
        pp.iter().map(|v| v.round() as i64).collect::<Vec<_>>(),
        tg.iter().map(|v| v.round() as i64).collect::<Vec<_>>(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str, default: usize| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)?.parse().ok()).unwrap_or(default)
    };
    let threads = opt("-t", 2);
    match args.get(1).map(String::as_str) {
        Some("kernels") => {
            let only =
                args.iter().position(|a| a == "--type").and_then(|i| args.get(i + 1)).map(String::as_str);
            let toks: Vec<usize> =
                match args.iter().position(|a| a == "--tokens").and_then(|i| args.get(i + 1)) {
                    Some(t) => t.split(',').filter_map(|v| v.parse().ok()).collect(),
                    None => vec![1, 128],
                };
            let shape = args.iter().position(|a| a == "--shape").and_then(|i| {
                let (rows, cols) = args.get(i + 1)?.split_once('x')?;
                Some((rows.parse().ok()?, cols.parse().ok()?))
            });
            kernels(threads, only, &toks, shape)
        }
        Some("model") => match args.get(2) {
            Some(path) => model(path, threads, opt("-p", 128), opt("-n", 64), opt("-r", 5).max(1)),
            None => eprintln!("usage: cpu_bench model FILE.gguf [-t N] [-p N] [-n N] [-r N]"),
        },
        Some("batch") => match args.get(2) {
            Some(path) => {
                let (depth, n_gen) = (opt("-d", 128), opt("-n", 32));
                let ctx = opt("-c", depth + n_gen + 1).max(depth + n_gen + 1);
                batch(path, threads, opt("--seqs", 8), (depth, ctx), n_gen, opt("-r", 3).max(1))
            }
            None => {
                eprintln!("usage: cpu_bench batch FILE.gguf [-t N] [--seqs N] [-d N] [-c N] [-n N] [-r N]")
            }
        },
        _ => eprintln!(
            "usage: cpu_bench model FILE.gguf [-t N] [-p N] [-n N] [-r N] | batch FILE.gguf [--seqs N] [-d N] | kernels [-t N] [--type T,T] [--tokens 1,128] [--shape ROWSxCOLS]"
        ),
    }
}
