#!/usr/bin/env python3
"""Supplementary "exact" reference: float64 numpy forward pass on the DEQUANTIZED GGUF weights.

Why: llama.cpp's CPU path quantizes activations to Q8_0/Q8_1/Q8_K before every quantized matmul,
stores K/V in f16 and uses an f16 GELU table. That is a valid implementation, but it puts the
llama.cpp logits ~0.1-0.2 (mean) / ~1-1.5 (max) away from the exact math on the same quantized
weights. An engine that dequantizes and computes in f32 is expected to land near THIS reference.

Validation (see README): with F32 weights + F32 KV cache, llama.cpp and this file agree to
~2e-5 max abs on the logits for llama, qwen2, qwen3, qwen3moe and llama-moe tiny models, and
to ~6e-3 for gemma3 (llama.cpp's CPU GELU uses an f16 lookup table; here it is exact tanh-GELU).

Semantics implemented (= llama.cpp at the pinned commit):
  * RMSNorm: x / sqrt(mean(x^2) + eps) * w   (GGUF gemma norm weights already include the +1)
  * RoPE: llama arch = "normal" (rotate adjacent pairs (2i, 2i+1)); qwen2/qwen3/qwen3moe/gemma3 =
    NEOX (rotate (i, i + d/2)); theta_i = pos * base^(-2i/d)
  * qwen3/qwen3moe/gemma3: per-head RMSNorm of q and k (attn_q_norm/attn_k_norm) BEFORE RoPE
  * attention scale 1/sqrt(head_dim); GQA: query head h uses kv head h // (n_head / n_head_kv)
  * llama + rope_freqs.weight (Llama-3 rope scaling): theta_i = pos * base^(-2i/d) / factor_i
  * gemma3 with exactly 62 layers (llama.cpp's "27B" type): attention scale 1/sqrt(n_embd // n_head)
  * gemma3 with {arch}.final_logit_softcapping = c > 0: logits = c * tanh(logits / c)
  * gemma3: input embedding * sqrt(n_embd); layers with il % 6 < 5 are sliding-window layers
    (key j visible to query i iff 0 <= i - j < sliding_window) with rope base 10000
    (gemma3.rope.freq_base_swa default), other layers global with gemma3.rope.freq_base;
    post_attention_norm / post_ffw_norm applied to the block outputs before the residual add;
    FFN = down(gelu_tanh(gate(x)) * up(x))
  * llama/qwen FFN = down(silu(gate(x)) * up(x))
  * MoE (qwen3moe, llama+experts): p = softmax(router(x)); take top-k experts by p;
    weights = p_topk / sum(p_topk); out = sum_k w_k * down_k(silu(gate_k(x)) * up_k(x))
  * output = output.weight if present else token_embd.weight (tied)
  * gpt-oss (llama.cpp src/models/openai-moe.cpp, build_moe_ffn, build_attn_mha):
    - NEOX rope on the full head (n_rot = key_length); layers with il % 2 == 0 are sliding-window
      (key j visible to query i iff 0 <= i - j < sliding_window), odd layers full attention;
      rope base gpt-oss.rope.freq_base (rope.freq_base_swa, if present, for the SWA layers)
    - q/k/v biases and an attn_output bias; attention scale 1/sqrt(head_dim)
    - attention sinks (attn_sinks.weight [n_head]): per head a logit s_h joins each softmax row
      (max and denominator include it, it contributes no value)
    - FFN input norm = blk.N.post_attention_norm (a pre-FFN RMSNorm, not a post-norm)
    - MoE: router logits = W x + b; top-k experts by logit; weights = softmax over the k chosen
      logits (SOFTMAX_WEIGHT gating, no renormalization); expert e: g = Wg x + bg, u = Wu x + bu,
      a = swiglu_oai(g, u) = min(g, 7) * sigmoid(1.702 * min(g, 7)) * (clamp(u, -7, 7) + 1),
      out += w_e * (Wd a + bd)
  * YaRN rope scaling (rope.scaling.type = "yarn", any arch): freq_scale = 1/factor,
    ext_factor 1, beta_fast 32, beta_slow 1, n_ctx_orig = rope.scaling.original_context_length;
    corr dims = [max(0, floor(c(beta_fast))), min(n_rot - 1, ceil(c(beta_slow)))] with
    c(b) = n_rot * ln(n_ctx_orig / (2 pi b)) / (2 ln base); pair i: ramp = 1 - clamp((i - lo) /
    max(0.001, hi - lo), 0, 1), theta = theta_extrap * ramp + theta_extrap * freq_scale * (1 - ramp);
    cos/sin multiplied by mscale = [get_mscale(factor) / (1 + 0.1 ln factor)] (llama-context.cpp's
    yarn_attn_factor, = 1 here) * rope.scaling.attn_factor (default 1) * (1 + 0.1 ln factor)
    (ggml rope_yarn). Other rope scaling types are not implemented (a warning is printed).

Usage: python3 exact_ref.py [--real-models-dir REAL_MODELS_DIR] [--sets public,hidden]
       python3 exact_ref.py --trace MODEL.gguf --ids 1,2,3 [--trace-out DIR]   (hybrid archs:
       intermediate tensors for debugging an engine layer by layer; see write_trace)
   or: python3 exact_ref.py --embed MODEL.gguf --ids 1,2,3 --out embed-NAME.json
       (the final-norm hidden state of the ids, pooled mean / last / first, in float64)
For every case in SET/index.json, teacher-forces the sequence prompt_ids + greedy_ids (the
llama.cpp greedy tokens) and writes SET/<case>.exact.json (per-row argmax, margin, logsumexp,
top-64) and, for the tiny models, SET/<case>.exact.f32 (all rows, same layout as <case>.f32).
"""
import argparse
import json
import os

import numpy as np
import gguf
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
TOPK = 64


def load(path):
    r = gguf.GGUFReader(path)
    W = {}
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type)
        shape = [int(x) for x in reversed(t.shape.tolist())]
        dt = np.float32 if t.name in ("token_embd.weight", "output.weight") else np.float64
        W[t.name] = np.asarray(a, dtype=dt).reshape(shape)
    kv = {}
    for k, f in r.fields.items():
        if k.startswith("tokenizer"):
            continue
        try:
            kv[k] = f.contents()
        except Exception:
            pass
    return W, kv


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def yarn_corr_dims(n_dims, n_ctx_orig, base, beta_fast=32.0, beta_slow=1.0):
    """ggml_rope_yarn_corr_dims (ggml.c)."""
    def corr_dim(n_rot):
        return n_dims * np.log(n_ctx_orig / (n_rot * 2 * np.pi)) / (2 * np.log(base))
    lo = max(0.0, float(np.floor(corr_dim(beta_fast))))
    hi = min(float(n_dims - 1), float(np.ceil(corr_dim(beta_slow))))
    return lo, hi


def rope_scaling(kv, arch):
    """None (no scaling) or dict(freq_scale, ext_factor, n_ctx_orig, mscale) as llama.cpp derives
    them (llama-model.cpp load_hparams, llama-context.cpp, ggml rope_yarn)."""
    typ = kv.get(f"{arch}.rope.scaling.type", "linear")
    factor = float(kv.get(f"{arch}.rope.scaling.factor", 0.0) or 0.0)
    attn_factor = float(kv.get(f"{arch}.rope.scaling.attn_factor", 1.0))
    assert f"{arch}.rope.scaling.yarn_log_multiplier" not in kv
    if typ != "yarn":
        # only YaRN is implemented (as before this file ignores other scaling types; none of the
        # fixture models has one)
        if factor not in (0.0, 1.0) or attn_factor != 1.0:
            import sys
            sys.stderr.write(f"warning: rope scaling {typ} factor {factor} attn_factor {attn_factor} ignored\n")
        return None
    assert factor > 0.0
    freq_scale = 1.0 / factor
    n_ctx_orig = int(kv.get(f"{arch}.rope.scaling.original_context_length", kv[f"{arch}.context_length"]))
    get_mscale = (lambda s: 1.0 if s <= 1.0 else 0.1 * np.log(s) + 1.0)
    yarn_attn_factor = get_mscale(factor) / (1.0 + 0.1 * np.log(factor)) * attn_factor
    mscale = yarn_attn_factor * (1.0 + 0.1 * np.log(1.0 / freq_scale))
    return dict(freq_scale=freq_scale, ext_factor=1.0, n_ctx_orig=n_ctx_orig, mscale=mscale)


def rope(x, pos, base, neox, freq_factors=None, scaling=None):
    T, H, D = x.shape
    inv = base ** (-np.arange(0, D, 2, dtype=np.float64) / D)
    if freq_factors is not None:
        # ggml rope with a freq_factors tensor (src2): theta_i = pos * base^(-2i/D) / ff[i], for
        # the pair i in both layouts (normal: dims (2i, 2i+1); neox: dims (i, i + D/2))
        assert freq_factors.shape == (D // 2,), freq_factors.shape
        inv = inv / freq_factors
    ang = pos[:, None] * inv[None, :]
    mscale = 1.0
    if scaling is not None:
        # ggml rope_yarn: theta_interp = freq_scale * theta_extrap, blended with the ramp
        interp = scaling["freq_scale"] * ang
        lo, hi = yarn_corr_dims(D, scaling["n_ctx_orig"], base)
        i = np.arange(D // 2, dtype=np.float64)
        y = (i - lo) / max(0.001, hi - lo)
        ramp_mix = (1.0 - np.clip(y, 0.0, 1.0)) * scaling["ext_factor"]
        ang = interp * (1 - ramp_mix)[None, :] + ang * ramp_mix[None, :]
        mscale = scaling["mscale"]
    c = np.cos(ang)[:, None, :] * mscale
    s = np.sin(ang)[:, None, :] * mscale
    y = x.copy()
    if neox:
        x0, x1 = x[..., : D // 2], x[..., D // 2:]
        y[..., : D // 2] = x0 * c - x1 * s
        y[..., D // 2:] = x0 * s + x1 * c
    else:
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y[..., 0::2] = x0 * c - x1 * s
        y[..., 1::2] = x0 * s + x1 * c
    return y


SWIGLU_OAI_ALPHA = 1.702
SWIGLU_OAI_LIMIT = 7.0
STATS = {}  # diagnostics (gpt-oss: how often SwiGLU-OAI's clamps bite), printed, not written


def moe_gptoss(W, p, h, n_used):
    T = h.shape[0]
    lg = h @ W[p + "ffn_gate_inp.weight"].T + W[p + "ffn_gate_inp.bias"]
    Wg, bg = W[p + "ffn_gate_exps.weight"], W[p + "ffn_gate_exps.bias"]
    Wu, bu = W[p + "ffn_up_exps.weight"], W[p + "ffn_up_exps.bias"]
    Wd, bd = W[p + "ffn_down_exps.weight"], W[p + "ffn_down_exps.bias"]
    lim = SWIGLU_OAI_LIMIT
    f = np.zeros_like(h)
    for t in range(T):
        top = np.argsort(-lg[t], kind="stable")[:n_used]
        w = np.exp(lg[t, top] - lg[t, top].max())
        w /= w.sum()
        for e_, ww in zip(top, w):
            gt = Wg[e_] @ h[t] + bg[e_]
            up = Wu[e_] @ h[t] + bu[e_]
            xg = np.minimum(gt, lim)
            yu = np.clip(up, -lim, lim)
            STATS["act"] = STATS.get("act", 0) + gt.size
            STATS["gate_clamped"] = STATS.get("gate_clamped", 0) + int((gt > lim).sum())
            STATS["up_clamped"] = STATS.get("up_clamped", 0) + int((np.abs(up) > lim).sum())
            act = xg / (1 + np.exp(-SWIGLU_OAI_ALPHA * xg)) * (yu + 1)
            f[t] += ww * (Wd[e_] @ act + bd[e_])
    return f


# --- Qwen3.5 / Qwen3.5-MoE / Qwen3-Next (llama.cpp src/models/qwen35.cpp, qwen35moe.cpp,
# qwen3next.cpp, delta-net-base.cpp, ggml-cpu ops.cpp ggml_compute_forward_gated_delta_net) ---
HYBRID_ARCHS = ("qwen35", "qwen35moe", "qwen3next")
# intermediate tensors of the hybrid pass, recorded when a dict is put here (--trace)
TRACE = None


def trace(name, value):
    if TRACE is not None:
        TRACE[name] = np.array(value, dtype=np.float64)


def silu(x):
    return x / (1.0 + np.exp(-x))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def l2norm(x, eps):
    """llama.cpp build_gdn_l2_norm: rms_norm(x, eps / n) / sqrt(n) = x / sqrt(sum(x^2) + eps)."""
    return x / np.sqrt((x * x).sum(-1, keepdims=True) + eps)


def hybrid_recurrent_flags(kv, arch, n_layer):
    """attention.recurrent_layers when present, else (il + 1) % full_attention_interval != 0
    (interval 4 when the key is absent), as load_arch_hparams does."""
    flags = kv.get(f"{arch}.attention.recurrent_layers")
    if flags is not None:
        flags = [bool(f) for f in flags]
        assert len(flags) >= n_layer, flags
        return flags[:n_layer]
    interval = int(kv.get(f"{arch}.full_attention_interval", 4))
    return [(il + 1) % interval != 0 for il in range(n_layer)]


def rope_partial(x, pos, base, n_rot, sections=None):
    """NEOX rotation of the first n_rot dims of each head (pairs (i, i + n_rot/2),
    theta_i = p * base^(-2i/n_rot)); dims n_rot.. pass through. With sections (qwen35's
    interleaved M-RoPE, ggml_mrope_cache_init with is_imrope): pair i takes its position from
    sector = i % sum(sections): sector % 3 == 1 and sector < 3*s[1] -> h, % 3 == 2 and
    < 3*s[2] -> w, % 3 == 0 and < 3*s[0] -> t, else the 4th ("e") position. For text llama.cpp
    sets t = h = w = the token position and e = 0 (llm_graph_input_pos::set_input)."""
    T, H, D = x.shape
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    inv = base ** (-2.0 * i / n_rot)
    p = np.repeat(pos[:, None], half, axis=1)
    if sections is not None:
        s = [int(v) for v in sections]
        sector = np.arange(half) % sum(s)
        use_e = ~(((sector % 3 == 1) & (sector < 3 * s[1])) |
                  ((sector % 3 == 2) & (sector < 3 * s[2])) |
                  ((sector % 3 == 0) & (sector < 3 * s[0])))
        p = np.where(use_e[None, :], 0.0, p)
    ang = p * inv[None, :]
    c = np.cos(ang)[:, None, :]
    sn = np.sin(ang)[:, None, :]
    y = x.copy()
    x0, x1 = x[..., :half], x[..., half:n_rot]
    y[..., :half] = x0 * c - x1 * sn
    y[..., half:n_rot] = x0 * sn + x1 * c
    return y


def gated_delta_net(W, kv, arch, p, h, state=None):
    """One Gated DeltaNet layer on the normed input h [T, n_embd], recurrent form, float64.
    state: None (zeros) or (conv_state [K-1, conv_dim], S [n_v, d_k, d_v]); returns
    (output [T, n_embd], new state)."""
    g_ = lambda k: kv[f"{arch}.{k}"]
    eps = g_("attention.layer_norm_rms_epsilon")
    d_k = int(g_("ssm.state_size"))
    n_k = int(g_("ssm.group_count"))
    n_v = int(g_("ssm.time_step_rank"))
    d_inner = int(g_("ssm.inner_size"))
    d_v = d_inner // n_v
    assert d_v == d_k, (d_v, d_k)
    r = n_v // n_k
    T = h.shape[0]
    key_dim = n_k * d_k
    qkv = h @ W[p + "attn_qkv.weight"].T            # [T, 2 key_dim + n_v d_v]
    z = h @ W[p + "attn_gate.weight"].T              # [T, n_v d_v]
    if p + "ssm_ba.weight" in W:
        # qwen3next: per key head g, [beta of its r value heads, alpha of its r value heads]
        ba = (h @ W[p + "ssm_ba.weight"].T).reshape(T, n_k, 2 * r)
        b = ba[:, :, :r].reshape(T, n_v)
        a = ba[:, :, r:].reshape(T, n_v)
    else:
        b = h @ W[p + "ssm_beta.weight"].T
        a = h @ W[p + "ssm_alpha.weight"].T
    beta = sigmoid(b)                                # [T, n_v]
    # ssm_a holds -exp(A_log); softplus(x) = log(1 + e^x) (llama.cpp returns x for x > 20, a
    # difference below 2e-9)
    g = W[p + "ssm_a"][None, :] * np.logaddexp(0.0, a + W[p + "ssm_dt.bias"][None, :])
    conv_w = W[p + "ssm_conv1d.weight"]              # [conv_dim, K]
    K = conv_w.shape[1]
    conv_dim = conv_w.shape[0]
    if state is None:
        conv_state = np.zeros((K - 1, conv_dim))
        S = np.zeros((n_v, d_k, d_v))
    else:
        conv_state, S = state[0].copy(), state[1].copy()
    xin = np.concatenate([conv_state, qkv], axis=0)  # [K - 1 + T, conv_dim]
    # causal depthwise conv: output t sees inputs t-K+1 .. t, tap K-1 on the current token
    c = np.zeros((T, conv_dim))
    for tap in range(K):
        c += xin[tap:tap + T] * conv_w[:, tap][None, :]
    new_conv_state = xin[T:]                          # the last K-1 inputs
    c = silu(c)
    trace(p + "gdn.qkv", qkv)
    trace(p + "gdn.z", z)
    trace(p + "gdn.beta", beta)
    trace(p + "gdn.g", g)
    trace(p + "gdn.conv_silu", c)
    q = l2norm(c[:, :key_dim].reshape(T, n_k, d_k), eps)
    k = l2norm(c[:, key_dim:2 * key_dim].reshape(T, n_k, d_k), eps)
    v = c[:, 2 * key_dim:].reshape(T, n_v, d_v)
    # key head of each value head: qwen35/qwen35moe tiled (j % n_k, the converter reorders the
    # value heads for ggml's broadcast), qwen3next grouped (j // r, ggml_repeat_4d interleave)
    kh = np.arange(n_v) % n_k if arch in ("qwen35", "qwen35moe") else np.arange(n_v) // r
    trace(p + "gdn.q_l2", q)
    trace(p + "gdn.k_l2", k)
    scale = 1.0 / np.sqrt(d_k)
    o = np.zeros((T, n_v, d_v))
    for t in range(T):
        kt = k[t, kh]                                 # [n_v, d_k]
        qt = q[t, kh] * scale
        S *= np.exp(g[t])[:, None, None]              # decay
        pred = np.einsum("hij,hi->hj", S, kt)         # S^T k
        delta = (v[t] - pred) * beta[t][:, None]      # [n_v, d_v]
        S += kt[:, :, None] * delta[:, None, :]       # S += k (x) delta
        o[t] = np.einsum("hij,hi->hj", S, qt)         # S^T (q / sqrt(d_k))
    trace(p + "gdn.core_out", o)
    trace(p + "gdn.state", S)
    trace(p + "gdn.conv_state", new_conv_state)
    # gated RMSNorm per value head: rmsnorm(o) * ssm_norm * silu(z)
    o = rmsnorm(o, W[p + "ssm_norm.weight"], eps) * silu(z.reshape(T, n_v, d_v))
    trace(p + "gdn.gated_norm", o)
    out = o.reshape(T, n_v * d_v) @ W[p + "ssm_out.weight"].T
    return out, (new_conv_state, S)


def delta_rule_recurrent(q, k, v, g, beta, S0):
    """The gated delta rule token by token for one head (the definition; q already scaled):
    q, k [T, d_k], v [T, d_v], g, beta [T], S0 [d_k, d_v] -> (o [T, d_v], S_T)."""
    S = S0.copy()
    o = np.zeros((len(g), v.shape[1]))
    for t in range(len(g)):
        S *= np.exp(g[t])
        S += np.outer(k[t], beta[t] * (v[t] - S.T @ k[t]))
        o[t] = S.T @ q[t]
    return o, S


def delta_rule_chunked(q, k, v, g, beta, S0, chunk):
    """The same recurrence evaluated chunk by chunk, as a parallel prefill does (a float64
    reference for such kernels; equal to delta_rule_recurrent to rounding for any chunk size,
    including sizes that do not divide T). Within a chunk of C tokens, with G_t = sum of g over
    the chunk up to t and D_ts = exp(G_t - G_s):
      delta = (I + A)^-1 beta * (V - exp(G) * (K S0)),  A_ts = beta_t D_ts (k_t . k_s) for s < t
      o_t   = exp(G_t) S0^T q_t + sum_{s <= t} D_ts (q_t . k_s) delta_s
      S_C   = exp(G_C) S0 + sum_s D_Cs k_s delta_s^T
    (delta_t is beta_t (v_t - S_{t-1}'^T k_t) with S_{t-1}' the state after token t's decay.)"""
    T = len(g)
    S = S0.copy()
    o = np.zeros((T, v.shape[1]))
    for c0 in range(0, T, chunk):
        sl = slice(c0, min(c0 + chunk, T))
        qc, kc, vc, gc, bc = q[sl], k[sl], v[sl], g[sl], beta[sl]
        C = len(gc)
        G = np.cumsum(gc)
        D = np.exp(G[:, None] - G[None, :])
        lower = np.tril(np.ones((C, C), bool), -1)
        A = np.where(lower, bc[:, None] * D * (kc @ kc.T), 0.0)
        rhs = bc[:, None] * (vc - np.exp(G)[:, None] * (kc @ S))
        delta = np.linalg.solve(np.eye(C) + A, rhs)
        att = np.where(np.tril(np.ones((C, C), bool)), D * (qc @ kc.T), 0.0)
        o[sl] = np.exp(G)[:, None] * (qc @ S) + att @ delta
        S = np.exp(G[-1]) * S + (D[-1][:, None] * kc).T @ delta
    return o, S


def gated_attention(W, kv, arch, p, h, pos, k_cache=None, v_cache=None):
    """Full-attention layer with the sigmoid output gate; causal over k_cache ++ new keys."""
    g_ = lambda k, d=None: kv.get(f"{arch}.{k}", d)
    eps = g_("attention.layer_norm_rms_epsilon")
    n_head = int(g_("attention.head_count"))
    n_kv = int(g_("attention.head_count_kv"))
    hd = int(g_("attention.key_length"))
    n_rot = int(g_("rope.dimension_count", hd))
    base = float(g_("rope.freq_base", 10000.0))
    sections = g_("rope.dimension_sections") if arch in ("qwen35", "qwen35moe") else None
    T = h.shape[0]
    qg = (h @ W[p + "attn_q.weight"].T).reshape(T, n_head, 2 * hd)
    q, gate = qg[..., :hd], qg[..., hd:]
    k = (h @ W[p + "attn_k.weight"].T).reshape(T, n_kv, hd)
    v = (h @ W[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
    q = rmsnorm(q, W[p + "attn_q_norm.weight"], eps)
    k = rmsnorm(k, W[p + "attn_k_norm.weight"], eps)
    q = rope_partial(q, pos, base, n_rot, sections)
    k = rope_partial(k, pos, base, n_rot, sections)
    trace(p + "attn.q_roped", q)
    trace(p + "attn.k_roped", k)
    trace(p + "attn.v", v)
    trace(p + "attn.gate", gate)
    if k_cache is not None:
        k = np.concatenate([k_cache, k], axis=0)
        v = np.concatenate([v_cache, v], axis=0)
    n_past = k.shape[0] - T
    mask = (np.arange(k.shape[0])[None, :] <= (n_past + np.arange(T))[:, None])
    grp = n_head // n_kv
    out = np.zeros((T, n_head, hd))
    for hh in range(n_head):
        s = (q[:, hh] @ k[:, hh // grp].T) / np.sqrt(hd)
        s = np.where(mask, s, -np.inf)
        s = s - s.max(1, keepdims=True)
        e = np.exp(s)
        e /= e.sum(1, keepdims=True)
        out[:, hh] = e @ v[:, hh // grp]
    trace(p + "attn.pregate", out)
    out = out.reshape(T, n_head * hd) * sigmoid(gate.reshape(T, n_head * hd))
    return out @ W[p + "attn_output.weight"].T, k, v


def hybrid_ffn(W, kv, arch, p, h):
    """Dense SwiGLU, or softmax-routed top-k MoE (weights renormalised over the k chosen) plus
    the shared expert scaled by sigmoid(ffn_gate_inp_shexp . h)."""
    if p + "ffn_gate_inp.weight" not in W:
        gt = h @ W[p + "ffn_gate.weight"].T
        return (silu(gt) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    n_used = int(kv[f"{arch}.expert_used_count"])
    lg = h @ W[p + "ffn_gate_inp.weight"].T
    pr = np.exp(lg - lg.max(1, keepdims=True))
    pr /= pr.sum(1, keepdims=True)
    f = np.zeros_like(h)
    for t in range(h.shape[0]):
        top = np.argsort(-pr[t], kind="stable")[:n_used]
        w = pr[t, top] / pr[t, top].sum()
        for e_, ww in zip(top, w):
            gt = W[p + "ffn_gate_exps.weight"][e_] @ h[t]
            up = W[p + "ffn_up_exps.weight"][e_] @ h[t]
            f[t] += ww * (W[p + "ffn_down_exps.weight"][e_] @ (silu(gt) * up))
    if p + "ffn_up_shexp.weight" in W:
        sh = (silu(h @ W[p + "ffn_gate_shexp.weight"].T) * (h @ W[p + "ffn_up_shexp.weight"].T)) \
            @ W[p + "ffn_down_shexp.weight"].T
        f += sh * sigmoid(h @ W[p + "ffn_gate_inp_shexp.weight"])[:, None]
    return f


class HybridState:
    """Per-sequence memory of a hybrid model: (conv state, delta-rule state) per recurrent
    layer, the K/V so far per attention layer, and the number of tokens seen."""

    def __init__(self):
        self.rec = {}
        self.kv = {}
        self.n_past = 0


def forward_hybrid(W, kv, ids, state=None):
    """Logits [len(ids), n_vocab] for ids placed after whatever `state` has seen (a fresh
    sequence when None). The state is updated in place when given."""
    arch = kv["general.architecture"]
    n_layer = int(kv[f"{arch}.block_count"])
    eps = kv[f"{arch}.attention.layer_norm_rms_epsilon"]
    flags = hybrid_recurrent_flags(kv, arch, n_layer)
    st = state if state is not None else HybridState()
    T = len(ids)
    pos = np.arange(st.n_past, st.n_past + T, dtype=np.float64)
    x = W["token_embd.weight"][ids].astype(np.float64)
    for il in range(n_layer):
        p = f"blk.{il}."
        trace(p + "l_in", x)
        h = rmsnorm(x, W[p + "attn_norm.weight"], eps)
        if flags[il]:
            a, st.rec[il] = gated_delta_net(W, kv, arch, p, h, st.rec.get(il))
        else:
            kc, vc = st.kv.get(il, (None, None))
            a, kc, vc = gated_attention(W, kv, arch, p, h, pos, kc, vc)
            st.kv[il] = (kc, vc)
        trace(p + "mixer_out", a)
        x = x + a
        f = hybrid_ffn(W, kv, arch, p, rmsnorm(x, W[p + "post_attention_norm.weight"], eps))
        trace(p + "ffn_out", f)
        x = x + f
    st.n_past += T
    x = rmsnorm(x, W["output_norm.weight"], eps)
    trace("result_norm", x)
    wout = W.get("output.weight", W["token_embd.weight"])
    return x @ wout.astype(np.float64).T


def forward(W, kv, ids, hidden=False):
    arch = kv["general.architecture"]
    if arch in HYBRID_ARCHS:
        assert not hidden, "--embed does not cover the hybrid archs"
        return forward_hybrid(W, kv, ids)

    def g(k, d=None):
        return kv.get(f"{arch}.{k}", d)

    n_layer = g("block_count")
    n_head = g("attention.head_count")
    n_kv = g("attention.head_count_kv", n_head)
    eps = g("attention.layer_norm_rms_epsilon")
    base = g("rope.freq_base", 10000.0)
    n_embd = g("embedding_length")
    hd = g("attention.key_length", n_embd // n_head)
    n_exp = g("expert_count", 0)
    n_used = g("expert_used_count", 0)
    assert arch in ("llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "gpt-oss"), arch
    neox = arch != "llama"
    gptoss = arch == "gpt-oss"
    swa = g("attention.sliding_window", 0) if arch in ("gemma3", "gpt-oss") else 0
    # gemma3: rope.freq_base_swa defaults to 10000; gpt-oss: to rope.freq_base
    base_swa = g("rope.freq_base_swa", base if gptoss else 10000.0)
    # sliding-window layer pattern: gemma3 il % 6 < 5; gpt-oss il % 2 < 1 (load_swa_pattern(ml, 2))
    swa_period = 2 if gptoss else 6
    if gptoss:
        assert not isinstance(g("attention.sliding_window_pattern"), list)
        swa_period = int(g("attention.sliding_window_pattern", 2))
    scaling = rope_scaling(kv, arch)
    # llama: rope_freqs.weight (Llama-3 rope scaling factors) is passed to every layer's rope
    # (llama_model::get_rope_factors); absent -> no factors. gemma3 never passes factors.
    ff = W.get("rope_freqs.weight") if arch == "llama" else None
    # attention scale: 1/sqrt(head_dim), except gemma3 with 62 layers (LLM_TYPE_27B in llama.cpp's
    # gemma3 load_arch_hparams), which uses 1/sqrt(n_embd / n_head) (integer division)
    if arch == "gemma3" and n_layer == 62:
        attn_scale = 1.0 / np.sqrt(float(n_embd // n_head))
    else:
        attn_scale = 1.0 / np.sqrt(hd)
    # gemma3: optional final logit softcapping, logits = cap * tanh(logits / cap)
    softcap = float(g("final_logit_softcapping", 0.0) or 0.0) if arch == "gemma3" else 0.0
    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    x = W["token_embd.weight"][ids].astype(np.float64)
    if arch == "gemma3":
        x = x * np.sqrt(n_embd)
    causal = np.tril(np.ones((T, T), bool))
    ii, jj = np.meshgrid(np.arange(T), np.arange(T), indexing="ij")
    for il in range(n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, W[p + "attn_norm.weight"], eps)
        q = h @ W[p + "attn_q.weight"].T
        k = h @ W[p + "attn_k.weight"].T
        v = h @ W[p + "attn_v.weight"].T
        if p + "attn_q.bias" in W:
            q += W[p + "attn_q.bias"]
            k += W[p + "attn_k.bias"]
            v += W[p + "attn_v.bias"]
        q = q.reshape(T, n_head, hd)
        k = k.reshape(T, n_kv, hd)
        v = v.reshape(T, n_kv, hd)
        if p + "attn_q_norm.weight" in W:
            q = rmsnorm(q, W[p + "attn_q_norm.weight"], eps)
            k = rmsnorm(k, W[p + "attn_k_norm.weight"], eps)
        is_swa = arch in ("gemma3", "gpt-oss") and swa > 0 and (il % swa_period < swa_period - 1)
        b = base_swa if is_swa else base
        q = rope(q, pos, b, neox, ff, scaling)
        k = rope(k, pos, b, neox, ff, scaling)
        mask = causal & ((ii - jj) < swa) if is_swa else causal
        scale = attn_scale
        grp = n_head // n_kv
        out = np.zeros((T, n_head, hd))
        sinks = W.get(p + "attn_sinks.weight")
        for hh in range(n_head):
            s = (q[:, hh] @ k[:, hh // grp].T) * scale
            s = np.where(mask, s, -np.inf)
            if sinks is not None:
                # the sink logit joins the softmax (max and denominator), with no value
                mx = np.maximum(s.max(1, keepdims=True), sinks[hh])
                e = np.exp(s - mx)
                e /= e.sum(1, keepdims=True) + np.exp(sinks[hh] - mx)
            else:
                s = s - s.max(1, keepdims=True)
                e = np.exp(s)
                e /= e.sum(1, keepdims=True)
            out[:, hh] = e @ v[:, hh // grp]
        a = out.reshape(T, n_head * hd) @ W[p + "attn_output.weight"].T
        if p + "attn_output.bias" in W:
            a += W[p + "attn_output.bias"]
        if arch == "gemma3":
            a = rmsnorm(a, W[p + "post_attention_norm.weight"], eps)
        x = x + a
        # gpt-oss: "post_attention_norm" is the pre-FFN norm
        h = rmsnorm(x, W[p + ("post_attention_norm.weight" if gptoss else "ffn_norm.weight")], eps)
        if gptoss:
            f = moe_gptoss(W, p, h, n_used)
        elif n_exp:
            lg = h @ W[p + "ffn_gate_inp.weight"].T
            pr = np.exp(lg - lg.max(1, keepdims=True))
            pr /= pr.sum(1, keepdims=True)
            f = np.zeros_like(h)
            for t in range(T):
                top = np.argsort(-pr[t], kind="stable")[:n_used]
                w = pr[t, top] / pr[t, top].sum()
                for e_, ww in zip(top, w):
                    gt = W[p + "ffn_gate_exps.weight"][e_] @ h[t]
                    up = W[p + "ffn_up_exps.weight"][e_] @ h[t]
                    f[t] += ww * (W[p + "ffn_down_exps.weight"][e_] @ (gt / (1 + np.exp(-gt)) * up))
        else:
            gt = h @ W[p + "ffn_gate.weight"].T
            up = h @ W[p + "ffn_up.weight"].T
            if arch == "gemma3":
                act = 0.5 * gt * (1 + np.tanh(np.sqrt(2 / np.pi) * (gt + 0.044715 * gt ** 3)))
            else:
                act = gt / (1 + np.exp(-gt))
            f = (act * up) @ W[p + "ffn_down.weight"].T
        if arch == "gemma3":
            f = rmsnorm(f, W[p + "post_ffw_norm.weight"], eps)
        x = x + f
    x = rmsnorm(x, W["output_norm.weight"], eps)
    if hidden:
        return x  # the final-norm hidden state, what the head reads (embeddings)
    wout = W.get("output.weight", W["token_embd.weight"])
    # token_embd/output are kept as float32 (dequantized values are exactly representable in f32)
    logits = x @ wout.astype(np.float64).T
    if softcap:
        logits = softcap * np.tanh(logits / softcap)
    return logits


def row_stats(L):
    am = L.argmax(1)
    srt = np.sort(L, axis=1)
    margin = srt[:, -1] - srt[:, -2]
    mx = L.max(1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(L - mx).sum(1))
    top = []
    for r in range(L.shape[0]):
        idx = np.lexsort((np.arange(L.shape[1]), -L[r]))[:TOPK]
        top.append([[int(i), float(np.float32(L[r, i]))] for i in idx])
    return am, margin, lse, top


def write_trace(model, ids, out_dir):
    """--trace: the hybrid pass's intermediate tensors for one id sequence, each as
    OUT/<name>.f32 (f32le, C order) with OUT/trace.json giving every name's shape. Names:
    blk.N.{l_in, mixer_out, ffn_out}; DeltaNet layers blk.N.gdn.{qkv, z, beta, g, conv_silu,
    q_l2, k_l2 ([T, n_k_heads, d], before the 1/sqrt(d) scale), core_out ([T, n_v_heads, d],
    before the gated norm), gated_norm, state ([n_v_heads, d_k, d_v], S[i][c] after the last
    token), conv_state ([K-1, conv_dim])}; attention layers blk.N.attn.{q_roped, k_roped, v,
    gate, pregate}; result_norm; logits."""
    global TRACE
    W, kv = load(model)
    assert kv["general.architecture"] in HYBRID_ARCHS, "--trace covers the hybrid archs"
    TRACE = {}
    TRACE["logits"] = forward_hybrid(W, kv, ids)
    os.makedirs(out_dir, exist_ok=True)
    shapes = {}
    for name, value in TRACE.items():
        value.astype("<f4").tofile(os.path.join(out_dir, name + ".f32"))
        shapes[name] = list(value.shape)
    with open(os.path.join(out_dir, "trace.json"), "w") as f:
        json.dump({"model": os.path.basename(model), "ids": ids, "shapes": shapes}, f, indent=1)
    TRACE = None
    print(f"wrote {len(shapes)} tensors to {out_dir}")


def embed_ref(model, ids, out):
    """Writes the final-norm hidden state of `ids` pooled three ways (mean, last token, first
    token) in float64, for the embedding tests (tests/embed.rs)."""
    W, kv = load(model)
    x = forward(W, kv, ids, hidden=True)
    ref = {
        "what": "float64 numpy forward on dequantized weights: final-norm hidden state, pooled",
        "model": os.path.basename(model), "ids": ids, "n_embd": int(x.shape[1]),
        "mean": x.mean(0).tolist(), "last": x[-1].tolist(), "cls": x[0].tolist(),
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(ref, f, separators=(",", ":"))
    print(f"{out}: {len(ids)} tokens, n_embd {x.shape[1]}, |mean| {np.linalg.norm(x.mean(0)):.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-models-dir", default="REAL_MODELS_DIR")
    ap.add_argument("--sets", default="public,hidden")
    ap.add_argument("--trace", metavar="MODEL", help="write the intermediate tensors of the hybrid "
                    "pass on --ids to --trace-out instead of processing sets")
    ap.add_argument("--embed", metavar="MODEL", help="write pooled final hidden states of --ids to --out")
    ap.add_argument("--ids", default="", help="comma-separated token ids (with --trace or --embed)")
    ap.add_argument("--trace-out", default="trace")
    ap.add_argument("--out", help="output JSON (with --embed)")
    a = ap.parse_args()
    if a.trace:
        write_trace(a.trace, [int(x) for x in a.ids.split(",") if x], a.trace_out)
        return
    if a.embed:
        embed_ref(a.embed, [int(t) for t in a.ids.split(",") if t], a.out)
        return
    cache = {}
    for set_name in a.sets.split(","):
        set_dir = os.path.join(HERE, set_name)
        with open(os.path.join(set_dir, "index.json"), encoding="utf-8") as f:
            index = json.load(f)
        for c in index["cases"]:
            mdir = os.path.join(HERE, c["model_dir"]) if not os.path.isabs(c["model_dir"]) else c["model_dir"]
            mpath = os.path.join(mdir, c["model"])
            if mpath not in cache:
                cache.clear()  # keep one model in memory at a time
                cache[mpath] = load(mpath)
            W, kv = cache[mpath]
            jpath = os.path.join(set_dir, c["json"])
            with open(jpath, encoding="utf-8") as f:
                j = json.load(f)
            seq = j["prompt_ids"] + j["greedy_ids"]
            L = forward(W, kv, seq)
            assert L.shape == (j["n_rows"], j["n_vocab"]), (L.shape, j["n_rows"], j["n_vocab"])
            am, margin, lse, top = row_stats(L)
            full = c["model_dir"] == "models"  # tiny models: store every row in full
            n_prompt = j["n_prompt"]
            prefix = 0
            while prefix < j["n_gen"] and int(am[n_prompt - 1 + prefix]) == j["greedy_ids"][prefix]:
                prefix += 1
            ex = {
                "what": "float64 numpy forward on dequantized weights, teacher-forced on prompt_ids + greedy_ids",
                "n_rows": j["n_rows"], "n_vocab": j["n_vocab"],
                "greedy_prefix_agree": prefix,
                "row_argmax": am.tolist(), "row_margin": margin.tolist(), "logsumexp": lse.tolist(),
                "logits_file": c["case"] + ".exact.f32" if full else None,
                "top_k": TOPK, "top_logits": top,
            }
            if full:
                L.astype("<f4").tofile(os.path.join(set_dir, c["case"] + ".exact.f32"))
            with open(os.path.join(set_dir, c["case"] + ".exact.json"), "w", encoding="utf-8") as f:
                json.dump(ex, f, separators=(",", ":"))
            if full:
                lc = np.fromfile(os.path.join(set_dir, j["logits_file"]), dtype="<f4").reshape(j["n_rows"], -1)
            else:
                lc = None
            agree = np.mean(np.array(j["row_argmax"]) == am)
            msg = f"{set_name} {c['case']}: argmax agreement llama.cpp vs exact {agree:.3f}, greedy prefix agree {prefix}/{j['n_gen']}"
            if lc is not None:
                d = np.abs(lc - L)
                msg += f", |llama.cpp - exact| max {d.max():.3f} mean {d.mean():.4f}"
            if STATS:
                msg += (f", SwiGLU-OAI clamps: gate>7 {STATS['gate_clamped']}/{STATS['act']}, "
                        f"|up|>7 {STATS['up_clamped']}/{STATS['act']}")
                STATS.clear()
            print(msg, flush=True)
            c["exact_json"] = c["case"] + ".exact.json"
            c["exact_logits_file"] = ex["logits_file"]
            c["greedy_prefix_agree_exact"] = prefix
        with open(os.path.join(set_dir, "index.json"), "w", encoding="utf-8") as f:
            json.dump(index, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
