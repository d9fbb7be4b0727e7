//! The device a model runs on, opened by wllm or handed over by a host application.

use std::path::Path;
use std::sync::Arc;

use wllm_engine::{DeviceOptions, Gpu, wgpu};

use crate::error::{Error, Result};
use crate::model::{LoadOptions, Model};

/// A GPU device ready for wllm: the one wllm picks itself ([`Engine::new`]), or one the host
/// application created and keeps using for its own work ([`Engine::from_device`]). Cheap to
/// clone; every model loaded through it shares the device and its compiled kernels.
#[derive(Clone, Debug)]
pub struct Engine {
    gpu: Arc<Gpu>,
}

impl Engine {
    /// Picks the best adapter (discrete, integrated, virtual, then software) and opens it with
    /// every optional feature wllm can use.
    pub fn new(opts: &DeviceOptions) -> Result<Engine> {
        Ok(Engine { gpu: Gpu::new(opts)? })
    }

    /// Runs on a device the host created (a game's renderer, say), without creating another
    /// wgpu instance. wllm reads the features and limits the device was actually created with
    /// and uses only those: without `SHADER_F16` the KV cache is f32, without `SUBGROUP` the
    /// kernels reduce through workgroup memory, without timestamp queries profiling falls back
    /// to CPU timing. [`Engine::recommended_features`] and [`Engine::recommended_limits`] say
    /// what to request for the fastest kernels.
    ///
    /// Steps are submitted on `queue` beside the host's own work; drive generation with
    /// [`Generation::poll_next`](crate::Generation::poll_next) so the host's frame never waits.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use wllm::wgpu;
    ///
    /// let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    /// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))?;
    /// let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
    ///     required_features: wllm::Engine::recommended_features(&adapter),
    ///     required_limits: wllm::Engine::recommended_limits(&adapter),
    ///     ..Default::default()
    /// }))?;
    /// // The host keeps its clones of `device` and `queue` for rendering.
    /// let engine = wllm::Engine::from_device(&adapter, device.clone(), queue.clone())?;
    /// let model = engine.load("model.gguf")?;
    /// # Ok(()) }
    /// ```
    pub fn from_device(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Result<Engine> {
        Self::from_device_info(adapter.get_info(), device, queue)
    }

    /// [`Engine::from_device`] for hosts that keep only the adapter's description.
    pub fn from_device_info(
        info: wgpu::AdapterInfo,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Engine> {
        let limits = device.limits();
        // Saying so here beats a shader error on the first load.
        const STORAGE_BUFFERS: u32 = wllm_engine::device::STORAGE_BUFFERS_NEEDED;
        if limits.max_storage_buffers_per_shader_stage < STORAGE_BUFFERS {
            return Err(Error::DeviceUnsuitable {
                limit: "storage buffers per shader stage",
                have: limits.max_storage_buffers_per_shader_stage.into(),
                need: STORAGE_BUFFERS.into(),
            });
        }
        Ok(Engine { gpu: Gpu::from_device(device, queue, info) })
    }

    /// The optional features wllm uses when the adapter has them: f16 arithmetic, subgroups,
    /// timestamp queries (profiling), and mappable device buffers on shared-memory adapters.
    pub fn recommended_features(adapter: &wgpu::Adapter) -> wgpu::Features {
        let info = adapter.get_info();
        let mut wanted = wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP
            | wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        if matches!(info.device_type, wgpu::DeviceType::IntegratedGpu | wgpu::DeviceType::Cpu) {
            wanted |= wgpu::Features::MAPPABLE_PRIMARY_BUFFERS;
        }
        adapter.features() & wanted
    }

    /// The adapter's own limits: large models' weights and KV caches want storage bindings
    /// beyond the WebGPU defaults (128 MiB).
    pub fn recommended_limits(adapter: &wgpu::Adapter) -> wgpu::Limits {
        adapter.limits()
    }

    /// The device, its capabilities and kernel cache.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Loads a model onto this device with default options.
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Model> {
        self.load_with(path, &LoadOptions::default(), &mut |_, _| {})
    }

    /// Loads a model onto this device; `opts.gpu` is replaced by this engine's device.
    pub fn load_with(
        &self,
        path: impl AsRef<Path>,
        opts: &LoadOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Model> {
        let opts = LoadOptions { gpu: Some(self.gpu.clone()), ..opts.clone() };
        Model::load_with(path, &opts, progress)
    }
}
