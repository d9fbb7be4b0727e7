#!/usr/bin/env bash
# Sourced by gen_gptoss.sh and gen_iq4.sh: the reference dumper (the golden dump.cpp) linked
# statically against the llama.cpp build at $LLAMA_BUILD (sources at $LLAMA_SRC).
g++ -O2 -std=c++17 dump.cpp -o dump \
    -I"$LLAMA_SRC/include" -I"$LLAMA_SRC/ggml/include" -I"$LLAMA_SRC/vendor" \
    "$LLAMA_BUILD/src/libllama.a" "$LLAMA_BUILD/ggml/src/libggml.a" \
    "$LLAMA_BUILD/ggml/src/libggml-cpu.a" "$LLAMA_BUILD/ggml/src/libggml-base.a" \
    -ldl -lm -fopenmp -lpthread
