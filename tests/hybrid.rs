//! The hybrid architectures (qwen35, qwen35moe, qwen3next: Gated DeltaNet and gated attention
//! layers) on the CPU, the GPU and split between them, against the tiny models' llama.cpp
//! fixtures and the exact float64 pass: teacher-forced logits within the fidelity budget,
//! free-running greedy tokens equal to llama.cpp's on the prefix exact math vouches for, and the
//! recurrent state carried from one turn to the next equal to evaluating the whole conversation
//! again. Prompts of 100 and 150 tokens cross the GPU's 64-token delta-rule chunks and the
//! 48-token steps these tests use.

mod support;

use std::sync::{Arc, OnceLock};

use support::argmax;
use wllm::engine::{DeviceOptions, Gpu, Tuning};
use wllm::{GpuLayers, LoadOptions, Logits, Model, SessionOptions};

const MEAN_BUDGET: f64 = 0.05;
const MAX_BUDGET: f64 = 0.5;

/// Where the layers run: every layer on the CPU, every layer on the GPU (with the delta rule's
/// prefill form the adapter prefers, and with the chunked form, which software adapters do not
/// choose themselves), and the first half on the CPU with the rest on the GPU.
fn placements(n_layer: u32) -> [(&'static str, GpuLayers, bool); 4] {
    [
        ("cpu", GpuLayers::Count(0), false),
        ("gpu", GpuLayers::All, false),
        ("gpu/chunked", GpuLayers::All, true),
        ("split", GpuLayers::Count(n_layer / 2), false),
    ]
}

/// One device per delta-rule form for the whole test binary: every model compiled onto a device
/// of its own would leave a software adapter's JIT code behind each time.
fn device(chunked: bool) -> Arc<Gpu> {
    static DEVICES: OnceLock<[Arc<Gpu>; 2]> = OnceLock::new();
    let [adapters_choice, chunked_form] = DEVICES.get_or_init(|| {
        let default = Gpu::new(&DeviceOptions::default()).expect("a GPU adapter (lavapipe in CI)");
        let tuning = Tuning { chunked_delta_rule: true, ..default.tuning };
        let chunked = Gpu::new(&DeviceOptions { tuning: Some(tuning), ..Default::default() }).unwrap();
        [default, chunked]
    });
    if chunked { chunked_form.clone() } else { adapters_choice.clone() }
}

fn load(case: &support::Case, gpu_layers: GpuLayers, chunked: bool) -> Model {
    let gpu = (gpu_layers != GpuLayers::Count(0)).then(|| device(chunked));
    let opts = LoadOptions { gpu_layers, gpu, ..Default::default() };
    Model::load_with(&case.model_path, &opts, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{} ({gpu_layers:?}): {e}", case.model_path.display()))
}

/// 48-token steps: the longer prompts cross step boundaries mid-sequence, and (on the GPU) a
/// step's run is not a multiple of the delta rule's chunk.
const SESSION: SessionOptions = SessionOptions { n_ctx: Some(512), n_batch: 48 };

#[test]
fn hybrid_tiny_models_match_llama_cpp_and_the_exact_pass_everywhere() {
    let mut failures = Vec::new();
    let cases = support::hybrid_cases();
    assert!(cases.len() >= 12, "the hybrid fixtures are missing");
    for case in &cases {
        for (place, gpu_layers, chunked) in placements(n_layer(case)) {
            // Every case on the CPU and the GPU; the chunked form and the split on each model's
            // 150-token case (more than two chunks), to keep the suite's time in bounds.
            if (chunked || place == "split") && !case.name.ends_with("_c1") {
                continue;
            }
            let model = load(case, gpu_layers, chunked);
            let got = support::teacher_forced(&model, case, &SESSION);
            let rows = case.prompt_ids.len() + case.greedy_ids.len();
            assert_eq!(got.len(), rows * case.n_vocab);
            let (mean, max) = support::compare(case, &got, rows);
            let (lm, lx) = support::llama_vs_exact(case, rows).unwrap_or((f64::NAN, f64::NAN));
            // A Q8_0 MoE row whose router logits nearly tie can pick another expert than the
            // exact pass (llama.cpp's rows differ by up to its own `lx` for the same reason):
            // such a row may reach llama.cpp's largest difference, the mean stays in budget.
            let max_budget = MAX_BUDGET.max(if lx.is_nan() { 0.0 } else { lx });
            let p = case.greedy_prefix_agree_exact;
            let tokens = support::greedy(&model, case, p.max(1), &SESSION);
            let greedy_ok = tokens[..p] == case.greedy_ids[..p];
            eprintln!(
                "{:<30} {place:<5} exact |d| mean {mean:.2e} max {max:.2e} (llama.cpp: mean {lm:.2e} max {lx:.2e})  greedy {p} {}",
                case.name,
                if greedy_ok { "ok" } else { "MISMATCH" }
            );
            if mean > MEAN_BUDGET || max > max_budget || !greedy_ok {
                failures
                    .push(format!("{} on {place}: mean {mean:.4} max {max:.4} greedy {tokens:?}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "hybrid fidelity failures:\n{}", failures.join("\n"));
}

fn n_layer(case: &support::Case) -> u32 {
    let file = wllm::loaders::GgufFile::open(&case.model_path).unwrap();
    wllm::loaders::ModelConfig::from_gguf(&file).unwrap().n_layer
}

/// The fixtures' two-turn cases through a session, on each placement: turn 1's prompt as one
/// batch, its greedy tokens one by one, then turn 2's prompt on top of the state left behind,
/// and turn 2's greedy tokens; every logit row must equal a fresh evaluation of the whole
/// conversation's and the greedy tokens must equal llama.cpp's.
#[test]
fn turn_two_reuses_turn_one_state_and_equals_a_full_re_evaluation() {
    let session_opts = SessionOptions { n_ctx: Some(256), n_batch: 512 };
    let mut checked = 0;
    for case in support::hybrid_cases() {
        let Some(turns) = &case.turns else { continue };
        for (place, gpu_layers, chunked) in placements(n_layer(&case)) {
            let model = load(&case, gpu_layers, chunked);
            let [(p1, g1), (p2, g2)] = &turns[..] else { panic!("{}: two turns expected", case.name) };
            let mut chat = model.session(&session_opts).unwrap();
            // Teacher-forced on llama.cpp's tokens, so that every model's conversation is the
            // fixture's; where llama.cpp's greedy choice is vouched for by exact math (F32
            // weights: Q8_0 dot products in llama.cpp round the activations too), ours must be
            // the same.
            let vouched = case.name.contains("-f32");
            let v = case.n_vocab;
            let mut choices = vec![argmax(&chat.eval(p1, Logits::Last).unwrap())];
            for &t in g1 {
                choices.push(argmax(&chat.eval(&[t], Logits::Last).unwrap()));
            }
            if vouched {
                assert_eq!(&choices[..g1.len()], &g1[..], "{} on {place}: turn 1 greedy", case.name);
            }
            // Turn 2 continues the cached conversation: nothing is re-evaluated.
            let history: Vec<u32> = p1.iter().chain(g1).copied().collect();
            assert_eq!(chat.tokens(), &history[..], "{} on {place}: the session holds turn 1", case.name);
            let mut rows = chat.eval(p2, Logits::All).unwrap();
            let mut turn2 = vec![argmax(&rows[rows.len() - v..])];
            for &t in g2 {
                let row = chat.eval(&[t], Logits::Last).unwrap();
                turn2.push(argmax(&row));
                rows.extend(row);
            }
            if vouched {
                assert_eq!(
                    &turn2[..g2.len()],
                    &g2[..],
                    "{} on {place}: turn 2 greedy (llama.cpp's)",
                    case.name
                );
            }
            // The same conversation evaluated afresh.
            let mut fresh = model.session(&session_opts).unwrap();
            let all: Vec<u32> = case.prompt_ids.iter().chain(&case.greedy_ids).copied().collect();
            let fresh_rows = fresh.eval(&all, Logits::All).unwrap();
            let from = history.len() * v;
            // Turn 2's rows (its prompt and its greedy steps, the last greedy step's row
            // excluded: the fresh pass has no token after it).
            let n2 = (p2.len() + g2.len() - 1) * v;
            let fresh2 = &fresh_rows[from..from + n2];
            let worst = rows[..n2].iter().zip(fresh2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            eprintln!("{} on {place}: turn 2 on the kept state vs fresh: max |d| {worst:e}", case.name);
            // The kept state went through one-token steps, the fresh pass through one batch
            // (on the GPU: the recurrent and the chunked delta rule): the same math, rounded
            // differently, and where Q8_0 kernels quantize activations, per path.
            let tolerance = if vouched { 1e-3 } else { 0.05 };
            assert!(
                worst < tolerance,
                "{} on {place}: turn 2 differs from a full re-evaluation by {worst}",
                case.name
            );
            for (r, (a, b)) in rows[..n2].chunks(v).zip(fresh2.chunks(v)).enumerate() {
                assert_eq!(
                    argmax(a),
                    argmax(b),
                    "{} on {place}: turn 2 row {r}: another token than afresh",
                    case.name
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} two-turn runs");
}

/// Truncating a recurrent model's session, on each placement: to its whole length keeps
/// everything, to a point inside the reply goes back to the end of the last prompt (the
/// checkpoint), before that to nothing; each time the continuation equals a fresh evaluation.
#[test]
fn truncation_goes_back_to_a_checkpoint_and_never_reuses_a_mismatched_state() {
    let case = support::hybrid_cases().into_iter().find(|c| c.turns.is_some()).unwrap();
    let session_opts = SessionOptions { n_ctx: Some(256), n_batch: 512 };
    let turns = case.turns.as_ref().unwrap();
    let (p1, g1) = &turns[0];
    let tail: Vec<u32> = turns[1].0.clone();
    for (place, gpu_layers, chunked) in placements(n_layer(&case)) {
        let model = load(&case, gpu_layers, chunked);
        let fresh_last = |prefix: &[u32]| {
            let mut s = model.session(&session_opts).unwrap();
            let all: Vec<u32> = prefix.iter().chain(&tail).copied().collect();
            s.eval(&all, Logits::Last).unwrap()
        };
        for (cut, expect_kept) in [
            (p1.len() + g1.len(), p1.len() + g1.len()),
            (p1.len() + 5, p1.len()),
            (p1.len(), p1.len()),
            (p1.len() - 3, 0),
        ] {
            let mut s = model.session(&session_opts).unwrap();
            s.eval(p1, Logits::Last).unwrap();
            for &t in g1 {
                s.eval(&[t], Logits::Last).unwrap();
            }
            let kept = s.truncate(cut);
            assert_eq!(kept, expect_kept, "{place}: truncate({cut}) kept {kept}");
            assert_eq!(s.tokens().len(), kept);
            let history: Vec<u32> = p1.iter().chain(g1).copied().collect();
            // Re-evaluate what the truncation could not keep, then the new tokens.
            let redo: Vec<u32> = history[kept..cut].iter().chain(&tail).copied().collect();
            let got = s.eval(&redo, Logits::Last).unwrap();
            let want = fresh_last(&history[..cut]);
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "{place}: truncate({cut}): continuation differs from fresh by {worst}");
        }
    }
}
