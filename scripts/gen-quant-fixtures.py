#!/usr/bin/env python3
"""Generate tests/data/quant/: ggml blocks with their dequantization by an independent
implementation, for the CPU reference in loaders/src/quant/ (loaders/tests/quant_fixtures.rs).

Dequantization fixtures (`<name>.blocks.bin` + `<name>.f32.bin`, little-endian f32):
  * real rows of tensors from the test models, for every type some model has;
  * synthetic data for the rest: Gaussian values through `gguf.quants.quantize` where gguf-py
    has a quantizer, else random block bytes with sane f16 scales. Random bytes also cover
    every bit pattern of the k-quant, MXFP4 and IQ4 layouts (gguf-py cannot quantize IQ4_NL or
    IQ4_XS, so theirs are random bytes and real rows of the tiny IQ4 models), and of the i-quants
    of 3 bits and less (IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M: random bytes and
    real rows of the tiny models of tests/data/tools/gen_iq_grid.sh).
The f32 values are always `gguf.quants.dequantize` of the blocks (gguf-py 0.19.0).

Quantizer fixtures (`<name>.input.f32.bin` + `<name>.blocks.bin`): seeded inputs and the bytes
of llama.cpp's `quantize_row_q8_0_ref` / `quantize_row_q4_K_ref`, built here from the pinned
llama.cpp sources with `cc -O2` for the baseline target (no FMA contraction), checked against
`gguf.quants.quantize` for Q8_0.

usage: scripts/gen-quant-fixtures.py [--llama-cpp DIR] [--models-cache DIR]
"""

import argparse
import hashlib
import json
import math
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "quant"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
# Enough elements for several blocks of every type while keeping each fixture a few KB.
TARGET_ELEMENTS = 1024

# (type, model, tensor). Model paths starting with "cache:" live in --models-cache.
REAL = [
    (T.F32, "tests/data/models/tiny-llama-q4_k_m.gguf", "blk.0.attn_norm.weight"),
    (T.F32, "cache:gemma-3-270m-q4_k_m.gguf", "blk.0.attn_k_norm.weight"),
    (T.Q4_1, "cache:SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.ffn_down.weight"),
    (T.Q5_0, "cache:gemma-3-270m-q4_k_m.gguf", "blk.0.attn_k.weight"),
    (T.Q8_0, "tests/data/models/tiny-llama-q8_0.gguf", "blk.0.attn_q.weight"),
    (T.Q8_0, "cache:SmolLM2-135M-Instruct.Q4_1.gguf", "token_embd.weight"),
    (T.Q8_0, "cache:gemma-3-270m-q4_k_m.gguf", "blk.0.attn_v.weight"),
    (T.Q4_K, "tests/data/models/tiny-llama-q4_k_m.gguf", "token_embd.weight"),
    (T.Q4_K, "cache:gemma-3-270m-q4_k_m.gguf", "blk.0.attn_output.weight"),
    (T.Q5_K, "tests/data/models/tiny-qwen3moe-q4_k_m.gguf", "blk.0.attn_output.weight"),
    (T.Q6_K, "tests/data/models/tiny-llama-q4_k_m.gguf", "output.weight"),
    (T.Q6_K, "cache:gemma-3-270m-q4_k_m.gguf", "blk.0.ffn_down.weight"),
    (T.IQ4_NL, "tests/data/models/tiny-llama-iq4_nl.gguf", "blk.0.ffn_up.weight"),
    (T.IQ4_XS, "tests/data/models/tiny-llama-iq4_xs.gguf", "blk.0.ffn_up.weight"),
    (T.IQ3_XXS, "tests/data/models/tiny-llama-iq3_xxs.gguf", "blk.0.ffn_up.weight"),
    (T.IQ3_S, "tests/data/models/tiny-llama-iq3_s.gguf", "blk.0.ffn_up.weight"),
    (T.IQ2_XXS, "tests/data/models/tiny-llama-iq2_xxs.gguf", "blk.0.ffn_up.weight"),
    (T.IQ2_XS, "tests/data/models/tiny-llama-iq2_xs.gguf", "blk.0.ffn_up.weight"),
    (T.IQ2_S, "tests/data/models/tiny-llama-iq2_s.gguf", "blk.0.ffn_up.weight"),
    (T.IQ1_S, "tests/data/models/tiny-llama-iq1_s.gguf", "blk.0.ffn_up.weight"),
    (T.IQ1_M, "tests/data/models/tiny-llama-iq1_m.gguf", "blk.0.ffn_up.weight"),
]

# Types gguf-py can quantize, fed Gaussian data (sigma 0.02, typical of weights).
QUANTIZED_GAUSSIAN = [T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.MXFP4]

# Types given random block bytes: (type, f16 fields as byte offsets, whether they may be < 0).
RANDOM_BLOCKS = [
    (T.Q4_0, [0], True),
    (T.Q5_1, [0, 2], True),
    (T.Q2_K, [80, 82], False),
    (T.Q3_K, [108], True),
    (T.Q4_K, [0, 2], False),
    (T.Q5_K, [0, 2], False),
    (T.Q6_K, [208], True),
]

F16_SPECIALS = [0.0, -0.0, math.inf, -math.inf, 65504.0, -65504.0, 2.0**-24, -(2.0**-24), 2.0**-14, 3.0e-6]


def row_bytes(tensor) -> np.ndarray:
    """The tensor's data as (rows, bytes per row) uint8."""
    data = np.ascontiguousarray(tensor.data).view(np.uint8)
    n_rows = int(np.prod([int(d) for d in tensor.shape[1:]], dtype=np.int64)) if len(tensor.shape) > 1 else 1
    return data.reshape(n_rows, -1)


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Writer:
    def __init__(self):
        self.entries = []
        self.counts = {}

    def name(self, ty: T, kind: str) -> str:
        base = f"{ty.name.lower()}-{kind}"
        n = self.counts.get(base, 0)
        self.counts[base] = n + 1
        return base if n == 0 else f"{base}-{n + 1}"

    def dequant(self, ty: T, kind: str, blocks: np.ndarray, source: dict):
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1)
        values = dequantize(blocks if ty != T.F32 else blocks.view(np.float32), ty)
        values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        block_size, type_size = gguf.GGML_QUANT_SIZES[ty]
        assert blocks.size % type_size == 0 and values.size == blocks.size // type_size * block_size
        name = self.name(ty, kind)
        (OUT / f"{name}.blocks.bin").write_bytes(blocks.tobytes())
        (OUT / f"{name}.f32.bin").write_bytes(values.astype("<f4").tobytes())
        self.entries.append(
            {
                "name": name,
                "kind": "dequantize",
                "type": ty.name,
                "n_elements": int(values.size),
                "blocks": f"{name}.blocks.bin",
                "values": f"{name}.f32.bin",
                "source": source,
            }
        )

    def quant(self, ty: T, kind: str, x: np.ndarray, blocks: bytes, source: dict):
        name = self.name(ty, kind)
        (OUT / f"{name}.input.f32.bin").write_bytes(x.astype("<f4").tobytes())
        (OUT / f"{name}.blocks.bin").write_bytes(blocks)
        self.entries.append(
            {
                "name": name,
                "kind": "quantize",
                "type": ty.name,
                "n_elements": int(x.size),
                "input": f"{name}.input.f32.bin",
                "blocks": f"{name}.blocks.bin",
                "source": source,
            }
        )


def real_fixtures(w: Writer, cache: pathlib.Path):
    for ty, model, tensor_name in REAL:
        path = cache / model[len("cache:") :] if model.startswith("cache:") else ROOT / model
        reader = gguf.GGUFReader(path)
        tensor = next(t for t in reader.tensors if t.name == tensor_name)
        assert tensor.tensor_type == ty, f"{tensor_name} in {model} is {tensor.tensor_type.name}"
        rows = row_bytes(tensor)
        row_len = int(tensor.shape[0])
        n_take = min(rows.shape[0], max(1, math.ceil(TARGET_ELEMENTS / row_len)))
        # Spread the rows over the tensor so they see different scales.
        picks = sorted({int(r) for r in np.linspace(0, rows.shape[0] - 1, n_take)})
        source = {
            "model": model.replace("cache:", "~/.cache/wllm/models/"),
            "model_sha256": sha256(path),
            "tensor": tensor_name,
            "row_len": row_len,
            "rows": picks,
        }
        w.dequant(ty, "real", rows[picks], source)


def synthetic_fixtures(w: Writer):
    seed = 1
    for ty in QUANTIZED_GAUSSIAN:
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal(TARGET_ELEMENTS) * 0.02).astype(np.float32)
        desc = f"seed {seed}: N(0, 0.02^2) through gguf.quants.quantize"
        if ty == T.BF16:
            x[: len(F16_SPECIALS)] = F16_SPECIALS
            desc += ", specials first"
        blocks = quantize(x.reshape(1, -1), ty)
        w.dequant(ty, "gauss", blocks, {"synthetic": desc})
        seed += 1

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(TARGET_ELEMENTS) * 0.02).astype(np.float16)
    x[: len(F16_SPECIALS)] = F16_SPECIALS
    w.dequant(T.F16, "gauss", x.view(np.uint8), {"synthetic": f"seed {seed}: N(0, 0.02^2) as f16, specials first"})
    seed += 1

    for ty, f16_offsets, signed in RANDOM_BLOCKS:
        rng = np.random.default_rng(seed)
        block_size, type_size = gguf.GGML_QUANT_SIZES[ty]
        n_blocks = max(2, TARGET_ELEMENTS // 2 // block_size)
        blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        # Scales of 2^-14 .. 2^-4 keep values finite and in the range of real weights.
        scales = np.exp2(rng.uniform(-14, -4, size=(n_blocks, len(f16_offsets))))
        if signed:
            scales *= rng.choice([-1.0, 1.0], size=scales.shape)
        for k, off in enumerate(f16_offsets):
            blocks[:, off : off + 2] = scales[:, k].astype(np.float16).reshape(-1, 1).view(np.uint8)
        w.dequant(ty, "random", blocks, {"synthetic": f"seed {seed}: uniform random bytes, f16 scales 2^-14..2^-4"})
        seed += 1

    # MXFP4's scale is a bare exponent: cover the subnormal (0, 1) and extreme (254, 255) ones.
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(16, 17), dtype=np.uint8)
    blocks[:, 0] = [0, 1, 2, 3, 100, 118, 120, 122, 124, 126, 127, 128, 130, 200, 254, 255]
    with np.errstate(over="ignore"):  # 12 * 2^127 is inf, in ggml too
        w.dequant(
            T.MXFP4, "random", blocks, {"synthetic": f"seed {seed}: uniform random nibbles, exponents 0..255"}
        )
    seed += 1
    return seed


QREF_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"
#include "ggml-quants.h"
// Stubs for the few ggml symbols ggml-quants.c links against but the _ref paths never call.
void ggml_abort(const char *file, int line, const char *fmt, ...) { (void)fmt; fprintf(stderr, "%s:%d\n", file, line); abort(); }
size_t ggml_row_size(enum ggml_type t, int64_t n) { (void)t; (void)n; abort(); }
const char *ggml_type_name(enum ggml_type t) { (void)t; return "?"; }
size_t ggml_type_size(enum ggml_type t) { (void)t; abort(); }
int main(int argc, char **argv) {
    if (argc != 4) return 2;
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 3;
    fseek(f, 0, SEEK_END); long n = ftell(f) / 4; fseek(f, 0, SEEK_SET);
    float *x = malloc(n * 4);
    if (fread(x, 4, n, f) != (size_t)n) return 3;
    fclose(f);
    unsigned char *y = calloc(n * 2, 1); size_t bytes;
    if (!strcmp(argv[1], "q8_0")) { quantize_row_q8_0_ref(x, (void *)y, n); bytes = n / 32 * 34; }
    else if (!strcmp(argv[1], "q4_k")) { quantize_row_q4_K_ref(x, (void *)y, n); bytes = n / 256 * 144; }
    else return 2;
    FILE *o = fopen(argv[3], "wb");
    fwrite(y, 1, bytes, o); fclose(o);
    return 0;
}
"""


def build_qref(llama_cpp: pathlib.Path, tmp: pathlib.Path) -> pathlib.Path:
    ggml = llama_cpp / "ggml"
    src = tmp / "qref.c"
    src.write_text(QREF_HARNESS)
    exe = tmp / "qref"
    cc = shutil.which("cc") or "gcc"
    # -ffp-contract=off: the reference is meant without fused multiply-adds.
    flags = ["-O2", "-ffp-contract=off", f"-I{ggml}/include", f"-I{ggml}/src"]
    subprocess.run([cc, *flags, str(src), str(ggml / "src" / "ggml-quants.c"), "-lm", "-o", str(exe)], check=True)
    return exe


def quantizer_inputs(seed: int):
    """Four 256-element super-blocks exercising the quantizers' branches."""
    rng = np.random.default_rng(seed)
    gauss = rng.standard_normal(256)
    positive = rng.uniform(0.5, 1.5, 256)  # min > 0: the fit clamps the offset to 0
    sparse = np.zeros(256)  # all-zero and constant sub-blocks, and an outlier
    sparse[32:64] = 0.25
    sparse[64:96] = rng.standard_normal(32) * 1e-3
    sparse[100] = 40.0
    cosine = 0.1 + 2.0 * np.cos(np.arange(256) + 0.5)  # llama.cpp test-quantize-fns data
    x = np.concatenate([gauss, positive, sparse, cosine]).astype(np.float32)
    desc = (
        f"seed {seed}: N(0,1) | U(0.5,1.5) | zero, constant, 1e-3 noise and an outlier of 40 | "
        "0.1 + 2 cos(i + 0.5), 256 each"
    )
    return x, desc


def quantizer_fixtures(w: Writer, llama_cpp: pathlib.Path, seed: int):
    x, desc = quantizer_inputs(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        exe = build_qref(llama_cpp, tmp)
        (tmp / "x.bin").write_bytes(x.astype("<f4").tobytes())
        for ty, arg in [(T.Q8_0, "q8_0"), (T.Q4_K, "q4_k")]:
            subprocess.run([str(exe), arg, str(tmp / "x.bin"), str(tmp / "y.bin")], check=True)
            blocks = (tmp / "y.bin").read_bytes()
            if ty == T.Q8_0:
                assert blocks == quantize(x.reshape(1, -1), ty).tobytes(), "llama.cpp and gguf-py disagree on Q8_0"
            source = {
                "synthetic": desc,
                "quantizer": f"llama.cpp quantize_row_{arg.replace('_k', '_K')}_ref at {LLAMA_CPP_COMMIT}, "
                "cc -O2 -ffp-contract=off",
            }
            w.quant(ty, "ref", x, blocks, source)


def iq4_fixtures(w: Writer, seed: int):
    """Random IQ4 blocks with f16 scales of either sign (IQ4_XS's 6-bit run scales take every
    value, 0 included). Seeded after the other fixtures so theirs do not move."""
    for ty in [T.IQ4_NL, T.IQ4_XS]:
        rng = np.random.default_rng(seed)
        block_size, type_size = gguf.GGML_QUANT_SIZES[ty]
        n_blocks = max(4, TARGET_ELEMENTS // block_size)
        blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        scales = np.exp2(rng.uniform(-14, -4, size=(n_blocks, 1))) * rng.choice([-1.0, 1.0], size=(n_blocks, 1))
        blocks[:, 0:2] = scales.astype(np.float16).view(np.uint8)
        w.dequant(ty, "random", blocks, {"synthetic": f"seed {seed}: uniform random bytes, f16 scales +-2^-14..2^-4"})
        seed += 1
    return seed


# The i-quants of 3 bits and less. Every byte pattern is a valid block: grid indices of 8 to 11
# bits address full grids, and signs, block scales and IQ1 deltas take any value.
IQ_GRID = [T.IQ3_XXS, T.IQ3_S, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_S, T.IQ1_M]


def iq_grid_fixtures(w: Writer, seed: int):
    """Random blocks of the IQ_GRID types with f16 scales of either sign. The super-block scale
    is the f16 at byte 0, except for IQ1_M, which has none: its f16 is the top nibbles of the four
    u16 scale words at bytes 48..55 (word k's bits 12..15 are the f16's bits 4k..4k+3; bits 0..11
    are the 3-bit block scales and stay random). Seeded after the IQ4 fixtures."""
    for ty in IQ_GRID:
        rng = np.random.default_rng(seed)
        block_size, type_size = gguf.GGML_QUANT_SIZES[ty]
        n_blocks = max(4, TARGET_ELEMENTS // block_size)
        blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
        scales = np.exp2(rng.uniform(-14, -4, size=(n_blocks, 1))) * rng.choice([-1.0, 1.0], size=(n_blocks, 1))
        bits = scales.astype(np.float16).view(np.uint16)[:, 0].astype(np.uint16)
        if ty == T.IQ1_M:
            words = blocks[:, 48:56].copy().view("<u2")
            for k in range(4):
                words[:, k] = (words[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
            blocks[:, 48:56] = words.view(np.uint8)
            where = "f16 scale in the top nibbles of the scale words"
        else:
            blocks[:, 0:2] = bits.astype("<u2").reshape(-1, 1).view(np.uint8)
            where = "f16 scales"
        w.dequant(ty, "random", blocks, {"synthetic": f"seed {seed}: uniform random bytes, {where} +-2^-14..2^-4"})
        seed += 1
    return seed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-cpp", type=pathlib.Path, default=pathlib.Path("/tmp/llcpp/src/vendor/llama.cpp"))
    ap.add_argument("--models-cache", type=pathlib.Path, default=pathlib.Path.home() / ".cache/wllm/models")
    args = ap.parse_args()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    w = Writer()
    real_fixtures(w, args.models_cache)
    seed = synthetic_fixtures(w)
    quantizer_fixtures(w, args.llama_cpp, seed)
    seed = iq4_fixtures(w, seed + 1)
    iq_grid_fixtures(w, seed)

    from importlib.metadata import version

    manifest = {
        "provenance": (
            f"Generated by scripts/gen-quant-fixtures.py with gguf {version('gguf')} (gguf-py, "
            f"gguf.quants.quantize/dequantize) and numpy {np.__version__}; quantizer references from "
            f"llama.cpp {LLAMA_CPP_COMMIT}. All binaries are little-endian."
        ),
        "fixtures": w.entries,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{len(w.entries)} fixtures, {total} bytes in {OUT.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
