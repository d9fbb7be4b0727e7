//! Profiling a session: a summary per kernel that clears the events, and a way to stop.

mod support;

use wllm::{Logits, Model, SessionOptions};

#[test]
fn take_profile_summarises_and_clears_and_disable_stops() {
    let Ok(model) = Model::load(support::data_dir().join("models/tiny-llama-q4_k_m.gguf")) else {
        eprintln!("cannot load; skipped");
        return;
    };
    let mut session = model.session(&SessionOptions { n_ctx: Some(64), n_batch: 8 }).unwrap();
    if session.layer_split().1 == 0 {
        eprintln!("no GPU layers; skipped");
        return;
    }
    assert!(session.take_profile().is_none(), "profiling is off");
    session.enable_profiling();
    session.eval(&[1, 2, 3, 4, 5], Logits::None).unwrap();
    for t in [5, 6, 7] {
        session.eval_greedy(&[t]).unwrap();
    }
    let events = session.profiler().unwrap().events.len();
    let summary = session.take_profile().expect("profiling is on");
    assert_eq!(summary.steps, 4, "one prompt step and three decode steps");
    let counted: u32 = summary.kernels.iter().map(|k| k.count).sum();
    assert_eq!(counted as usize, events, "every event is in the summary");
    assert!(summary.kernels.windows(2).all(|w| w[0].total >= w[1].total), "longest first");
    for k in &summary.kernels {
        assert!(
            k.count > 0 && k.mean() * k.count <= k.total + std::time::Duration::from_nanos(k.count as u64)
        );
    }
    assert!(session.profiler().unwrap().events.is_empty(), "taking the summary cleared the events");
    assert!(session.take_profile().unwrap().is_empty());

    session.disable_profiling();
    session.eval_greedy(&[8]).unwrap();
    assert!(session.profiler().is_none() && session.take_profile().is_none());
}
