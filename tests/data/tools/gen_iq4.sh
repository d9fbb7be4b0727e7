#!/usr/bin/env bash
# Make the tiny IQ4 fixture models (tiny-llama-iq4_nl, tiny-llama-iq4_xs) and their cases:
# the tiny llama's F32 weights (make_tiny.py, seed of the original set) through llama-quantize.
# llama.cpp, its static CPU build and the tools folder are as in gen_gptoss.sh (same
# LLAMA_SRC / LLAMA_BUILD, a copy of the golden tools/ with the scripts next to this one).
# Outputs: models/tiny-llama-iq4_{nl,xs}.gguf + models/MANIFEST.json, iq4/<case>.* +
# iq4/index.json (merge them into the shipped MANIFEST.json / reference/index.json).
set -euo pipefail
cd "$(dirname "$0")"
LLAMA_SRC=${LLAMA_SRC:-../llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-../llama.cpp/build}
PY=${PY:-python3}   # numpy 2.x + gguf 0.19.0

# 1) reference dumper, linked statically against the build's libraries
source ./link_dump.sh

# 2) IQ4_NL: every 2-D weight IQ4_NL, token_embd included, except output.weight, which
#    llama-quantize makes Q6_K; IQ4_XS: the same with IQ4_XS. Norms stay F32. No importance
#    matrix (these types do not need one).
mkdir -p build models
$PY make_tiny.py build llama
for t in iq4_nl iq4_xs; do
    "$LLAMA_BUILD/bin/llama-quantize" build/tiny-llama-f32.gguf "models/tiny-llama-$t.gguf" "${t^^}" 2 \
        > "build/quant-llama-$t.log" 2>&1
done

# 3) llama.cpp cases (public set seed, model indices 11 and 12 in gen_cases.TINY_MODELS)
rm -rf iq4
$PY gen_cases.py --sets public --out-dir iq4 --only tiny-llama-iq4_nl.gguf,tiny-llama-iq4_xs.gguf

# 4) exact float64 reference, teacher-forced on the llama.cpp greedy ids
$PY exact_ref.py --sets iq4

# 5) self-check of the new cases
$PY check.py iq4
