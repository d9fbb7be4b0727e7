#!/usr/bin/env bash
# llama.cpp's logits with a quantized KV cache (q8_0 and q4_0 for K and V, flash attention on,
# as `-ctk/-ctv` need), teacher-forced on three shipped cases: each case's prompt and greedy
# ids are evaluated as one batch, so row r is the output at position r of prompt ++ greedy,
# the rows of the case's exact reference. They measure how far llama.cpp itself lands from
# exact math with each cache type: the budget `tests/kv_cache_types.rs` holds wllm to.
# llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (the static CPU build of gen_gptoss.sh);
# dump.cpp is the one next to this script (its --kv-type option).
# Outputs: ../kv_quant/<case>.kv-<type>.json (+ .f32 full rows for the 512-token tiny models;
# top-64 per row in the JSON for SmolLM2).
set -euo pipefail
cd "$(dirname "$0")"
LLAMA_SRC=${LLAMA_SRC:-../llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-../llama.cpp/build}
MODELS=${MODELS:-$HOME/.cache/wllm/models}
PY=${PY:-python3}
source ./link_dump.sh
out=../kv_quant
mkdir -p "$out"
for case in tiny-llama-q8_0_c0 tiny-gemma3-q4_k_m_c0 smollm2-135m-instruct-q4_1_c0 smollm2-135m-instruct-q4_1_c1 smollm2-135m-instruct-q4_1_c2; do
    model=$($PY -c "import json; print(json.load(open('../reference/$case.json'))['model'])")
    path=../models/$model
    [ -f "$path" ] || path=$MODELS/$model
    ids=$($PY -c "import json; d=json.load(open('../reference/$case.json')); print(','.join(map(str, d['prompt_ids'] + d['greedy_ids'])))")
    for t in q8_0 q4_0; do
        ./dump eval -m "$path" -o "$out" -c "$case.kv-$t" -n 0 --full-max-vocab 1000 --kv-type "$t" --ids "$ids"
    done
done
rm -f dump
