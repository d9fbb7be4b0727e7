//! Adapter choice, device creation with the adapter's real limits, and the optional features
//! the kernels can use.

use std::fmt;
use std::sync::Arc;

use crate::error::{EngineError, Result};
use crate::gpu::pipeline::PipelineCache;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl Backend {
    pub fn parse(s: &str) -> Result<Backend> {
        match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Ok(Backend::Vulkan),
            "metal" | "mtl" => Ok(Backend::Metal),
            "dx12" | "d3d12" => Ok(Backend::Dx12),
            "gl" | "gles" | "opengl" => Ok(Backend::Gl),
            _ => Err(EngineError::UnknownBackend(s.to_string())),
        }
    }
    /// Why this backend cannot exist here (Metal off Apple platforms, DX12 off Windows).
    fn not_on_this_platform(self) -> Option<&'static str> {
        match self {
            Backend::Metal if !cfg!(target_vendor = "apple") => Some(
                "Metal exists only on macOS and iOS; here use vulkan (or gl), or leave the backend unset to pick the best",
            ),
            Backend::Dx12 if !cfg!(windows) => Some(
                "DX12 exists only on Windows; here use vulkan (or gl), or leave the backend unset to pick the best",
            ),
            _ => None,
        }
    }

    fn wgpu(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
    fn from_wgpu(b: wgpu::Backend) -> Option<Backend> {
        match b {
            wgpu::Backend::Vulkan => Some(Backend::Vulkan),
            wgpu::Backend::Metal => Some(Backend::Metal),
            wgpu::Backend::Dx12 => Some(Backend::Dx12),
            wgpu::Backend::Gl => Some(Backend::Gl),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vulkan => "vulkan",
            Backend::Metal => "metal",
            Backend::Dx12 => "dx12",
            Backend::Gl => "gl",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Most storage buffers any kernel binds (checked by the portability test): the grouped expert
/// matmul with a GLU gate and expert biases (gpt-oss) binds eight, WebGPU's default limit. A
/// device created with a lower `max_storage_buffers_per_shader_stage` cannot run every model.
pub const STORAGE_BUFFERS_NEEDED: u32 = 8;

/// How to pick and open a device.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// Restrict to one backend; `None` reads `WLLM_BACKEND`, then tries all.
    pub backend: Option<Backend>,
    /// Pretend these optional features are absent (tests exercise the fallback paths).
    pub disable_f16: bool,
    pub disable_subgroups: bool,
    pub disable_timestamps: bool,
    /// Force kernel shapes (tests run both linear paths on one adapter).
    pub tuning: Option<Tuning>,
}

/// Optional capabilities the kernels branch on.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    pub f16: bool,
    pub subgroups: bool,
    /// The subgroup size when the adapter guarantees a single one (min == max).
    pub fixed_subgroup_size: Option<u32>,
    /// The smallest subgroup the adapter may run (0 without subgroups).
    pub min_subgroup_size: u32,
    pub timestamps: bool,
    pub timestamps_in_passes: bool,
    /// Integrated and CPU adapters share memory with the host.
    pub unified_memory: bool,
    pub mappable_primary_buffers: bool,
}

/// Kernel-shape choices made once per device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Linear layers with one output row per invocation (`linear_lane.wgsl`) rather than the
    /// reduction and tiled kernels: right where a subgroup is a SIMD register of one CPU core
    /// (software adapters). `WLLM_LINEAR=lane|reduce` overrides it.
    pub row_per_lane: bool,
    /// Prefill steps run the Gated DeltaNet delta rule in its chunked form (64-token chunks
    /// solved in parallel) rather than token by token. The chunked form does as much arithmetic
    /// as the recurrent one and more passes, so it only wins where many workgroups run at once:
    /// not on software adapters. `WLLM_DELTA_RULE=chunked|recurrent` overrides it.
    pub chunked_delta_rule: bool,
    /// One-token steps over a context of 2048 or more positions split their attention's keys
    /// across workgroups (flash-decoding) instead of one workgroup walking all of them per
    /// group of heads: a GPU's many compute units would otherwise idle through a deep decode.
    /// Not on software adapters, whose few threads are busy either way and which pay for the
    /// extra pass (lavapipe, SmolLM2: 12 against 18 tokens/s at depth 512, even at 4096).
    /// `WLLM_DECODE_ATTENTION=split|whole` overrides it.
    pub split_decode_attention: bool,
    /// Prompt steps stage keys and values in workgroup-memory tiles shared by 16 tokens
    /// ([`crate::gpu::ops::attention::attention_tiled`]) rather than each token walking the
    /// cache: a GPU then reads its cache 16 times less often per prompt. Not on software
    /// adapters, where workgroup memory is ordinary memory behind the same caches, and staging
    /// only adds work (lavapipe, a 128-token chunk of SmolLM2 after 2048 positions: 193 ms tiled
    /// against 122 ms by rows). `WLLM_PREFILL_ATTENTION=tiled|rows` overrides it.
    pub tiled_prefill_attention: bool,
}

impl Tuning {
    fn for_adapter(info: &wgpu::AdapterInfo) -> Tuning {
        let software = info.device_type == wgpu::DeviceType::Cpu;
        let row_per_lane = match std::env::var("WLLM_LINEAR").as_deref() {
            Ok("lane") => true,
            Ok("reduce") => false,
            _ => software,
        };
        let chunked_delta_rule = match std::env::var("WLLM_DELTA_RULE").as_deref() {
            Ok("chunked") => true,
            Ok("recurrent") => false,
            _ => !software,
        };
        let split_decode_attention = match std::env::var("WLLM_DECODE_ATTENTION").as_deref() {
            Ok("split") => true,
            Ok("whole") => false,
            _ => !software,
        };
        let tiled_prefill_attention = match std::env::var("WLLM_PREFILL_ATTENTION").as_deref() {
            Ok("tiled") => true,
            Ok("rows") => false,
            _ => !software,
        };
        Tuning { row_per_lane, chunked_delta_rule, split_decode_attention, tiled_prefill_attention }
    }
}

/// The GPU the engine runs on, with its pipeline cache.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub caps: Caps,
    pub tuning: Tuning,
    pub pipelines: PipelineCache,
    pub codebooks: crate::gpu::codebook::Codebooks,
    /// Bytes of the adapter's largest device-local memory heap, where the API tells (Vulkan).
    pub device_memory: Option<u64>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu").field("adapter", &self.info.name).field("caps", &self.caps).finish()
    }
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u32 {
    // GL lacks storage-buffer features we rely on in places; it is the last resort.
    match b {
        wgpu::Backend::Gl => 1,
        _ => 0,
    }
}

/// The size of the largest device-local heap, read from Vulkan (wgpu has no portable query).
#[cfg(not(any(target_arch = "wasm32", target_vendor = "apple")))]
fn device_local_heap(adapter: &wgpu::Adapter) -> Option<u64> {
    // SAFETY: the hal adapter is only read, and the guard outlives every use of it.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: a valid physical device of this instance.
    let props = unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
    const DEVICE_LOCAL: u32 = 0x1;
    let n = (props.memory_heap_count as usize).min(props.memory_heaps.len());
    props.memory_heaps[..n].iter().filter(|h| h.flags.as_raw() & DEVICE_LOCAL != 0).map(|h| h.size).max()
}

#[cfg(any(target_arch = "wasm32", target_vendor = "apple"))]
fn device_local_heap(_adapter: &wgpu::Adapter) -> Option<u64> {
    None
}

impl Gpu {
    /// Picks an adapter (discrete, then integrated, then virtual, then software) and opens it.
    pub fn new(opts: &DeviceOptions) -> Result<Arc<Gpu>> {
        let backend = match opts.backend {
            Some(b) => Some(b),
            None => match std::env::var("WLLM_BACKEND") {
                Ok(s) if !s.is_empty() => Some(Backend::parse(&s).map_err(|e| {
                    EngineError::InvalidArgument(format!("environment variable WLLM_BACKEND: {e}"))
                })?),
                _ => None,
            },
        };
        // GL is only a fallback: probing it (EGL) is slow and noisy where no display exists.
        let tries = match backend {
            Some(b) => vec![b.wgpu()],
            None => vec![wgpu::Backends::PRIMARY, wgpu::Backends::GL],
        };
        let mut adapters = Vec::new();
        for backends in tries {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends,
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            adapters = pollster::block_on(instance.enumerate_adapters(backends));
            adapters.retain(|a| Backend::from_wgpu(a.get_info().backend).is_some());
            if !adapters.is_empty() {
                break;
            }
        }
        adapters.sort_by_key(|a| {
            let i = a.get_info();
            (type_rank(i.device_type), backend_rank(i.backend))
        });
        let Some(adapter) = adapters.into_iter().next() else {
            let which = backend.map(|b| format!(" for backend {b}")).unwrap_or_default();
            if let Some(why) = backend.and_then(Backend::not_on_this_platform) {
                return Err(EngineError::NoAdapter(format!("{which}: {why}")));
            }
            return Err(EngineError::NoAdapter(format!(
                "{which}: install a Vulkan, Metal or DX12 driver (on Linux without a GPU, Mesa's lavapipe: mesa-vulkan-drivers)"
            )));
        };
        Self::open(adapter, opts)
    }

    fn open(adapter: wgpu::Adapter, opts: &DeviceOptions) -> Result<Arc<Gpu>> {
        let info = adapter.get_info();
        let available = adapter.features();
        let mut wanted = wgpu::Features::empty();
        if !opts.disable_f16 {
            wanted |= wgpu::Features::SHADER_F16;
        }
        if !opts.disable_subgroups {
            wanted |= wgpu::Features::SUBGROUP;
        }
        if !opts.disable_timestamps {
            wanted |= wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        }
        if is_unified(&info) {
            // Lets weights be written into device buffers straight from the memory map.
            wanted |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        }
        let features = available & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("wllm"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| EngineError::RequestDevice { adapter: info.name.clone(), message: e.to_string() })?;
        let tuning = opts.tuning.unwrap_or_else(|| Tuning::for_adapter(&info));
        let device_memory = device_local_heap(&adapter);
        Ok(Gpu::assemble(device, queue, info, tuning, device_memory))
    }

    /// The capabilities a device was created with, and the engine state around it.
    fn assemble(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        tuning: Tuning,
        device_memory: Option<u64>,
    ) -> Arc<Gpu> {
        let features = device.features();
        let limits = device.limits();
        let caps = Caps {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            fixed_subgroup_size: (info.subgroup_min_size == info.subgroup_max_size
                && info.subgroup_min_size > 0)
                .then_some(info.subgroup_min_size),
            min_subgroup_size: if features.contains(wgpu::Features::SUBGROUP) {
                info.subgroup_min_size
            } else {
                0
            },
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_in_passes: features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            unified_memory: is_unified(&info),
            mappable_primary_buffers: features.contains(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        };
        Arc::new(Gpu {
            device,
            queue,
            info,
            limits,
            caps,
            tuning,
            pipelines: PipelineCache::default(),
            codebooks: Default::default(),
            device_memory,
        })
    }

    /// Runs on a device the host application created (a game's renderer, say). The engine uses
    /// only the features and limits that device was created with.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: wgpu::AdapterInfo) -> Arc<Gpu> {
        let tuning = Tuning::for_adapter(&info);
        Gpu::assemble(device, queue, info, tuning, None)
    }

    pub fn backend(&self) -> Backend {
        Backend::from_wgpu(self.info.backend).unwrap_or(Backend::Vulkan)
    }

    pub fn adapter_name(&self) -> &str {
        &self.info.name
    }

    pub fn device_type(&self) -> &'static str {
        match self.info.device_type {
            wgpu::DeviceType::DiscreteGpu => "discrete GPU",
            wgpu::DeviceType::IntegratedGpu => "integrated GPU",
            wgpu::DeviceType::VirtualGpu => "virtual GPU",
            wgpu::DeviceType::Cpu => "software (CPU) adapter",
            wgpu::DeviceType::Other => "other adapter",
        }
    }

    /// Largest byte range one storage binding may cover, rounded down to 256 bytes.
    pub fn max_binding(&self) -> u64 {
        let b = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        b & !255
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| EngineError::gpu("poll", e))?;
        Ok(())
    }
}

/// Integrated GPUs and CPU adapters share host memory.
fn is_unified(info: &wgpu::AdapterInfo) -> bool {
    matches!(info.device_type, wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::Cpu)
}
