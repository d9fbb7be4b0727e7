#!/usr/bin/env python3
"""Writes the malformed safetensors corpus under tests/data/malformed/safetensors/.

Every case is a file or a model directory that wllm must refuse with a specific typed error
(the `SafetensorsError` variant named in MANIFEST.json), quickly and without panicking. The
regression test `loaders/tests/safetensors.rs` opens each one.

    python3 scripts/make-malformed-safetensors.py

Deterministic: rerunning reproduces the committed files byte for byte.
"""

import json
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "malformed", "safetensors")

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "U8": 1}


def raw(header: bytes, data: bytes = b"") -> bytes:
    """An arbitrary header (bytes) with its length prefix, then `data`."""
    return struct.pack("<Q", len(header)) + header + data


def st(tensors, header_extra=None) -> bytes:
    """A well-formed file from [(name, dtype, shape)], zero-filled, laid out like the reference
    writer (tensors in order, header padded with spaces to a multiple of 8)."""
    header, offset = {}, 0
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if header_extra:
        header.update(header_extra)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(len(text) + 8) % 8)
    return raw(text, bytes(offset))


def entry_file(entry: str, data_len: int, name: str = "t") -> bytes:
    """One tensor whose entry JSON is given verbatim."""
    return raw(('{"%s":%s}' % (name, entry)).encode(), bytes(data_len))


MANIFEST = []


def case(path, expect, description, data=None, open_as="files"):
    MANIFEST.append({"path": path, "open": open_as, "expect": expect, "description": description})
    if data is not None:
        full = os.path.join(ROOT, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def model_dir(path, expect, description, config, files, open_as="model"):
    """A directory with config.json (dict, or raw bytes) and the given {file name: bytes}."""
    full = os.path.join(ROOT, path)
    os.makedirs(full, exist_ok=True)
    if config is not None:
        with open(os.path.join(full, "config.json"), "wb") as f:
            f.write(config if isinstance(config, bytes) else (json.dumps(config, indent=1) + "\n").encode())
    for name, data in files.items():
        with open(os.path.join(full, name), "wb") as f:
            f.write(data)
    case(path, expect, description, open_as=open_as)


LLAMA = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
    "num_key_value_heads": 1, "num_hidden_layers": 1, "vocab_size": 4, "rms_norm_eps": 1e-5,
}

QWEN3MOE = {
    "architectures": ["Qwen3MoeForCausalLM"], "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2,
    "num_key_value_heads": 1, "head_dim": 4, "num_hidden_layers": 1, "vocab_size": 4, "num_experts": 4,
    "num_experts_per_tok": 2, "moe_intermediate_size": 4, "norm_topk_prob": True,
}


def experts(ids, shape_of=lambda e: (4, 8)):
    return [(f"model.layers.0.mlp.experts.{e}.gate_proj.weight", "BF16", shape_of(e)) for e in ids]


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    ok = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'

    # --- the 8-byte length and the header as a whole ---
    case("empty.safetensors", "TooShort", "zero-byte file", b"")
    case("short.safetensors", "TooShort", "5 bytes: not even the header length", b"\x10\x00\x00\x00\x00")
    case("header-len-huge.safetensors", "HeaderTooLarge", "header length 2^63", struct.pack("<Q", 1 << 63) + b"{}")
    case("header-past-end.safetensors", "HeaderPastEnd", "header length 1000 in a 64-byte file",
         struct.pack("<Q", 1000) + b"{" + b" " * 55)
    case("header-not-json.safetensors", "HeaderJson", "header is not JSON", raw(b"{not json}"))
    case("header-not-utf8.safetensors", "HeaderJson", "header holds invalid UTF-8 in a name",
         raw(b'{"\xff\xfe":' + ok.encode() + b"}", bytes(8)))
    case("header-trailing.safetensors", "HeaderJson", "garbage after the JSON object",
         raw(('{"t":%s}xyz' % ok).encode(), bytes(8)))
    case("header-array.safetensors", "HeaderNotObject", "header is a JSON array", raw(b"[1,2,3]"))
    case("header-string.safetensors", "HeaderNotObject", "header is a JSON string", raw(b'"model"'))
    case("entry-deep.safetensors", "EntryNotObject", "an entry of 20000 nested arrays (no stack overflow)",
         raw(b'{"t":' + b"[" * 20000 + b"]" * 20000 + b"}"))
    case("shape-deep.safetensors", "BadField", "a shape of 20000 nested arrays (no stack overflow)",
         raw(b'{"t":{"dtype":"F32","shape":' + b"[" * 20000 + b"]" * 20000 + b',"data_offsets":[0,0]}}'))
    case("header-deep-unclosed.safetensors", "HeaderJson", "20000 unclosed arrays in an unknown field",
         raw(b'{"t":{"dtype":"F32","x":' + b"[" * 20000 + b"}"))

    # --- one tensor entry ---
    case("entry-not-object.safetensors", "EntryNotObject", "entry is a number", entry_file("5", 0))
    case("missing-dtype.safetensors", "MissingField", "no dtype", entry_file('{"shape":[2],"data_offsets":[0,8]}', 8))
    case("missing-shape.safetensors", "MissingField", "no shape", entry_file('{"dtype":"F32","data_offsets":[0,8]}', 8))
    case("missing-offsets.safetensors", "MissingField", "no data_offsets", entry_file('{"dtype":"F32","shape":[2]}', 8))
    case("dtype-number.safetensors", "BadField", "dtype is a number",
         entry_file('{"dtype":7,"shape":[2],"data_offsets":[0,8]}', 8))
    case("dtype-twice.safetensors", "BadField", "dtype given twice",
         entry_file('{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}', 8))
    case("shape-negative.safetensors", "BadField", "negative dimension",
         entry_file('{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}', 8))
    case("shape-float.safetensors", "BadField", "fractional dimension",
         entry_file('{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}', 8))
    case("shape-string.safetensors", "BadField", "shape is a string",
         entry_file('{"dtype":"F32","shape":"2","data_offsets":[0,8]}', 8))
    case("shape-dim-too-big.safetensors", "BadField", "dimension past u64 (parsed as a float)",
         entry_file('{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}', 8))
    case("offsets-three.safetensors", "BadField", "three data_offsets",
         entry_file('{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}', 8))
    case("offsets-negative.safetensors", "BadField", "negative offset",
         entry_file('{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}', 8))
    case("unknown-dtype.safetensors", "UnknownDtype", "dtype F128",
         entry_file('{"dtype":"F128","shape":[2],"data_offsets":[0,32]}', 32))
    case("too-many-dims.safetensors", "TooManyDims", "9 dimensions",
         entry_file('{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}', 8))
    case("shape-array-huge.safetensors", "TooManyDims", "a shape of 20000 ones (bounded memory)",
         entry_file('{"dtype":"F32","shape":[%s],"data_offsets":[0,4]}' % ",".join(["1"] * 20000), 4))
    case("shape-overflow.safetensors", "ShapeOverflow", "dims whose product overflows u64",
         entry_file('{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}', 8))
    case("f4-odd.safetensors", "NotWholeBytes", "3 F4 elements are a byte and a half",
         entry_file('{"dtype":"F4","shape":[3],"data_offsets":[0,2]}', 2))
    case("offsets-reversed.safetensors", "BadOffsets", "end before start",
         entry_file('{"dtype":"F32","shape":[2],"data_offsets":[8,0]}', 8))
    case("offsets-past-data.safetensors", "OutOfBounds", "tensor runs past the data section",
         entry_file('{"dtype":"F32","shape":[4],"data_offsets":[0,16]}', 8))
    case("offsets-huge.safetensors", "OutOfBounds", "end offset near u64::MAX",
         entry_file('{"dtype":"U8","shape":[2],"data_offsets":[18446744073709551613,18446744073709551615]}', 8))
    case("size-mismatch.safetensors", "SizeMismatch", "F32 [3] in 8 bytes",
         entry_file('{"dtype":"F32","shape":[3],"data_offsets":[0,8]}', 8))

    # --- how the tensors tile the data section ---
    case("duplicate-name.safetensors", "DuplicateTensor", "the same name twice",
         raw(('{"t":%s,"t":%s}' % (ok, ok)).encode(), bytes(8)))
    case("overlap.safetensors", "Overlap", "two tensors share bytes 4..8",
         raw(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
             b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)))
    case("hole.safetensors", "Uncovered", "bytes 8..12 belong to no tensor",
         raw(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
             b'"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}', bytes(16)))
    case("trailing-bytes.safetensors", "Uncovered", "16 data bytes after the last tensor", entry_file(ok, 24))

    # --- directories and the shard index ---
    t8 = st([("a", "F32", (2,))])
    model_dir("dir-empty", "NoSafetensors", "a directory with a config.json and no weights",
              LLAMA, {}, open_as="files")
    model_dir("index-missing-shard", "MissingShard", "the index names a shard that is not there", None, {
        "model.safetensors.index.json": json.dumps({"weight_map": {
            "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}).encode(),
        "model-00001-of-00002.safetensors": t8,
    }, open_as="files")
    model_dir("index-not-in-shard", "NotInShard", "the index puts b in a shard that only holds a", None, {
        "model.safetensors.index.json": json.dumps({"weight_map": {
            "a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}}).encode(),
        "model-00001-of-00001.safetensors": t8,
    }, open_as="files")
    model_dir("index-escapes-dir", "BadShardName", "the index names ../escape.safetensors", None, {
        "model.safetensors.index.json": json.dumps({"weight_map": {"a": "../escape.safetensors"}}).encode(),
    }, open_as="files")
    model_dir("index-no-weight-map", "IndexNoWeightMap", "the index has only metadata", None, {
        "model.safetensors.index.json": b'{"metadata":{"total_size":8}}',
    }, open_as="files")
    model_dir("index-bad-entry", "IndexBadEntry", "a weight_map value is a number", None, {
        "model.safetensors.index.json": b'{"weight_map":{"a":1}}',
    }, open_as="files")
    model_dir("index-not-json", "Json", "the index is not JSON", None, {
        "model.safetensors.index.json": b'{"weight_map":',
    }, open_as="files")
    model_dir("duplicate-across-shards", "DuplicateAcrossShards", "two unindexed shards both hold a", None, {
        "model-00001-of-00002.safetensors": t8,
        "model-00002-of-00002.safetensors": t8,
    }, open_as="files")
    model_dir("bad-shard", "HeaderPastEnd", "a listed shard is itself truncated", None, {
        "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors"}}).encode(),
        "model-00001-of-00001.safetensors": t8[:20],
    }, open_as="files")

    # --- a model: config.json and what the GGUF view needs ---
    model_dir("model-config-not-json", "Json", "config.json is not JSON", b"{", {"model.safetensors": t8})
    model_dir("model-unknown-arch", "Config", "an architecture wllm does not run",
              {**LLAMA, "architectures": ["GPT2LMHeadModel"]}, {"model.safetensors": t8})
    model_dir("model-zero-heads", "Config", "num_attention_heads is 0",
              {**LLAMA, "num_attention_heads": 0}, {"model.safetensors": t8})
    model_dir("model-bad-type", "Config", "hidden_size is a string",
              {**LLAMA, "hidden_size": "8"}, {"model.safetensors": t8})
    model_dir("model-too-many-layers", "Config", "num_hidden_layers 4 billion (would size per-layer vectors)",
              {**LLAMA, "num_hidden_layers": 4000000000}, {"model.safetensors": t8})
    model_dir("model-untied-no-head", "Config", "tie_word_embeddings false and no lm_head.weight",
              {**LLAMA, "tie_word_embeddings": False}, {"model.safetensors": st([("model.embed_tokens.weight", "F16", (4, 8))])})
    model_dir("model-unsupported-dtype", "UnsupportedDtype", "the embedding is stored as I64",
              LLAMA, {"model.safetensors": st([("model.embed_tokens.weight", "I64", (4, 8))])})
    model_dir("model-missing-expert", "MissingExpert", "expert 2 of 4 is absent",
              QWEN3MOE, {"model.safetensors": st(experts([0, 1, 3]))})
    model_dir("model-expert-mismatch", "ExpertMismatch", "expert 1 has another shape",
              QWEN3MOE, {"model.safetensors": st(experts([0, 1, 2, 3], lambda e: (8, 8) if e == 1 else (4, 8)))})
    model_dir("model-expert-out-of-range", "ExpertOutOfRange", "expert 9 of a 4-expert model",
              QWEN3MOE, {"model.safetensors": st(experts([9]))})
    model_dir("model-same-target", "SameTarget", "two names map to token_embd.weight",
              LLAMA, {"model.safetensors": st([("model.embed_tokens.weight", "F16", (4, 8)),
                                               ("model.language_model.embed_tokens.weight", "F16", (4, 8))])})
    model_dir("model-fused-bad-shape", "BadShape", "fused gate_up_proj that is not [n_expert, 2 n_ff, n_embd]",
              QWEN3MOE, {"model.safetensors": st([("model.layers.0.mlp.experts.gate_up_proj", "BF16", (4, 7, 8))])})

    with open(os.path.join(ROOT, "MANIFEST.json"), "w") as f:
        json.dump({"cases": MANIFEST}, f, indent=1)
        f.write("\n")
    print(f"{len(MANIFEST)} cases")


if __name__ == "__main__":
    main()
