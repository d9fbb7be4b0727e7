//! The sampling chain against hand-computed distributions, its determinism, and the stop-string
//! and logit-bias helpers.

use wllm_engine::sampling::{
    LogitBias, Sampler, SamplerConfig, SamplingError, StopMatcher, StopStep, parse_logit_bias,
};

/// Probabilities 0.15, 0.5, 0.1, 0.25 for ids 0..4: ids out of probability order, so a stage
/// that forgets to sort or that sorts by id is caught.
const P: [f32; 4] = [0.15, 0.5, 0.1, 0.25];

fn logits_of(p: &[f32]) -> Vec<f32> {
    p.iter().map(|x| x.ln()).collect()
}

/// Every stage off, temperature 1: the distribution is the plain softmax.
fn plain() -> SamplerConfig {
    SamplerConfig {
        temp: 1.0,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        typical_p: 1.0,
        seed: Some(7),
        ..Default::default()
    }
}

/// The surviving (id, probability) pairs, most likely first.
fn dist(config: SamplerConfig, logits: &[f32]) -> Vec<(u32, f32)> {
    let mut s = Sampler::new(config).unwrap();
    s.distribution(logits).unwrap().iter().map(|t| (t.id, t.p)).collect()
}

fn assert_dist(got: &[(u32, f32)], want: &[(u32, f32)]) {
    assert_eq!(got.len(), want.len(), "kept {got:?}, expected {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0, w.0, "entry {i}: token {} where {} was expected ({got:?})", g.0, w.0);
        assert!(
            (g.1 - w.1).abs() < 1e-4,
            "entry {i} (token {}): p = {}, expected {} ({got:?})",
            g.0,
            g.1,
            w.1
        );
    }
}

#[test]
fn defaults_are_llama_cpp_cli_defaults() {
    let c = SamplerConfig::default();
    assert_eq!(c.temp, 0.8);
    assert_eq!(c.top_k, 40);
    assert_eq!(c.top_p, 0.95);
    assert_eq!(c.min_p, 0.05);
    assert_eq!(c.typical_p, 1.0);
    assert_eq!(c.repeat_penalty, 1.0);
    assert_eq!(c.repeat_last_n, 64);
    assert_eq!(c.frequency_penalty, 0.0);
    assert_eq!(c.presence_penalty, 0.0);
    assert_eq!(c.min_keep, 0);
    assert_eq!(c.seed, None);
    assert!(c.logit_bias.is_empty());
}

#[test]
fn no_stage_gives_the_softmax() {
    assert_dist(&dist(plain(), &logits_of(&P)), &[(1, 0.5), (3, 0.25), (0, 0.15), (2, 0.1)]);
}

#[test]
fn top_k_keeps_the_k_most_likely() {
    let c = SamplerConfig { top_k: 2, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 2.0 / 3.0), (3, 1.0 / 3.0)]);
    let c = SamplerConfig { top_k: 10, ..plain() };
    assert_eq!(dist(c, &logits_of(&P)).len(), 4);
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // Cumulative 0.5, 0.75, 0.9, 1.0.
    let c = SamplerConfig { top_p: 0.7, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 2.0 / 3.0), (3, 1.0 / 3.0)]);
    let c = SamplerConfig { top_p: 0.8, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 0.5 / 0.9), (3, 0.25 / 0.9), (0, 0.15 / 0.9)]);
    let c = SamplerConfig { top_p: 0.3, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 1.0)]);
    let c = SamplerConfig { top_p: 0.3, min_keep: 3, ..plain() };
    assert_eq!(dist(c, &logits_of(&P)).len(), 3, "min_keep holds top-p open");
}

#[test]
fn min_p_drops_tokens_below_p_times_the_top() {
    // Threshold 0.25 * 0.5 = 0.125: 0.15 stays, 0.1 goes.
    let c = SamplerConfig { min_p: 0.25, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 0.5 / 0.9), (3, 0.25 / 0.9), (0, 0.15 / 0.9)]);
    let c = SamplerConfig { min_p: 0.6, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 1.0)]);
    // Above 1 nothing passes, but the top token always survives.
    let c = SamplerConfig { min_p: 2.0, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 1.0)]);
}

#[test]
fn typical_p_keeps_tokens_nearest_the_entropy() {
    // Entropy H = 1.2080 nats. |surprisal - H|: 0.25 -> 0.178, 0.5 -> 0.515, 0.15 -> 0.689,
    // 0.1 -> 1.095. Mass in that order: 0.25, 0.75, ...
    let c = SamplerConfig { typical_p: 0.5, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 2.0 / 3.0), (3, 1.0 / 3.0)]);
    // 0.25 > 0.2 already: the single most typical token is not the most likely one.
    let c = SamplerConfig { typical_p: 0.2, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(3, 1.0)]);
}

#[test]
fn temperature_reshapes_the_distribution() {
    // p^(1/T) renormalised. T = 2: sqrt of 0.5, 0.25, 0.15, 0.1 over their sum 1.910600.
    let c = SamplerConfig { temp: 2.0, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 0.370093), (3, 0.261694), (0, 0.202709), (2, 0.165508)]);
    // T = 0.5: squares 0.25, 0.0625, 0.0225, 0.01 over 0.345.
    let c = SamplerConfig { temp: 0.5, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 0.724638), (3, 0.181159), (0, 0.065217), (2, 0.028986)]);
}

#[test]
fn truncation_runs_before_temperature() {
    // top-k 3 leaves 0.5556, 0.2778, 0.1667; top-p 0.8 stops at 0.8333 after two tokens. Had the
    // temperature of 2 run first (0.444, 0.314, 0.243), top-p would have kept three.
    let c = SamplerConfig { top_k: 3, top_p: 0.8, temp: 2.0, ..plain() };
    let r = 0.5f32.sqrt() + 0.25f32.sqrt();
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 0.5f32.sqrt() / r), (3, 0.5 / r)]);
    // min-p 0.4 keeps p/pmax >= 0.4: 1.0 and 0.5 but not 0.3. After T = 2 it would keep 0.548.
    let c = SamplerConfig { min_p: 0.4, temp: 2.0, ..plain() };
    assert_dist(&dist(c, &logits_of(&P)), &[(1, 0.5f32.sqrt() / r), (3, 0.5 / r)]);
}

#[test]
fn penalties_follow_the_window() {
    let logits = [1.0, -1.0, 2.0, -0.5];
    let c = SamplerConfig {
        repeat_penalty: 2.0,
        frequency_penalty: 0.5,
        presence_penalty: 1.0,
        repeat_last_n: 3,
        ..plain()
    };
    let mut s = Sampler::new(c).unwrap();
    for t in [2, 2, 3] {
        s.accept(t);
    }
    // Token 2 (twice): 2 / 2 - (2 * 0.5 + 1) = -1. Token 3 (once): -0.5 * 2 - (0.5 + 1) = -2.5.
    let mut got: Vec<(u32, f32)> = s.distribution(&logits).unwrap().iter().map(|t| (t.id, t.logit)).collect();
    got.sort_by_key(|t| t.0);
    assert_eq!(got, [(0, 1.0), (1, -1.0), (2, -1.0), (3, -2.5)]);

    // The window holds three tokens: accepting 0 pushes out one of the 2s.
    s.accept(0);
    let mut got: Vec<(u32, f32)> = s.distribution(&logits).unwrap().iter().map(|t| (t.id, t.logit)).collect();
    got.sort_by_key(|t| t.0);
    assert_eq!(got, [(0, -1.0), (1, -1.0), (2, -0.5), (3, -2.5)]);

    s.reset();
    let mut got: Vec<(u32, f32)> = s.distribution(&logits).unwrap().iter().map(|t| (t.id, t.logit)).collect();
    got.sort_by_key(|t| t.0);
    assert_eq!(got, [(0, 1.0), (1, -1.0), (2, 2.0), (3, -0.5)], "reset empties the window");
}

#[test]
fn repeat_last_n_zero_disables_penalties() {
    let c = SamplerConfig { repeat_penalty: 2.0, presence_penalty: 1.0, repeat_last_n: 0, ..plain() };
    let mut s = Sampler::new(c).unwrap();
    s.accept(1);
    assert_dist(
        &{ s.distribution(&logits_of(&P)).unwrap().iter().map(|t| (t.id, t.p)).collect::<Vec<_>>() },
        &[(1, 0.5), (3, 0.25), (0, 0.15), (2, 0.1)],
    );
}

#[test]
fn logit_bias_shifts_and_bans() {
    let c = SamplerConfig {
        logit_bias: vec![
            LogitBias { token: 1, bias: f32::NEG_INFINITY },
            LogitBias { token: 2, bias: 0.5f32.ln() },
        ],
        ..plain()
    };
    // Token 2 goes from 0.1 to 0.05 (relative); token 1 is gone: 0.15, 0.05, 0.25 over 0.45.
    assert_dist(&dist(c, &logits_of(&P)), &[(3, 0.25 / 0.45), (0, 0.15 / 0.45), (2, 0.05 / 0.45)]);
    let ban_all = SamplerConfig {
        logit_bias: (0..4).map(|token| LogitBias { token, bias: f32::NEG_INFINITY }).collect(),
        ..plain()
    };
    assert_eq!(Sampler::new(ban_all).unwrap().sample(&logits_of(&P)), Err(SamplingError::AllMasked));
    let outside = SamplerConfig { logit_bias: vec![LogitBias { token: 4, bias: 1.0 }], ..plain() };
    assert_eq!(
        Sampler::new(outside).unwrap().sample(&logits_of(&P)),
        Err(SamplingError::BiasOutOfVocab { token: 4, n_vocab: 4 })
    );
}

#[test]
fn greedy_takes_the_lowest_id_among_ties() {
    let logits = [1.0, 3.0, 3.0, 2.0, 3.0];
    for temp in [0.0, -1.0] {
        let mut s = Sampler::new(SamplerConfig { temp, ..Default::default() }).unwrap();
        for _ in 0..10 {
            assert_eq!(s.sample(&logits).unwrap(), 1);
        }
    }
    // With a bias, greedy follows the biased logits.
    let c = SamplerConfig { logit_bias: vec![LogitBias { token: 3, bias: 1.5 }], ..SamplerConfig::greedy() };
    assert_eq!(Sampler::new(c).unwrap().sample(&logits).unwrap(), 3);
}

fn row(n: usize) -> Vec<f32> {
    // A smooth, untied row: enough tokens survive the default chain to make draws vary.
    (0..n).map(|i| ((i * 37 % n) as f32 / n as f32) * 4.0 - (i % 3) as f32 * 0.1).collect()
}

fn draws(seed: u64, n: usize) -> Vec<u32> {
    let logits = row(100);
    let mut s = Sampler::new(SamplerConfig { seed: Some(seed), ..Default::default() }).unwrap();
    (0..n).map(|_| s.sample(&logits).unwrap()).collect()
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let a = draws(42, 1000);
    assert_eq!(a, draws(42, 1000));
    assert_ne!(a, draws(43, 1000));
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 5, "the default chain should leave several tokens to draw from: {distinct:?}");

    let mut s = Sampler::new(SamplerConfig::default()).unwrap();
    let logits = row(100);
    let first: Vec<u32> = (0..50).map(|_| s.sample(&logits).unwrap()).collect();
    let mut again = Sampler::new(SamplerConfig { seed: Some(s.seed()), ..Default::default() }).unwrap();
    assert_eq!(
        first,
        (0..50).map(|_| again.sample(&logits).unwrap()).collect::<Vec<_>>(),
        "seed() repeats a random run"
    );
    s.reset();
    assert_eq!(
        first,
        (0..50).map(|_| s.sample(&logits).unwrap()).collect::<Vec<_>>(),
        "reset() restarts the stream"
    );
}

/// Pins the generator and the chain: these tokens must not change across platforms or releases.
#[test]
fn seeded_stream_is_pinned() {
    assert_eq!(draws(1234, 24), GOLDEN_1234);
}

const GOLDEN_1234: [u32; 24] =
    [27, 75, 59, 2, 54, 10, 89, 8, 78, 32, 70, 8, 81, 32, 43, 94, 5, 64, 45, 94, 67, 35, 43, 27];

#[test]
fn draw_frequencies_match_the_distribution() {
    let logits = logits_of(&[0.05, 0.3, 0.02, 0.2, 0.13, 0.3]);
    let c = SamplerConfig { seed: Some(99), ..Default::default() };
    let mut s = Sampler::new(c).unwrap();
    let expected: Vec<(u32, f32)> = s.distribution(&logits).unwrap().iter().map(|t| (t.id, t.p)).collect();
    // Default chain at T = 0.8: min-p 0.05 keeps everything above 0.015, top-p 0.95 cuts 0.02.
    assert_eq!(expected.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 5, 3, 4, 0]);
    let n = 40_000;
    let mut counts = [0usize; 6];
    for _ in 0..n {
        counts[s.sample(&logits).unwrap() as usize] += 1;
    }
    assert_eq!(counts[2], 0, "token 2 was cut by top-p and must never be drawn");
    for (id, p) in expected {
        let f = counts[id as usize] as f64 / n as f64;
        let sigma = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
        assert!((f - p as f64).abs() < 5.0 * sigma, "token {id}: frequency {f:.4}, probability {p:.4}");
    }
}

#[test]
fn bad_rows_and_settings_are_errors() {
    let mut s = Sampler::new(plain()).unwrap();
    assert_eq!(s.sample(&[]), Err(SamplingError::EmptyLogits));
    assert!(matches!(s.sample(&[0.0, f32::NAN]), Err(SamplingError::NonFiniteLogit { token: 1, .. })));
    assert!(matches!(s.sample(&[f32::INFINITY]), Err(SamplingError::NonFiniteLogit { token: 0, .. })));
    assert_eq!(s.sample(&[f32::NEG_INFINITY; 3]), Err(SamplingError::AllMasked));
    assert_eq!(s.sample(&[f32::NEG_INFINITY, 0.0]), Ok(1));

    for bad in [
        SamplerConfig { repeat_penalty: 0.0, ..plain() },
        SamplerConfig { repeat_penalty: f32::INFINITY, ..plain() },
        SamplerConfig { temp: f32::NAN, ..plain() },
        SamplerConfig { top_p: f32::NAN, ..plain() },
        SamplerConfig { frequency_penalty: f32::NAN, ..plain() },
        SamplerConfig { logit_bias: vec![LogitBias { token: 0, bias: f32::INFINITY }], ..plain() },
    ] {
        let err = Sampler::new(bad.clone()).unwrap_err();
        assert!(matches!(err, SamplingError::InvalidSetting { .. }), "{bad:?} gave {err:?}");
    }
    let msg = Sampler::new(SamplerConfig { repeat_penalty: -1.0, ..plain() }).unwrap_err().to_string();
    assert!(msg.contains("repeat_penalty") && msg.contains("greater than 0"), "{msg}");
}

#[test]
fn logit_bias_arguments_parse_like_llama_cpp() {
    assert_eq!(parse_logit_bias("15043+1.5").unwrap(), LogitBias { token: 15043, bias: 1.5 });
    assert_eq!(parse_logit_bias("15043-1").unwrap(), LogitBias { token: 15043, bias: -1.0 });
    assert_eq!(parse_logit_bias("15043-inf").unwrap(), LogitBias { token: 15043, bias: f32::NEG_INFINITY });
    assert_eq!(parse_logit_bias("0+2e-1").unwrap(), LogitBias { token: 0, bias: 0.2 });
    assert_eq!(parse_logit_bias(" 7+0 ").unwrap(), LogitBias { token: 7, bias: 0.0 });

    for (input, needle) in [
        ("", "no + or -"),
        ("15043", "no + or -"),
        ("15043*2", "no + or -"),
        ("15043+", "missing"),
        ("+1.5", "token id is missing"),
        ("-5+1", "token id is missing"),
        ("abc+1", "not a non-negative integer"),
        ("99999999999+1", "32 bits"),
        ("15043+x", "not a number"),
        ("15043+1.5x", "not a number"),
        ("15043+nan", "not a number"),
        ("15043--1", "more than one sign"),
        ("15043+inf", "+inf is not allowed"),
        ("15043+1e99", "overflows"),
    ] {
        let err = parse_logit_bias(input).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{input:?}: {msg}");
        assert!(msg.contains("TOKEN_ID+BIAS"), "{input:?}: the message shows the expected form: {msg}");
    }
}

fn step(text: &str, stop: Option<usize>) -> StopStep {
    StopStep { text: text.to_string(), stop }
}

#[test]
fn stop_strings_are_found_across_chunks() {
    let mut m = StopMatcher::new(["</s>", "User:"]);
    assert_eq!(m.push("Hello <"), step("Hello ", None));
    assert_eq!(m.held(), "<");
    assert_eq!(m.push("/"), step("", None));
    assert_eq!(m.push("s> and more"), step("", Some(0)));
    assert!(m.is_stopped());
    assert_eq!(m.push("ignored"), step("", None));

    // A held prefix that turns out not to be a stop string is released.
    let mut m = StopMatcher::new(["</s>"]);
    assert_eq!(m.push("a <"), step("a ", None));
    assert_eq!(m.push("b>"), step("<b>", None));
    assert_eq!(m.push("x</"), step("x", None));
    assert_eq!(m.finish(), "</");

    // Cut inside one chunk, text after the stop string is dropped.
    let mut m = StopMatcher::new(["User:"]);
    assert_eq!(m.push("Sure.\nUser: hi"), step("Sure.\n", Some(0)));

    // The earliest match wins, whichever stop string it is.
    let mut m = StopMatcher::new(["cd", "abc"]);
    assert_eq!(m.push("xab"), step("x", None));
    assert_eq!(m.push("cd"), step("", Some(1)));

    // Held text is cut on character boundaries.
    let mut m = StopMatcher::new(["é!"]);
    assert_eq!(m.push("caf"), step("caf", None));
    assert_eq!(m.push("é"), step("", None));
    assert_eq!(m.push("!"), step("", Some(0)));

    // A stop string spread over many one-byte chunks.
    let mut m = StopMatcher::new(["<|im_end|>"]);
    let mut shown = String::new();
    let mut stop = None;
    for c in "answer<|im_end|>tail".chars() {
        let s = m.push(&c.to_string());
        shown.push_str(&s.text);
        stop = stop.or(s.stop);
    }
    assert_eq!((shown.as_str(), stop), ("answer", Some(0)));

    // No stop strings, or only empty ones: everything passes straight through.
    let mut m = StopMatcher::new([""]);
    assert_eq!(m.push("abc"), step("abc", None));
}
