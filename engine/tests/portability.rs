//! Every WGSL variant the engine can build is validated by naga and translated to SPIR-V
//! (Vulkan), MSL (Metal) and HLSL (DX12), for devices with and without the optional features.
//! CI runs Vulkan for real (lavapipe); Metal and DX12 are exercised only through this check.
//! Each variant's uniform structs are also held to the Rust structs the engine uploads.

use std::collections::HashSet;

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use wllm_engine::Caps;
use wllm_engine::pipeline::wgsl_for;
use wllm_engine::variants;

fn caps(f16: bool, subgroups: bool) -> Caps {
    Caps {
        f16,
        subgroups,
        fixed_subgroup_size: None,
        min_subgroup_size: if subgroups { 4 } else { 0 },
        timestamps: false,
        timestamps_in_passes: false,
        unified_memory: false,
        mappable_primary_buffers: false,
    }
}

#[test]
fn every_variant_translates_to_spirv_msl_and_hlsl() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (f16, subgroups) in [(true, true), (false, false), (true, false), (false, true)] {
        let caps = caps(f16, subgroups);
        // wgpu grants SHADER_FLOAT16_IN_FLOAT32 (pack/unpack2x16float) on every device.
        let mut naga_caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        if f16 {
            naga_caps |= Capabilities::SHADER_FLOAT16;
        }
        if subgroups {
            naga_caps |= Capabilities::SUBGROUP;
        }
        let subgroup_stages =
            if subgroups { naga::valid::ShaderStages::COMPUTE } else { naga::valid::ShaderStages::empty() };
        let subgroup_ops = if subgroups {
            naga::valid::SubgroupOperationSet::all()
        } else {
            naga::valid::SubgroupOperationSet::empty()
        };
        for key in variants::all(&caps) {
            count += 1;
            let label = key.label();
            let (src, _) = match wgsl_for(&caps, &key) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{label}: preprocess: {e}"));
                    continue;
                }
            };
            let module = match naga::front::wgsl::parse_str(&src) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{label}: parse: {}", e.emit_to_string(&src)));
                    continue;
                }
            };
            let mut validator = Validator::new(ValidationFlags::all(), naga_caps);
            validator.subgroup_stages(subgroup_stages);
            validator.subgroup_operations(subgroup_ops);
            let info = match validator.validate(&module) {
                Ok(i) => i,
                Err(e) => {
                    failures.push(format!("{label}: validate: {}", e.emit_to_string(&src)));
                    continue;
                }
            };
            let constants: naga::back::PipelineConstants = variants::constants(&key).into_iter().collect();
            let entry = Some((naga::ShaderStage::Compute, "main"));
            let (module, info) =
                match naga::back::pipeline_constants::process_overrides(&module, &info, entry, &constants) {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{label}: overrides: {e}"));
                        continue;
                    }
                };
            let spv_opts = spv::Options::default();
            if let Err(e) = spv::write_vec(&module, &info, &spv_opts, None) {
                failures.push(format!("{label}: SPIR-V: {e}"));
            }
            let msl_opts =
                msl::Options { lang_version: (2, 4), fake_missing_bindings: true, ..Default::default() };
            let msl_pipe = msl::PipelineOptions {
                entry_point: Some((naga::ShaderStage::Compute, "main".into())),
                ..Default::default()
            };
            if let Err(e) = msl::write_string(&module, &info, &msl_opts, &msl_pipe) {
                failures.push(format!("{label}: MSL: {e}"));
            }
            let hlsl_opts = hlsl::Options {
                shader_model: hlsl::ShaderModel::V6_2,
                fake_missing_bindings: true,
                ..Default::default()
            };
            let hlsl_pipe =
                hlsl::PipelineOptions { entry_point: Some((naga::ShaderStage::Compute, "main".into())) };
            let mut out = String::new();
            let mut w = hlsl::Writer::new(&mut out, &hlsl_opts, &hlsl_pipe);
            if let Err(e) = w.write(&module, &info, None) {
                failures.push(format!("{label}: HLSL: {e}"));
            }
        }
    }
    eprintln!("{count} variants translated");
    assert!(failures.is_empty(), "{} of {count} failed:\n{}", failures.len(), failures.join("\n"));
}

/// Hosts that hand wllm their own device may have created it with the WebGPU default limits;
/// `STORAGE_BUFFERS_NEEDED` is what `wllm::Engine::from_device` checks them against.
#[test]
fn every_variant_fits_the_storage_buffer_limit() {
    let caps = caps(true, true);
    let mut most = 0;
    for key in variants::all(&caps) {
        let (src, _) = wgsl_for(&caps, &key).expect("preprocess");
        let module = naga::front::wgsl::parse_str(&src).expect("parse");
        let n = module
            .global_variables
            .iter()
            .filter(|(_, v)| matches!(v.space, naga::AddressSpace::Storage { .. }))
            .count() as u32;
        most = most.max(n);
        assert!(
            n <= wllm_engine::device::STORAGE_BUFFERS_NEEDED,
            "{} binds {n} storage buffers",
            key.label()
        );
    }
    assert_eq!(most, wllm_engine::device::STORAGE_BUFFERS_NEEDED, "the constant should be tight");
}

/// A WGSL struct as naga lays it out: member names and byte offsets, and its size; `None` when
/// the module declares no struct of that name.
fn wgsl_layout(module: &naga::Module, name: &str) -> Option<(Vec<(String, usize)>, usize)> {
    module.types.iter().find_map(|(_, ty)| match &ty.inner {
        naga::TypeInner::Struct { members, span } if ty.name.as_deref() == Some(name) => Some((
            members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect(),
            *span as usize,
        )),
        _ => None,
    })
}

/// What differs between a Rust layout and a WGSL one, naming the first differing field.
fn layout_mismatch(
    rust: &[(&str, usize)],
    rust_size: usize,
    wgsl: &[(String, usize)],
    span: usize,
) -> Option<String> {
    let n = rust.len().max(wgsl.len());
    for i in 0..n {
        let r = rust.get(i).map(|&(name, off)| (name.to_string(), off));
        let w = wgsl.get(i).cloned();
        if r != w {
            return Some(format!("field index {i}: Rust {r:?}, WGSL {w:?}"));
        }
    }
    (rust_size != span).then(|| format!("size: Rust {rust_size} bytes, WGSL {span}"))
}

/// The per-batch `Step` uniform: the engine writes `[pos0, n_tokens, 0, 0]` as a `[u32; 4]`.
const STEP_LAYOUT: [(&str, usize); 4] = [("pos0", 0), ("n_tokens", 4), ("_pad0", 8), ("_pad1", 12)];

/// Every op's `#[repr(C)]` params struct has the field names, offsets and size of the WGSL
/// struct it is uploaded into, in every variant of every kernel file that declares it, with
/// and without the optional features; and every `Step` struct is the `[u32; 4]` the engine
/// writes.
#[test]
fn params_structs_match_their_wgsl_twins() {
    let layouts = wllm_engine::ops::param_layouts();
    let mut checked: HashSet<&str> = HashSet::new();
    // One report per file and struct: the same mismatch recurs in all its variants.
    let mut failed: HashSet<(String, &str)> = HashSet::new();
    let mut failures = Vec::new();
    let mut fail = |file: &str, name: &'static str, message: String| {
        if failed.insert((file.to_string(), name)) {
            failures.push(message);
        }
    };
    for (f16, subgroups) in [(true, true), (false, false), (true, false), (false, true)] {
        let caps = caps(f16, subgroups);
        for key in variants::all(&caps) {
            let label = key.label();
            let (src, spec) = wgsl_for(&caps, &key).expect("preprocess");
            let module = naga::front::wgsl::parse_str(&src).expect("parse");
            let ours: Vec<_> = layouts.iter().filter(|(file, ..)| *file == spec.file).collect();
            if ours.is_empty() {
                fail(spec.file, "Params", format!("{label}: {} has no entry in param_layouts()", spec.file));
            }
            for &&(file, name, rust) in &ours {
                checked.insert(file);
                let Some((wgsl, span)) = wgsl_layout(&module, name) else {
                    fail(file, name, format!("{label}: no WGSL struct {name}"));
                    continue;
                };
                if let Some(m) = layout_mismatch(rust.fields, rust.size, &wgsl, span) {
                    fail(file, name, format!("{label}: {name}: {m}"));
                }
                let uniform = module.global_variables.iter().any(|(_, v)| {
                    v.space == naga::AddressSpace::Uniform && module.types[v.ty].name.as_deref() == Some(name)
                });
                if !uniform {
                    fail(file, name, format!("{label}: {name} is not bound as a uniform"));
                }
            }
            if let Some((wgsl, span)) = wgsl_layout(&module, "Step")
                && let Some(m) = layout_mismatch(&STEP_LAYOUT, size_of::<[u32; 4]>(), &wgsl, span)
            {
                fail(spec.file, "Step", format!("{label}: Step: {m}"));
            }
        }
    }
    for (file, name, _) in &layouts {
        assert!(
            checked.contains(file),
            "{file}: param_layouts() lists its {name}, but no variant is built from it"
        );
    }
    assert!(failures.is_empty(), "{} params structs differ:\n{}", failures.len(), failures.join("\n"));
}
