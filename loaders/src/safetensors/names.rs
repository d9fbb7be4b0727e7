//! Hugging Face tensor names to GGUF names, following the tensor map of gguf-py
//! (`gguf/tensor_mapping.py`) and the per-model rules of convert_hf_to_gguf.py at llama.cpp
//! 0c1e570.

use crate::model::Arch;

/// Where a Hugging Face tensor goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// One tensor to one tensor. `norm_shift`: Gemma, Qwen3.5 and Qwen3-Next store RMSNorm
    /// weights as `w` and multiply by `1 + w`; GGUF stores `1 + w`.
    Single { gguf: String, norm_shift: bool },
    /// One expert's matrix, stacked with its siblings into `blk.{layer}.ffn_{part}_exps.weight`.
    Expert { layer: u32, part: ExpertPart, expert: u64 },
    /// transformers 5's fused `[n_expert, 2 * n_ff, n_embd]` tensor: gate rows, then up rows.
    FusedGateUp { layer: u32 },
    /// One of gpt-oss's stacked expert tensors (`mlp.experts.{gate_up,down}_proj*`), which
    /// become GGUF tensors only together (see `plan::gpt_oss_experts`).
    OssExperts { layer: u32, proj: OssProj, part: OssPart },
    /// A Gated DeltaNet tensor whose GGUF form is computed from it.
    DeltaNet { layer: u32, part: DeltaNetPart },
}

/// The DeltaNet tensors that the converter changes beyond a rename.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum DeltaNetPart {
    /// `conv1d.weight` `[channels, 1, taps]`, squeezed to `ssm_conv1d` `[channels, taps]`.
    Conv,
    /// `A_log`, stored as `ssm_a = -exp(A_log)`.
    ALog,
    /// Qwen3-Next's `in_proj_qkvz`: per key head q, k, its value heads' v and z rows; split
    /// into `attn_qkv` (all q, all k, all v) and `attn_gate` (all z).
    Qkvz,
}

/// gpt-oss's two expert projections. `GateUp` holds gate and up interleaved: gate is every
/// even output row (or column, in the dense form), up every odd one.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum OssProj {
    GateUp,
    Down,
}

/// The tensors of one gpt-oss projection, in either checkpoint form.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum OssPart {
    /// OpenAI's MXFP4 checkpoint: `_blocks` `[n_expert, rows, cols / 32, 16]` u8, two E2M1
    /// codes a byte (element `2i` in the low nibble).
    Blocks,
    /// `_scales` `[n_expert, rows, cols / 32]` u8: E8M0 exponents, `2^(e - 127)`.
    Scales,
    /// `_bias` `[n_expert, rows]`.
    Bias,
    /// A dequantized checkpoint's float matrix, stored as transformers multiplies it:
    /// `[n_expert, cols, rows]` (input dim first).
    Dense,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum ExpertPart {
    Gate,
    Up,
    Down,
}

impl ExpertPart {
    pub fn gguf_name(self, layer: u32) -> String {
        let part = match self {
            ExpertPart::Gate => "gate",
            ExpertPart::Up => "up",
            ExpertPart::Down => "down",
        };
        format!("blk.{layer}.ffn_{part}_exps.weight")
    }
}

/// `None` for tensors the model does not use (vision towers, rotary caches, layers past
/// `n_layer` such as multi-token-prediction heads).
pub(super) fn classify(hf_name: &str, arch: Arch, n_layer: u32) -> Option<Slot> {
    // Multimodal checkpoints nest the text model under `language_model.` (transformers < 4.52:
    // `language_model.model.layers...`, later `model.language_model.layers...`); the converter
    // drops the component wherever it appears.
    let name = hf_name.replace("language_model.", "");
    let traits = arch.traits();
    // The DeltaNet's gated norm is a plain weight even where the other norms are `1 + w`.
    let shifted =
        traits.norm_plus_one && name.ends_with("norm.weight") && !name.ends_with("linear_attn.norm.weight");
    let single = |gguf: String| Some(Slot::Single { gguf, norm_shift: shifted });

    match name.as_str() {
        "model.embed_tokens.weight" => return single("token_embd.weight".into()),
        "model.norm.weight" => return single("output_norm.weight".into()),
        "lm_head.weight" => return single("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (index, rest) = rest.split_once('.')?;
    let layer = parse_index(index).filter(|&il| il < n_layer as u64)? as u32;
    let blk = |s: &str| single(format!("blk.{layer}.{s}"));
    let delta_net = |part| Some(Slot::DeltaNet { layer, part });
    let hybrid = traits.delta_net.is_some();

    let mapped = match rest {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.o_proj.bias" => "attn_output.bias",
        "self_attn.sinks" => "attn_sinks.weight",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        // With post-norms (Gemma 3: four norms per layer) the second norm follows attention and
        // the one before the FFN is GGUF's ffn_norm; without, the second norm is the FFN's.
        "post_attention_layernorm.weight" if traits.post_norms => "post_attention_norm.weight",
        // gpt-oss's FFN pre-norm keeps the Hugging Face name in GGUF.
        "post_attention_layernorm.weight" => return blk(&format!("{}.weight", traits.ffn_norm_name)),
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.gate.weight" | "block_sparse_moe.gate.weight" | "mlp.router.weight" => "ffn_gate_inp.weight",
        "mlp.router.bias" => "ffn_gate_inp.bias",
        "linear_attn.in_proj_qkv.weight" if hybrid => "attn_qkv.weight",
        "linear_attn.in_proj_z.weight" if hybrid => "attn_gate.weight",
        "linear_attn.in_proj_b.weight" if hybrid => "ssm_beta.weight",
        "linear_attn.in_proj_a.weight" if hybrid => "ssm_alpha.weight",
        "linear_attn.in_proj_ba.weight" if hybrid => "ssm_ba.weight",
        "linear_attn.dt_bias" if hybrid => "ssm_dt.bias",
        "linear_attn.norm.weight" if hybrid => "ssm_norm.weight",
        "linear_attn.out_proj.weight" if hybrid => "ssm_out.weight",
        "linear_attn.conv1d.weight" if hybrid => return delta_net(DeltaNetPart::Conv),
        "linear_attn.A_log" if hybrid => return delta_net(DeltaNetPart::ALog),
        "linear_attn.in_proj_qkvz.weight" if hybrid => return delta_net(DeltaNetPart::Qkvz),
        "mlp.shared_expert.gate_proj.weight" if traits.shared_expert => "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight" if traits.shared_expert => "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight" if traits.shared_expert => "ffn_down_shexp.weight",
        "mlp.shared_expert_gate.weight" if traits.shared_expert => "ffn_gate_inp_shexp.weight",
        _ if arch == Arch::GptOss && rest.starts_with("mlp.experts.") => {
            return oss_experts(layer, rest);
        }
        // Already in ffn_down_exps layout: [n_expert, n_embd, n_ff] row-major.
        "mlp.experts.down_proj" | "mlp.experts.down_proj.weight" => "ffn_down_exps.weight",
        "mlp.experts.gate_up_proj" | "mlp.experts.gate_up_proj.weight" => {
            return Some(Slot::FusedGateUp { layer });
        }
        _ => return expert(layer, rest),
    };
    blk(mapped)
}

/// gpt-oss's `mlp.experts.{gate_up,down}_proj{_blocks,_scales,_bias,}`. The dense names
/// differ from transformers 5's fused qwen3moe tensors only in layout, so they are read this
/// way for gpt-oss alone.
fn oss_experts(layer: u32, rest: &str) -> Option<Slot> {
    let r = rest.strip_prefix("mlp.experts.")?;
    let (proj, suffix) = if let Some(s) = r.strip_prefix("gate_up_proj") {
        (OssProj::GateUp, s)
    } else {
        (OssProj::Down, r.strip_prefix("down_proj")?)
    };
    let part = match suffix {
        "_blocks" => OssPart::Blocks,
        "_scales" => OssPart::Scales,
        "_bias" => OssPart::Bias,
        "" | ".weight" => OssPart::Dense,
        _ => return None,
    };
    Some(Slot::OssExperts { layer, proj, part })
}

/// `mlp.experts.E.{gate,up,down}_proj.weight` (qwen3moe) and
/// `block_sparse_moe.experts.E.{w1,w3,w2}.weight` (mixtral).
fn expert(layer: u32, rest: &str) -> Option<Slot> {
    let (index, part) = if let Some(r) = rest.strip_prefix("mlp.experts.") {
        let (index, part) = r.split_once('.')?;
        let part = match part {
            "gate_proj.weight" => ExpertPart::Gate,
            "up_proj.weight" => ExpertPart::Up,
            "down_proj.weight" => ExpertPart::Down,
            _ => return None,
        };
        (index, part)
    } else {
        let r = rest.strip_prefix("block_sparse_moe.experts.")?;
        let (index, part) = r.split_once('.')?;
        let part = match part {
            "w1.weight" => ExpertPart::Gate,
            "w3.weight" => ExpertPart::Up,
            "w2.weight" => ExpertPart::Down,
            _ => return None,
        };
        (index, part)
    };
    Some(Slot::Expert { layer, part, expert: parse_index(index)? })
}

/// A decimal index as PyTorch writes it: digits only, no sign, no leading zeros.
fn parse_index(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf(name: &str, arch: Arch) -> Option<(String, bool)> {
        match classify(name, arch, 4)? {
            Slot::Single { gguf, norm_shift } => Some((gguf, norm_shift)),
            _ => None,
        }
    }

    #[test]
    fn maps_llama_names() {
        let l = Arch::Llama;
        assert_eq!(gguf("model.embed_tokens.weight", l), Some(("token_embd.weight".into(), false)));
        assert_eq!(gguf("lm_head.weight", l), Some(("output.weight".into(), false)));
        assert_eq!(
            gguf("model.layers.3.self_attn.o_proj.weight", l),
            Some(("blk.3.attn_output.weight".into(), false))
        );
        assert_eq!(
            gguf("model.layers.1.post_attention_layernorm.weight", l),
            Some(("blk.1.ffn_norm.weight".into(), false))
        );
        assert_eq!(classify("model.layers.4.mlp.up_proj.weight", l, 4), None);
        assert_eq!(classify("model.layers.01.mlp.up_proj.weight", l, 4), None);
        assert_eq!(classify("model.layers.0.self_attn.rotary_emb.inv_freq", l, 4), None);
    }

    #[test]
    fn maps_gemma3_norms_with_the_shift() {
        let g = Arch::Gemma3;
        assert_eq!(
            gguf("model.language_model.layers.0.post_attention_layernorm.weight", g),
            Some(("blk.0.post_attention_norm.weight".into(), true))
        );
        assert_eq!(
            gguf("language_model.model.layers.2.pre_feedforward_layernorm.weight", g),
            Some(("blk.2.ffn_norm.weight".into(), true))
        );
        assert_eq!(
            gguf("model.layers.0.self_attn.k_norm.weight", g),
            Some(("blk.0.attn_k_norm.weight".into(), true))
        );
        assert_eq!(gguf("model.norm.weight", g), Some(("output_norm.weight".into(), true)));
        assert_eq!(gguf("model.embed_tokens.weight", g), Some(("token_embd.weight".into(), false)));
        assert_eq!(classify("vision_tower.vision_model.post_layernorm.weight", g, 4), None);
    }

    #[test]
    fn maps_gpt_oss_names() {
        let o = Arch::GptOss;
        assert_eq!(
            gguf("model.layers.2.post_attention_layernorm.weight", o),
            Some(("blk.2.post_attention_norm.weight".into(), false))
        );
        assert_eq!(
            gguf("model.layers.0.self_attn.sinks", o),
            Some(("blk.0.attn_sinks.weight".into(), false))
        );
        assert_eq!(
            gguf("model.layers.0.self_attn.o_proj.bias", o),
            Some(("blk.0.attn_output.bias".into(), false))
        );
        assert_eq!(
            gguf("model.layers.1.mlp.router.bias", o),
            Some(("blk.1.ffn_gate_inp.bias".into(), false))
        );
        assert_eq!(
            classify("model.layers.3.mlp.experts.gate_up_proj_scales", o, 4),
            Some(Slot::OssExperts { layer: 3, proj: OssProj::GateUp, part: OssPart::Scales })
        );
        assert_eq!(
            classify("model.layers.0.mlp.experts.down_proj", o, 4),
            Some(Slot::OssExperts { layer: 0, proj: OssProj::Down, part: OssPart::Dense })
        );
        assert_eq!(
            classify("model.layers.0.mlp.experts.down_proj_bias", o, 4),
            Some(Slot::OssExperts { layer: 0, proj: OssProj::Down, part: OssPart::Bias })
        );
        assert_eq!(classify("model.layers.0.mlp.experts.down_proj_zeros", o, 4), None);
        // The same name in qwen3moe is transformers 5's fused layout.
        assert_eq!(
            classify("model.layers.0.mlp.experts.gate_up_proj", Arch::Qwen3Moe, 4),
            Some(Slot::FusedGateUp { layer: 0 })
        );
    }

    #[test]
    fn maps_hybrid_names() {
        let q = Arch::Qwen35Moe;
        let p = "model.language_model.layers.1.";
        let g = |rest: &str| gguf(&format!("{p}{rest}"), q);
        assert_eq!(g("input_layernorm.weight"), Some(("blk.1.attn_norm.weight".into(), true)));
        assert_eq!(
            g("post_attention_layernorm.weight"),
            Some(("blk.1.post_attention_norm.weight".into(), true))
        );
        assert_eq!(g("self_attn.q_norm.weight"), Some(("blk.1.attn_q_norm.weight".into(), true)));
        // The gated norm inside the DeltaNet is not zero-centred.
        assert_eq!(g("linear_attn.norm.weight"), Some(("blk.1.ssm_norm.weight".into(), false)));
        assert_eq!(g("linear_attn.in_proj_qkv.weight"), Some(("blk.1.attn_qkv.weight".into(), false)));
        assert_eq!(g("linear_attn.in_proj_z.weight"), Some(("blk.1.attn_gate.weight".into(), false)));
        assert_eq!(g("linear_attn.in_proj_a.weight"), Some(("blk.1.ssm_alpha.weight".into(), false)));
        assert_eq!(g("linear_attn.dt_bias"), Some(("blk.1.ssm_dt.bias".into(), false)));
        assert_eq!(
            g("mlp.shared_expert_gate.weight"),
            Some(("blk.1.ffn_gate_inp_shexp.weight".into(), false))
        );
        assert_eq!(
            g("mlp.shared_expert.down_proj.weight"),
            Some(("blk.1.ffn_down_shexp.weight".into(), false))
        );
        assert_eq!(
            classify(&format!("{p}linear_attn.A_log"), q, 4),
            Some(Slot::DeltaNet { layer: 1, part: DeltaNetPart::ALog })
        );
        assert_eq!(
            classify("model.layers.0.linear_attn.in_proj_qkvz.weight", Arch::Qwen3Next, 4),
            Some(Slot::DeltaNet { layer: 0, part: DeltaNetPart::Qkvz })
        );
        // Multi-token prediction and vision weights are not the text model's.
        assert_eq!(classify("mtp.layers.0.input_layernorm.weight", q, 4), None);
        assert_eq!(classify("model.visual.blocks.0.norm1.weight", q, 4), None);
        // Other architectures have no DeltaNet or shared expert to map them to.
        assert_eq!(classify("model.layers.0.linear_attn.A_log", Arch::Qwen3Moe, 4), None);
        assert_eq!(classify("model.layers.0.mlp.shared_expert_gate.weight", Arch::Qwen3Moe, 4), None);
    }

    #[test]
    fn maps_experts() {
        assert_eq!(
            classify("model.layers.1.mlp.experts.17.down_proj.weight", Arch::Qwen3Moe, 4),
            Some(Slot::Expert { layer: 1, part: ExpertPart::Down, expert: 17 })
        );
        assert_eq!(
            classify("model.layers.0.block_sparse_moe.experts.2.w3.weight", Arch::Llama, 4),
            Some(Slot::Expert { layer: 0, part: ExpertPart::Up, expert: 2 })
        );
        assert_eq!(
            classify("model.layers.0.mlp.experts.gate_up_proj", Arch::Qwen3Moe, 4),
            Some(Slot::FusedGateUp { layer: 0 })
        );
        assert_eq!(
            gguf("model.layers.0.block_sparse_moe.gate.weight", Arch::Llama),
            Some(("blk.0.ffn_gate_inp.weight".into(), false))
        );
    }
}
