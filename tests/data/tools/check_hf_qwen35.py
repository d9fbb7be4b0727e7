#!/usr/bin/env python3
"""Checks the tiny Hugging Face checkpoints of make_hf_qwen35.py against Hugging Face's own
semantics, independently of llama.cpp's conventions: layer 0's Gated DeltaNet mixer computed
from the checkpoint the way transformers' Qwen3Next / Qwen3.5 GatedDeltaNet does it (per-key-head
split of in_proj_qkvz and in_proj_ba for Qwen3-Next, value heads in grouped order with
repeat_interleave, -exp(A_log), the gated norm with its plain weight) must equal exact_ref's
gated_delta_net on the GGUF view (llama.cpp's tiled order for qwen35, grouped for qwen3next).
For qwen35/qwen35moe the GGUF view is the shipped F32 GGUF; for the small qwen3next checkpoint it
is built by the converter port used for its expected.json.
Usage: python3 check_hf_qwen35.py   (from tests/data/tools, with the /work/venv-fixtures Python)
"""
import json
import os

import numpy as np
from safetensors.numpy import load_file

import exact_ref as E

HERE = os.path.dirname(os.path.abspath(__file__))
HYBRID = os.path.join(HERE, "..", "hybrid")


def silu(x):
    return x / (1 + np.exp(-x))


def hf_mixer(h, mixed, z, b, a, conv_w, A_log, dt_bias, norm_w, out_w, n_k, n_v, d, eps):
    """transformers' GatedDeltaNet after the input projections (grouped value heads)."""
    T = h.shape[0]
    r = n_v // n_k
    K = conv_w.shape[1]
    xp = np.concatenate([np.zeros((K - 1, mixed.shape[1])), mixed])
    c = silu(sum(xp[t:t + T] * conv_w[:, t] for t in range(K)))
    kd = n_k * d
    q = c[:, :kd].reshape(T, n_k, d)
    k = c[:, kd:2 * kd].reshape(T, n_k, d)
    v = c[:, 2 * kd:].reshape(T, n_v, d)
    q = np.repeat(E.l2norm(q, eps), r, axis=1)
    k = np.repeat(E.l2norm(k, eps), r, axis=1)
    beta = 1 / (1 + np.exp(-b))
    g = -np.exp(A_log) * np.logaddexp(0, a + dt_bias)
    o = np.zeros((T, n_v, d))
    for j in range(n_v):
        o[:, j], _ = E.delta_rule_recurrent(q[:, j] / np.sqrt(d), k[:, j], v[:, j], g[:, j], beta[:, j], np.zeros((d, d)))
    o = E.rmsnorm(o, norm_w, eps) * silu(z.reshape(T, n_v, d))
    return o.reshape(T, -1) @ out_w.T


def f64(x):
    return np.asarray(x, dtype=np.float64)


def check_qwen35(name, h):
    d_ = os.path.join(HYBRID, "safetensors", f"tiny-{name}")
    hf = load_file(os.path.join(d_, "model.safetensors"))
    cfg = json.load(open(os.path.join(d_, "config.json")))["text_config"]
    n_k, n_v, d = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"], cfg["linear_key_head_dim"]
    p = "model.language_model.layers.0.linear_attn."
    out = hf_mixer(h, h @ f64(hf[p + "in_proj_qkv.weight"]).T, h @ f64(hf[p + "in_proj_z.weight"]).T,
                   h @ f64(hf[p + "in_proj_b.weight"]).T, h @ f64(hf[p + "in_proj_a.weight"]).T,
                   f64(hf[p + "conv1d.weight"][:, 0, :]), f64(hf[p + "A_log"]), f64(hf[p + "dt_bias"]),
                   f64(hf[p + "norm.weight"]), f64(hf[p + "out_proj.weight"]), n_k, n_v, d, cfg["rms_norm_eps"])
    W, kv = E.load(os.path.join(HYBRID, "models", f"tiny-{name}-f32.gguf"))
    ref, _ = E.gated_delta_net(W, kv, name, "blk.0.", h)
    return np.abs(out - ref).max(), np.abs(ref).max()


def check_qwen3next(h):
    d_ = os.path.join(HYBRID, "safetensors", "tiny-qwen3next")
    hf = load_file(os.path.join(d_, "model.safetensors"))
    cfg = json.load(open(os.path.join(d_, "config.json")))
    n_k, n_v, d, eps = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"], cfg["linear_key_head_dim"], cfg["rms_norm_eps"]
    r, n_embd, T = n_v // n_k, cfg["hidden_size"], h.shape[0]
    p = "model.layers.0.linear_attn."
    # HF: per key head [q d | k d | v r d | z r d] and [b r | a r]
    qkvz = (h @ f64(hf[p + "in_proj_qkvz.weight"]).T).reshape(T, n_k, 2 * d + 2 * r * d)
    q, k, v, z = np.split(qkvz, [d, 2 * d, 2 * d + r * d], axis=-1)
    ba = (h @ f64(hf[p + "in_proj_ba.weight"]).T).reshape(T, n_k, 2 * r)
    mixed = np.concatenate([q.reshape(T, -1), k.reshape(T, -1), v.reshape(T, -1)], axis=-1)
    out = hf_mixer(h, mixed, z.reshape(T, -1), ba[..., :r].reshape(T, n_v), ba[..., r:].reshape(T, n_v),
                   f64(hf[p + "conv1d.weight"][:, 0, :]), f64(hf[p + "A_log"]), f64(hf[p + "dt_bias"]),
                   f64(hf[p + "norm.weight"]), f64(hf[p + "out_proj.weight"]), n_k, n_v, d, eps)
    # the GGUF view by the converter port (make_hf_qwen35.qwen3next_small's expected.json)
    t = hf[p + "in_proj_qkvz.weight"].T.reshape(n_embd, n_k, 2 * d + 2 * r * d)
    qq, kk, vv, zz = np.split(t, [d, 2 * d, 2 * d + r * d], axis=-1)
    flat = lambda x: x.reshape(n_embd, -1)
    W = {"blk.0.attn_qkv.weight": f64(np.concatenate([flat(qq), flat(kk), flat(vv)], -1).T),
         "blk.0.attn_gate.weight": f64(flat(zz).T),
         "blk.0.ssm_ba.weight": f64(hf[p + "in_proj_ba.weight"]),
         "blk.0.ssm_conv1d.weight": f64(hf[p + "conv1d.weight"][:, 0, :]),
         "blk.0.ssm_dt.bias": f64(hf[p + "dt_bias"]),
         "blk.0.ssm_a": -np.exp(f64(hf[p + "A_log"])),
         "blk.0.ssm_norm.weight": f64(hf[p + "norm.weight"]),
         "blk.0.ssm_out.weight": f64(hf[p + "out_proj.weight"])}
    kv = {"qwen3next.attention.layer_norm_rms_epsilon": eps, "qwen3next.ssm.state_size": d,
          "qwen3next.ssm.group_count": n_k, "qwen3next.ssm.time_step_rank": n_v,
          "qwen3next.ssm.inner_size": n_v * d}
    ref, _ = E.gated_delta_net(W, kv, "qwen3next", "blk.0.", h)
    return np.abs(out - ref).max(), np.abs(ref).max()


def main():
    rng = np.random.default_rng(5)
    for name in ("qwen35", "qwen35moe"):
        err, scale = check_qwen35(name, rng.standard_normal((30, 128)))
        print(f"tiny-{name}: HF semantics vs llama.cpp semantics on the GGUF, layer 0 mixer: max {err:.1e} (scale {scale:.2f})")
        assert err < 1e-6 * scale, err
    err, scale = check_qwen3next(rng.standard_normal((30, 64)))
    print(f"tiny-qwen3next (HF only): HF semantics vs the converter port + llama.cpp semantics: max {err:.1e} (scale {scale:.2f})")
    assert err < 1e-12 * scale, err


if __name__ == "__main__":
    main()
