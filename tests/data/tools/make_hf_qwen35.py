#!/usr/bin/env python3
"""Hugging Face checkpoints of the tiny qwen35 / qwen35moe models: llama.cpp's converter
(conversion/qwen.py, Qwen3_5TextModel / Qwen3_5MoeTextModel at commit 0c1e570) run backwards on
tests/data/hybrid/models/tiny-{qwen35,qwen35moe}-f32.gguf, so that converting the directory
gives back the GGUF's tensors and the hybrid fixtures of the F32 models apply to it unchanged.

Layout as Qwen's own releases (Qwen3_5ForConditionalGeneration / Qwen3_5MoeForConditionalGeneration:
config with a nested text_config, text weights under model.language_model., no vision weights
here), F32 safetensors written by the `safetensors` package (0.8.0). The converter's steps,
undone:
  * norms: the GGUF weight is HF's + 1 (zero-centred RMSNorm), except linear_attn.norm -> HF = GGUF - 1
    (exact in float32: the weights are in [0.5, 2], Sterbenz)
  * ssm_a = -exp(A_log) -> A_log: the float32 whose float32(-exp(A_log)) is closest to ssm_a;
    that is ssm_a itself for most heads and 1 ulp from it where no float32 A_log reaches it
  * ssm_dt.bias <- linear_attn.dt_bias; ssm_conv1d [conv_dim, K] <- conv1d.weight [conv_dim, 1, K]
  * value heads: tiled (GGUF) -> grouped (HF) in the v rows of in_proj_qkv, the v channels of
    conv1d, the rows of in_proj_z / in_proj_a / in_proj_b, A_log, dt_bias and the input columns of
    out_proj (tiled index m * n_k + g <-> grouped index g * r + m)
  * experts: ffn_{gate,up}_exps -> mlp.experts.gate_up_proj [n_expert, 2 n_ff, n_embd] (gate
    rows first), ffn_down_exps -> mlp.experts.down_proj [n_expert, n_embd, n_ff] (Qwen3.5-MoE's
    packed form); ffn_gate_inp_shexp [n_embd] -> mlp.shared_expert_gate.weight [1, n_embd]
Usage: python3 make_hf_qwen35.py [OUT_ROOT]   (default tests/data/hybrid/safetensors)
Deterministic: rerunning reproduces the files byte for byte.
"""
import json
import os
import sys

import numpy as np
import gguf
from safetensors import TensorSpec, serialize_file

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "..", "hybrid", "models")


def read_gguf(path):
    r = gguf.GGUFReader(path)
    tensors = {}
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
        tensors[t.name] = np.array(t.data, dtype=np.float32).reshape([int(x) for x in reversed(t.shape.tolist())])
    kv = {}
    for k, f in r.fields.items():
        if not k.startswith(("tokenizer", "GGUF.")):
            kv[k] = f.contents()
    return tensors, kv


def grouped_from_tiled(x, axis, n_k, r, head_dim):
    """Inverse of the converter's _reorder_v_heads along axis (length n_k * r * head_dim)."""
    x = np.moveaxis(x, axis, 0)
    rest = x.shape[1:]
    x = x.reshape(r, n_k, head_dim, *rest).transpose(1, 0, 2, *range(3, 3 + len(rest)))
    return np.ascontiguousarray(np.moveaxis(x.reshape(n_k * r * head_dim, *rest), 0, axis))


def a_log_for(ssm_a):
    """The float32 A_log whose float32(-exp(A_log)) is closest to ssm_a (equal where some
    float32 gets there: exp's slope skips some float32 values above e)."""
    out = np.empty_like(ssm_a)
    for i, a in enumerate(ssm_a):
        x = np.float32(np.log(-np.float64(a)))
        cands = [x]
        up, down = x, x
        for _ in range(8):
            up = np.nextafter(up, np.float32(np.inf))
            down = np.nextafter(down, np.float32(-np.inf))
            cands += [up, down]
        err = [abs(float(np.float32(-np.exp(np.float64(c)))) - float(a)) for c in cands]
        out[i] = cands[int(np.argmin(err))]
    return out


def convert(name, out_dir):
    W, kv = read_gguf(os.path.join(MODELS, f"tiny-{name}-f32.gguf"))
    arch = kv["general.architecture"]
    g = lambda k: kv[f"{arch}.{k}"]
    n_layer = int(g("block_count"))
    n_k, n_v, d = int(g("ssm.group_count")), int(g("ssm.time_step_rank")), int(g("ssm.state_size"))
    r = n_v // n_k
    key_dim = n_k * d
    interval = int(g("full_attention_interval"))
    recurrent = [bool(x) for x in kv.get(f"{arch}.attention.recurrent_layers",
                                          [(il + 1) % interval != 0 for il in range(n_layer)])]
    hf = {}
    lm = "model.language_model."
    hf[lm + "embed_tokens.weight"] = W["token_embd.weight"]
    hf["lm_head.weight"] = W["output.weight"]
    hf[lm + "norm.weight"] = W["output_norm.weight"] - np.float32(1)
    moe = f"{arch}.expert_count" in kv
    for il in range(n_layer):
        b, p = f"blk.{il}.", f"{lm}layers.{il}."
        hf[p + "input_layernorm.weight"] = W[b + "attn_norm.weight"] - np.float32(1)
        hf[p + "post_attention_layernorm.weight"] = W[b + "post_attention_norm.weight"] - np.float32(1)
        if recurrent[il]:
            la = p + "linear_attn."
            qkv = W[b + "attn_qkv.weight"]
            hf[la + "in_proj_qkv.weight"] = np.concatenate(
                [qkv[:2 * key_dim], grouped_from_tiled(qkv[2 * key_dim:], 0, n_k, r, d)])
            hf[la + "in_proj_z.weight"] = grouped_from_tiled(W[b + "attn_gate.weight"], 0, n_k, r, d)
            hf[la + "in_proj_b.weight"] = grouped_from_tiled(W[b + "ssm_beta.weight"], 0, n_k, r, 1)
            hf[la + "in_proj_a.weight"] = grouped_from_tiled(W[b + "ssm_alpha.weight"], 0, n_k, r, 1)
            conv = W[b + "ssm_conv1d.weight"]
            conv = np.concatenate([conv[:2 * key_dim], grouped_from_tiled(conv[2 * key_dim:], 0, n_k, r, d)])
            hf[la + "conv1d.weight"] = conv[:, None, :]
            hf[la + "dt_bias"] = grouped_from_tiled(W[b + "ssm_dt.bias"], 0, n_k, r, 1)
            hf[la + "A_log"] = grouped_from_tiled(a_log_for(W[b + "ssm_a"]), 0, n_k, r, 1)
            hf[la + "norm.weight"] = W[b + "ssm_norm.weight"]
            hf[la + "out_proj.weight"] = grouped_from_tiled(W[b + "ssm_out.weight"], 1, n_k, r, d)
        else:
            sa = p + "self_attn."
            for gg, hh in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_output", "o_proj")):
                hf[sa + hh + ".weight"] = W[b + gg + ".weight"]
            hf[sa + "q_norm.weight"] = W[b + "attn_q_norm.weight"] - np.float32(1)
            hf[sa + "k_norm.weight"] = W[b + "attn_k_norm.weight"] - np.float32(1)
        if moe:
            m = p + "mlp."
            hf[m + "gate.weight"] = W[b + "ffn_gate_inp.weight"]
            hf[m + "experts.gate_up_proj"] = np.concatenate(
                [W[b + "ffn_gate_exps.weight"], W[b + "ffn_up_exps.weight"]], axis=1)
            hf[m + "experts.down_proj"] = W[b + "ffn_down_exps.weight"]
            for gg, hh in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                hf[m + f"shared_expert.{hh}.weight"] = W[b + f"ffn_{gg}_shexp.weight"]
            hf[m + "shared_expert_gate.weight"] = W[b + "ffn_gate_inp_shexp.weight"][None, :]
        else:
            for gg, hh in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
                hf[p + f"mlp.{hh}.weight"] = W[b + f"ffn_{gg}.weight"]
    hf = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in hf.items()}
    os.makedirs(out_dir, exist_ok=True)
    specs = {k: TensorSpec(dtype="float32", shape=list(v.shape), data_ptr=v.ctypes.data, data_len=v.nbytes)
             for k, v in sorted(hf.items())}
    serialize_file(specs, os.path.join(out_dir, "model.safetensors"), {"format": "pt"})

    sections = [int(x) for x in g("rope.dimension_sections")][:3]
    text = {
        "model_type": "qwen3_5_moe_text" if moe else "qwen3_5_text",
        "vocab_size": int(g("vocab_size")),
        "hidden_size": int(g("embedding_length")),
        "num_hidden_layers": n_layer,
        "num_attention_heads": int(g("attention.head_count")),
        "num_key_value_heads": int(g("attention.head_count_kv")),
        "head_dim": int(g("attention.key_length")),
        "hidden_act": "silu",
        "max_position_embeddings": int(g("context_length")),
        "rms_norm_eps": float(np.float32(g("attention.layer_norm_rms_epsilon"))),
        "tie_word_embeddings": False,
        "attention_bias": False,
        "linear_conv_kernel_dim": int(g("ssm.conv_kernel")),
        "linear_key_head_dim": d,
        "linear_value_head_dim": d,
        "linear_num_key_heads": n_k,
        "linear_num_value_heads": n_v,
        "layer_types": ["linear_attention" if x else "full_attention" for x in recurrent],
        "full_attention_interval": interval,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": float(g("rope.freq_base")),
            "partial_rotary_factor": int(g("rope.dimension_count")) / int(g("attention.key_length")),
            "mrope_section": sections,
            "mrope_interleaved": True,
        },
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": "float32",
    }
    if moe:
        text.update({
            "num_experts": int(g("expert_count")),
            "num_experts_per_tok": int(g("expert_used_count")),
            "moe_intermediate_size": int(g("expert_feed_forward_length")),
            "shared_expert_intermediate_size": int(g("expert_shared_feed_forward_length")),
        })
    else:
        text["intermediate_size"] = int(g("feed_forward_length"))
    config = {
        "architectures": ["Qwen3_5MoeForConditionalGeneration" if moe else "Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5_moe" if moe else "qwen3_5",
        "text_config": text,
        "tie_word_embeddings": False,
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", out_dir, len(hf), "tensors")


def reorder_v_heads(x, dim, n_k, r, head_dim):
    """numpy port of the converter's _reorder_v_heads (grouped -> tiled)."""
    shape = list(x.shape)
    x = x.reshape(shape[:dim] + [n_k, r, head_dim] + shape[dim + 1:])
    perm = list(range(x.ndim))
    perm[dim], perm[dim + 1] = perm[dim + 1], perm[dim]
    return x.transpose(perm).reshape(shape)


def check_forward(name, out_dir):
    """Runs the converter's steps forward on the written checkpoint and compares every tensor
    with the GGUF it came from."""
    from safetensors.numpy import load_file
    W, kv = read_gguf(os.path.join(MODELS, f"tiny-{name}-f32.gguf"))
    cfg = json.load(open(os.path.join(out_dir, "config.json")))["text_config"]
    hf = load_file(os.path.join(out_dir, "model.safetensors"))
    n_k, n_v, d = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"], cfg["linear_key_head_dim"]
    r, key_dim = n_v // n_k, n_k * d
    got = {}
    for k, v in hf.items():
        k = k.replace("model.language_model.", "")
        if k in ("lm_head.weight", "embed_tokens.weight"):
            got["output.weight" if k == "lm_head.weight" else "token_embd.weight"] = v
            continue
        if k == "norm.weight":
            got["output_norm.weight"] = v + np.float32(1)
            continue
        _, il, rest = k.split(".", 2)
        b = f"blk.{il}."
        if rest.startswith("linear_attn."):
            t = rest[len("linear_attn."):]
            if t == "in_proj_qkv.weight":
                got[b + "attn_qkv.weight"] = np.concatenate([v[:2 * key_dim], reorder_v_heads(v[2 * key_dim:], 0, n_k, r, d)])
            elif t == "in_proj_z.weight":
                got[b + "attn_gate.weight"] = reorder_v_heads(v, 0, n_k, r, d)
            elif t in ("in_proj_b.weight", "in_proj_a.weight"):
                got[b + ("ssm_beta.weight" if "_b." in t else "ssm_alpha.weight")] = reorder_v_heads(v, 0, n_k, r, 1)
            elif t == "conv1d.weight":
                c = v[:, 0, :]
                got[b + "ssm_conv1d.weight"] = np.concatenate([c[:2 * key_dim], reorder_v_heads(c[2 * key_dim:], 0, n_k, r, d)])
            elif t == "dt_bias":
                got[b + "ssm_dt.bias"] = reorder_v_heads(v, 0, n_k, r, 1)
            elif t == "A_log":
                got[b + "ssm_a"] = np.float32(-np.exp(reorder_v_heads(v, 0, n_k, r, 1).astype(np.float64)))
            elif t == "norm.weight":
                got[b + "ssm_norm.weight"] = v
            elif t == "out_proj.weight":
                got[b + "ssm_out.weight"] = reorder_v_heads(v, 1, n_k, r, d)
            else:
                raise SystemExit(k)
            continue
        simple = {"input_layernorm.weight": ("attn_norm.weight", 1), "post_attention_layernorm.weight": ("post_attention_norm.weight", 1),
                  "self_attn.q_proj.weight": ("attn_q.weight", 0), "self_attn.k_proj.weight": ("attn_k.weight", 0),
                  "self_attn.v_proj.weight": ("attn_v.weight", 0), "self_attn.o_proj.weight": ("attn_output.weight", 0),
                  "self_attn.q_norm.weight": ("attn_q_norm.weight", 1), "self_attn.k_norm.weight": ("attn_k_norm.weight", 1),
                  "mlp.gate_proj.weight": ("ffn_gate.weight", 0), "mlp.up_proj.weight": ("ffn_up.weight", 0),
                  "mlp.down_proj.weight": ("ffn_down.weight", 0), "mlp.gate.weight": ("ffn_gate_inp.weight", 0),
                  "mlp.experts.down_proj": ("ffn_down_exps.weight", 0),
                  "mlp.shared_expert.gate_proj.weight": ("ffn_gate_shexp.weight", 0),
                  "mlp.shared_expert.up_proj.weight": ("ffn_up_shexp.weight", 0),
                  "mlp.shared_expert.down_proj.weight": ("ffn_down_shexp.weight", 0)}
        if rest in simple:
            gname, plus = simple[rest]
            got[b + gname] = v + np.float32(plus) if plus else v
        elif rest == "mlp.experts.gate_up_proj":
            n_ff = v.shape[1] // 2
            got[b + "ffn_gate_exps.weight"], got[b + "ffn_up_exps.weight"] = v[:, :n_ff], v[:, n_ff:]
        elif rest == "mlp.shared_expert_gate.weight":
            got[b + "ffn_gate_inp_shexp.weight"] = v[0]
        else:
            raise SystemExit(k)
    assert sorted(got) == sorted(W), set(got) ^ set(W)
    off_by_ulp = 0
    for k in W:
        assert got[k].shape == W[k].shape, (k, got[k].shape, W[k].shape)
        if k.endswith("ssm_a"):
            ulps = np.abs(got[k].view(np.int32) - W[k].view(np.int32))
            assert ulps.max() <= 1, (k, ulps)
            off_by_ulp += int((ulps == 1).sum())
        else:
            assert np.array_equal(got[k], W[k]), k
    n_a = sum(W[k].size for k in W if k.endswith("ssm_a"))
    print(f"{out_dir}: the converter's steps give back the {len(W)} tensors of tiny-{name}-f32.gguf bit for bit, "
          f"except {off_by_ulp} of the {n_a} ssm_a values, 1 ulp away")


def expected_entry(values):
    """What the GGUF view must hold (the pattern of scripts/make-tiny-safetensors.py): ggml dims
    (the numpy shape reversed), the element sum and a few sampled elements."""
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    n = flat.size
    picks = sorted({0, 1, n // 3, n // 2, n - 2, n - 1})
    return {"type": "F32", "dims": list(reversed(np.shape(values))),
            "sum": float(flat.astype(np.float64).sum()),
            "samples": [[i, float(flat[i])] for i in picks]}


def qwen3next_small(out_dir):
    """A small random Qwen3NextForCausalLM checkpoint (F32, HF's own layout: in_proj_qkvz and
    in_proj_ba interleaved per key head, per-expert tensors) and expected.json, the GGUF view
    computed by a numpy port of the converter's Qwen3NextModel.modify_tensors (no fixtures:
    it checks a loader's tensor mapping only)."""
    rng = np.random.default_rng(1023)
    E, L, H, KV, HD, V = 64, 4, 2, 1, 32, 64
    n_k, n_v, d, K = 2, 4, 16, 4
    X, FF, FS = 4, 32, 32
    r = n_v // n_k
    key_dim, value_dim = n_k * d, n_v * d
    hf, exp = {}, {}
    w = lambda shape, scale=0.1, offset=0.0: (rng.standard_normal(shape) * scale + offset).astype(np.float32)
    hf["model.embed_tokens.weight"] = w((V, E))
    hf["lm_head.weight"] = w((V, E))
    hf["model.norm.weight"] = w((E,))
    exp["token_embd.weight"] = expected_entry(hf["model.embed_tokens.weight"])
    exp["output.weight"] = expected_entry(hf["lm_head.weight"])
    exp["output_norm.weight"] = expected_entry(hf["model.norm.weight"] + np.float32(1))
    layer_types = ["linear_attention", "linear_attention", "linear_attention", "full_attention"]
    for il, kind in enumerate(layer_types):
        p, b = f"model.layers.{il}.", f"blk.{il}."
        for hname, gname in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "post_attention_norm")):
            hf[p + hname + ".weight"] = w((E,))
            exp[b + gname + ".weight"] = expected_entry(hf[p + hname + ".weight"] + np.float32(1))
        if kind == "linear_attention":
            la = p + "linear_attn."
            qkvz = w((n_k * (2 * d + 2 * r * d), E))
            hf[la + "in_proj_qkvz.weight"] = qkvz
            # converter: view [n_embd, n_k, q|k|v|z] of the transposed weight, split, flatten
            t = qkvz.T.reshape(E, n_k, 2 * d + 2 * r * d)
            q, k, v, z = np.split(t, [d, 2 * d, 2 * d + r * d], axis=-1)
            flat = lambda a: a.reshape(E, -1)
            exp[b + "attn_qkv.weight"] = expected_entry(np.concatenate([flat(q), flat(k), flat(v)], axis=-1).T)
            exp[b + "attn_gate.weight"] = expected_entry(flat(z).T)
            hf[la + "in_proj_ba.weight"] = w((2 * n_v, E))
            exp[b + "ssm_ba.weight"] = expected_entry(hf[la + "in_proj_ba.weight"])
            hf[la + "conv1d.weight"] = w((2 * key_dim + value_dim, 1, K), 0.3)
            exp[b + "ssm_conv1d.weight"] = expected_entry(hf[la + "conv1d.weight"][:, 0, :])
            hf[la + "dt_bias"] = w((n_v,), 0.5, -2.0)
            exp[b + "ssm_dt.bias"] = expected_entry(hf[la + "dt_bias"])
            hf[la + "A_log"] = np.log(rng.uniform(0.5, 6.0, n_v)).astype(np.float32)
            exp[b + "ssm_a"] = expected_entry(np.float32(-np.exp(hf[la + "A_log"].astype(np.float64))))
            hf[la + "norm.weight"] = w((d,), 0.1, 1.0)
            exp[b + "ssm_norm.weight"] = expected_entry(hf[la + "norm.weight"])
            hf[la + "out_proj.weight"] = w((E, value_dim))
            exp[b + "ssm_out.weight"] = expected_entry(hf[la + "out_proj.weight"])
        else:
            sa = p + "self_attn."
            for hname, gname, shape in (("q_proj", "attn_q", (2 * H * HD, E)), ("k_proj", "attn_k", (KV * HD, E)),
                                        ("v_proj", "attn_v", (KV * HD, E)), ("o_proj", "attn_output", (E, H * HD))):
                hf[sa + hname + ".weight"] = w(shape)
                exp[b + gname + ".weight"] = expected_entry(hf[sa + hname + ".weight"])
            for hname, gname in (("q_norm", "attn_q_norm"), ("k_norm", "attn_k_norm")):
                hf[sa + hname + ".weight"] = w((HD,))
                exp[b + gname + ".weight"] = expected_entry(hf[sa + hname + ".weight"] + np.float32(1))
        m = p + "mlp."
        hf[m + "gate.weight"] = w((X, E))
        exp[b + "ffn_gate_inp.weight"] = expected_entry(hf[m + "gate.weight"])
        for part, shape in (("gate", (FF, E)), ("up", (FF, E)), ("down", (E, FF))):
            stack = []
            for x in range(X):
                hf[f"{m}experts.{x}.{part}_proj.weight"] = w(shape)
                stack.append(hf[f"{m}experts.{x}.{part}_proj.weight"])
            exp[f"{b}ffn_{part}_exps.weight"] = expected_entry(np.stack(stack))
        for part, shape in (("gate", (FS, E)), ("up", (FS, E)), ("down", (E, FS))):
            hf[f"{m}shared_expert.{part}_proj.weight"] = w(shape)
            exp[f"{b}ffn_{part}_shexp.weight"] = expected_entry(hf[f"{m}shared_expert.{part}_proj.weight"])
        hf[m + "shared_expert_gate.weight"] = w((1, E))
        exp[b + "ffn_gate_inp_shexp.weight"] = expected_entry(hf[m + "shared_expert_gate.weight"])
    os.makedirs(out_dir, exist_ok=True)
    hf = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in hf.items()}
    specs = {k: TensorSpec(dtype="float32", shape=list(v.shape), data_ptr=v.ctypes.data, data_len=v.nbytes)
             for k, v in sorted(hf.items())}
    serialize_file(specs, os.path.join(out_dir, "model.safetensors"), {"format": "pt"})
    config = {
        "architectures": ["Qwen3NextForCausalLM"], "model_type": "qwen3_next",
        "vocab_size": V, "hidden_size": E, "num_hidden_layers": L, "num_attention_heads": H,
        "num_key_value_heads": KV, "head_dim": HD, "hidden_act": "silu", "max_position_embeddings": 512,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "attention_bias": False,
        "rope_theta": 10000000.0, "partial_rotary_factor": 0.25, "rope_scaling": None,
        "linear_conv_kernel_dim": K, "linear_key_head_dim": d, "linear_value_head_dim": d,
        "linear_num_key_heads": n_k, "linear_num_value_heads": n_v, "full_attention_interval": 4,
        "layer_types": layer_types, "intermediate_size": 128, "num_experts": X,
        "num_experts_per_tok": 2, "moe_intermediate_size": FF, "shared_expert_intermediate_size": FS,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "torch_dtype": "float32",
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1, sort_keys=True)
        f.write("\n")
    print("wrote", out_dir, len(hf), "tensors,", len(exp), "expected GGUF tensors")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "hybrid", "safetensors")
    for name in ("qwen35", "qwen35moe"):
        convert(name, os.path.join(root, f"tiny-{name}"))
        check_forward(name, os.path.join(root, f"tiny-{name}"))
    qwen3next_small(os.path.join(root, "tiny-qwen3next"))


if __name__ == "__main__":
    main()
