//! One error vocabulary: the same condition is the same variant whichever call reports it, and
//! library messages name no command-line flags.

mod support;

use wllm::wgpu;
use wllm::{Engine, Error, GenerateOptions, Logits, Model, SamplerConfig, SessionOptions};

fn tiny() -> Option<Model> {
    match Model::load(support::data_dir().join("models/tiny-llama-q4_k_m.gguf")) {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("cannot load ({e}); skipped");
            None
        }
    }
}

fn greedy() -> GenerateOptions {
    GenerateOptions { max_tokens: 4, sampling: SamplerConfig::greedy(), ..Default::default() }
}

fn assert_overflow(e: Error, want_needed: usize, what: &str) {
    match e {
        Error::ContextOverflow { needed, n_ctx: 16 } => assert_eq!(needed, want_needed, "{what}"),
        e => panic!("{what}: {e:?}"),
    }
}

#[test]
fn a_full_context_is_context_overflow_from_every_call() {
    let Some(model) = tiny() else { return };
    let opts = SessionOptions { n_ctx: Some(16), n_batch: 8 };
    let prompt: Vec<u32> = (0..20).map(|i| 100 + i).collect();

    let mut session = model.session(&opts).unwrap();
    let e = session.eval(&prompt, Logits::Last).unwrap_err();
    assert!(!e.to_string().contains("--"), "a CLI flag in a library message: {e}");
    assert_overflow(e, 20, "eval");
    assert_overflow(session.eval_greedy(&prompt).unwrap_err(), 20, "eval_greedy");
    assert_overflow(session.generate(&prompt, greedy()).err().unwrap(), 20, "generate");
    // The cache holds what was fed before; the overflow counts it.
    session.eval(&prompt[..10], Logits::None).unwrap();
    assert_overflow(session.eval(&prompt[..7], Logits::None).unwrap_err(), 17, "eval after 10");
    if session.layer_split().0 == 0 {
        let polled = model.session(&opts).unwrap().start_generation(&prompt, greedy());
        assert_overflow(polled.err().unwrap(), 20, "start_generation");
    }
}

#[test]
fn an_empty_prompt_is_its_own_variant() {
    let Some(model) = tiny() else { return };
    let mut session = model.session(&SessionOptions::default()).unwrap();
    assert!(matches!(session.generate(&[], greedy()).err(), Some(Error::EmptyPrompt)));
}

#[test]
fn a_zero_context_names_the_option() {
    let Some(model) = tiny() else { return };
    let e = model.session(&SessionOptions { n_ctx: Some(0), n_batch: 8 }).err().unwrap();
    assert!(matches!(e, Error::InvalidOption { option: "n_ctx", .. }), "{e:?}");
}

/// A device created with WebGPU's downlevel limits (4 storage buffers per stage) cannot run
/// wllm's kernels: the handover says which limit, what the device has and what is needed.
#[test]
fn a_device_with_too_few_storage_buffers_is_unsuitable() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let Ok(adapter) = pollster::block_on(instance.request_adapter(&Default::default())) else {
        eprintln!("no adapter; skipped");
        return;
    };
    let desc =
        wgpu::DeviceDescriptor { required_limits: wgpu::Limits::downlevel_defaults(), ..Default::default() };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let have = device.limits().max_storage_buffers_per_shader_stage as u64;
    let e = Engine::from_device(&adapter, device, queue).expect_err("refused");
    match e {
        Error::DeviceUnsuitable { limit, have: h, need } => {
            assert_eq!((limit, h), ("storage buffers per shader stage", have));
            assert!(need > have, "{need} > {have}");
        }
        e => panic!("{e:?}"),
    }
}
