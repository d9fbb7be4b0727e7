#!/usr/bin/env bash
# Make the tiny i-quant fixture models of 3 bits and less (tiny-llama-{iq3_xxs,iq3_s,iq2_xxs,
# iq2_xs,iq2_s,iq1_s,iq1_m}) and their cases: the tiny llama's F32 weights (make_tiny.py, seed of
# the original set, as gen_iq4.sh) through llama-imatrix and llama-quantize --imatrix.
# llama.cpp, its static CPU build and the tools folder are as in gen_gptoss.sh (same
# LLAMA_SRC / LLAMA_BUILD, a copy of the golden tools/ with the scripts next to this one), with
# llama-imatrix built too:
#   cmake --build "$LLAMA_BUILD" -j2 --target llama-imatrix
# The importance-matrix text is the golden fixture README (../README.md, next to the golden
# tools/ folder); the imatrix it gives is shipped as models/tiny-llama.imatrix.dat.
# Outputs: models/tiny-llama-<type>.gguf + models/MANIFEST.json, build/tiny-llama.imatrix.dat,
# iqgrid/<case>.* + iqgrid/index.json (merge them into the shipped MANIFEST.json /
# reference/index.json).
set -euo pipefail
cd "$(dirname "$0")"
LLAMA_SRC=${LLAMA_SRC:-../llama.cpp}
LLAMA_BUILD=${LLAMA_BUILD:-../llama.cpp/build}
PY=${PY:-python3}   # numpy 2.x + gguf 0.19.0
TYPES="iq3_xxs iq3_s iq2_xxs iq2_xs iq2_s iq1_s iq1_m"

# 1) reference dumper, linked statically against the build's libraries
source ./link_dump.sh

# 2) importance matrix of the F32 model on the golden README (17398 bytes, 27 chunks of 512
#    tokens with the tiny SentencePiece vocab; the legacy .dat format, which records the text's
#    path as given, so keep it "../README.md"). Activations only, so it is the same for any -t.
mkdir -p build models
$PY make_tiny.py build llama
echo "10209b97bc9f60a89a6a2b2cdccf367e9c06aa1ee88c5db701b7dfb3b210953f  ../README.md" | sha256sum -c --quiet
"$LLAMA_BUILD/bin/llama-imatrix" -m build/tiny-llama-f32.gguf -f ../README.md \
    -o build/tiny-llama.imatrix.dat --output-format dat -c 512 -t 2 > build/imatrix-llama.log 2>&1

# 3) one llama-quantize preset per type, with the importance matrix. The presets mix types (see
#    the listing below); IQ2_S is special: llama.cpp's IQ2_S preset makes its default tensors
#    IQ2_XS (IQ2_S tensors come from the IQ2_M preset), so the tensors it would make IQ2_XS
#    (attn_q, attn_k, ffn_*) are set to IQ2_S with --tensor-type.
for t in $TYPES; do
    extra=()
    if [ "$t" = iq2_s ]; then
        extra=(--tensor-type 'attn_[qk]|ffn_(gate|up|down)=iq2_s')
    fi
    "$LLAMA_BUILD/bin/llama-quantize" --imatrix build/tiny-llama.imatrix.dat ${extra[@]+"${extra[@]}"} \
        build/tiny-llama-f32.gguf "models/tiny-llama-$t.gguf" "${t^^}" 2 > "build/quant-llama-$t.log" 2>&1
done

# 4) the tensor types of each file; each must hold tensors of its own type (ffn_up among them:
#    scripts/gen-quant-fixtures.py takes its real rows from blk.0.ffn_up.weight)
$PY - $TYPES <<'EOF'
import collections, sys
import gguf
for t in sys.argv[1:]:
    r = gguf.GGUFReader(f"models/tiny-llama-{t}.gguf")
    by = collections.defaultdict(list)
    for x in r.tensors:
        by[x.tensor_type.name].append(x.name)
    print(f"tiny-llama-{t}.gguf: " + "; ".join(f"{k} {len(v)} ({', '.join(v)})" for k, v in by.items()))
    types = {x.name: x.tensor_type.name for x in r.tensors}
    assert types["blk.0.ffn_up.weight"] == t.upper(), (t, types["blk.0.ffn_up.weight"])
EOF

# 5) llama.cpp cases (public set seed, model indices 13 to 19 in gen_cases.TINY_MODELS, in the
#    order iq3_xxs, iq2_xxs, iq3_s, iq2_xs, iq2_s, iq1_m, iq1_s)
rm -rf iqgrid
$PY gen_cases.py --sets public --out-dir iqgrid --only "$(printf 'tiny-llama-%s.gguf,' $TYPES | sed 's/,$//')"

# 6) exact float64 reference, teacher-forced on the llama.cpp greedy ids
$PY exact_ref.py --sets iqgrid

# 7) self-check of the new cases
$PY check.py iqgrid
