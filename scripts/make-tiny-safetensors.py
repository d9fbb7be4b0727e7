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


# transformers' FP4_VALUES (integrations/mxfp4.py): the E2M1 value of each 4-bit code.
FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                      dtype=np.float32)


def mxfp4_dequant(blocks, scales):
    """transformers' convert_moe_packed_tensors without the final transpose: [X, R, G, 16] u8
    codes (element 2i in the low nibble of byte i) and [X, R, G] E8M0 scales -> [X, R, G * 32]."""
    lo = FP4_VALUES[blocks & 0x0F]
    hi = FP4_VALUES[blocks >> 4]
    vals = np.stack((lo, hi), axis=-1).reshape(*blocks.shape[:-1], 32)
    vals = np.ldexp(vals, scales.astype(np.int32)[..., None] - 127)
    return vals.reshape(*blocks.shape[:2], -1).astype(np.float32)


def converter_mxfp4(blocks, scales):
    """The bytes llama.cpp's converter writes (conversion/gpt_oss.py, transform_nibble_layout and
    repack_mxfp4, ported op for op from torch to numpy): [X, R, G * 17] ggml block_mxfp4s."""
    t = blocks
    t = ((t & 0x0F) << 4) | ((t & 0xF0) >> 4)
    blk_a, blk_b = t[..., :8], t[..., 8:]
    a0 = (blk_a & 0xF0).reshape(-1, 1)
    a1 = (blk_a << 4).reshape(-1, 1)
    blk_a = np.stack((a0, a1), axis=2).reshape(t.shape)
    b0 = (blk_b >> 4).reshape(-1, 1)
    b1 = (blk_b & 0x0F).reshape(-1, 1)
    blk_b = np.stack((b0, b1), axis=2).reshape(t.shape)
    out = blk_a | blk_b
    out = ((out & 0xF0) >> 4) | ((out & 0x0F) << 4)
    data = np.concatenate((scales[..., None], out), axis=-1)
    return np.ascontiguousarray(data.reshape(data.shape[0], data.shape[1], -1), dtype=np.uint8)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in bytes(data):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def write_raw(path, tensors):
    """safetensors with tensors given as (numpy array, safetensors dtype name)."""
    specs = {n: TensorSpec(dtype=dt, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes)
             for n, (a, dt) in tensors.items()}
    serialize_file(specs, path, {"format": "pt"})


def gptoss(out_mxfp4, out_bf16):
    """gpt-oss in the two forms people download, with the same weights: OpenAI's original
    checkpoint (experts as MXFP4 blocks and scales, everything else BF16) and a dequantized BF16
    one (experts as transformers multiplies them: gate_up_proj [X, n_embd, 2 n_ff] with gate and
    up interleaved, down_proj [X, n_ff, n_embd]). The MXFP4 values are exact in BF16, so both
    must give the same GGUF values; the MXFP4 one must keep the converter's ggml bytes."""
    rng = np.random.default_rng(4)
    E, H, KV, HD, FF, X, V, L = 64, 4, 2, 16, 32, 4, 64, 2
    w = Writer("BF16", rng)
    exp = {}
    exp["token_embd.weight"] = expected_entry("BF16", w.add("model.embed_tokens.weight", (V, E)))
    exp["output.weight"] = expected_entry("BF16", w.add("lm_head.weight", (V, E)))
    exp["output_norm.weight"] = expected_entry("F32", w.add("model.norm.weight", (E,), 0.1, 1.0))
    raw = {}  # the MXFP4 checkpoint's expert tensors: name -> (array, dtype)
    dense = {}  # the BF16 checkpoint's expert weights: name -> bf16 bits
    exp_mx, exp_bf = {}, {}
    for il in range(L):
        p = f"model.layers.{il}."
        b = f"blk.{il}."
        exp[b + "attn_norm.weight"] = expected_entry("F32", w.add(p + "input_layernorm.weight", (E,), 0.1, 1.0))
        exp[b + "post_attention_norm.weight"] = expected_entry(
            "F32", w.add(p + "post_attention_layernorm.weight", (E,), 0.1, 1.0))
        for proj, gg, rows in (("q", "attn_q", H * HD), ("k", "attn_k", KV * HD), ("v", "attn_v", KV * HD)):
            exp[f"{b}{gg}.weight"] = expected_entry("BF16", w.add(f"{p}self_attn.{proj}_proj.weight", (rows, E)))
            exp[f"{b}{gg}.bias"] = expected_entry("F32", w.add(f"{p}self_attn.{proj}_proj.bias", (rows,)))
        exp[b + "attn_output.weight"] = expected_entry("BF16", w.add(p + "self_attn.o_proj.weight", (E, H * HD)))
        exp[b + "attn_output.bias"] = expected_entry("F32", w.add(p + "self_attn.o_proj.bias", (E,)))
        exp[b + "attn_sinks.weight"] = expected_entry("F32", w.add(p + "self_attn.sinks", (H,), 1.0))
        exp[b + "ffn_gate_inp.weight"] = expected_entry("F32", w.add(p + "mlp.router.weight", (X, E)))
        exp[b + "ffn_gate_inp.bias"] = expected_entry("F32", w.add(p + "mlp.router.bias", (X,)))
        gu_bias = w.add(p + "mlp.experts.gate_up_proj_bias", (X, 2 * FF))
        exp[b + "ffn_gate_exps.bias"] = expected_entry("F32", gu_bias[:, 0::2])
        exp[b + "ffn_up_exps.bias"] = expected_entry("F32", gu_bias[:, 1::2])
        exp[b + "ffn_down_exps.bias"] = expected_entry("F32", w.add(p + "mlp.experts.down_proj_bias", (X, E)))

        for proj, rows, cols in (("gate_up_proj", 2 * FF, E), ("down_proj", E, FF)):
            blocks = rng.integers(0, 256, (X, rows, cols // 32, 16), dtype=np.uint8)
            scales = rng.integers(122, 130, (X, rows, cols // 32), dtype=np.uint8)
            raw[f"{p}mlp.experts.{proj}_blocks"] = (blocks, "uint8")
            raw[f"{p}mlp.experts.{proj}_scales"] = (scales, "uint8")
            values = mxfp4_dequant(blocks, scales)  # [X, rows, cols]: GGUF's row-major order
            bits = to_bf16_bits(values.transpose(0, 2, 1))
            assert np.array_equal(from_bf16_bits(bits), values.transpose(0, 2, 1)), "MXFP4 values are exact in BF16"
            dense[f"{p}mlp.experts.{proj}"] = np.ascontiguousarray(bits)
            picks = (("gate", 0, 2), ("up", 1, 2)) if proj == "gate_up_proj" else (("down", 0, 1),)
            for part, start, step in picks:
                name = f"{b}ffn_{part}_exps.weight"
                exp_mx[name] = expected_entry("MXFP4", values[:, start::step, :])
                exp_mx[name]["fnv1a64"] = fnv1a64(converter_mxfp4(blocks[:, start::step], scales[:, start::step]))
                exp_bf[name] = expected_entry("BF16", values[:, start::step, :])

    st = {n: (r, "bfloat16") for n, (r, _) in w.tensors.items()}
    write_raw(os.path.join(out_mxfp4, "model.safetensors"), {**st, **raw})
    write_raw(os.path.join(out_bf16, "model.safetensors"), {**st, **{n: (d, "bfloat16") for n, d in dense.items()}})

    rope = {"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": False,
            "original_max_position_embeddings": 1024}
    config = {
        "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "attention_bias": True,
        "head_dim": HD, "hidden_act": "silu", "hidden_size": E, "initial_context_length": 1024,
        "intermediate_size": FF, "layer_types": ["sliding_attention", "full_attention"],
        "max_position_embeddings": 4096, "num_attention_heads": H, "num_hidden_layers": L,
        "num_key_value_heads": KV, "num_local_experts": X, "rms_norm_eps": 1e-5, "rope_scaling": rope,
        "rope_theta": 150000, "sliding_window": 8, "swiglu_limit": 7.0, "tie_word_embeddings": False,
        "vocab_size": V,
    }
    # As gpt-oss-20b's: both spellings of the expert count, and the quantization it ships in.
    write_json(os.path.join(out_mxfp4, "config.json"), {
        **config, "experts_per_token": 2, "num_experts_per_tok": 2,
        "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
    })
    write_json(os.path.join(out_bf16, "config.json"), {**config, "num_experts_per_tok": 2, "torch_dtype": "bfloat16"})
    return {**exp, **exp_mx}, {**exp, **exp_bf}


def main():
    outs = {}
    for name in ("tiny-gptoss-mxfp4", "tiny-gptoss-bf16"):
        outs[name] = os.path.join(ROOT, name)
        os.makedirs(outs[name], exist_ok=True)
        for f in os.listdir(outs[name]):
            os.remove(os.path.join(outs[name], f))
    exps = gptoss(outs["tiny-gptoss-mxfp4"], outs["tiny-gptoss-bf16"])
    for name, exp in zip(outs, exps):
        write_json(os.path.join(outs[name], "expected.json"), exp)
        size = sum(os.path.getsize(os.path.join(outs[name], f)) for f in os.listdir(outs[name]))
        print(f"{name}: {len(exp)} GGUF tensors, {size} bytes", file=sys.stderr)

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
