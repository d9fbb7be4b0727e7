#!/usr/bin/env bash
# Make the tiny hybrid Gated DeltaNet models (qwen35, qwen35moe, qwen3next) and their cases.
# llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (= vendor/llama.cpp of PyPI's
# llama_cpp_python-0.3.36 sdist), the static CPU Release build described in gen_gptoss.sh
# (~/.cache/wllm/llama.cpp/cpu), `dump` linked statically against it by link_dump.sh.
# Run it in a copy of the golden tools/ folder with make_tiny.py, gen_cases.py, exact_ref.py,
# dump.cpp, check_gptoss.py and check_qwen35.py replaced by / added from the versions next to
# this script (check.py is used unchanged). dump.cpp here is the golden one plus --then-ids /
# --then-n (a second turn on top of the same sequence); without them it behaves as before.
# Outputs: models/tiny-{qwen35,qwen35moe}-{f32,q8_0}.gguf, models/tiny-qwen3next-q8_0.gguf,
# models/MANIFEST.json, hybrid/<case>.* + hybrid/index.json (shipped as tests/data/hybrid/).
set -euo pipefail
cd "$(dirname "$0")"
LLAMA_SRC=${LLAMA_SRC:-../llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-../llama.cpp/build}
PY=${PY:-python3}   # numpy 2.x + gguf 0.19.0

# 1) reference dumper
source ./link_dump.sh

# 2) F32 models as written (qwen35 and qwen35moe are shipped as F32 too), Q8_0 for all three:
#    every 2-D weight Q8_0 except ssm_conv1d and the router ffn_gate_inp, which llama-quantize
#    keeps F32 like the 1-D tensors (norms, ssm_a, ssm_dt.bias, ffn_gate_inp_shexp)
mkdir -p build models
$PY make_tiny.py build qwen35 qwen35moe qwen3next
for m in qwen35 qwen35moe; do
    cp "build/tiny-$m-f32.gguf" "models/tiny-$m-f32.gguf"
done
for m in qwen35 qwen35moe qwen3next; do
    "$LLAMA_BUILD/bin/llama-quantize" "build/tiny-$m-f32.gguf" "models/tiny-$m-q8_0.gguf" Q8_0 2 \
        > "build/quant-$m-q8_0.log" 2>&1
done

# 3) llama.cpp cases (public set seed, model indices 20..24 in gen_cases.TINY_MODELS, the
#    prompts of gen_cases.HYBRID_PROMPTS)
rm -rf hybrid
$PY gen_cases.py --sets public --out-dir hybrid \
    --only tiny-qwen35-f32.gguf,tiny-qwen35-q8_0.gguf,tiny-qwen35moe-f32.gguf,tiny-qwen35moe-q8_0.gguf,tiny-qwen3next-q8_0.gguf

# 4) exact float64 reference, teacher-forced on the llama.cpp ids
$PY exact_ref.py --sets hybrid

# 4b) tokenizer goldens of the tiny vocab (the same in every tiny model) through one of them,
#     the public strings of gen_cases.TOKENIZE_STRINGS, listed in hybrid/index.json
$PY - <<'PYEOF'
import json, gen_cases
with open("build/tokenize-strings-public.json", "w", encoding="utf-8") as f:
    json.dump(gen_cases.TOKENIZE_STRINGS["public"], f, ensure_ascii=False, indent=1)
PYEOF
./dump tokenize -m models/tiny-qwen35-f32.gguf -i build/tokenize-strings-public.json \
    -o hybrid/tokenize-tiny-qwen35-f32.json
$PY - <<'PYEOF'
import json
with open("hybrid/index.json", encoding="utf-8") as f:
    index = json.load(f)
index["tokenize"] = [{"model": "tiny-qwen35-f32.gguf", "model_dir": "models",
                      "json": "tokenize-tiny-qwen35-f32.json"}]
with open("hybrid/index.json", "w", encoding="utf-8") as f:
    json.dump(index, f, ensure_ascii=False, indent=1)
PYEOF

# 5) self-check of the new cases
$PY check.py hybrid

# 6) diagnostics: llama.cpp with an F32 KV cache (F32 models, and F32 copies of the dequantized
#    Q8_0 models) vs the exact pass
$PY check_qwen35.py hybrid

# 7) diagnostics: the exact pass against llama.cpp on geometry variants the shipped models do not
#    cover (tied head, full RoPE, Hv == Hk, conv 3, top-3, ratio 3, an M-RoPE pair on position e)
$PY check_qwen35_variants.py
