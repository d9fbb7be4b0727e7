#!/usr/bin/env python3
"""Generate golden cases (public/ and hidden/) with ./dump (llama.cpp reference).

Usage: python3 gen_cases.py [--real-models-dir REAL_MODELS_DIR] [--sets public,hidden]
                            [--only MODEL.gguf,...] [--out-dir DIR]
Expects ./dump built and models/*.gguf (tiny quantized models) present.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DUMP = os.path.join(HERE, "dump")

TINY_MODELS = [
    "tiny-llama-q4_k_m.gguf",
    "tiny-llama-q8_0.gguf",
    "tiny-qwen2-q4_k_m.gguf",
    "tiny-qwen3-q4_k_m.gguf",
    "tiny-qwen3moe-q4_k_m.gguf",
    "tiny-llama-moe-q4_k_m.gguf",
    "tiny-gemma3-q4_k_m.gguf",
    # added later (model indices 7 and 8 for the prompt seeds; the ones above keep theirs)
    "tiny-llama-ropefreqs-q8_0.gguf",
    "tiny-gemma3-62l-q8_0.gguf",
    # gpt-oss (model indices 9 and 10): the F32 model as written by make_tiny.py, and its
    # llama-quantize MXFP4_MOE version
    "tiny-gptoss-f32.gguf",
    "tiny-gptoss-mxfp4.gguf",
    # the tiny llama's F32 weights through llama-quantize IQ4_NL and IQ4_XS (model indices 11
    # and 12)
    "tiny-llama-iq4_nl.gguf",
    "tiny-llama-iq4_xs.gguf",
    # the same F32 weights through llama-quantize with an importance matrix, one file per
    # i-quant type of 3 bits and less (model indices 13 to 19; gen_iq_grid.sh). In the order
    # iq3_xxs, iq3_s, iq2_xxs, iq2_xs, iq2_s, iq1_s, iq1_m the greedy runs of iq3_s_c1 and
    # iq1_s_c0 began with a "▁" piece (whose space llama_detokenize drops), so iq3_s and
    # iq2_xxs, and iq1_s and iq1_m, swapped indices
    "tiny-llama-iq3_xxs.gguf",
    "tiny-llama-iq2_xxs.gguf",
    "tiny-llama-iq3_s.gguf",
    "tiny-llama-iq2_xs.gguf",
    "tiny-llama-iq2_s.gguf",
    "tiny-llama-iq1_m.gguf",
    "tiny-llama-iq1_s.gguf",
    # hybrid Gated DeltaNet + gated attention models (model indices 20 to 24; gen_qwen35.sh),
    # with the prompts of HYBRID_PROMPTS instead of tiny_prompt's 12..40 tokens
    "tiny-qwen35-f32.gguf",
    "tiny-qwen35-q8_0.gguf",
    "tiny-qwen35moe-f32.gguf",
    "tiny-qwen35moe-q8_0.gguf",
    "tiny-qwen3next-q8_0.gguf",
]
HYBRID_MODELS = {m for m in TINY_MODELS if m.startswith(("tiny-qwen35", "tiny-qwen3next"))}
# Prompt lengths of the hybrid models' cases. An engine prefills in chunks (wllm: 64 tokens), so
# two prompts are longer than a chunk and not a multiple of it, one is shorter than a chunk, and
# the last case has two turns: a 70-token prompt and its greedy run, then 45 more ids evaluated
# as one batch on top of the recurrent state and the KV of the first turn, then greedy again.
HYBRID_PROMPTS = [100, 150, 37, (70, 45)]
TINY_N_VOCAB = 512
TINY_N_GEN = 16
TINY_CASES_PER_SET = 2

SMOL = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA = "gemma-3-270m-q4_k_m.gguf"
REAL_N_GEN = 32

TEXT_PROMPTS = {
    "public": {
        SMOL: ["The capital of France is", "def fibonacci(n):", "Once upon a time"],
        GEMMA: ["The capital of France is", "Write a haiku about the sea."],
    },
    "hidden": {SMOL: [], GEMMA: []},  # kept back
}

TOKENIZE_STRINGS = {
    "public": [
        "Hello world",
        " Hello world",
        "  two leading spaces",
        "multiple    spaces   between words",
        "line one\nline two\n\nline four\ttabbed",
        "12345 678",
        "Hello, world! How's it going? (fine) [ok] {yes} -- \"quoted\" ...",
        "def add(a, b):\n    return a + b\n",
        "Café naïve résumé façade Ångström",
        "你好，世界。東京は日本の首都です。",
        "Emoji test: 😀🚀👍🏽 ❤️",
        "",
        "The quick brown fox jumps over the lazy dog.",
    ],
    "hidden": [],  # kept back
}

SET_SEED = {"public": 20240601, "hidden": 0}  # the hidden seed is kept back


def stem(model_file):
    s = model_file[:-5] if model_file.endswith(".gguf") else model_file
    return {
        SMOL[:-5]: "smollm2-135m-instruct-q4_1",
        GEMMA[:-5]: "gemma-3-270m-q4_k_m",
    }.get(s, s)


def run(args):
    r = subprocess.run(args, capture_output=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr.decode("utf-8", "replace"))
        raise SystemExit(f"command failed: {args}")
    return r


def tiny_prompt(set_name, model_idx, case_idx):
    rng = np.random.default_rng([SET_SEED[set_name], model_idx, case_idx])
    n = int(rng.integers(12, 41))  # 12..40 tokens, including the leading BOS
    ids = [1] + [int(x) for x in rng.integers(3, TINY_N_VOCAB, size=n - 1)]
    return ids


def hybrid_prompt(set_name, model_idx, case_idx, spec, attempt=0):
    """(ids, then_ids): a BOS-led prompt of spec tokens, or for spec = (n1, n2) a BOS-led first
    turn of n1 tokens and a second turn of n2 ids (no BOS). attempt > 0 redraws (see main)."""
    seed = [SET_SEED[set_name], model_idx, case_idx] + ([attempt] if attempt else [])
    rng = np.random.default_rng(seed)
    n1, n2 = spec if isinstance(spec, tuple) else (spec, 0)
    ids = [1] + [int(x) for x in rng.integers(3, TINY_N_VOCAB, size=n1 - 1)]
    then_ids = [int(x) for x in rng.integers(3, TINY_N_VOCAB, size=n2)]
    return ids, then_ids


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-models-dir", default="REAL_MODELS_DIR")
    ap.add_argument("--sets", default="public,hidden")
    ap.add_argument("--only", default=None,
                    help="comma-separated tiny model files: run only these (keeping their index in "
                         "TINY_MODELS for the prompt seed), skip the real models and tokenizer files")
    ap.add_argument("--out-dir", default=None, help="write the cases here instead of ./<set>")
    a = ap.parse_args()
    only = a.only.split(",") if a.only else None

    models_dir = os.path.join(HERE, "models")
    for set_name in a.sets.split(","):
        out = a.out_dir or os.path.join(HERE, set_name)
        os.makedirs(out, exist_ok=True)
        index = {"set": set_name, "cases": [], "tokenize": []}

        # tiny models, keyed by token ids
        for mi, mf in enumerate(TINY_MODELS):
            if only is not None and mf not in only:
                continue
            mpath = os.path.join(models_dir, mf)
            if mf in HYBRID_MODELS:
                for ci, spec in enumerate(HYBRID_PROMPTS):
                    case = f"{stem(mf)}_c{ci}"
                    entry = {"case": case, "model": mf, "model_dir": "models", "input": "ids",
                             "json": case + ".json"}
                    # a greedy run that begins with a piece with a leading space ("\u2581x")
                    # breaks check.py's "pieces concatenate to greedy_text_hex" (llama_detokenize
                    # drops that space): such a prompt is redrawn with the next attempt number
                    for attempt in range(8):
                        ids, then_ids = hybrid_prompt(set_name, mi, ci, spec, attempt)
                        cmd = [DUMP, "eval", "-m", mpath, "-o", out, "-c", case, "-n", str(TINY_N_GEN),
                               "--ids", ",".join(map(str, ids))]
                        if then_ids:
                            cmd += ["--then-ids", ",".join(map(str, then_ids)), "--then-n", str(TINY_N_GEN)]
                        run(cmd)
                        with open(os.path.join(out, case + ".json"), encoding="utf-8") as f:
                            pieces_hex = json.load(f)["greedy_pieces_hex"]
                        if not pieces_hex[0].startswith("20"):
                            break
                        print(set_name, case, "attempt", attempt, "begins with a space piece; redrawn", flush=True)
                    else:
                        raise SystemExit(f"{case}: no prompt without a leading-space first piece")
                    if then_ids:
                        entry["turns"] = 2
                    if attempt:
                        entry["prompt_attempt"] = attempt
                    index["cases"].append(entry)
                    print(set_name, case, flush=True)
                continue
            for ci in range(TINY_CASES_PER_SET):
                ids = tiny_prompt(set_name, mi, ci)
                case = f"{stem(mf)}_c{ci}"
                run([DUMP, "eval", "-m", mpath, "-o", out, "-c", case, "-n", str(TINY_N_GEN),
                     "--ids", ",".join(map(str, ids))])
                index["cases"].append({"case": case, "model": mf, "model_dir": "models",
                                       "input": "ids", "json": case + ".json"})
                print(set_name, case, flush=True)

        # real models, keyed by text
        for mf in (SMOL, GEMMA) if only is None else ():
            mpath = os.path.join(a.real_models_dir, mf)
            for ci, text in enumerate(TEXT_PROMPTS[set_name][mf]):
                case = f"{stem(mf)}_c{ci}"
                run([DUMP, "eval", "-m", mpath, "-o", out, "-c", case, "-n", str(REAL_N_GEN),
                     "--text", text])
                index["cases"].append({"case": case, "model": mf, "model_dir": a.real_models_dir,
                                       "input": "text", "json": case + ".json"})
                print(set_name, case, flush=True)

            # tokenizer goldens
            strings_path = os.path.join(HERE, "build", f"tokenize-strings-{set_name}.json")
            os.makedirs(os.path.dirname(strings_path), exist_ok=True)
            with open(strings_path, "w", encoding="utf-8") as f:
                json.dump(TOKENIZE_STRINGS[set_name], f, ensure_ascii=False, indent=1)
            tok_out = os.path.join(out, f"tokenize-{stem(mf)}.json")
            run([DUMP, "tokenize", "-m", mpath, "-i", strings_path, "-o", tok_out])
            index["tokenize"].append({"model": mf, "model_dir": a.real_models_dir,
                                      "json": os.path.basename(tok_out)})
            print(set_name, os.path.basename(tok_out), flush=True)

        with open(os.path.join(out, "index.json"), "w", encoding="utf-8") as f:
            json.dump(index, f, ensure_ascii=False, indent=1)

    # model manifest (sha256) for both tiny and real models
    manifest = {}
    for mf in TINY_MODELS:
        p = os.path.join(models_dir, mf)
        if only is not None and mf not in only:
            continue
        manifest[mf] = {"path": "models/" + mf, "size": os.path.getsize(p), "sha256": sha256(p)}
    for mf in (SMOL, GEMMA) if only is None else ():
        p = os.path.join(a.real_models_dir, mf)
        manifest[mf] = {"path": p, "size": os.path.getsize(p), "sha256": sha256(p)}
    # unquantized tiny models: not shipped (regenerate with make_tiny.py), hashes for verification
    for name in ("llama", "qwen2", "qwen3", "qwen3moe", "llama-moe", "gemma3", "llama-ropefreqs",
                 "gemma3-62l", "qwen3next"):
        mf = f"tiny-{name}-f32.gguf"
        p = os.path.join(HERE, "build", mf)
        if os.path.exists(p):
            manifest[mf] = {"path": "build/" + mf, "size": os.path.getsize(p), "sha256": sha256(p),
                            "shipped": False}
    with open(os.path.join(models_dir, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
