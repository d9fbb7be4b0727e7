//! How each GGUF-named tensor is made from the stored ones. Decided once when a model opens,
//! with every shape and dtype checked, so producing the bytes later cannot fail.
//!
//! GGUF semantics the plan reproduces (convert_hf_to_gguf.py at llama.cpp 0c1e570):
//! dims in ggml order (the reverse of PyTorch's); 1-D tensors and the MoE router in F32, as
//! the converter writes them and kernels expect; Gemma, Qwen3.5 and Qwen3-Next norm weights
//! as `1 + w`; per-expert matrices stacked into one 3-D tensor per layer and projection; the
//! Gated DeltaNet's `ssm_a = -exp(A_log)`, squeezed convolution and split `in_proj_qkvz`.

use std::collections::{BTreeMap, HashMap};

use super::convert::Pick;
use super::dtype::Dtype;
use super::error::SafetensorsError;
use super::files::{RawTensor, SafetensorsFiles};
use super::names::{DeltaNetPart, ExpertPart, OssPart, OssProj, Slot, classify};
use crate::ggml_type::GgmlType;
use crate::model::{ModelConfig, TensorMeta};

/// ggml tensors have at most this many dims.
const GGML_MAX_DIMS: usize = 4;

#[derive(Clone, Debug)]
pub(super) enum Recipe {
    /// The stored bytes, untouched.
    Borrow(usize),
    /// Widened to F32 with `shift` added to every element.
    F32 { src: usize, shift: f32 },
    /// Expert matrices, expert 0 first.
    Stack(Vec<usize>),
    /// Gate (first) or up (second) half of a fused gate_up tensor.
    FusedHalf { src: usize, second: bool },
    /// Computed when the model opened (little-endian bytes).
    Computed(Vec<u8>),
    /// gpt-oss MXFP4 experts repacked into ggml blocks, the rows `pick` keeps.
    Mxfp4 { blocks: usize, scales: usize, groups: usize, pick: Pick },
    /// gpt-oss dense experts `[n_expert, a, b]` transposed to `[n_expert, b', a]`.
    Transpose { src: usize, pick: Pick },
    /// gpt-oss expert biases `[n_expert, rows]`: the rows `pick` keeps, widened to F32.
    BiasF32 { src: usize, pick: Pick },
    /// `-exp(x)` of every element, as F32.
    NegExpF32 { src: usize },
    /// The rows of a matrix `[rows, cols]` in the order the ranges list them
    /// (`(first row, count)`), in the stored dtype.
    Rows { src: usize, ranges: Vec<(u64, u64)> },
}

#[derive(Clone, Debug)]
pub(super) struct Planned {
    pub meta: TensorMeta,
    pub recipe: Recipe,
    /// The Hugging Face tensor it came from (the first, for stacks), for error messages.
    pub source: String,
}

pub(super) struct Plan {
    pub tensors: HashMap<String, Planned>,
    /// Stored tensors the model does not use.
    pub unmapped: Vec<String>,
}

pub(super) fn plan(files: &SafetensorsFiles, cfg: &ModelConfig) -> Result<Plan, SafetensorsError> {
    let mut out = Plan { tensors: HashMap::new(), unmapped: Vec::new() };
    let n_expert = cfg.moe.as_ref().map(|m| m.n_expert);
    // (layer, part) -> expert -> tensor id; sized by the tensors present, not by the config.
    let mut experts: BTreeMap<(u32, ExpertPart), BTreeMap<u32, usize>> = BTreeMap::new();
    // gpt-oss: (layer, projection) -> the stored tensors of that projection.
    let mut oss: BTreeMap<(u32, OssProj), BTreeMap<OssPart, usize>> = BTreeMap::new();

    for (id, t) in files.tensors().iter().enumerate() {
        let slot = classify(&t.name, cfg.arch, cfg.n_layer);
        match (slot, n_expert) {
            (None, _)
            | (Some(Slot::Expert { .. } | Slot::FusedGateUp { .. } | Slot::OssExperts { .. }), None) => {
                out.unmapped.push(t.name.clone());
            }
            (Some(Slot::DeltaNet { layer, part }), _) => {
                for (gguf, planned) in delta_net(id, t, cfg, layer, part)? {
                    insert(&mut out.tensors, gguf, planned)?;
                }
            }
            (Some(Slot::Single { gguf, norm_shift }), _) => {
                let planned = single(id, t, &gguf, norm_shift)?;
                insert(&mut out.tensors, gguf, planned)?;
            }
            (Some(Slot::Expert { layer, part, expert }), Some(n)) => {
                let e = u32::try_from(expert).ok().filter(|&e| e < n).ok_or_else(|| {
                    SafetensorsError::ExpertOutOfRange { tensor: t.name.clone(), expert, n_expert: n }
                })?;
                if let Some(prev) = experts.entry((layer, part)).or_default().insert(e, id) {
                    return Err(SafetensorsError::SameTarget {
                        target: format!("expert {e} of {}", part.gguf_name(layer)),
                        tensor: t.name.clone(),
                        other: files.tensors()[prev].name.clone(),
                    });
                }
            }
            (Some(Slot::FusedGateUp { layer }), Some(n)) => {
                for (part, second) in [(ExpertPart::Gate, false), (ExpertPart::Up, true)] {
                    let planned = fused_half(id, t, n, second)?;
                    insert(&mut out.tensors, part.gguf_name(layer), planned)?;
                }
            }
            (Some(Slot::OssExperts { layer, proj, part }), Some(_)) => {
                // Names are unique within a checkpoint, so each part comes once.
                oss.entry((layer, proj)).or_default().insert(part, id);
            }
        }
    }

    for ((layer, proj), parts) in oss {
        for (gguf, planned) in gpt_oss_experts(files, layer, proj, &parts, n_expert.unwrap_or(0))? {
            insert(&mut out.tensors, gguf, planned)?;
        }
    }

    for ((layer, part), group) in experts {
        let target = part.gguf_name(layer);
        let n = n_expert.unwrap_or(0);
        let planned = stack(files, &target, &group, n)?;
        insert(&mut out.tensors, target, planned)?;
    }
    Ok(out)
}

fn insert(
    map: &mut HashMap<String, Planned>,
    gguf: String,
    mut planned: Planned,
) -> Result<(), SafetensorsError> {
    planned.meta.name.clone_from(&gguf);
    if let Some(prev) = map.get(&gguf) {
        return Err(SafetensorsError::SameTarget {
            target: gguf,
            tensor: planned.source,
            other: prev.source.clone(),
        });
    }
    map.insert(gguf, planned);
    Ok(())
}

fn ggml_type(t: &RawTensor) -> Result<GgmlType, SafetensorsError> {
    t.dtype
        .ggml_type()
        .ok_or_else(|| SafetensorsError::UnsupportedDtype { tensor: t.name.clone(), dtype: t.dtype.name() })
}

fn ggml_dims(t: &RawTensor) -> Result<Vec<u64>, SafetensorsError> {
    if t.shape.len() > GGML_MAX_DIMS {
        return Err(bad_shape(t, "a ggml tensor (at most 4 dims)"));
    }
    let mut dims: Vec<u64> = t.shape.iter().rev().copied().collect();
    if dims.is_empty() {
        dims.push(1);
    }
    Ok(dims)
}

fn bad_shape(t: &RawTensor, expected: &'static str) -> SafetensorsError {
    SafetensorsError::BadShape { tensor: t.name.clone(), shape: t.shape.clone(), expected }
}

fn single(id: usize, t: &RawTensor, gguf: &str, norm_shift: bool) -> Result<Planned, SafetensorsError> {
    let ggml_type = ggml_type(t)?;
    let dims = ggml_dims(t)?;
    // The converter writes routers in F32 (the shared expert's one-row gate too).
    let wants_f32 = norm_shift
        || t.shape.len() <= 1
        || gguf.ends_with(".ffn_gate_inp.weight")
        || gguf.ends_with(".ffn_gate_inp_shexp.weight");
    let (ggml_type, recipe) = if !wants_f32 || (t.dtype == Dtype::F32 && !norm_shift) {
        (ggml_type, Recipe::Borrow(id))
    } else {
        (GgmlType::F32, Recipe::F32 { src: id, shift: if norm_shift { 1.0 } else { 0.0 } })
    };
    Ok(Planned {
        meta: TensorMeta { name: gguf.to_string(), ggml_type, dims },
        recipe,
        source: t.name.clone(),
    })
}

fn fused_half(id: usize, t: &RawTensor, n_expert: u32, second: bool) -> Result<Planned, SafetensorsError> {
    let ggml_type = ggml_type(t)?;
    let [x, rows, cols] = t.shape[..] else {
        return Err(bad_shape(t, "fused experts [n_expert, 2 * n_ff, n_embd]"));
    };
    if x != n_expert as u64 || rows % 2 != 0 {
        return Err(bad_shape(t, "fused experts [n_expert, 2 * n_ff, n_embd]"));
    }
    let part = if second { "up" } else { "gate" };
    let name = t.name.replace("gate_up_proj", &format!("{part} half of gate_up_proj"));
    Ok(Planned {
        meta: TensorMeta { name: String::new(), ggml_type, dims: vec![cols, rows / 2, x] },
        recipe: Recipe::FusedHalf { src: id, second },
        source: name,
    })
}

fn stack(
    files: &SafetensorsFiles,
    target: &str,
    group: &BTreeMap<u32, usize>,
    n_expert: u32,
) -> Result<Planned, SafetensorsError> {
    let tensors = files.tensors();
    // Every key is below n_expert, so a full group has exactly n_expert keys.
    if group.len() != n_expert as usize {
        let missing = (0..n_expert).find(|e| !group.contains_key(e)).unwrap_or(0);
        // Name the missing tensor after a sibling that is there.
        let tensor = group
            .iter()
            .next()
            .map(|(e, &id)| {
                tensors[id].name.replace(&format!(".experts.{e}."), &format!(".experts.{missing}."))
            })
            .unwrap_or_default();
        return Err(SafetensorsError::MissingExpert { target: target.to_string(), expert: missing, tensor });
    }
    let ids: Vec<usize> = group.values().copied().collect();
    let first = &tensors[ids[0]];
    let ggml_type = ggml_type(first)?;
    let [rows, cols] = first.shape[..] else {
        return Err(bad_shape(first, "an expert matrix [rows, cols]"));
    };
    let describe = |t: &RawTensor| format!("{} {:?}", t.dtype, t.shape);
    for &id in &ids[1..] {
        let t = &tensors[id];
        if t.dtype != first.dtype || t.shape != first.shape {
            return Err(SafetensorsError::ExpertMismatch {
                target: target.to_string(),
                tensor: t.name.clone(),
                found: describe(t),
                expected: describe(first),
            });
        }
    }
    Ok(Planned {
        meta: TensorMeta { name: target.to_string(), ggml_type, dims: vec![cols, rows, n_expert as u64] },
        recipe: Recipe::Stack(ids),
        source: first.name.clone(),
    })
}

/// The GGUF tensors of one gpt-oss expert projection, from either checkpoint form: OpenAI's
/// MXFP4 `_blocks` + `_scales` (kept MXFP4, repacked into ggml blocks, never dequantized) or
/// a dequantized float matrix (transposed into GGUF's `[n_expert, rows, cols]`), plus the F32
/// bias. gate_up splits into `ffn_gate_exps` (even rows) and `ffn_up_exps` (odd rows), as
/// transformers' `gate_up[..., ::2]`, `gate_up[..., 1::2]` and llama.cpp's converter do.
fn gpt_oss_experts(
    files: &SafetensorsFiles,
    layer: u32,
    proj: OssProj,
    parts: &BTreeMap<OssPart, usize>,
    n_expert: u32,
) -> Result<Vec<(String, Planned)>, SafetensorsError> {
    let tensors = files.tensors();
    let get = |p: OssPart| parts.get(&p).map(|&id| (id, &tensors[id]));
    let outputs: &[(&str, Pick)] = match proj {
        OssProj::GateUp => &[("gate", Pick::Even), ("up", Pick::Odd)],
        OssProj::Down => &[("down", Pick::All)],
    };
    let name = |part: &str, what: &str| format!("blk.{layer}.ffn_{part}_exps.{what}");
    let n = n_expert as u64;
    let mut out = Vec::new();

    // The weights: rows (outputs) and cols (inputs) of every expert, GGUF-wise.
    let weights = match (get(OssPart::Blocks), get(OssPart::Scales), get(OssPart::Dense)) {
        (Some((_, b)), _, Some((_, d))) | (_, Some((_, b)), Some((_, d))) => {
            return Err(SafetensorsError::SameTarget {
                target: name(outputs[0].0, "weight"),
                tensor: d.name.clone(),
                other: b.name.clone(),
            });
        }
        (Some((_, b)), None, None) => return Err(missing_companion(b, "_blocks", "_scales")),
        (None, Some((_, sc)), None) => return Err(missing_companion(sc, "_scales", "_blocks")),
        (Some((bid, b)), Some((sid, sc)), None) => {
            const EXPECTED: &str = "MXFP4 blocks [n_expert, rows, cols / 32, 16] u8";
            let [x, rows, groups, 16] = b.shape[..] else { return Err(bad_shape(b, EXPECTED)) };
            if b.dtype != Dtype::U8 || x != n || (proj == OssProj::GateUp && rows % 2 != 0) {
                return Err(bad_shape(b, EXPECTED));
            }
            if sc.dtype != Dtype::U8 || sc.shape[..] != [x, rows, groups] {
                return Err(bad_shape(sc, "MXFP4 scales [n_expert, rows, cols / 32] u8 matching the blocks"));
            }
            for &(part, pick) in outputs {
                let meta = TensorMeta {
                    name: String::new(),
                    ggml_type: GgmlType::MXFP4,
                    dims: vec![groups * 32, pick.count(rows as usize) as u64, x],
                };
                let recipe = Recipe::Mxfp4 { blocks: bid, scales: sid, groups: groups as usize, pick };
                out.push((name(part, "weight"), Planned { meta, recipe, source: b.name.clone() }));
            }
            Some(rows)
        }
        (None, None, Some((id, d))) => {
            const EXPECTED: &str = "dense experts [n_expert, cols, rows]";
            let ggml_type = ggml_type(d)?;
            let [x, cols, rows] = d.shape[..] else { return Err(bad_shape(d, EXPECTED)) };
            if x != n || (proj == OssProj::GateUp && rows % 2 != 0) {
                return Err(bad_shape(d, EXPECTED));
            }
            for &(part, pick) in outputs {
                let dims = vec![cols, pick.count(rows as usize) as u64, x];
                let meta = TensorMeta { name: String::new(), ggml_type, dims };
                let recipe = Recipe::Transpose { src: id, pick };
                out.push((name(part, "weight"), Planned { meta, recipe, source: d.name.clone() }));
            }
            Some(rows)
        }
        (None, None, None) => None,
    };

    if let Some((id, bias)) = get(OssPart::Bias) {
        const EXPECTED: &str = "expert biases [n_expert, rows]";
        ggml_type(bias)?;
        let [x, rows] = bias.shape[..] else { return Err(bad_shape(bias, EXPECTED)) };
        if x != n || (proj == OssProj::GateUp && rows % 2 != 0) || weights.is_some_and(|w| w != rows) {
            return Err(bad_shape(bias, EXPECTED));
        }
        for &(part, pick) in outputs {
            let dims = vec![pick.count(rows as usize) as u64, x];
            let meta = TensorMeta { name: String::new(), ggml_type: GgmlType::F32, dims };
            let recipe = Recipe::BiasF32 { src: id, pick };
            out.push((name(part, "bias"), Planned { meta, recipe, source: bias.name.clone() }));
        }
    }
    Ok(out)
}

/// The GGUF tensors made from one DeltaNet tensor that is more than renamed
/// (`Qwen3NextModel.modify_tensors` in the converter). Value heads stay in the stored order:
/// the config reads them grouped by key head (see `ModelConfig::from_hf_config`).
fn delta_net(
    id: usize,
    t: &RawTensor,
    cfg: &ModelConfig,
    layer: u32,
    part: DeltaNetPart,
) -> Result<Vec<(String, Planned)>, SafetensorsError> {
    let ggml_type = ggml_type(t)?;
    // `classify` maps DeltaNet tensors only for architectures whose configs have these sizes.
    let Some(d) = cfg.delta_net.as_ref() else { return Ok(Vec::new()) };
    let name = |s: &str| format!("blk.{layer}.{s}");
    let planned = |dims: Vec<u64>, ggml_type, recipe| Planned {
        meta: TensorMeta { name: String::new(), ggml_type, dims },
        recipe,
        source: t.name.clone(),
    };
    Ok(match part {
        DeltaNetPart::Conv => {
            // transformers' depthwise Conv1d: one input channel per group.
            let [channels, 1, taps] = t.shape[..] else {
                return Err(bad_shape(t, "a depthwise convolution [channels, 1, taps]"));
            };
            // The converter writes the taps in F32.
            let recipe = match t.dtype {
                Dtype::F32 => Recipe::Borrow(id),
                _ => Recipe::F32 { src: id, shift: 0.0 },
            };
            vec![(name("ssm_conv1d.weight"), planned(vec![taps, channels], GgmlType::F32, recipe))]
        }
        DeltaNetPart::ALog => {
            let [n] = t.shape[..] else { return Err(bad_shape(t, "one value per value head [n_v_heads]")) };
            vec![(name("ssm_a"), planned(vec![n], GgmlType::F32, Recipe::NegExpF32 { src: id }))]
        }
        DeltaNetPart::Qkvz => {
            let (n_k, hd) = (d.n_k_heads as u64, d.head_dim as u64);
            let vz = (d.n_v_heads / d.n_k_heads) as u64 * hd;
            let per_head = 2 * hd + 2 * vz;
            const EXPECTED: &str =
                "[n_k_heads * (2 * key_head_dim + 2 * value heads per key head * value_head_dim), n_embd]";
            let [rows, cols] = t.shape[..] else { return Err(bad_shape(t, EXPECTED)) };
            if rows != n_k * per_head {
                return Err(bad_shape(t, EXPECTED));
            }
            // Each key head's block holds q (hd rows), k (hd), v (vz) and z (vz).
            let gather = |offset: u64, len: u64| -> Vec<(u64, u64)> {
                (0..n_k).map(|g| (g * per_head + offset, len)).collect()
            };
            let mut qkv = gather(0, hd);
            qkv.extend(gather(hd, hd));
            qkv.extend(gather(2 * hd, vz));
            let z = gather(2 * hd + vz, vz);
            vec![
                (
                    name("attn_qkv.weight"),
                    planned(
                        vec![cols, n_k * (2 * hd + vz)],
                        ggml_type,
                        Recipe::Rows { src: id, ranges: qkv },
                    ),
                ),
                (
                    name("attn_gate.weight"),
                    planned(vec![cols, n_k * vz], ggml_type, Recipe::Rows { src: id, ranges: z }),
                ),
            ]
        }
    })
}

/// An MXFP4 `_blocks` tensor without its `_scales`, or the reverse.
fn missing_companion(t: &RawTensor, suffix: &str, other: &str) -> SafetensorsError {
    SafetensorsError::MissingCompanion { tensor: t.name.clone(), missing: t.name.replace(suffix, other) }
}
