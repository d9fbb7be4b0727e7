//! One cache of compute pipelines, keyed by typed per-op keys. A key's label names the wgpu
//! pipeline, so validation errors and profiles say which kernel and variant they are about.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{EngineError, Result};
use crate::gpu::device::{Caps, Gpu};
use crate::gpu::shader;

/// What a key expands to: a shader file, its preprocessor defines, and override constants.
#[derive(Clone, Debug, Default)]
pub struct KernelSpec {
    pub file: &'static str,
    pub defines: Vec<(String, String)>,
    pub constants: Vec<(String, f64)>,
}

impl KernelSpec {
    pub fn new(file: &'static str) -> Self {
        KernelSpec { file, ..Default::default() }
    }
    pub fn define(mut self, name: &str) -> Self {
        self.defines.push((name.to_string(), String::new()));
        self
    }
    pub fn define_if(self, cond: bool, name: &str) -> Self {
        if cond { self.define(name) } else { self }
    }
    /// The defines of one side (`K` or `V`) of the KV cache: `{side}_F16`, or `{side}_QUANT`
    /// with `{side}_Q4` for Q4_0; none for f32.
    pub fn kv_side(self, side: &str, ty: crate::kv_type::KvType) -> Self {
        use crate::kv_type::KvType;
        match ty {
            KvType::F32 => self,
            KvType::F16 => self.define(&format!("{side}_F16")),
            KvType::Q8_0 => self.define(&format!("{side}_QUANT")),
            KvType::Q4_0 => self.define(&format!("{side}_QUANT")).define(&format!("{side}_Q4")),
        }
    }
    pub fn define_value(mut self, name: &str, value: impl ToString) -> Self {
        self.defines.push((name.to_string(), value.to_string()));
        self
    }
    pub fn constant(mut self, name: &str, value: f64) -> Self {
        self.constants.push((name.to_string(), value));
        self
    }
}

/// Implemented by every op's key type.
pub trait Kernel: std::fmt::Debug {
    /// Short, unique, human-readable name, e.g. `matvec.Q4_K.add`.
    fn label(&self) -> String;
    fn spec(&self) -> KernelSpec;
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PipelineKey {
    Matvec(crate::gpu::ops::matvec::MatvecKey),
    Matmul(crate::gpu::ops::matmul::MatmulKey),
    Lane(crate::gpu::ops::lane::LaneKey),
    GetRows(crate::gpu::ops::get_rows::GetRowsKey),
    Norm(crate::gpu::ops::norm::NormKey),
    Rope(crate::gpu::ops::rope::RopeKey),
    Attention(crate::gpu::ops::attention::AttentionKey),
    Elementwise(crate::gpu::ops::elementwise::ElementwiseKey),
    Argmax(crate::gpu::ops::argmax::ArgmaxKey),
    Logprob(crate::gpu::ops::logprob::LogprobKey),
    Moe(crate::gpu::ops::moe::MoeKey),
    DeltaNet(crate::gpu::ops::delta_net::DeltaNetKey),
    DeltaRule(crate::gpu::ops::delta_rule::DeltaRuleKey),
    Hadamard(crate::gpu::ops::hadamard::HadamardKey),
}

impl PipelineKey {
    fn kernel(&self) -> &dyn Kernel {
        match self {
            PipelineKey::Matvec(k) => k,
            PipelineKey::Matmul(k) => k,
            PipelineKey::Lane(k) => k,
            PipelineKey::GetRows(k) => k,
            PipelineKey::Norm(k) => k,
            PipelineKey::Rope(k) => k,
            PipelineKey::Attention(k) => k,
            PipelineKey::Elementwise(k) => k,
            PipelineKey::Argmax(k) => k,
            PipelineKey::Logprob(k) => k,
            PipelineKey::Moe(k) => k,
            PipelineKey::DeltaNet(k) => k,
            PipelineKey::DeltaRule(k) => k,
            PipelineKey::Hadamard(k) => k,
        }
    }
    pub fn label(&self) -> String {
        self.kernel().label()
    }
}

/// A built pipeline and its label.
#[derive(Debug)]
pub struct Pipeline {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    /// Time spent building pipelines (preprocessing, naga, the driver's compile), in ns.
    build_ns: std::sync::atomic::AtomicU64,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Time spent building the pipelines so far: what a first use of each kernel costs.
    pub fn build_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.build_ns.load(std::sync::atomic::Ordering::Relaxed))
    }
    /// Every key built so far (the portability test translates them all).
    pub fn keys(&self) -> Vec<PipelineKey> {
        self.map.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }
}

/// The final WGSL for a key: preprocessed, with the enable directives the features call for.
pub fn wgsl_for(caps: &Caps, key: &PipelineKey) -> Result<(String, KernelSpec)> {
    let spec = key.kernel().spec();
    let mut defines = spec.defines.clone();
    if caps.f16 {
        defines.push(("HAS_F16".into(), String::new()));
    }
    if caps.subgroups {
        defines.push(("HAS_SUBGROUPS".into(), String::new()));
    }
    let body = shader::preprocess(spec.file, &defines)?;
    let mut src = String::new();
    if caps.f16 {
        src.push_str("enable f16;\n");
    }
    // naga exposes subgroup builtins through the device feature; it rejects the WGSL
    // `enable subgroups;` directive (gfx-rs/wgpu#5555).
    src.push_str(&body);
    Ok((src, spec))
}

impl Gpu {
    /// The bind group layout of group 0 exactly as the shader declares it. Automatic layouts
    /// drop bindings a variant does not use, which would make one Rust binding list fit only
    /// some variants.
    fn layout_for(&self, label: &str, src: &str) -> Result<wgpu::BindGroupLayout> {
        let module = naga::front::wgsl::parse_str(src)
            .map_err(|e| EngineError::Shader { name: label.to_string(), message: e.emit_to_string(src) })?;
        let mut entries = Vec::new();
        for (_, var) in module.global_variables.iter() {
            let Some(rb) = &var.binding else { continue };
            if rb.group != 0 {
                return Err(EngineError::Shader {
                    name: label.to_string(),
                    message: "only bind group 0 is used".into(),
                });
            }
            let ty = match var.space {
                naga::AddressSpace::Uniform => wgpu::BufferBindingType::Uniform,
                naga::AddressSpace::Storage { access } => wgpu::BufferBindingType::Storage {
                    read_only: !access.contains(naga::StorageAccess::STORE),
                },
                _ => continue,
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: rb.binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
                count: None,
            });
        }
        Ok(self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        }))
    }

    /// Returns the pipeline for `key`, building it on first use.
    pub fn pipeline(&self, key: PipelineKey) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.pipelines.map.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(p);
        }
        let start = std::time::Instant::now();
        let label = key.label();
        let (src, spec) = wgsl_for(&self.caps, &key)?;
        if let Ok(dir) = std::env::var("WLLM_DUMP_WGSL")
            && !dir.is_empty()
        {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(std::path::Path::new(&dir).join(format!("{label}.wgsl")), &src);
        }
        let layout = self.layout_for(&label, &src)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let constants: Vec<(&str, f64)> = spec.constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                // Every kernel writes its workgroup memory before reading it.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(EngineError::Shader { name: label, message: err.to_string() });
        }
        let spent = start.elapsed().as_nanos() as u64;
        self.pipelines.build_ns.fetch_add(spent, std::sync::atomic::Ordering::Relaxed);
        let p = Arc::new(Pipeline { label, pipeline, layout });
        if let Ok(mut m) = self.pipelines.map.lock() {
            m.insert(key, p.clone());
        }
        Ok(p)
    }
}
