# llamacpp-build.sh: builds llama.cpp's llama-bench and llama-server the one way every wllm
# comparison uses (sourced by bench-vs-llamacpp.sh and bench-serve.sh; not run on its own).
#
# Two flavours, each in its own dir of the cache ($WLLM_LLAMACPP_CACHE, default
# ~/.cache/wllm/llama.cpp):
#   cpu/     -DGGML_NATIVE=OFF + the x86 SIMD flags this CPU has (AMX off)
#   vulkan/  the same plus -DGGML_VULKAN=ON
# Both are static Release builds with -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF
# -DLLAMA_OPENSSL=OFF and no web UI (no npm, no download at build time); a build makes the
# targets llama-bench and llama-server together, so the dirs always hold both.
# Sources: the llama-cpp-python==0.3.36 sdist (vendor/llama.cpp, llama.cpp 0c1e570), fetched
# with pip and checked by sha256, or copied from --llama-src DIR. Debian 12's Vulkan headers
# (1.3.239) lack VK_EXT_layer_settings; the Vulkan build then guards that block in
# ggml-vulkan.cpp (same as ../shared/reference/tools/ggml-vulkan-old-headers.patch). Missing
# Debian packages (libvulkan-dev glslc spirv-headers) are installed with apt-get as root.
#
# The caller defines die() and note() and sets:
#   cache       the cache dir (created here if missing)
#   llama_src   a llama.cpp source dir to copy instead of downloading ("" to download)
#   skip_build  1 to refuse to build (die when a binary is missing or stale)
# and calls `build_llama cpu|vulkan BINARY...` (BINARY: llama-bench, llama-server), which
# returns at once when those binaries exist and were built with today's cmake arguments.
# BUILD_JOBS (default 2) sets the parallel jobs; the compilers run under `nice -n 10`.

sdist_pkg="llama_cpp_python==0.3.36"
sdist_name="llama_cpp_python-0.3.36"
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
llama_targets=(llama-bench llama-server)

# The SIMD flags this CPU supports, as ggml CMake options. GGML_NATIVE would also turn on AMX,
# whose path crashes on these machines, so AMX stays off explicitly.
cpu_flags() {
  local f
  f=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  local -a out=(-DGGML_NATIVE=OFF)
  on() { case "$f" in *" $1 "*) out+=("-D$2=ON") ;; *) out+=("-D$2=OFF") ;; esac; }
  on avx GGML_AVX
  on avx2 GGML_AVX2
  on fma GGML_FMA
  on f16c GGML_F16C
  on bmi2 GGML_BMI2
  on avx_vnni GGML_AVX_VNNI
  on avx512f GGML_AVX512
  on avx512vbmi GGML_AVX512_VBMI
  on avx512_vnni GGML_AVX512_VNNI
  on avx512_bf16 GGML_AVX512_BF16
  out+=(-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
  printf '%s\n' "${out[@]}"
}

fetch_sources() {
  local src="$cache/src" lock
  exec {lock}> "$cache/fetch.lock"
  flock "$lock"
  if [ -f "$src/CMakeLists.txt" ] && [ -d "$src/ggml" ]; then exec {lock}>&-; return 0; fi
  local tmp
  tmp="$(mktemp -d "$cache/fetch.XXXXXX")"
  if [ -n "$llama_src" ]; then
    [ -f "$llama_src/CMakeLists.txt" ] || die "--llama-src $llama_src has no CMakeLists.txt"
    note "copying llama.cpp sources from $llama_src"
    mkdir -p "$tmp/llama.cpp"
    # a build dir inside the source tree (e.g. a fixtures build) is not sources
    tar -C "$llama_src" --exclude=./build --exclude=./.git -cf - . | tar -C "$tmp/llama.cpp" -xf - \
      || die "copying $llama_src failed"
  else
    note "downloading $sdist_pkg (sdist) for its vendor/llama.cpp"
    # --no-binary only for this package: with :all: pip would also build cmake from source
    # just to read the sdist's metadata.
    python3 -m pip download --quiet --no-deps --no-binary llama_cpp_python "$sdist_pkg" -d "$tmp" \
      || die "pip download $sdist_pkg failed"
    local tgz="$tmp/$sdist_name.tar.gz"
    [ -f "$tgz" ] || die "pip did not produce $tgz"
    [ "$(sha256sum "$tgz" | cut -d' ' -f1)" = "$sdist_sha256" ] || die "sha256 mismatch for $tgz"
    mkdir -p "$tmp/llama.cpp"
    tar -xzf "$tgz" -C "$tmp/llama.cpp" --strip-components=3 "$sdist_name/vendor/llama.cpp" \
      || die "could not unpack vendor/llama.cpp from $tgz"
    rm -f "$tgz"
  fi
  if [ -n "$llama_src" ]; then
    echo "copied from $llama_src" > "$tmp/llama.cpp/.wllm-source"
  else
    echo "$sdist_name sdist vendor/llama.cpp (0c1e570)" > "$tmp/llama.cpp/.wllm-source"
  fi
  rm -rf "$src"
  mv "$tmp/llama.cpp" "$src"
  rm -rf "$tmp"
  exec {lock}>&-
}

# Debian 12 ships Vulkan headers 1.3.239, older than VK_EXT_layer_settings which
# ggml-vulkan.cpp uses unconditionally; guard that block so it compiles there (a no-op with
# newer headers, where the macro is defined).
guard_vulkan_layer_settings() {
  local f="$cache/src/ggml/src/ggml-vulkan/ggml-vulkan.cpp"
  [ -f "$f" ] || die "missing $f"
  grep -q 'wllm: old Vulkan headers' "$f" && return 0
  grep -q 'LayerSettingsCreateInfoEXT' "$f" || return 0
  note "guarding VK_EXT_layer_settings in ggml-vulkan.cpp for old Vulkan headers"
  python3 - "$f" <<'PY'
import sys
path = sys.argv[1]
lines = open(path).read().split("\n")
start = next((i for i, l in enumerate(lines) if "VkBool32 enable_best_practice = layer_settings;" in l), None)
end = next((i for i, l in enumerate(lines)
            if "vk::InstanceCreateInfo instance_create_info(" in l and "&layer_setting_info" in l), None)
if start is None or end is None or end < start:
    sys.exit("ggml-vulkan.cpp: layer-settings block not found where expected; cannot guard it")
indent = lines[end][: len(lines[end]) - len(lines[end].lstrip())]
fallback = lines[end].replace("&layer_setting_info", "nullptr")
lines[end + 1:end + 1] = ["#else", fallback, "#endif"]
lines.insert(start, "#if defined(VK_EXT_LAYER_SETTINGS_EXTENSION_NAME) // wllm: old Vulkan headers lack VK_EXT_layer_settings")
open(path, "w").write("\n".join(lines))
PY
}

ensure_vulkan_deps() {
  local missing=()
  [ -f /usr/include/vulkan/vulkan.hpp ] || missing+=(libvulkan-dev)
  command -v glslc >/dev/null || missing+=(glslc)
  [ -d /usr/include/spirv ] || missing+=(spirv-headers)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    note "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null; } \
      || die "apt-get install ${missing[*]} failed"
  else
    die "the Vulkan build needs: ${missing[*]} (e.g. sudo apt-get install ${missing[*]})"
  fi
}

llama_cmake_args() { # kind: cpu | vulkan
  cpu_flags
  printf '%s\n' -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF
  if [ "$1" = vulkan ]; then echo -DGGML_VULKAN=ON; else echo -DGGML_VULKAN=OFF; fi
}

build_llama() { # kind: cpu | vulkan; then the binaries the caller needs
  local kind="$1" dir="$cache/$1"
  shift
  local -a need=("$@") args
  [ ${#need[@]} -gt 0 ] || need=("${llama_targets[@]}")
  mapfile -t args < <(llama_cmake_args "$kind")
  local stamp="$dir/wllm-build-args.txt"
  mkdir -p "$cache"
  # one builder per flavour at a time (the cache is shared between checkouts and users)
  local lock b ok
  exec {lock}> "$cache/build-$kind.lock"
  if ! flock -n "$lock"; then
    note "waiting for another build of llama.cpp ($kind) to finish"
    flock "$lock"
  fi
  ok=1
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${args[*]}" ] || ok=0
  for b in "${need[@]}"; do [ -x "$dir/bin/$b" ] || ok=0; done
  if [ "$ok" = 1 ]; then
    exec {lock}>&-
    return 0
  fi
  [ "$skip_build" = 1 ] && die "--skip-build, but $dir/bin/{${need[*]}} is missing or was built with other flags"
  fetch_sources
  if [ "$kind" = vulkan ]; then
    ensure_vulkan_deps
    guard_vulkan_layer_settings
  fi
  command -v cmake >/dev/null || die "cmake is required to build llama.cpp"
  note "building llama.cpp ($kind: ${llama_targets[*]}) in $dir; log: $cache/build-$kind.log (takes a while on 2 cores)"
  note "  cmake ${args[*]}"
  rm -f "$stamp"
  {
    nice -n 10 cmake -S "$cache/src" -B "$dir" "${args[@]}" &&
    nice -n 10 cmake --build "$dir" --target "${llama_targets[@]}" -j "${BUILD_JOBS:-2}"
  } > "$cache/build-$kind.log" 2>&1 || {
    tail -n 30 "$cache/build-$kind.log" >&2
    die "llama.cpp $kind build failed; full log in $cache/build-$kind.log"
  }
  for b in "${llama_targets[@]}"; do
    [ -x "$dir/bin/$b" ] || die "build finished but $dir/bin/$b is missing"
  done
  printf '%s' "${args[*]}" > "$stamp"
  exec {lock}>&-
  note "built $dir/bin/{${llama_targets[*]}}"
}
