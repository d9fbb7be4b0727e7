#!/usr/bin/env python3
"""Diagnostics for the hybrid (qwen35 / qwen35moe / qwen3next) cases (not part of the fixtures;
see gen_qwen35.sh).

For every case: ./dump --kv-f32 on the same ids (prompt batch, greedy steps and, for two-turn
cases, the second turn's batch and steps) vs <case>.exact.f32. With F32 weights and an F32 KV
cache llama.cpp and exact_ref.py should agree to float32 precision; Q8_0 models are run from an
F32 copy of their gguf-py-dequantized weights, so the exact pass on the quantized file is checked
against llama.cpp's own math on exactly those weights. Also: the same rows with the whole
sequence teacher-forced in one batch, and the fixture's own distance (F16 KV, Q8 activations).
First, exact_ref.delta_rule_chunked (the chunked form a parallel prefill uses) is checked
against the recurrent definition on random data, for chunk sizes that do not divide the length.
Usage: python3 check_qwen35.py SET   (SET/index.json from gen_cases.py + exact_ref.py)
"""
import json
import os
import subprocess
import sys

import numpy as np

from check_gptoss import dequant_copy
import exact_ref

HERE = os.path.dirname(os.path.abspath(__file__))


def dump(model, out, case, n, ids, then_ids=None):
    cmd = [os.path.join(HERE, "dump"), "eval", "-m", model, "-o", out, "-c", case, "-n", str(n),
           "--kv-f32", "--ids", ",".join(map(str, ids))]
    if then_ids:
        cmd += ["--then-ids", ",".join(map(str, then_ids)), "--then-n", str(n)]
    subprocess.run(cmd, check=True, capture_output=True)
    j = json.load(open(os.path.join(out, case + ".json")))
    return j, np.fromfile(os.path.join(out, case + ".f32"), "<f4").reshape(j["n_rows"], -1)


def check_chunked_form():
    rng = np.random.default_rng(18)
    T, d_k, d_v = 150, 32, 32
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    q = unit(rng.standard_normal((T, d_k))) / np.sqrt(d_k)
    k = unit(rng.standard_normal((T, d_k)))
    v = rng.standard_normal((T, d_v))
    g = -rng.uniform(0.01, 1.0, T)
    beta = rng.uniform(0.0, 1.0, T)
    S0 = 0.1 * rng.standard_normal((d_k, d_v))
    o_ref, S_ref = exact_ref.delta_rule_recurrent(q, k, v, g, beta, S0)
    for chunk in (1, 7, 64, 100, 256):
        o, S = exact_ref.delta_rule_chunked(q, k, v, g, beta, S0, chunk)
        err = max(np.abs(o - o_ref).max(), np.abs(S - S_ref).max())
        assert err < 1e-12, (chunk, err)
        print(f"chunked delta rule, chunk {chunk}, T {T}: max |chunked - recurrent| {err:.1e}")


def main():
    check_chunked_form()
    set_dir = os.path.join(HERE, sys.argv[1])
    out = os.path.join(HERE, "build", "qwen35-diag")
    os.makedirs(out, exist_ok=True)
    index = json.load(open(os.path.join(set_dir, "index.json")))
    worst = {}
    fresh = set()
    for c in index["cases"]:
        j = json.load(open(os.path.join(set_dir, c["json"])))
        ex = np.fromfile(os.path.join(set_dir, c["exact_logits_file"]), "<f4").reshape(j["n_rows"], -1)
        lc = np.fromfile(os.path.join(set_dir, j["logits_file"]), "<f4").reshape(j["n_rows"], -1)
        model = os.path.join(HERE, "models", c["model"])
        d = np.abs(lc - ex)
        msg = (f"{c['case']}: fixture (F16 KV) vs exact max {d.max():.3g} mean {d.mean():.3g}, "
               f"argmax agree {(lc.argmax(1) == ex.argmax(1)).mean():.3f}")
        if "f32" not in c["model"]:
            dq = os.path.join(out, c["model"][:-5] + "-dequant-f32.gguf")
            # rewritten on every run: a copy left from an earlier model would silently check
            # the wrong weights
            if dq not in fresh:
                dequant_copy(model, dq)
                fresh.add(dq)
            model = dq
            msg += "; on the dequantized weights (F32 GGUF)"
        seq = j["prompt_ids"] + j["greedy_ids"]
        _, tf = dump(model, out, c["case"] + "_tf", 0, seq)
        msg += f", F32 KV, one batch: max {np.abs(tf - ex).max():.3g}"
        if "turns" in j:
            t1, t2 = j["turns"]
            jk, kv = dump(model, out, c["case"] + "_kv", j["n_gen"], t1["prompt_ids"], t2["prompt_ids"])
            same = jk["turns"][0]["greedy_ids"] == t1["greedy_ids"] and jk["greedy_ids"] == j["greedy_ids"]
        else:
            jk, kv = dump(model, out, c["case"] + "_kv", j["n_gen"], j["prompt_ids"])
            same = jk["greedy_ids"] == j["greedy_ids"]
        if same:
            m = np.abs(kv - ex).max()
            msg += f"; batches + decode steps: max {m:.3g}"
            worst[c["model"]] = max(worst.get(c["model"], 0.0), m)
        else:
            msg += "; (F32-KV greedy ids differ, decode-step rows not compared)"
        print(msg, flush=True)
    for m, v in worst.items():
        print(f"{m}: llama.cpp (F32 KV) vs exact, worst over its cases: {v:.3g}")


if __name__ == "__main__":
    main()
