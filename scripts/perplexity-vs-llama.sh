#!/usr/bin/env bash
# wllm perplexity and llama.cpp's llama-perplexity side by side on one text.
#
#   scripts/perplexity-vs-llama.sh [FILE] [CTX] [CHUNKS] [MODEL...]
#
# Defaults: tests/data/perplexity/lighthouse.txt, --ctx 256, 4 chunks, SmolLM2-135M and
# gemma-3-270m from ~/.cache/wllm/models. llama-perplexity comes from the static CPU build
# (LLAMA_PERPLEXITY overrides; built with
# `cmake --build ~/.cache/wllm/llama.cpp/cpu --target llama-perplexity -j2` when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-tests/data/perplexity/lighthouse.txt}
ctx=${2:-256}
chunks=${3:-4}
shift $(( $# > 3 ? 3 : $# ))
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    models=(~/.cache/wllm/models/SmolLM2-135M-Instruct.Q4_1.gguf ~/.cache/wllm/models/gemma-3-270m-q4_k_m.gguf)
fi
llama=${LLAMA_PERPLEXITY:-$HOME/.cache/wllm/llama.cpp/cpu/bin/llama-perplexity}
if [ ! -x "$llama" ]; then
    cmake --build ~/.cache/wllm/llama.cpp/cpu --target llama-perplexity -j2 >&2
fi
cargo build --release -q -p wllm-cli
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
printf '%-40s %12s %12s %9s\n' model llama.cpp wllm 'diff %'
for m in "${models[@]}"; do
    theirs=$("$llama" -m "$m" -f "$file" -c "$ctx" --chunks "$chunks" 2>&1 |
        sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
    ours=$(target/release/wllm perplexity "$m" -f "$file" --ctx "$ctx" --chunks "$chunks" --json |
        tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["ppl"])')
    diff=$(python3 -c "print(f'{100 * ($ours - $theirs) / $theirs:+.3f}')")
    printf '%-40s %12.4f %12.4f %9s\n' "$(basename "$m")" "$theirs" "$ours" "$diff"
done
