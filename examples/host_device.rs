//! A host that owns the GPU: creates its own wgpu instance, adapter and device as a game would,
//! renders a frame every 16.7 ms (a clear pass into an offscreen target), and advances
//! generation by polling once per frame on that same device. The frame never waits for the
//! model: a frame in which the GPU is still computing the token just renders.
//!
//! On a hardware GPU the host's submissions return at once. On a software adapter (Mesa's
//! lavapipe) the queue runs submissions in order on the CPU, so the host's next submit waits
//! for the step in flight; the printed render times show that cost.
//!
//! `cargo run --release --example host_device -- MODEL.gguf [PROMPT] [--tokens N]`
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context;
use wllm::wgpu;
use wllm::{Engine, GenerateOptions, SamplerConfig, SessionOptions};

const FRAME: Duration = Duration::from_micros(16_667);
const SIZE: u32 = 512;

/// The host's own rendering: one clear pass per frame, its color changing with time.
struct Renderer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    view: wgpu::TextureView,
}

impl Renderer {
    fn new(device: wgpu::Device, queue: wgpu::Queue) -> Renderer {
        let target = device.create_texture(&wgpu::TextureDescriptor {
            label: Some("frame"),
            size: wgpu::Extent3d { width: SIZE, height: SIZE, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8Unorm,
            usage: wgpu::TextureUsages::RENDER_ATTACHMENT,
            view_formats: &[],
        });
        let view = target.create_view(&Default::default());
        Renderer { device, queue, view }
    }

    fn frame(&self, t: f64) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("clear"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &self.view,
                depth_slice: None,
                resolve_target: None,
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color { r: t.sin().abs(), g: 0.2, b: 0.4, a: 1.0 }),
                    store: wgpu::StoreOp::Store,
                },
            })],
            ..Default::default()
        });
        self.queue.submit([enc.finish()]);
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = args.iter().filter(|a| !a.starts_with("--"));
    let path = positional.next().context("usage: host_device MODEL [PROMPT] [--tokens N]")?;
    let prompt = positional.next().map(String::as_str).unwrap_or("The three primary colors are");
    let tokens: usize = match args.iter().position(|a| a == "--tokens") {
        Some(i) => args.get(i + 1).context("--tokens needs a value")?.parse()?,
        None => 24,
    };

    // What a game does at start-up. wllm creates no instance of its own.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("game"),
        required_features: Engine::recommended_features(&adapter),
        required_limits: Engine::recommended_limits(&adapter),
        ..Default::default()
    }))?;
    println!("adapter: {} ({:?})", adapter.get_info().name, adapter.get_info().backend);

    let engine = Engine::from_device(&adapter, device.clone(), queue.clone())?;
    let model = engine.load(path)?;
    let session = model.session(&SessionOptions { n_ctx: Some(512), ..Default::default() })?;
    let opts =
        GenerateOptions { max_tokens: tokens, sampling: SamplerConfig::greedy(), ..Default::default() };
    let renderer = Renderer::new(device, queue);

    let start = Instant::now();
    let mut generation = session.start_generation(&model.tokenize(prompt), opts)?;
    let (mut frames, mut worst, mut busy_total, mut since_token) =
        (0u32, Duration::ZERO, Duration::ZERO, 0u32);
    let mut text = String::new();
    loop {
        let frame_start = Instant::now();
        renderer.frame(start.elapsed().as_secs_f64());
        let render = frame_start.elapsed();
        let step = generation.poll_next();
        let busy = frame_start.elapsed();
        frames += 1;
        since_token += 1;
        worst = worst.max(busy);
        busy_total += busy;
        match step {
            Poll::Pending => {}
            Poll::Ready(Some(chunk)) => {
                let chunk = chunk?;
                text.push_str(&chunk.text);
                println!(
                    "frame {frames:4}  render {:6.2} ms  poll {:5.2} ms  token {:?} after {since_token} frame(s): {:?}",
                    render.as_secs_f64() * 1e3,
                    (busy - render).as_secs_f64() * 1e3,
                    chunk.token,
                    chunk.text
                );
                since_token = 0;
            }
            Poll::Ready(None) => break,
        }
        // Frame pacing, as vsync would do it.
        if let Some(rest) = FRAME.checked_sub(frame_start.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    println!("\n{prompt}{text}");
    println!(
        "{frames} frames in {:.2} s; frame work mean {:.2} ms, worst {:.2} ms (budget {:.1} ms); stop: {:?}",
        start.elapsed().as_secs_f64(),
        busy_total.as_secs_f64() * 1e3 / frames as f64,
        worst.as_secs_f64() * 1e3,
        FRAME.as_secs_f64() * 1e3,
        generation.stop_reason()
    );
    Ok(())
}
