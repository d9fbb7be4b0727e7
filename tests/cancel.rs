//! A long prompt is evaluated in batches: a cancel is seen between two of them on the blocking
//! path, and a polled generation queues one batch per call. Times are compared with a batch's
//! own measured time (the slowest, at the end of the context), never with fixed numbers, so
//! the tests hold on a slow software GPU.

mod support;

use std::task::Poll;
use std::time::{Duration, Instant};

use wllm::{CancelToken, GenerateOptions, Logits, Model, SamplerConfig, Session, SessionOptions, StopReason};

const PROMPT: usize = 2000;
const BATCH: u32 = 64;

fn tiny() -> Option<Model> {
    Model::load(support::data_dir().join("models/tiny-llama-q4_k_m.gguf")).ok()
}

fn session(model: &Model) -> Session {
    model.session(&SessionOptions { n_ctx: Some(2048), n_batch: BATCH }).unwrap()
}

fn long_prompt() -> Vec<u32> {
    (0..PROMPT as u32).map(|i| 3 + (i * 7919) % 500).collect()
}

/// The slowest batch of the whole prompt fed batch by batch (later batches attend to more).
fn one_batch_time(model: &Model, prompt: &[u32]) -> Duration {
    batch_times(model, prompt).last().copied().unwrap_or_default()
}

/// Each batch's time when the prompt is fed batch by batch, fastest first.
fn batch_times(model: &Model, prompt: &[u32]) -> Vec<Duration> {
    let mut s = session(model);
    let mut times: Vec<Duration> = prompt
        .chunks(BATCH as usize)
        .map(|batch| {
            let t = Instant::now();
            s.eval(batch, Logits::None).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn opts(cancel: &CancelToken) -> GenerateOptions {
    GenerateOptions {
        max_tokens: 4,
        sampling: SamplerConfig::greedy(),
        cancel: Some(cancel.clone()),
        ..Default::default()
    }
}

/// Whole batches, and fewer than the prompt's.
fn assert_cut_at_a_batch(tokens: &[u32], prompt: &[u32]) {
    assert!(tokens.len() < prompt.len(), "the whole prompt was evaluated");
    assert_eq!(tokens.len() % BATCH as usize, 0, "{} tokens: not whole batches", tokens.len());
    assert_eq!(tokens, &prompt[..tokens.len()]);
}

#[test]
fn cancelling_a_long_blocking_prompt_returns_within_a_batch() {
    let Some(model) = tiny() else { return };
    let prompt = long_prompt();
    let times = batch_times(&model, &prompt);
    let batch = *times.last().unwrap();
    let mut s = session(&model);
    let cancel = CancelToken::new();
    // Fire after a few typical batches, from another thread, as a Ctrl-C handler would. Not
    // after a few of the slowest: one batch stalled by the scheduler can take as long as the
    // rest of the prompt, which would then end before the cancel.
    let fire_at = times[times.len() / 2] * 3;
    let fired = std::thread::scope(|scope| {
        let canceller = scope.spawn(|| {
            std::thread::sleep(fire_at);
            cancel.cancel();
            Instant::now()
        });
        let generation = s.generate(&prompt, opts(&cancel)).unwrap();
        let returned = Instant::now();
        assert_eq!(generation.stop_reason(), Some(&StopReason::Cancelled));
        let fired = canceller.join().unwrap();
        returned.saturating_duration_since(fired)
    });
    // The batch in flight when the cancel fired, and scheduling noise.
    assert!(
        fired <= batch * 2 + Duration::from_millis(50),
        "returned {fired:?} after the cancel; a batch takes {batch:?}"
    );
    assert_cut_at_a_batch(s.tokens(), &prompt);
}

#[test]
fn a_polled_long_prompt_queues_one_batch_per_call_and_cancels_at_once() {
    let Some(model) = tiny() else { return };
    if session(&model).layer_split().0 > 0 {
        eprintln!("polling needs every layer on the GPU; skipped");
        return;
    }
    let prompt = long_prompt();
    let batch = one_batch_time(&model, &prompt);
    let cancel = CancelToken::new();
    let limit = batch * 2 + Duration::from_millis(50);
    let t = Instant::now();
    let mut generation = session(&model).start_generation(&prompt, opts(&cancel)).unwrap();
    assert!(t.elapsed() <= limit, "start_generation took {:?}; a batch takes {batch:?}", t.elapsed());
    // Long enough for several batches, but not the whole prompt.
    let mut polls = 0;
    while generation.session().tokens().len() < 5 * BATCH as usize {
        let t = Instant::now();
        assert!(generation.poll_next().is_pending(), "the prompt is not in yet");
        assert!(t.elapsed() <= limit, "a poll took {:?}; a batch takes {batch:?}", t.elapsed());
        polls += 1;
        std::thread::yield_now();
    }
    assert!(polls > 1);
    cancel.cancel();
    assert!(matches!(generation.poll_next(), Poll::Ready(None)));
    assert_eq!(generation.stop_reason(), Some(&StopReason::Cancelled));
    let mut s = generation.into_session().unwrap();
    assert_cut_at_a_batch(s.tokens(), &prompt);
    // The next call waits at most for the one batch still in flight.
    let t = Instant::now();
    s.eval(&[5], Logits::Last).unwrap();
    assert!(t.elapsed() <= limit + batch, "the next step took {:?}; a batch takes {batch:?}", t.elapsed());
}

#[test]
fn a_prompt_cancelled_before_it_starts_feeds_nothing() {
    let Some(model) = tiny() else { return };
    let mut s = session(&model);
    let cancel = CancelToken::new();
    cancel.cancel();
    let mut generation = s.generate(&long_prompt(), opts(&cancel)).unwrap();
    assert!(generation.next().is_none());
    assert_eq!(generation.stop_reason(), Some(&StopReason::Cancelled));
    drop(generation);
    assert!(s.tokens().is_empty());
}
