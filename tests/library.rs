//! The embedding API: a host-created device, generation stepped by polling, and the model
//! shared across threads.

mod support;

use std::task::Poll;

use wllm::wgpu;
use wllm::{Engine, GenerateOptions, Generation, Model, SamplerConfig, Session, SessionOptions};

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Model>();
    send_sync::<Engine>();
    send::<Session>();
    send::<Generation<'static>>();
};

fn tiny() -> std::path::PathBuf {
    support::data_dir().join("models/tiny-llama-q4_k_m.gguf")
}

/// A device created the way a game creates one; `None` (test skipped) without an adapter.
fn host_device() -> Option<(wgpu::Adapter, wgpu::Device, wgpu::Queue)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let Ok(adapter) = pollster::block_on(instance.request_adapter(&Default::default())) else {
        eprintln!("no adapter; skipped");
        return None;
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_features: Engine::recommended_features(&adapter),
        required_limits: Engine::recommended_limits(&adapter),
        ..Default::default()
    }))
    .ok()?;
    Some((adapter, device, queue))
}

fn greedy(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens: n,
        sampling: SamplerConfig::greedy(),
        stop_at_eog: false,
        ..Default::default()
    }
}

#[test]
fn polled_generation_on_a_host_device_matches_blocking_generation() {
    let Some((adapter, device, queue)) = host_device() else { return };
    let engine = Engine::from_device(&adapter, device.clone(), queue.clone()).unwrap();
    let model = engine.load(tiny()).unwrap();
    let prompt = model.tokenize("Hello there, how are");
    let opts = SessionOptions { n_ctx: Some(64), n_batch: 4 };

    let mut blocking = model.session(&opts).unwrap();
    let expected: Vec<u32> =
        blocking.generate(&prompt, greedy(12)).unwrap().map(|c| c.unwrap().token.unwrap()).collect();
    assert_eq!(expected.len(), 12);

    let mut generation = model.session(&opts).unwrap().start_generation(&prompt, greedy(12)).unwrap();
    let (mut got, mut pending_frames) = (Vec::new(), 0);
    loop {
        // The host's own work for the frame, on the same queue.
        queue.submit([device.create_command_encoder(&Default::default()).finish()]);
        match generation.poll_next() {
            Poll::Pending => {
                pending_frames += 1;
                std::thread::yield_now();
            }
            Poll::Ready(Some(chunk)) => got.extend(chunk.unwrap().token),
            Poll::Ready(None) => break,
        }
        assert!(pending_frames < 1_000_000, "generation never finished");
    }
    assert_eq!(got, expected);
    let session = generation.into_session().unwrap();
    // The prompt and every generated token but the last were fed.
    assert_eq!(session.tokens().len(), prompt.len() + 11);
}

#[test]
fn sampled_generation_can_mix_polling_and_blocking() {
    let Ok(model) = Model::load(tiny()) else {
        eprintln!("no adapter; skipped");
        return;
    };
    let prompt = model.tokenize("Once upon");
    let sampling = SamplerConfig { temp: 0.8, seed: Some(7), ..SamplerConfig::default() };
    let opts = GenerateOptions { max_tokens: 8, sampling, stop_at_eog: false, ..Default::default() };
    let session_opts = SessionOptions { n_ctx: Some(32), n_batch: 8 };

    let mut a = model.session(&session_opts).unwrap();
    let expected: Vec<u32> =
        a.generate(&prompt, opts.clone()).unwrap().map(|c| c.unwrap().token.unwrap()).collect();

    let mut generation = model.session(&session_opts).unwrap().start_generation(&prompt, opts).unwrap();
    let mut got = Vec::new();
    let mut use_poll = true;
    loop {
        let item = if use_poll {
            match generation.poll_next() {
                Poll::Pending => continue,
                Poll::Ready(item) => item,
            }
        } else {
            generation.next()
        };
        use_poll = !use_poll;
        match item {
            Some(chunk) => got.extend(chunk.unwrap().token),
            None => break,
        }
    }
    assert_eq!(got, expected);
}

#[test]
fn submitted_steps_return_the_same_logits_as_blocking_ones() {
    let Ok(model) = Model::load(tiny()) else {
        eprintln!("no adapter; skipped");
        return;
    };
    let prompt = model.tokenize("The quick brown fox");
    let opts = SessionOptions { n_ctx: Some(32), n_batch: 2 };
    let mut a = model.session(&opts).unwrap();
    let want = a.eval(&prompt, wllm::Logits::Last).unwrap();
    let mut b = model.session(&opts).unwrap();
    // Two prompt halves back to back, the first never waited for.
    let (head, tail) = prompt.split_at(prompt.len() / 2);
    let first = b.submit(head, wllm::Logits::None, false).unwrap();
    let out = b.submit(tail, wllm::Logits::Last, true).unwrap().wait().unwrap();
    drop(first);
    assert_eq!(out.logits.len(), want.len());
    let max_diff = out.logits.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "logits differ by {max_diff}");
    let best = want.iter().enumerate().fold(0, |b, (i, &x)| if x > want[b] { i } else { b });
    assert_eq!(out.token, Some(best as u32));
}

#[test]
fn a_host_device_without_optional_features_runs_the_fallback_kernels() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let Ok(adapter) = pollster::block_on(instance.request_adapter(&Default::default())) else { return };
    let Ok((device, queue)) = pollster::block_on(adapter.request_device(&Default::default())) else { return };
    // No optional features: the fallback kernels run.
    let engine = Engine::from_device(&adapter, device, queue).unwrap();
    assert!(!engine.gpu().caps.f16 && !engine.gpu().caps.subgroups);
    let model = engine.load(tiny()).unwrap();
    let mut s = model.session(&SessionOptions { n_ctx: Some(16), n_batch: 4 }).unwrap();
    let n = s.generate(&model.tokenize("Hi"), greedy(3)).unwrap().count();
    assert_eq!(n, 3);
}

/// With every layer on the CPU nothing runs behind the caller's back: `poll_next` runs each
/// step blocking, and the tokens are the blocking generation's.
#[test]
fn polled_generation_on_the_cpu_steps_blocking_and_matches() {
    let opts = wllm::LoadOptions { gpu_layers: wllm::GpuLayers::Count(0), ..Default::default() };
    let model = Model::load_with(tiny(), &opts, &mut |_, _| {}).unwrap();
    let prompt = model.tokenize("Hello there, how are you today?");
    let session_opts = SessionOptions { n_ctx: Some(64), n_batch: 4 };
    let mut blocking = model.session(&session_opts).unwrap();
    let expected: Vec<u32> =
        blocking.generate(&prompt, greedy(6)).unwrap().map(|c| c.unwrap().token.unwrap()).collect();
    let mut generation = model.session(&session_opts).unwrap().start_generation(&prompt, greedy(6)).unwrap();
    let mut got = Vec::new();
    let mut polls = 0;
    loop {
        polls += 1;
        match generation.poll_next() {
            Poll::Pending => continue,
            Poll::Ready(Some(chunk)) => got.extend(chunk.unwrap().token),
            Poll::Ready(None) => break,
        }
    }
    assert_eq!(got, expected);
    assert!(polls > prompt.len().div_ceil(4), "one prompt batch per poll");
}
