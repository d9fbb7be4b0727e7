#!/usr/bin/env python3
"""Writes the tiny Hugging Face-style safetensors models under tests/data/safetensors/.

Each model directory holds a config.json, its weights (written by the official `safetensors`
package, so the Rust reader is checked against the reference writer) and expected.json: what
the GGUF view of every tensor must contain, computed here with numpy independently of the Rust
code (GGUF name, ggml type, ggml dims, element sum and a few sampled elements).

    pip install safetensors numpy
    python3 scripts/make-tiny-safetensors.py

Deterministic: rerunning reproduces the committed files byte for byte.
"""

import json
import os
import sys

import numpy as np
from safetensors import TensorSpec, serialize_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "safetensors")


def to_bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (as torch does)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


class Writer:
    """Collects tensors in one storage dtype and remembers their stored (rounded) values."""

    def __init__(self, dtype, rng):
        self.dtype = dtype  # "F32", "F16" or "BF16"
        self.rng = rng
        self.tensors = {}  # HF name -> (raw array in storage form, float32 values as stored)

    def add(self, name, shape, scale=0.1, offset=0.0):
        x = (self.rng.standard_normal(shape) * scale + offset).astype(np.float32)
        if self.dtype == "F32":
            raw, stored = x, x
        elif self.dtype == "F16":
            raw = x.astype(np.float16)
            stored = raw.astype(np.float32)
        else:
            raw = to_bf16_bits(x)
            stored = from_bf16_bits(raw)
        self.tensors[name] = (np.ascontiguousarray(raw), stored)
        return stored

    def write(self, path, names):
        st_dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[self.dtype]
        specs = {}
        for n in names:
            raw, _ = self.tensors[n]
            specs[n] = TensorSpec(dtype=st_dtype, shape=list(raw.shape), data_ptr=raw.ctypes.data, data_len=raw.nbytes)
        serialize_file(specs, path, {"format": "pt"})


def expected_entry(ggml_type, values):
    """What the GGUF view must hold: ggml dims are the numpy shape reversed."""
    flat = values.astype(np.float32).reshape(-1)
    n = flat.size
    picks = sorted({0, 1, n // 3, n // 2, n - 2, n - 1})
    return {
        "type": ggml_type,
        "dims": list(reversed(values.shape)),
        "sum": float(flat.astype(np.float64).sum()),
        "samples": [[i, float(flat[i])] for i in picks],
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


def llama(out):
    """Llama, F16, split over two shards with an index; untied head; llama3 RoPE scaling."""
    rng = np.random.default_rng(1)
    E, H, KV, HD, FF, V, L = 32, 4, 2, 8, 64, 64, 2
    w = Writer("F16", rng)
    exp = {}
    exp["token_embd.weight"] = expected_entry("F16", w.add("model.embed_tokens.weight", (V, E)))
    exp["output.weight"] = expected_entry("F16", w.add("lm_head.weight", (V, E)))
    exp["output_norm.weight"] = expected_entry("F32", w.add("model.norm.weight", (E,), 0.1, 1.0))
    for il in range(L):
        p = f"model.layers.{il}."
        b = f"blk.{il}."
        exp[b + "attn_norm.weight"] = expected_entry("F32", w.add(p + "input_layernorm.weight", (E,), 0.1, 1.0))
        exp[b + "ffn_norm.weight"] = expected_entry("F32", w.add(p + "post_attention_layernorm.weight", (E,), 0.1, 1.0))
        exp[b + "attn_q.weight"] = expected_entry("F16", w.add(p + "self_attn.q_proj.weight", (H * HD, E)))
        exp[b + "attn_k.weight"] = expected_entry("F16", w.add(p + "self_attn.k_proj.weight", (KV * HD, E)))
        exp[b + "attn_v.weight"] = expected_entry("F16", w.add(p + "self_attn.v_proj.weight", (KV * HD, E)))
        exp[b + "attn_output.weight"] = expected_entry("F16", w.add(p + "self_attn.o_proj.weight", (E, H * HD)))
        exp[b + "ffn_gate.weight"] = expected_entry("F16", w.add(p + "mlp.gate_proj.weight", (FF, E)))
        exp[b + "ffn_up.weight"] = expected_entry("F16", w.add(p + "mlp.up_proj.weight", (FF, E)))
        exp[b + "ffn_down.weight"] = expected_entry("F16", w.add(p + "mlp.down_proj.weight", (E, FF)))

    names = list(w.tensors)
    shards = {
        "model-00001-of-00002.safetensors": [n for n in names if ".layers.1." not in n and n != "lm_head.weight"],
        "model-00002-of-00002.safetensors": [n for n in names if ".layers.1." in n or n == "lm_head.weight"],
    }
    weight_map = {}
    for shard, members in shards.items():
        w.write(os.path.join(out, shard), members)
        weight_map.update({n: shard for n in members})
    total = sum(w.tensors[n][0].nbytes for n in names)
    write_json(os.path.join(out, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})

    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": E, "intermediate_size": FF, "num_attention_heads": H, "num_key_value_heads": KV,
        "num_hidden_layers": L, "vocab_size": V, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "rope_scaling": rope, "hidden_act": "silu", "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "head_dim": HD, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2,
    })
    # The factors the converter would store as rope_freqs.weight (LlamaModel.generate_extra_tensors).
    base, dim = 10000.0, HD
    factors = []
    for i in range(0, dim, 2):
        freq = 1.0 / (base ** (np.float32(i) / dim))
        wavelen = 2 * np.pi / freq
        lo_wl, hi_wl = 64 / 1.0, 64 / 4.0
        if wavelen < hi_wl:
            factors.append(1.0)
        elif wavelen > lo_wl:
            factors.append(8.0)
        else:
            smooth = (64 / wavelen - 1.0) / (4.0 - 1.0)
            factors.append(1 / ((1 - smooth) / 8.0 + smooth))
    exp["rope_freqs.weight"] = expected_entry("F32", np.array(factors, dtype=np.float32))
    return exp


def qwen3moe(out):
    """Qwen3-MoE, BF16, one model.safetensors; tied embeddings; per-expert tensors."""
    rng = np.random.default_rng(2)
    E, H, KV, HD, X, FFX, V, L = 32, 4, 2, 16, 4, 16, 64, 2
    w = Writer("BF16", rng)
    exp = {}
    exp["token_embd.weight"] = expected_entry("BF16", w.add("model.embed_tokens.weight", (V, E)))
    exp["output_norm.weight"] = expected_entry("F32", w.add("model.norm.weight", (E,), 0.1, 1.0))
    for il in range(L):
        p = f"model.layers.{il}."
        b = f"blk.{il}."
        exp[b + "attn_norm.weight"] = expected_entry("F32", w.add(p + "input_layernorm.weight", (E,), 0.1, 1.0))
        exp[b + "ffn_norm.weight"] = expected_entry("F32", w.add(p + "post_attention_layernorm.weight", (E,), 0.1, 1.0))
        exp[b + "attn_q.weight"] = expected_entry("BF16", w.add(p + "self_attn.q_proj.weight", (H * HD, E)))
        exp[b + "attn_k.weight"] = expected_entry("BF16", w.add(p + "self_attn.k_proj.weight", (KV * HD, E)))
        exp[b + "attn_v.weight"] = expected_entry("BF16", w.add(p + "self_attn.v_proj.weight", (KV * HD, E)))
        exp[b + "attn_output.weight"] = expected_entry("BF16", w.add(p + "self_attn.o_proj.weight", (E, H * HD)))
        exp[b + "attn_q_norm.weight"] = expected_entry("F32", w.add(p + "self_attn.q_norm.weight", (HD,), 0.1, 1.0))
        exp[b + "attn_k_norm.weight"] = expected_entry("F32", w.add(p + "self_attn.k_norm.weight", (HD,), 0.1, 1.0))
        exp[b + "ffn_gate_inp.weight"] = expected_entry("F32", w.add(p + "mlp.gate.weight", (X, E)))
        for part, shape in (("gate", (FFX, E)), ("up", (FFX, E)), ("down", (E, FFX))):
            stack = [w.add(f"{p}mlp.experts.{x}.{part}_proj.weight", shape) for x in range(X)]
            exp[f"{b}ffn_{part}_exps.weight"] = expected_entry("BF16", np.stack(stack, axis=0))
    w.write(os.path.join(out, "model.safetensors"), list(w.tensors))
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": E, "intermediate_size": 64, "moe_intermediate_size": FFX, "num_experts": X,
        "num_experts_per_tok": 2, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": HD, "num_hidden_layers": L,
        "vocab_size": V, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": True, "attention_bias": False,
        "sliding_window": None, "use_sliding_window": False, "torch_dtype": "bfloat16",
    })
    return exp


def gemma3(out):
    """Gemma 3 as the multimodal class: text_config with class defaults left out, weights under
    model.language_model., one vision tensor to ignore, F32, norms stored as w (GGUF wants 1 + w)."""
    rng = np.random.default_rng(3)
    E, H, KV, HD, FF, V, L = 32, 2, 1, 16, 48, 64, 3
    w = Writer("F32", rng)
    exp = {}
    pre = "model.language_model."
    exp["token_embd.weight"] = expected_entry("F32", w.add(pre + "embed_tokens.weight", (V, E)))
    exp["output_norm.weight"] = expected_entry("F32", w.add(pre + "norm.weight", (E,)) + 1)
    w.add("model.vision_tower.vision_model.post_layernorm.weight", (8,))
    for il in range(L):
        p = f"{pre}layers.{il}."
        b = f"blk.{il}."
        for hf, gg in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "post_attention_norm"),
                       ("pre_feedforward_layernorm", "ffn_norm"), ("post_feedforward_layernorm", "post_ffw_norm")):
            exp[f"{b}{gg}.weight"] = expected_entry("F32", w.add(f"{p}{hf}.weight", (E,)) + 1)
        exp[b + "attn_q_norm.weight"] = expected_entry("F32", w.add(p + "self_attn.q_norm.weight", (HD,)) + 1)
        exp[b + "attn_k_norm.weight"] = expected_entry("F32", w.add(p + "self_attn.k_norm.weight", (HD,)) + 1)
        exp[b + "attn_q.weight"] = expected_entry("F32", w.add(p + "self_attn.q_proj.weight", (H * HD, E)))
        exp[b + "attn_k.weight"] = expected_entry("F32", w.add(p + "self_attn.k_proj.weight", (KV * HD, E)))
        exp[b + "attn_v.weight"] = expected_entry("F32", w.add(p + "self_attn.v_proj.weight", (KV * HD, E)))
        exp[b + "attn_output.weight"] = expected_entry("F32", w.add(p + "self_attn.o_proj.weight", (E, H * HD)))
        exp[b + "ffn_gate.weight"] = expected_entry("F32", w.add(p + "mlp.gate_proj.weight", (FF, E)))
        exp[b + "ffn_up.weight"] = expected_entry("F32", w.add(p + "mlp.up_proj.weight", (FF, E)))
        exp[b + "ffn_down.weight"] = expected_entry("F32", w.add(p + "mlp.down_proj.weight", (E, FF)))
    w.write(os.path.join(out, "model.safetensors"), list(w.tensors))
    write_json(os.path.join(out, "config.json"), {
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144,
        "text_config": {
            "model_type": "gemma3_text", "hidden_size": E, "intermediate_size": FF, "num_hidden_layers": L,
            "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V,
            "query_pre_attn_scalar": 24, "sliding_window": 8, "sliding_window_pattern": 3,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        },
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 8},
        "torch_dtype": "float32",
    })
    return exp


def main():
    for name, build in (("tiny-llama", llama), ("tiny-qwen3moe", qwen3moe), ("tiny-gemma3", gemma3)):
        out = os.path.join(ROOT, name)
        os.makedirs(out, exist_ok=True)
        for f in os.listdir(out):
            os.remove(os.path.join(out, f))
        exp = build(out)
        write_json(os.path.join(out, "expected.json"), exp)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"{name}: {len(exp)} GGUF tensors, {size} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
