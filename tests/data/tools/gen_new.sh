#!/usr/bin/env bash
# Make the two fixture models added after the original set (tiny-llama-ropefreqs-q8_0,
# tiny-gemma3-62l-q8_0) and their cases, with the same llama.cpp build as gen_all.sh
# (llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f = vendor/llama.cpp of PyPI's
# llama_cpp_python-0.3.36 sdist; CPU Release build, shared libs, GGML_NATIVE=ON:
#   cmake -B build -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON \
#         -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
#   cmake --build build -j2 --target llama llama-quantize )
# Run it in a copy of the golden tools/ folder with make_tiny.py, gen_cases.py and exact_ref.py
# replaced by the versions next to this script (dump.cpp and check.py are used unchanged).
# Outputs: models/*.gguf + models/MANIFEST.json, new/<case>.* + new/index.json.
set -euo pipefail
cd "$(dirname "$0")"
LLAMA_SRC=${LLAMA_SRC:-../llama.cpp}
LLAMA_BIN=${LLAMA_BIN:-../llama.cpp/build/bin}
PY=${PY:-python3}   # numpy 2.x + gguf 0.19.0

# 1) reference dumper (as in gen_all.sh)
g++ -O2 -std=c++17 dump.cpp -o dump \
    -I"$LLAMA_SRC/include" -I"$LLAMA_SRC/ggml/include" -I"$LLAMA_SRC/vendor" \
    -L"$LLAMA_BIN" -lllama -lggml -lggml-base -Wl,-rpath,"$LLAMA_BIN"

# 2) F32 models -> Q8_0 (1-D tensors, rope_freqs.weight included, stay F32)
mkdir -p build models
$PY make_tiny.py build llama-ropefreqs gemma3-62l llama-ropefreqs-nofactors
for m in llama-ropefreqs gemma3-62l llama-ropefreqs-nofactors; do
    "$LLAMA_BIN/llama-quantize" "build/tiny-$m-f32.gguf" "models/tiny-$m-q8_0.gguf" Q8_0 2 > "build/quant-$m-q8_0.log" 2>&1
done

# 3) llama.cpp cases (public set seed, model indices 7 and 8 in gen_cases.TINY_MODELS)
rm -rf new
$PY gen_cases.py --sets public --out-dir new \
    --only tiny-llama-ropefreqs-q8_0.gguf,tiny-gemma3-62l-q8_0.gguf
# (exact_ref.py and check.py read <set>/index.json under tools/, hence the set name "new")

# 4) exact float64 reference, teacher-forced on the llama.cpp greedy ids
$PY exact_ref.py --sets new

# 5) self-check of the new cases
$PY check.py new

# 6) the same prompts on the rope-freqs model without its factors (not shipped): shows that the
#    factors change the greedy tokens
mkdir -p build/nofactors
for c in 0 1; do
    ids=$($PY -c "import json; print(','.join(map(str, json.load(open('new/tiny-llama-ropefreqs-q8_0_c$c.json'))['prompt_ids'])))")
    ./dump eval -m models/tiny-llama-ropefreqs-nofactors-q8_0.gguf -o build/nofactors \
        -c tiny-llama-ropefreqs-nofactors-q8_0_c$c -n 16 --ids "$ids"
done
