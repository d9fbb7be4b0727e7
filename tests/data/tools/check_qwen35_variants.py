#!/usr/bin/env python3
"""Diagnostics (not fixtures; gen_qwen35.sh step 7): exact_ref.py's hybrid pass against llama.cpp
(./dump, F32 KV) on variants of the tiny models that the shipped ones do not cover, so that other
tiny models made with make_tiny.build_qwen35_family are covered too: a tied head with full-width
RoPE (sections [12, 10, 10, 0]), as many value as key heads, conv kernel 3, interval 2 and eps
1e-5; top-3 of 6 experts with the recurrent-layer array; qwen3next with 3 value heads per key
head; and sections [2, 0, 0, 0], which put every odd rotary pair on the 4th M-RoPE position (0
for text, so those pairs are not rotated). Files go to build/variants/.
Usage: python3 check_qwen35_variants.py   (in the gen_qwen35.sh folder, ./dump built)
"""
import json
import os
import subprocess

import numpy as np

import exact_ref as E
import make_tiny as M

HERE = os.path.dirname(os.path.abspath(__file__))

VARIANTS = {
    "tied-fullrope-hv2-conv3": (dict(M.QWEN35["qwen35"], seed=2001, n_layer=4, interval=2, n_v_heads=2, conv=3,
                                     n_rot=64, sections=[12, 10, 10, 0], eps=1e-5, rope_base=10000.0), True),
    "moe-top3-array": (dict(M.QWEN35["qwen35moe"], seed=2002, n_v_heads=4,
                            moe=dict(n_expert=6, n_used=3, n_ff_exp=32, n_ff_shexp=64)), False),
    "next-ratio3-array": (dict(M.QWEN35["qwen3next"], seed=2003, n_v_heads=6, recurrent_array=True), False),
    "sections-on-e": (dict(M.QWEN35["qwen35"], seed=2005, n_layer=4, sections=[2, 0, 0, 0]), False),
}


def main():
    out = os.path.join(HERE, "build", "variants")
    os.makedirs(out, exist_ok=True)
    ids = [1] + [int(x) for x in np.random.default_rng(7).integers(3, M.N_VOCAB, 90)]
    worst = 0.0
    for name, (geometry, tied) in VARIANTS.items():
        M.QWEN35[name] = geometry
        stds = M.STDS["qwen35"]
        if tied:
            # no output.weight (llama.cpp then uses token_embd); layer matrices 0.1 as for the
            # other tied tiny models
            M.STDS["qwen35"] = dict(stds, out=None, std=0.1)
        path = os.path.join(out, f"tiny-{name}.gguf")
        M.build_qwen35_family(path, name)
        M.STDS["qwen35"] = stds
        subprocess.run([os.path.join(HERE, "dump"), "eval", "-m", path, "-o", out, "-c", name, "-n", "8",
                        "--kv-f32", "--ids", ",".join(map(str, ids))], check=True, capture_output=True)
        j = json.load(open(os.path.join(out, name + ".json")))
        lc = np.fromfile(os.path.join(out, name + ".f32"), "<f4").reshape(j["n_rows"], -1)
        W, kv = E.load(path)
        d = np.abs(E.forward(W, kv, j["prompt_ids"] + j["greedy_ids"]) - lc).max()
        worst = max(worst, d)
        print(f"{name}: llama.cpp (F32 KV) vs exact max {d:.2e} (logit std {lc.std():.2f})", flush=True)
    assert worst < 1e-3, worst
    print(f"variants: worst {worst:.2e}")


if __name__ == "__main__":
    main()
