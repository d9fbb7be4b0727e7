#!/usr/bin/env python3
"""Diagnostics for the gpt-oss cases (not part of the fixtures; see gen_gptoss.sh).

1. tiny-gptoss-f32: ./dump --kv-f32 on every case (prompt batch + greedy steps, and the whole
   teacher-forced sequence as one batch) vs <case>.exact.f32. With F32 weights and an F32 KV
   cache llama.cpp and exact_ref.py should agree to float32 precision (~1e-5).
2. tiny-gptoss-mxfp4: the same check on an F32 copy of the model whose tensors are the
   gguf-py-dequantized MXFP4/Q8_0 weights (so the exact pass on the quantized file is checked
   against llama.cpp's own math on exactly those weights).
Usage: python3 check_gptoss.py SET   (SET/index.json from gen_cases.py + exact_ref.py)
"""
import json
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))


def dequant_copy(src, dst):
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        if k == "general.file_type":
            w.add_uint32(k, int(gguf.LlamaFileType.ALL_F32))
        elif f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_array(k, f.contents())
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape.tolist())]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dump(model, out, case, n, ids):
    subprocess.run([os.path.join(HERE, "dump"), "eval", "-m", model, "-o", out, "-c", case, "-n", str(n),
                    "--kv-f32", "--ids", ",".join(map(str, ids))], check=True, capture_output=True)
    j = json.load(open(os.path.join(out, case + ".json")))
    return j, np.fromfile(os.path.join(out, case + ".f32"), "<f4").reshape(j["n_rows"], -1)


def main():
    set_dir = os.path.join(HERE, sys.argv[1])
    out = os.path.join(HERE, "build", "gptoss-diag")
    os.makedirs(out, exist_ok=True)
    index = json.load(open(os.path.join(set_dir, "index.json")))
    for c in index["cases"]:
        if not c["model"].startswith("tiny-gptoss"):
            continue
        j = json.load(open(os.path.join(set_dir, c["json"])))
        ex = np.fromfile(os.path.join(set_dir, c["exact_logits_file"]), "<f4").reshape(j["n_rows"], -1)
        lc = np.fromfile(os.path.join(set_dir, j["logits_file"]), "<f4").reshape(j["n_rows"], -1)
        model = os.path.join(HERE, "models", c["model"])
        msg = f"{c['case']}: llama.cpp (F16 KV, the fixture) vs exact max {np.abs(lc - ex).max():.3g}"
        if "mxfp4" in c["model"]:
            dq = os.path.join(out, c["model"][:-5] + "-dequant-f32.gguf")
            if not os.path.exists(dq):
                dequant_copy(model, dq)
            model = dq
            msg += "; llama.cpp on the dequantized weights (F32 GGUF)"
        seq = j["prompt_ids"] + j["greedy_ids"]
        _, tf = dump(model, out, c["case"] + "_tf", 0, seq)
        msg += f", F32 KV, one batch: max {np.abs(tf - ex).max():.3g}"
        jk, kv = dump(model, out, c["case"] + "_kv", j["n_gen"], j["prompt_ids"])
        if jk["greedy_ids"] == j["greedy_ids"]:
            msg += f"; prompt + decode steps: max {np.abs(kv - ex).max():.3g}"
        else:
            msg += "; (F32-KV greedy ids differ, decode-step rows not compared)"
        print(msg, flush=True)


if __name__ == "__main__":
    main()
