//! Continuous batching: requests that share steps get the tokens they get alone, on the GPU, on
//! the CPU and split between them; prompts are chunked and mixed with decode tokens; sequences
//! reuse cached prefixes; a request whose client goes away frees its sequence.

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use wllm::batch::{BatchRequest, Batcher, BatcherOptions, Event, Usage};
use wllm::engine::GpuLayers;
use wllm::{GenerateOptions, LoadOptions, Model, SamplerConfig, SessionOptions, StopReason};

const N_CTX: u32 = 96;

/// How far a log-probability may move with what shares its steps. Different step sizes take
/// different kernels: on the CPU, up to eight tokens run as integer matvec passes (activations
/// rounded to i16 with a scale per 256 values) and more as an integer GEMM (a scale per 32
/// values, on AVX-512 VNNI) or the f32 tiled kernel; on the GPU, one token takes the matvec
/// kernel and more the matmul. Measured: up to 4.2e-3 (tiny qwen2 on the CPU), 5.4e-3 once the
/// CPU attention summed a KV group's heads in another order; a sequence reading another's
/// cache moves them by whole units (and its tokens).
const LOGPROB_BUDGET: f32 = 1e-2;

/// `name`: a file of tests/data/models, or a path under tests/data.
fn load(name: &str, gpu_layers: GpuLayers) -> Model {
    let data = support::data_dir();
    let path = if name.contains('/') { data.join(name) } else { data.join("models").join(name) };
    let opts = LoadOptions { gpu_layers, n_ctx: Some(4 * N_CTX), ..LoadOptions::default() };
    Model::load_with(&path, &opts, &mut |_, _| {}).unwrap()
}

/// The placements a model runs in: every layer on the GPU, none, and half.
fn placements(n_layer: u32) -> [(&'static str, GpuLayers); 3] {
    [("gpu", GpuLayers::All), ("cpu", GpuLayers::Count(0)), ("split", GpuLayers::Count(n_layer / 2))]
}

fn greedy(prompt: Vec<u32>, max_tokens: usize) -> BatchRequest {
    BatchRequest {
        prompt,
        max_tokens: Some(max_tokens),
        sampling: SamplerConfig::greedy(),
        stop_at_eog: false,
        logprobs: Some(3),
        ..BatchRequest::default()
    }
}

/// What one request produced.
#[derive(Debug, Default)]
struct Outcome {
    tokens: Vec<u32>,
    /// The chosen token's log-probability, then its top 3, per token.
    logprobs: Vec<Vec<f32>>,
    reason: Option<StopReason>,
    usage: Usage,
    started_cached: Option<usize>,
}

/// Submits every request at once and waits for all of them.
fn run_all(batcher: &Batcher, requests: &[BatchRequest]) -> Vec<Outcome> {
    let receivers: Vec<_> = requests
        .iter()
        .map(|r| {
            let (tx, rx) = mpsc::channel();
            batcher.submit(r.clone(), move |e| tx.send(e).is_ok()).unwrap();
            rx
        })
        .collect();
    receivers.into_iter().map(collect).collect()
}

fn collect(rx: mpsc::Receiver<Event>) -> Outcome {
    let mut out = Outcome::default();
    for event in rx.iter() {
        match event {
            Event::Started { cached_tokens } => out.started_cached = Some(cached_tokens),
            Event::Token(t) => {
                out.tokens.push(t.token);
                if let Some((chosen, top)) = t.logprobs {
                    out.logprobs.push(std::iter::once(&chosen).chain(&top).map(|l| l.logprob).collect());
                }
            }
            Event::Done(d) => {
                out.reason = Some(d.reason);
                out.usage = d.usage;
                break;
            }
            Event::Error(e) => panic!("request failed: {e}"),
        }
    }
    out
}

/// Distinct prompts of different lengths; the last two share a long prefix.
fn prompts(model: &Model) -> Vec<Vec<u32>> {
    [
        "Once upon a time, in a land far away, there lived a",
        "The quick brown fox",
        "In 1905 Albert Einstein published four papers that changed how physicists think about space, time and",
        "Hello",
        "In 1905 Albert Einstein published four papers that changed how physicists think about light",
    ]
    .iter()
    .map(|t| model.tokenize(t))
    .collect()
}

/// Greedy tokens of one request run alone through a session (the single-sequence path).
fn alone(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut session = model.session(&SessionOptions { n_ctx: Some(N_CTX), n_batch: 64 }).unwrap();
    let opts = GenerateOptions {
        max_tokens: n,
        sampling: SamplerConfig::greedy(),
        stop_at_eog: false,
        ..Default::default()
    };
    session.generate(prompt, opts).unwrap().filter_map(|c| c.unwrap().token).collect()
}

/// Five requests on three sequences in steps of at most 8 tokens: prompts are cut into chunks
/// that share steps with other sequences' decode tokens, and two requests wait for a free
/// sequence. Each request's tokens must be those it gets alone, and its log-probabilities
/// those of the same request on a batcher of one sequence (one token per decode step).
fn check_model(name: &str, n_layer: u32) {
    for (place, layers) in placements(n_layer) {
        let model = load(name, layers);
        let requests: Vec<BatchRequest> = prompts(&model).into_iter().map(|p| greedy(p, 12)).collect();
        let opts = BatcherOptions { parallel: 3, n_ctx: Some(N_CTX), n_batch: 8, max_queue: 8 };
        let batched = run_all(&Batcher::start(model.clone(), opts).unwrap(), &requests);
        let single = BatcherOptions { parallel: 1, n_ctx: Some(N_CTX), n_batch: 64, max_queue: 8 };
        let one = Batcher::start(model.clone(), single).unwrap();
        for (i, (req, got)) in requests.iter().zip(&batched).enumerate() {
            let what = format!("{name} [{place}] request {i}");
            let want = alone(&model, &req.prompt, 12);
            assert_eq!(got.tokens, want, "{what}: batched tokens differ from the request alone");
            assert_eq!(got.reason, Some(StopReason::MaxTokens), "{what}");
            assert_eq!(got.usage.completion_tokens, 12, "{what}");
            assert_eq!(got.usage.prompt_tokens, req.prompt.len(), "{what}");
            let solo = run_all(&one, std::slice::from_ref(req)).pop().unwrap();
            assert_eq!(solo.tokens, want, "{what}: a batcher of one differs from the session");
            for (t, (a, b)) in got.logprobs.iter().zip(&solo.logprobs).enumerate() {
                for (j, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (x - y).abs() <= LOGPROB_BUDGET,
                        "{what}: token {t} logprob {j}: batched {x}, alone {y}"
                    );
                }
            }
        }
    }
}

#[test]
fn batched_llama_matches_each_request_alone() {
    check_model("tiny-llama-q4_k_m.gguf", 2);
}

#[test]
fn batched_gemma3_matches_each_request_alone() {
    // Sliding-window layers, post-norms fused into the head, logit soft-capping.
    check_model("tiny-gemma3-q4_k_m.gguf", 2);
}

#[test]
fn batched_qwen3_moe_and_qwen2_match_each_request_alone() {
    check_model("tiny-qwen3moe-q4_k_m.gguf", 2);
    check_model("tiny-qwen2-q4_k_m.gguf", 2);
}

#[test]
fn batched_hybrid_qwen35_matches_each_request_alone() {
    // Gated DeltaNet layers: each sequence's recurrent states are its own, a prompt cut into
    // chunks carries its states from one step to the next, and a sequence that takes a new
    // request starts its states afresh.
    check_model("hybrid/models/tiny-qwen35-f32.gguf", 8);
}

/// A follow-up turn evaluates only what its sequence does not already hold, and continues as
/// the whole conversation would alone; with recurrent layers too, whose states hold exactly
/// the earlier turn.
#[test]
fn a_follow_up_reuses_the_cached_prefix() {
    let models = [("tiny-llama-q4_k_m.gguf", 2), ("hybrid/models/tiny-qwen35-f32.gguf", 8)];
    for (place, layers, name) in models.iter().flat_map(|&(name, n)| placements(n).map(|(p, l)| (p, l, name)))
    {
        let model = load(name, layers);
        let opts = BatcherOptions { parallel: 2, n_ctx: Some(N_CTX), n_batch: 16, max_queue: 4 };
        let batcher = Batcher::start(model.clone(), opts).unwrap();
        let first = model.tokenize("The history of the city begins with");
        let turn1 = run_all(&batcher, &[greedy(first.clone(), 8)]).pop().unwrap();
        assert_eq!(turn1.usage.cached_tokens, 0, "[{place}]");
        let mut follow = first.clone();
        follow.extend(&turn1.tokens);
        follow.extend(model.tokenize(" and then"));
        let turn2 = run_all(&batcher, &[greedy(follow.clone(), 8)]).pop().unwrap();
        // The first turn's prompt and all but its last token (never fed) are in the cache.
        let held = first.len() + turn1.tokens.len() - 1;
        assert_eq!(turn2.usage.cached_tokens, held, "[{place}] cached tokens");
        assert_eq!(turn2.started_cached, Some(held), "[{place}]");
        assert_eq!(turn2.tokens, alone(&model, &follow, 8), "[{place}] reused prefix changed the output");
        let stats = batcher.stats();
        assert_eq!(stats.cached_tokens_total, held as u64, "[{place}] {name}");
        assert_eq!(stats.requests_total, 2);
    }
}

/// A client that stops listening ends its request at the next step and frees the sequence for
/// the queued one.
#[test]
fn a_departed_client_frees_its_sequence() {
    let model = load("tiny-llama-q4_k_m.gguf", GpuLayers::All);
    let opts = BatcherOptions { parallel: 1, n_ctx: Some(N_CTX), n_batch: 16, max_queue: 4 };
    let batcher = Batcher::start(model.clone(), opts).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut seen = 0;
    let long = BatchRequest { max_tokens: None, ..greedy(model.tokenize("Tell me a story"), 0) };
    batcher
        .submit(long, move |e| {
            if matches!(e, Event::Token(_)) {
                seen += 1;
            }
            // Gone after the third token.
            seen < 3 && tx.send(e).is_ok()
        })
        .unwrap();
    let next = run_all(&batcher, &[greedy(model.tokenize("Hello"), 4)]).pop().unwrap();
    assert_eq!(next.tokens.len(), 4, "the queued request ran once the sequence was freed");
    assert!(rx.iter().filter(|e| matches!(e, Event::Token(_))).count() <= 2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while batcher.stats().busy_sequences > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(batcher.stats().busy_sequences, 0);
}

/// Requests beyond the sequences and the queue are refused at once, and nothing is lost.
#[test]
fn a_full_queue_refuses_and_bad_requests_are_named() {
    let model = load("tiny-llama-q4_k_m.gguf", GpuLayers::All);
    let opts = BatcherOptions { parallel: 1, n_ctx: Some(N_CTX), n_batch: 16, max_queue: 1 };
    let batcher = Batcher::start(model.clone(), opts).unwrap();
    let req = greedy(model.tokenize("Count to ten:"), 40);
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..6 {
        let (tx, rx) = mpsc::channel();
        match batcher.submit(req.clone(), move |e| tx.send(e).is_ok()) {
            Ok(()) => accepted.push(rx),
            Err(wllm::batch::SubmitError::QueueFull(_)) => refused += 1,
            Err(e) => panic!("unexpected refusal: {e}"),
        }
    }
    assert!(refused >= 3, "{refused} of 6 refused with one sequence and a queue of one");
    for rx in accepted {
        assert_eq!(collect(rx).tokens.len(), 40);
    }
    let too_long = greedy(vec![1; N_CTX as usize], 4);
    let err = batcher.submit(too_long, |_| true).unwrap_err();
    assert!(err.to_string().contains("96"), "{err}");
    let bad_token = greedy(vec![u32::MAX], 4);
    assert!(batcher.submit(bad_token, |_| true).unwrap_err().to_string().contains("vocabulary"));
    assert!(batcher.submit(greedy(Vec::new(), 4), |_| true).is_err());
}

/// Constrained requests batched with unconstrained ones: each constrained output fits its
/// grammar, a request's mask does not leak into its neighbours (the greedy one gets the tokens
/// it gets alone), and an invalid constraint is refused at submit.
#[test]
fn constrained_requests_share_steps_with_free_ones() {
    let model = load("tiny-llama-q4_k_m.gguf", GpuLayers::Count(0));
    let prompts = prompts(&model);
    let constrained = |prompt: &[u32], constraint: wllm::Constraint, seed: u64| BatchRequest {
        prompt: prompt.to_vec(),
        max_tokens: Some(40),
        sampling: support::hot_sampling(seed),
        constraint: Some(constraint),
        ..BatchRequest::default()
    };
    let requests = [
        constrained(&prompts[0], wllm::Constraint::Regex("[a-c]{5}".into()), 1),
        greedy(prompts[1].clone(), 12),
        constrained(&prompts[2], wllm::Constraint::Gbnf("root ::= (\"on\" | \"off\") \"!\"".into()), 2),
    ];
    let opts = BatcherOptions { parallel: 3, n_ctx: Some(N_CTX), n_batch: 8, max_queue: 8 };
    let batcher = Batcher::start(model.clone(), opts).unwrap();
    let out = run_all(&batcher, &requests);
    let text = |o: &Outcome| model.detokenize(&o.tokens);
    let first = text(&out[0]);
    assert!(first.len() == 5 && first.bytes().all(|b| (b'a'..=b'c').contains(&b)), "{first:?}");
    assert_eq!(out[0].reason, Some(StopReason::Constraint));
    assert!(["on!", "off!"].contains(&text(&out[2]).as_str()), "{:?}", text(&out[2]));
    assert_eq!(out[1].tokens, alone(&model, &prompts[1], 12));
    let bad = constrained(&prompts[3], wllm::Constraint::JsonSchema(serde_json::json!({"type": 3})), 3);
    let refused = batcher.submit(bad, |_| true).unwrap_err();
    assert!(refused.to_string().contains("invalid JSON schema"), "{refused}");
}
