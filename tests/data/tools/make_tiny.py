#!/usr/bin/env python3
"""Build tiny random-weight GGUF models (F32) for golden tests.

Every model:
  * random weights from numpy.random.default_rng(seed) -- fully deterministic
  * every matrix dimension is a multiple of 256 (so K-quants apply to every 2-D tensor)
  * a minimal SentencePiece-"llama" vocab: <unk>, <s>, </s>, <0x00>..<0xFF>, then filler pieces
  * tensors are generated directly in GGUF/llama.cpp layout (no HF->GGUF permutation: the
    weights are random, so the rope pairing convention is simply whatever llama.cpp uses
    for the architecture: llama = "normal" (adjacent pairs), qwen2/qwen3/qwen3moe/gemma3 = NEOX)

Usage: python3 make_tiny.py OUTDIR [NAME ...]  (writes OUTDIR/tiny-<name>-f32.gguf; default: every
       model in MODELS; NAME may also be one of EXTRA_MODELS)
Then quantize with llama-quantize (see README.md / gen_all.sh).
"""
import os
import sys

import numpy as np
import gguf

N_VOCAB = 512
N_EMBD = 256
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 64
N_CTX_TRAIN = 2048

# Weight scales (std of the normal init); norm weights are 1 + 0.1*N(0,1), biases 0.1*N(0,1),
# MoE router (ffn_gate_inp) 0.1*N(0,1).
#   embd: token_embd, out: output.weight (untied models), qk: attn_q/attn_k, std: everything else
# These were tuned (see README) so that logits have std ~4, greedy continuations are diverse
# and top-1/top-2 margins are mostly well above llama.cpp's own numerical noise (median ~0.8):
#   * untied models: big embd/out (0.25), layers 0.05
#   * tied models (qwen2, qwen3): layers 0.1 so the residual stream is not dominated by the
#     input embedding (otherwise logit(current token) wins and greedy repeats one token)
#   * gemma3: small embd (input is scaled by sqrt(n_embd)), untied output
STDS = {
    "llama":     dict(embd=0.25, out=0.25, qk=0.1, std=0.05),
    "qwen2":     dict(embd=0.25, out=None, qk=0.1, std=0.1),
    "qwen3":     dict(embd=0.25, out=None, qk=0.1, std=0.1),
    "qwen3moe":  dict(embd=0.25, out=0.25, qk=0.1, std=0.05),
    "llama-moe": dict(embd=0.25, out=0.25, qk=0.1, std=0.05),
    "gemma3":    dict(embd=0.05, out=0.25, qk=0.1, std=0.05),
    "llama-ropefreqs": dict(embd=0.25, out=0.25, qk=0.1, std=0.05),
    # gemma3-62l (n_embd 128, see GEMMA62): output std 0.35 gives logits std ~4 before the
    # softcap; embedding 0.4 (x sqrt(128)) so that the current token still shows through 124
    # post-normed residual additions (with 0.05-0.25 some greedy runs had only 5-8 distinct
    # tokens; with 0.4, 8-15 over six prompts)
    "gemma3-62l":      dict(embd=0.4, out=0.35, qk=0.1, std=0.05),
    # gpt-oss (see GPTOSS below for the expert/sink/bias scales): output 0.4 because n_embd is
    # 96 (logits std ~0.4*sqrt(96) ~ 4 as for the other tiny models; with 0.25 it was ~2.4)
    "gptoss":          dict(embd=0.25, out=0.4, qk=0.1, std=0.05),
}


def make_vocab(n_vocab):
    toks, scores, types = [], [], []
    toks += ["<unk>", "<s>", "</s>"]
    scores += [0.0, 0.0, 0.0]
    types += [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    for b in range(256):
        toks.append("<0x%02X>" % b)
        scores.append(0.0)
        types.append(gguf.TokenType.BYTE)
    letters = "abcdefghijklmnopqrstuvwxyz"
    fill = ["\u2581"]  # the SentencePiece space piece
    fill += ["\u2581" + c for c in letters]
    fill += list(letters)
    fill += [a + b for a in letters for b in letters]
    i = 0
    while len(toks) < n_vocab:
        toks.append(fill[i])
        scores.append(-float(i + 1))
        types.append(gguf.TokenType.NORMAL)
        i += 1
    assert len(set(toks)) == len(toks)
    return toks, scores, types


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.tensors = []

    def w(self, name, shape, std):
        a = (self.rng.standard_normal(shape) * std).astype(np.float32)
        self.tensors.append((name, a))

    def norm(self, name, n, spread=0.1):
        a = (1.0 + self.rng.standard_normal(n) * spread).astype(np.float32)
        self.tensors.append((name, a))


def write(path, arch, name, kv, tensors):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for fn, args in kv:
        getattr(w, fn)(*args)
    toks, scores, types = make_vocab(N_VOCAB)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for tname, arr in tensors:
        w.add_tensor(tname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def common_kv(n_layer, n_ff, rope_base, eps, n_embd=N_EMBD, n_head=N_HEAD, n_head_kv=N_HEAD_KV):
    return [
        ("add_context_length", (N_CTX_TRAIN,)),
        ("add_embedding_length", (n_embd,)),
        ("add_block_count", (n_layer,)),
        ("add_feed_forward_length", (n_ff,)),
        ("add_head_count", (n_head,)),
        ("add_head_count_kv", (n_head_kv,)),
        ("add_rope_freq_base", (rope_base,)),
        ("add_layer_norm_rms_eps", (eps,)),
        ("add_vocab_size", (N_VOCAB,)),
    ]


def attn(b, i, S, bias=False, qk_norm=False, n_embd=N_EMBD, n_head=N_HEAD, n_head_kv=N_HEAD_KV,
         head_dim=HEAD_DIM):
    std = S["std"]
    q_dim = n_head * head_dim
    kv_dim = n_head_kv * head_dim
    # numpy shape = (ne1, ne0) = (out, in)
    b.w(f"blk.{i}.attn_q.weight", (q_dim, n_embd), S["qk"])
    b.w(f"blk.{i}.attn_k.weight", (kv_dim, n_embd), S["qk"])
    b.w(f"blk.{i}.attn_v.weight", (kv_dim, n_embd), std)
    b.w(f"blk.{i}.attn_output.weight", (n_embd, q_dim), std)
    if bias:
        b.w(f"blk.{i}.attn_q.bias", (q_dim,), 0.1)
        b.w(f"blk.{i}.attn_k.bias", (kv_dim,), 0.1)
        b.w(f"blk.{i}.attn_v.bias", (kv_dim,), 0.1)
    if qk_norm:
        b.norm(f"blk.{i}.attn_q_norm.weight", head_dim)
        b.norm(f"blk.{i}.attn_k_norm.weight", head_dim)


def dense_ffn(b, i, n_ff, std, n_embd=N_EMBD):
    b.w(f"blk.{i}.ffn_gate.weight", (n_ff, n_embd), std)
    b.w(f"blk.{i}.ffn_up.weight", (n_ff, n_embd), std)
    b.w(f"blk.{i}.ffn_down.weight", (n_embd, n_ff), std)


def moe_ffn(b, i, n_expert, n_ff_exp, std):
    b.w(f"blk.{i}.ffn_gate_inp.weight", (n_expert, N_EMBD), 0.1)  # router: ne = [n_embd, n_expert]
    b.w(f"blk.{i}.ffn_gate_exps.weight", (n_expert, n_ff_exp, N_EMBD), std)
    b.w(f"blk.{i}.ffn_up_exps.weight", (n_expert, n_ff_exp, N_EMBD), std)
    b.w(f"blk.{i}.ffn_down_exps.weight", (n_expert, N_EMBD, n_ff_exp), std)


def embed_out(b, S, n_embd=N_EMBD):
    # S["out"] is None -> tied embeddings (no output.weight; llama.cpp reuses token_embd)
    b.w("token_embd.weight", (N_VOCAB, n_embd), S["embd"])
    b.norm("output_norm.weight", n_embd)
    if S["out"] is not None:
        b.w("output.weight", (N_VOCAB, n_embd), S["out"])


# ---------------------------------------------------------------------------------------------

def build_llama(out):
    S = STDS["llama"]
    n_layer, n_ff, std = 2, 768, S["std"]
    b = Builder(1001)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        dense_ffn(b, i, n_ff, std)
    kv = common_kv(n_layer, n_ff, 10000.0, 1e-5) + [("add_rope_dimension_count", (HEAD_DIM,))]
    write(out, "llama", "tiny-llama", kv, b.tensors)


def build_qwen2(out):
    S = STDS["qwen2"]
    n_layer, n_ff, std = 2, 768, S["std"]
    b = Builder(1002)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S, bias=True)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        dense_ffn(b, i, n_ff, std)
    kv = common_kv(n_layer, n_ff, 1000000.0, 1e-6)
    write(out, "qwen2", "tiny-qwen2", kv, b.tensors)


def build_qwen3(out):
    S = STDS["qwen3"]
    n_layer, n_ff, std = 2, 768, S["std"]
    b = Builder(1003)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S, qk_norm=True)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        dense_ffn(b, i, n_ff, std)
    kv = common_kv(n_layer, n_ff, 1000000.0, 1e-6) + [
        ("add_key_length", (HEAD_DIM,)),
        ("add_value_length", (HEAD_DIM,)),
    ]
    write(out, "qwen3", "tiny-qwen3", kv, b.tensors)


def build_qwen3moe(out):
    S = STDS["qwen3moe"]
    n_layer, n_ff, n_ff_exp, n_expert, n_used, std = 2, 768, 256, 8, 2, S["std"]
    b = Builder(1004)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S, qk_norm=True)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        moe_ffn(b, i, n_expert, n_ff_exp, std)
    kv = common_kv(n_layer, n_ff, 1000000.0, 1e-6) + [
        ("add_key_length", (HEAD_DIM,)),
        ("add_value_length", (HEAD_DIM,)),
        ("add_expert_count", (n_expert,)),
        ("add_expert_used_count", (n_used,)),
        ("add_expert_feed_forward_length", (n_ff_exp,)),
    ]
    write(out, "qwen3moe", "tiny-qwen3moe", kv, b.tensors)


def build_llama_moe(out):
    # mixtral-style: llama arch + experts; feed_forward_length is the per-expert FF size
    S = STDS["llama-moe"]
    n_layer, n_ff, n_expert, n_used, std = 2, 512, 4, 2, S["std"]
    b = Builder(1005)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        moe_ffn(b, i, n_expert, n_ff, std)
    kv = common_kv(n_layer, n_ff, 1000000.0, 1e-5) + [
        ("add_rope_dimension_count", (HEAD_DIM,)),
        ("add_expert_count", (n_expert,)),
        ("add_expert_used_count", (n_used,)),
    ]
    write(out, "llama", "tiny-llama-moe", kv, b.tensors)


def build_gemma3(out):
    # 6 layers so llama.cpp's built-in gemma3 pattern (period 6: layers 0-4 sliding, layer 5 global)
    # applies without any non-standard key; sliding window 8 < prompt length.
    S = STDS["gemma3"]
    n_layer, n_ff, std, swa = 6, 512, S["std"], 8
    b = Builder(1006)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S, qk_norm=True)
        b.norm(f"blk.{i}.post_attention_norm.weight", N_EMBD)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        dense_ffn(b, i, n_ff, std)
        b.norm(f"blk.{i}.post_ffw_norm.weight", N_EMBD)
    kv = common_kv(n_layer, n_ff, 1000000.0, 1e-6) + [
        ("add_key_length", (HEAD_DIM,)),
        ("add_value_length", (HEAD_DIM,)),
        ("add_sliding_window", (swa,)),
    ]
    write(out, "gemma3", "tiny-gemma3", kv, b.tensors)


# --- Llama-3 style rope frequency factors ("rope_freqs.weight") -------------------------------
# The Hugging Face rope_scaling these factors stand for (a test can write the same values into a
# config.json and compare its own factor computation). original_max_position_embeddings is
# deliberately tiny (64) so that 5 of the 32 frequencies are smoothed and 23 are divided by 8:
# the factors then change the output within a 40-token prompt.
ROPE_THETA = 10000.0
LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def llama3_rope_factors(rope_theta, head_dim, rs):
    """Port of LlamaModel.generate_extra_tensors in llama.cpp's conversion/llama.py (used by
    convert_hf_to_gguf.py at commit 0c1e570). The converter evaluates it with float32 torch
    tensors; the same float32 steps are reproduced here with numpy. (The result is within 2 ulp
    of a float64 evaluation.)"""
    import math
    f32 = np.float32
    factor = rs["factor"]
    low_freq_factor = rs["low_freq_factor"]
    high_freq_factor = rs["high_freq_factor"]
    old_context_len = rs["original_max_position_embeddings"]
    freqs = f32(1.0) / (f32(rope_theta) ** (np.arange(0, head_dim, 2, dtype=f32) / f32(head_dim)))
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    out = []
    for freq in freqs:
        wavelen = f32(2 * math.pi) / freq
        if wavelen < high_freq_wavelen:
            out.append(f32(1.0))
        elif wavelen > low_freq_wavelen:
            out.append(f32(factor))
        else:
            smooth = (f32(old_context_len) / wavelen - f32(low_freq_factor)) / (f32(high_freq_factor) - f32(low_freq_factor))
            out.append(f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth))
    return np.array(out, dtype=np.float32)


def build_llama_ropefreqs(out, factors="llama3"):
    """tiny-llama geometry (seed 1007) + rope_freqs.weight [head_dim/2] F32.
    factors: "llama3" (shipped), "ones" (all 1.0) or None (no tensor): the last two are only
    used to show that the factors change the greedy tokens; the weights are identical."""
    S = STDS["llama-ropefreqs"]
    n_layer, n_ff, std = 2, 768, S["std"]
    b = Builder(1007)
    embed_out(b, S)
    for i in range(n_layer):
        b.norm(f"blk.{i}.attn_norm.weight", N_EMBD)
        attn(b, i, S)
        b.norm(f"blk.{i}.ffn_norm.weight", N_EMBD)
        dense_ffn(b, i, n_ff, std)
    if factors == "llama3":
        b.tensors.append(("rope_freqs.weight", llama3_rope_factors(ROPE_THETA, HEAD_DIM, LLAMA3_ROPE_SCALING)))
    elif factors == "ones":
        b.tensors.append(("rope_freqs.weight", np.ones(HEAD_DIM // 2, dtype=np.float32)))
    else:
        assert factors is None
    kv = common_kv(n_layer, n_ff, ROPE_THETA, 1e-5) + [("add_rope_dimension_count", (HEAD_DIM,))]
    write(out, "llama", "tiny-llama-ropefreqs", kv, b.tensors)


# --- gemma3 with 62 layers ---------------------------------------------------------------------
# llama.cpp (src/models/gemma3.cpp, load_arch_hparams) maps n_layer == 62 to LLM_TYPE_27B and
# then uses f_attention_scale = 1/sqrt(n_embd / n_head) (integer division) instead of
# 1/sqrt(head_dim). Here n_embd / n_head = 64 while head_dim (key_length) = 32.
# The geometry is smaller than tiny-gemma3 so that 62 layers still fit in a ~3 MB Q8_0 file
# (with n_embd 256, 4 heads and n_ff 512 the Q8_0 file would be ~32 MB). Q8_0 only needs every
# row length to be a multiple of 32, which holds here.
GEMMA62 = dict(n_layer=62, n_embd=128, n_head=2, n_head_kv=1, head_dim=32, n_ff=64, swa=8,
               softcap=10.0, seed=1008)
# softcap 10: before capping the logits have std ~4 and a row maximum of ~12.5-13, which the cap
# brings down to ~8.5 (std ~3.5); the cap changes every logit by up to ~4.


def build_gemma3_62l(out):
    G = GEMMA62
    S = STDS["gemma3-62l"]
    n_embd, std = G["n_embd"], S["std"]
    b = Builder(G["seed"])
    embed_out(b, S, n_embd=n_embd)
    for i in range(G["n_layer"]):
        b.norm(f"blk.{i}.attn_norm.weight", n_embd)
        attn(b, i, S, qk_norm=True, n_embd=n_embd, n_head=G["n_head"], n_head_kv=G["n_head_kv"],
             head_dim=G["head_dim"])
        b.norm(f"blk.{i}.post_attention_norm.weight", n_embd)
        b.norm(f"blk.{i}.ffn_norm.weight", n_embd)
        dense_ffn(b, i, G["n_ff"], std, n_embd=n_embd)
        b.norm(f"blk.{i}.post_ffw_norm.weight", n_embd)
    kv = common_kv(G["n_layer"], G["n_ff"], 1000000.0, 1e-6, n_embd=n_embd, n_head=G["n_head"],
                   n_head_kv=G["n_head_kv"]) + [
        ("add_key_length", (G["head_dim"],)),
        ("add_value_length", (G["head_dim"],)),
        ("add_sliding_window", (G["swa"],)),
    ]
    if G["softcap"]:
        kv.append(("add_final_logit_softcapping", (G["softcap"],)))
    write(out, "gemma3", "tiny-gemma3-62l", kv, b.tensors)


# --- gpt-oss ("gpt-oss" arch, llama.cpp src/models/openai-moe.cpp) ------------------------------
# Mirrors the key set of a converted gpt-oss-20b GGUF (conversion/gpt_oss.py + TextModel
# .set_gguf_parameters): context_length, embedding_length, feed_forward_length (= the expert FF
# size, as gpt-oss writes intermediate_size), block_count, head_count, head_count_kv, key_length,
# value_length, rope.freq_base, layer_norm_rms_epsilon, expert_count, expert_used_count,
# expert_feed_forward_length, attention.sliding_window, rope.scaling.{type=yarn, factor,
# original_context_length}. No sliding_window_pattern key: llama.cpp hard-codes period 2 for
# gpt-oss (layers with il % 2 == 0 are sliding-window, odd layers full attention).
# Geometry: n_embd 96 != n_head * head_dim = 128 (q/attn_output are not square), GQA 4/2,
# 4 layers (2 SWA + 2 full), window 8 (< the 12..40-token prompts), 8 experts top-2,
# n_ff_exp 64. Every row length (96, 128, 64) is a multiple of 32, so MXFP4 (experts) and Q8_0
# (everything else 2-D) apply with llama-quantize MXFP4_MOE.
# YaRN: factor 4, original_context_length 1024, rope base 150000 (as gpt-oss), head_dim 32:
# ggml_rope_yarn_corr_dims gives corr dims [2, 7] (beta_fast 32, beta_slow 1, llama.cpp defaults;
# gpt-oss GGUFs carry no beta keys and llama.cpp reads none for this arch), so rotary pairs 0-2
# are extrapolated (theta unchanged), 7-15 interpolated (theta / 4) and 3-6 mixed. (With an
# original context below 2*pi*32 ~ 201 the lower corr dim would clamp to 0.) llama.cpp
# multiplies cos/sin by 1 + 0.1*ln(4) = 1.1386 (yarn_attn_factor 1/(1+0.1 ln 4) from
# llama-context.cpp times get_mscale(4) = 1+0.1 ln 4 times rope_yarn's own 1+0.1 ln 4).
GPTOSS = dict(n_layer=4, n_embd=96, n_head=4, n_head_kv=2, head_dim=32, n_expert=8, n_used=2,
              n_ff_exp=64, swa=8, rope_base=150000.0, yarn_factor=4.0, yarn_orig_ctx=1024,
              # seed 1010: with 1009 (the first try) greedy run f32_c1 began with a "\u2581" piece
              # whose space llama_detokenize drops, which breaks the "pieces concatenate to
              # greedy_text_hex" invariant of check.py; 1010 was the next seed tried
              n_ctx_train=4096, eps=1e-5, seed=1010,
              # scales (std of N(0, std^2)); the attention/embedding ones come from STDS["gptoss"]
              # gate/up pre-activations std ~3: SwiGLU-OAI's clamps bite (exact pass on the public
              # cases: ~1% of gate values > 7, ~2% of |up| > 7)
              exp_gate_up=0.3,
              exp_down=0.05,
              # router logits std ~3 (with 0.1 and seed 1009, near-tied top-2 choices made llama.cpp's MXFP4 run
              # pick other experts at several rows: |llama.cpp - exact| up to 12.6)
              router=0.3, router_bias=0.5,
              # q/k/v biases: 0.1 (attn(..., bias=True)); attn_output bias out_bias; expert gate/up
              # biases exp_bias, expert down biases 0.2 * exp_bias = 0.1
              exp_bias=0.5, out_bias=0.1,
              sinks=1.5)


def build_gptoss(out):
    G = GPTOSS
    S = STDS["gptoss"]
    n_embd, n_head, n_kv, hd = G["n_embd"], G["n_head"], G["n_head_kv"], G["head_dim"]
    n_exp, n_ff = G["n_expert"], G["n_ff_exp"]
    b = Builder(G["seed"])
    embed_out(b, S, n_embd=n_embd)
    for i in range(G["n_layer"]):
        b.norm(f"blk.{i}.attn_norm.weight", n_embd)
        attn(b, i, S, bias=True, n_embd=n_embd, n_head=n_head, n_head_kv=n_kv, head_dim=hd)
        b.w(f"blk.{i}.attn_output.bias", (n_embd,), G["out_bias"])
        b.w(f"blk.{i}.attn_sinks.weight", (n_head,), G["sinks"])
        b.norm(f"blk.{i}.post_attention_norm.weight", n_embd)
        # router: ne = [n_embd, n_expert] + bias [n_expert]
        b.w(f"blk.{i}.ffn_gate_inp.weight", (n_exp, n_embd), G["router"])
        b.w(f"blk.{i}.ffn_gate_inp.bias", (n_exp,), G["router_bias"])
        # experts: ne = [n_embd, n_ff, n_exp] (gate/up), [n_ff, n_embd, n_exp] (down);
        # biases ne = [n_ff, n_exp] (gate/up), [n_embd, n_exp] (down)
        b.w(f"blk.{i}.ffn_gate_exps.weight", (n_exp, n_ff, n_embd), G["exp_gate_up"])
        b.w(f"blk.{i}.ffn_gate_exps.bias", (n_exp, n_ff), G["exp_bias"])
        b.w(f"blk.{i}.ffn_up_exps.weight", (n_exp, n_ff, n_embd), G["exp_gate_up"])
        b.w(f"blk.{i}.ffn_up_exps.bias", (n_exp, n_ff), G["exp_bias"])
        b.w(f"blk.{i}.ffn_down_exps.weight", (n_exp, n_embd, n_ff), G["exp_down"])
        b.w(f"blk.{i}.ffn_down_exps.bias", (n_exp, n_embd), G["exp_bias"] * 0.2)
    kv = [
        ("add_context_length", (G["n_ctx_train"],)),
        ("add_embedding_length", (n_embd,)),
        ("add_feed_forward_length", (n_ff,)),
        ("add_block_count", (G["n_layer"],)),
        ("add_head_count", (n_head,)),
        ("add_head_count_kv", (n_kv,)),
        ("add_key_length", (hd,)),
        ("add_value_length", (hd,)),
        ("add_rope_freq_base", (G["rope_base"],)),
        ("add_layer_norm_rms_eps", (G["eps"],)),
        ("add_expert_count", (n_exp,)),
        ("add_expert_used_count", (G["n_used"],)),
        ("add_expert_feed_forward_length", (n_ff,)),
        ("add_sliding_window", (G["swa"],)),
        ("add_rope_scaling_type", (gguf.RopeScalingType.YARN,)),
        ("add_rope_scaling_factor", (G["yarn_factor"],)),
        ("add_rope_scaling_orig_ctx_len", (G["yarn_orig_ctx"],)),
        ("add_vocab_size", (N_VOCAB,)),
    ]
    write(out, "gpt-oss", "tiny-gptoss", kv, b.tensors)



# --- Qwen3.5 / Qwen3.5-MoE / Qwen3-Next: hybrid Gated DeltaNet + gated attention ----------------
# llama.cpp src/models/qwen35.cpp, qwen35moe.cpp, qwen3next.cpp, delta-net-base.cpp (tensor
# shapes from their load_arch_tensors; keys from load_arch_hparams). Layers whose
# is_recr flag is set are Gated DeltaNet ("linear attention") layers, the others full attention
# with a sigmoid output gate. Without the per-layer flag array, layer il is recurrent iff
# (il + 1) % full_attention_interval != 0. The tensors are written directly in GGUF layout,
# i.e. as convert_hf_to_gguf.py leaves them:
#   * ssm_a = -exp(A_log) (the converter negates and exponentiates A_log); ssm_dt.bias = dt_bias
#   * every RMSNorm weight except ssm_norm already includes the +1 of Qwen3-Next's zero-centred
#     RMSNorm (the converter adds it), so llama.cpp multiplies by the stored weight
#   * ssm_conv1d is [d_conv, conv_dim] (ne order), F32 (llama.cpp's ssm_conv reads it as f32)
#   * qwen35/qwen35moe: value heads in "tiled" order (value head j uses key head j % n_k_heads;
#     the converter's _LinearAttentionVReorderBase reorders HF's grouped order); qwen3next:
#     grouped order (value head j uses key head j // (n_v_heads / n_k_heads))
#   * qwen3next stores beta and alpha in one ssm_ba [n_embd, 2 n_v_heads] with, per key head g,
#     [beta of its r value heads, alpha of its r value heads] (r = n_v_heads / n_k_heads);
#     qwen35/qwen35moe have separate ssm_beta / ssm_alpha [n_embd, n_v_heads]
#   * the attention q projection is [n_embd, 2 * n_head * head_dim]: per head, head_dim query
#     values then head_dim gate values
# Geometry: every row length (ne0) is a multiple of 32 so Q8_0 applies to all 2-D weights.
# Scales (std of N(0, std^2)) beyond STDS: conv 0.3 (HF's default conv init for a depthwise
# kernel of 4 taps is about that), A = -ssm_a uniform in [0.5, 6] and dt_bias N(-2, 0.5), so
# that with alpha ~ N(0, 0.6) the per-token decay exp(g) = exp(-A softplus(alpha + dt_bias))
# lies mostly in 0.4..0.95 (some heads remember across the whole prompt, some forget fast);
# beta/alpha projections 0.1 / 0.05; z gate 0.1; router 0.3 (logit std ~3.4, as gpt-oss: fewer
# near-tied top-k choices under Q8_0); shared-expert gate 0.1.
QWEN35 = dict(
    qwen35=dict(arch="qwen35", seed=1020, n_layer=8, n_embd=128, n_head=4, n_head_kv=2, head_dim=64,
                n_rot=16, sections=[3, 3, 2, 0], rope_base=10000000.0, eps=1e-6, n_ff=256,
                conv=4, n_k_heads=2, n_v_heads=4, d_state=32, interval=4, recurrent_array=False,
                tiled_v=True, fused_ba=False, moe=None),
    qwen35moe=dict(arch="qwen35moe", seed=1021, n_layer=4, n_embd=128, n_head=4, n_head_kv=2, head_dim=64,
                   n_rot=16, sections=[3, 3, 2, 0], rope_base=10000000.0, eps=1e-6, n_ff=None,
                   conv=4, n_k_heads=2, n_v_heads=6, d_state=32, interval=4, recurrent_array=True,
                   tiled_v=True, fused_ba=False,
                   moe=dict(n_expert=8, n_used=2, n_ff_exp=64, n_ff_shexp=128)),
    qwen3next=dict(arch="qwen3next", seed=1022, n_layer=4, n_embd=128, n_head=4, n_head_kv=2, head_dim=64,
                   n_rot=16, sections=None, rope_base=10000000.0, eps=1e-6, n_ff=512,
                   conv=4, n_k_heads=2, n_v_heads=4, d_state=32, interval=4, recurrent_array=False,
                   tiled_v=False, fused_ba=True,
                   moe=dict(n_expert=8, n_used=2, n_ff_exp=64, n_ff_shexp=128)),
)
STDS["qwen35"] = dict(embd=0.25, out=0.35, qk=0.1, std=0.05)
QWEN35_SCALES = dict(qkv=0.1, qk_corr=0.8, z=0.1, beta=0.1, alpha=0.05, conv=0.3, ssm_out=0.05,
                     A_range=(0.5, 6.0), dt_bias_mean=-2.0, dt_bias_std=0.5,
                     router=0.3, shexp_gate=0.1)


def qwen35_recurrent(G):
    return [(il + 1) % G["interval"] != 0 for il in range(G["n_layer"])]


def build_qwen35_family(out, name):
    G = QWEN35[name]
    S = STDS["qwen35"]
    C = QWEN35_SCALES
    n_embd, std = G["n_embd"], S["std"]
    hd, n_head, n_kv = G["head_dim"], G["n_head"], G["n_head_kv"]
    n_k, n_v, dk = G["n_k_heads"], G["n_v_heads"], G["d_state"]
    key_dim, value_dim = n_k * dk, n_v * dk
    conv_dim = 2 * key_dim + value_dim
    b = Builder(G["seed"])
    rng = b.rng
    embed_out(b, S, n_embd=n_embd)
    for il, recurrent in enumerate(qwen35_recurrent(G)):
        p = f"blk.{il}."
        b.norm(p + "attn_norm.weight", n_embd)
        if recurrent:
            b.w(p + "attn_qkv.weight", (conv_dim, n_embd), C["qkv"])
            # k rows = qk_corr * q rows + sqrt(1 - qk_corr^2) * fresh rows (same std): a token's
            # own key then points roughly along its query, as in trained models. With independent
            # rows q.k of L2-normed 32-dim vectors is ~N(0, 1/32) and the delta-rule output often
            # cancels to a small vector whose direction alone the gated RMSNorm keeps, which
            # makes the output more sensitive to noise (llama.cpp's Q8_0 activations). The gain
            # was modest: on the 8-layer Q8_0 model the mean |llama.cpp - exact| went from 0.35
            # to about 0.3; the rest comes with depth (QWEN35.md, "Measured")
            _, qkv = b.tensors[-1]  # the array just drawn, changed in place
            c = C["qk_corr"]
            qkv[key_dim:2 * key_dim] = c * qkv[:key_dim] + np.sqrt(1 - c * c) * qkv[key_dim:2 * key_dim]
            b.w(p + "attn_gate.weight", (value_dim, n_embd), C["z"])
            b.w(p + "ssm_conv1d.weight", (conv_dim, G["conv"]), C["conv"])
            dt_bias = C["dt_bias_mean"] + C["dt_bias_std"] * rng.standard_normal(n_v)
            b.tensors.append((p + "ssm_dt.bias", dt_bias.astype(np.float32)))
            lo, hi = C["A_range"]
            b.tensors.append((p + "ssm_a", -rng.uniform(lo, hi, n_v).astype(np.float32)))
            if G["fused_ba"]:
                b.w(p + "ssm_ba.weight", (2 * n_v, n_embd), 1.0)
                # beta rows get the beta scale, alpha rows the alpha scale (layout in the header)
                name_ba, ba = b.tensors[-1]
                r = n_v // n_k
                scale = np.concatenate([np.r_[np.full(r, C["beta"]), np.full(r, C["alpha"])]] * n_k)
                b.tensors[-1] = (name_ba, (ba * scale[:, None]).astype(np.float32))
            else:
                b.w(p + "ssm_beta.weight", (n_v, n_embd), C["beta"])
                b.w(p + "ssm_alpha.weight", (n_v, n_embd), C["alpha"])
            b.norm(p + "ssm_norm.weight", dk)
            b.w(p + "ssm_out.weight", (n_embd, value_dim), C["ssm_out"])
        else:
            b.w(p + "attn_q.weight", (2 * n_head * hd, n_embd), S["qk"])
            b.w(p + "attn_k.weight", (n_kv * hd, n_embd), S["qk"])
            b.w(p + "attn_v.weight", (n_kv * hd, n_embd), std)
            b.w(p + "attn_output.weight", (n_embd, n_head * hd), std)
            b.norm(p + "attn_q_norm.weight", hd)
            b.norm(p + "attn_k_norm.weight", hd)
        b.norm(p + "post_attention_norm.weight", n_embd)
        M = G["moe"]
        if M is None:
            dense_ffn(b, il, G["n_ff"], std, n_embd=n_embd)
        else:
            n_exp, n_ff_exp, n_sh = M["n_expert"], M["n_ff_exp"], M["n_ff_shexp"]
            b.w(p + "ffn_gate_inp.weight", (n_exp, n_embd), C["router"])
            b.w(p + "ffn_gate_exps.weight", (n_exp, n_ff_exp, n_embd), std)
            b.w(p + "ffn_up_exps.weight", (n_exp, n_ff_exp, n_embd), std)
            b.w(p + "ffn_down_exps.weight", (n_exp, n_embd, n_ff_exp), std)
            b.w(p + "ffn_gate_inp_shexp.weight", (n_embd,), C["shexp_gate"])
            b.w(p + "ffn_gate_shexp.weight", (n_sh, n_embd), std)
            b.w(p + "ffn_up_shexp.weight", (n_sh, n_embd), std)
            b.w(p + "ffn_down_shexp.weight", (n_embd, n_sh), std)
    arch = G["arch"]
    kv = [
        ("add_context_length", (N_CTX_TRAIN,)),
        ("add_embedding_length", (n_embd,)),
        ("add_block_count", (G["n_layer"],)),
        ("add_head_count", (n_head,)),
        ("add_head_count_kv", (n_kv,)),
        ("add_key_length", (hd,)),
        ("add_value_length", (hd,)),
        ("add_rope_freq_base", (G["rope_base"],)),
        ("add_rope_dimension_count", (G["n_rot"],)),
        ("add_layer_norm_rms_eps", (G["eps"],)),
        ("add_ssm_conv_kernel", (G["conv"],)),
        ("add_ssm_state_size", (dk,)),
        ("add_ssm_group_count", (n_k,)),
        ("add_ssm_time_step_rank", (n_v,)),
        ("add_ssm_inner_size", (value_dim,)),
        ("add_full_attention_interval", (G["interval"],)),
        ("add_vocab_size", (N_VOCAB,)),
    ]
    if G["n_ff"] is not None:
        # qwen3next: the converter writes HF's intermediate_size; llama.cpp does not use it when
        # the layers are MoE. The qwen35moe file has none (Qwen3.5-MoE configs carry no
        # intermediate_size), so a reader must not need it.
        kv.append(("add_feed_forward_length", (G["n_ff"],)))
    if G["sections"] is not None:
        kv.append(("add_rope_dimension_sections", (G["sections"],)))
    if G["moe"] is not None:
        kv += [
            ("add_expert_count", (G["moe"]["n_expert"],)),
            ("add_expert_used_count", (G["moe"]["n_used"],)),
            ("add_expert_feed_forward_length", (G["moe"]["n_ff_exp"],)),
            ("add_expert_shared_feed_forward_length", (G["moe"]["n_ff_shexp"],)),
        ]
    if G["recurrent_array"]:
        # what convert_hf_to_gguf.py writes when the HF config has layer_types (gguf-py 0.19.0
        # has no add_recurrent_layers; the key and a bool array are written by hand)
        kv.append(("add_array", (f"{arch}.attention.recurrent_layers", qwen35_recurrent(G))))
    write(out, arch, f"tiny-{name}", kv, b.tensors)


def build_qwen35(out):
    build_qwen35_family(out, "qwen35")


def build_qwen35moe(out):
    build_qwen35_family(out, "qwen35moe")


def build_qwen3next(out):
    build_qwen35_family(out, "qwen3next")


MODELS = {
    "llama": build_llama,
    "qwen2": build_qwen2,
    "qwen3": build_qwen3,
    "qwen3moe": build_qwen3moe,
    "llama-moe": build_llama_moe,
    "gemma3": build_gemma3,
    "llama-ropefreqs": build_llama_ropefreqs,
    "gemma3-62l": build_gemma3_62l,
    "gptoss": build_gptoss,
    "qwen35": build_qwen35,
    "qwen35moe": build_qwen35moe,
    "qwen3next": build_qwen3next,
}
# not shipped: same weights as tiny-llama-ropefreqs without the factors (for the comparison)
EXTRA_MODELS = {
    "llama-ropefreqs-nofactors": lambda out: build_llama_ropefreqs(out, factors=None),
    "llama-ropefreqs-ones": lambda out: build_llama_ropefreqs(out, factors="ones"),
}

if __name__ == "__main__":
    outdir = sys.argv[1] if len(sys.argv) > 1 else "."
    only = sys.argv[2:] or list(MODELS)
    os.makedirs(outdir, exist_ok=True)
    for name in only:
        path = os.path.join(outdir, f"tiny-{name}-f32.gguf")
        (MODELS.get(name) or EXTRA_MODELS[name])(path)
        print("wrote", path, os.path.getsize(path))
