#!/usr/bin/env bash
# Make the tiny gpt-oss fixture models (tiny-gptoss-f32, tiny-gptoss-mxfp4) and their cases.
# llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (= vendor/llama.cpp of PyPI's
# llama_cpp_python-0.3.36 sdist), CPU Release build with STATIC libs, configured with
#   -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
#   -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON
#   -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
#   -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
#   -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_VULKAN=OFF
# (GGML_LLAMAFILE, GGML_CPU_REPACK, GGML_OPENMP at their defaults: ON), then
#   cmake --build "$LLAMA_BUILD" -j2 --target llama llama-quantize
# (This build reproduces the shipped tiny-llama-q8_0_c0, tiny-qwen3moe-q4_k_m_c1 and
# tiny-gemma3-q4_k_m_c0 .json/.f32 files bit for bit.)
# Run it in a copy of the golden tools/ folder with make_tiny.py, gen_cases.py, exact_ref.py and
# check_gptoss.py replaced by / added from the versions next to this script (dump.cpp and
# check.py are used unchanged).
# Outputs: models/tiny-gptoss-{f32,mxfp4}.gguf + models/MANIFEST.json, gptoss/<case>.* +
# gptoss/index.json (merge them into the shipped MANIFEST.json / reference/index.json).
set -euo pipefail
cd "$(dirname "$0")"
LLAMA_SRC=${LLAMA_SRC:-../llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-../llama.cpp/build}
PY=${PY:-python3}   # numpy 2.x + gguf 0.19.0

# 1) reference dumper, linked statically against the build's libraries
source ./link_dump.sh

# 2) the F32 model is shipped as written; MXFP4_MOE: 3-D expert tensors MXFP4, the other 2-D
#    weights Q8_0 (token_embd and output included), router (ffn_gate_inp), norms, biases and
#    sinks F32
mkdir -p build models
$PY make_tiny.py build gptoss
cp build/tiny-gptoss-f32.gguf models/tiny-gptoss-f32.gguf
"$LLAMA_BUILD/bin/llama-quantize" build/tiny-gptoss-f32.gguf models/tiny-gptoss-mxfp4.gguf MXFP4_MOE 2 \
    > build/quant-gptoss-mxfp4.log 2>&1

# 3) llama.cpp cases (public set seed, model indices 9 and 10 in gen_cases.TINY_MODELS)
rm -rf gptoss
$PY gen_cases.py --sets public --out-dir gptoss --only tiny-gptoss-f32.gguf,tiny-gptoss-mxfp4.gguf

# 4) exact float64 reference, teacher-forced on the llama.cpp greedy ids
$PY exact_ref.py --sets gptoss

# 5) self-check of the new cases
$PY check.py gptoss

# 6) diagnostics: llama.cpp with an F32 KV cache vs the exact pass (F32 model, and an F32 copy
#    of the dequantized MXFP4 model): agreement to ~1e-5 validates exact_ref.py's gpt-oss math
$PY check_gptoss.py gptoss
