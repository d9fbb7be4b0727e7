#!/usr/bin/env bash
# bench-vs-llamacpp.sh: wllm against llama.cpp on the same machine, in one sitting (issue 8).
#
# What it does
#   1. Builds llama.cpp (llama-bench and llama-server, scripts/llamacpp-build.sh) twice if
#      missing, into a cache dir ($WLLM_LLAMACPP_CACHE, default ~/.cache/wllm/llama.cpp):
#        cpu/     -DGGML_NATIVE=OFF + the x86 SIMD flags this CPU has (AMX off)
#        vulkan/  the same plus -DGGML_VULKAN=ON
#      Sources: the llama-cpp-python==0.3.36 sdist (vendor/llama.cpp, llama.cpp 0c1e570),
#      fetched with pip. Debian 12's Vulkan headers (1.3.239) lack VK_EXT_layer_settings; the
#      script then guards that block in ggml-vulkan.cpp (same as
#      ../shared/reference/tools/ggml-vulkan-old-headers.patch). Missing Debian packages
#      (libvulkan-dev glslc spirv-headers) are installed with apt-get when running as root.
#   2. Builds wllm (cargo build --release -p wllm-cli).
#   3. For each model and each test (ppN, tgN) runs wllm and llama-bench back to back,
#      alternating which goes first, for --rounds rounds of -r REPS repetitions each:
#        GPU: wllm bench               vs  GGML_VK_VISIBLE_DEVICES=0 llama-bench -ngl 99 (Vulkan build)
#        CPU: wllm bench --gpu-layers 0 --threads T  vs  llama-bench -t T (CPU build)
#      A side's figure is the median over rounds of each run's median. The CPU rows are skipped
#      (with a note) when this wllm's `bench --help` has no --gpu-layers/--threads.
#   4. Checks that llama.cpp's Vulkan runs really ran on a Vulkan device (JSON `backends` and
#      `gpu_info`, and the `ggml_vulkan: 0 = ...` line on stderr) and that wllm's GPU rows did not
#      fall back to the CPU; any mismatch aborts the run.
#   5. Prints the ratio table (targets: GPU >= 4.0, CPU >= 1.0) and writes results.md,
#      results.json and every raw output to the results dir (default target/bench-vs-llamacpp/<time>).
#
# Usage
#   scripts/bench-vs-llamacpp.sh [options]
#     --quick              smoke test: -p 32 -n 16 -r 2, one round
#     --models LIST        comma list of smollm2, gemma3, gpt-oss-20b, qwen35-9b, mistral-7b,
#                          llama2-7b or .gguf paths (default: smollm2,gemma3). gpt-oss-20b is
#                          a file of the released model's shapes and types (MXFP4 experts,
#                          11.3 GiB) with seeded random weights, written once by
#                          `cargo run --release --example synthetic_gguf`;
#                          qwen35-9b likewise Qwen3.5-9B's shapes with random Q4_K weights
#                          (4.7 GiB); mistral-7b and llama2-7b the 7B-class Llama shapes, every
#                          matrix Q4_K (3.8 and 3.5 GiB).
#     --only gpu|cpu       run only the GPU or only the CPU comparison
#     -p N / -n N          prompt / generated tokens (default 128 / 64); each takes a comma
#                          list too (-p 512,4096), one test per entry, 0 for none
#     -d LIST              comma list of depths: tokens already in the context before each
#                          test (llama-bench's -d; default 0); rows are named pp128@d4096
#     --cache-type T       KV cache type for both engines: f16 (default), q8_0 or q4_0
#                          (wllm --cache-type-k/-v T; llama-bench -ctk T -ctv T -fa on, as a
#                          quantized V needs flash attention there)
#     -r N                 repetitions per run (default 5)
#     --rounds N           interleaved rounds (default 1)
#     --threads N          CPU threads for both engines (default 2)
#     --skip-build         never build: use the existing wllm and llama-bench binaries
#     --build-only         build what is missing and stop
#     --llama-src DIR      copy llama.cpp sources from DIR instead of downloading the sdist
#     --wllm PATH          wllm binary to use (implies no cargo build)
#     --results DIR        where to write results
#     --strict             exit 3 when a ratio misses its target
#     --time-limit S       stop any llama-bench run after S seconds: the row then gives llama.cpp's
#                          rate from the passes that finished (llama-bench --progress times
#                          them), else as a bound (< tokens / seconds the killed pass ran) with
#                          the ratio as "> R". Prompt tests then run after a pp16 test in the
#                          same process, which builds the shader pipelines in place of the
#                          warmup pass. A wllm run past S fails the script.
# Environment: WLLM_MODELS (model dir), WLLM_LLAMACPP_CACHE, XDG_RUNTIME_DIR (defaults to /tmp).
set -euo pipefail

die() { echo "bench-vs-llamacpp: error: $*" >&2; exit 1; }
note() { echo "bench-vs-llamacpp: $*" >&2; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${WLLM_LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wllm/llama.cpp}"
models_dir="${WLLM_MODELS:-$HOME/.cache/wllm/models}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

models="smollm2,gemma3"
only=""
pp=128
tg=64
depths=0
reps=5
rounds=1
threads=2
skip_build=0
build_only=0
llama_src=""
wllm=""
results=""
strict=0
cache_type=f16
time_limit=0

need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) pp=32; tg=16; reps=2; rounds=1 ;;
    --models) need_arg "$@"; models="$2"; shift ;;
    --only) need_arg "$@"; only="$2"; shift
      case "$only" in gpu|cpu) ;; *) die "--only takes gpu or cpu, not '$only'" ;; esac ;;
    -p) need_arg "$@"; pp="$2"; shift ;;
    -n) need_arg "$@"; tg="$2"; shift ;;
    -d) need_arg "$@"; depths="$2"; shift ;;
    -r) need_arg "$@"; reps="$2"; shift ;;
    --cache-type) need_arg "$@"; cache_type="$2"; shift
      case "$cache_type" in f16|q8_0|q4_0) ;; *) die "--cache-type takes f16, q8_0 or q4_0, not '$cache_type'" ;; esac ;;
    --rounds) need_arg "$@"; rounds="$2"; shift ;;
    --threads) need_arg "$@"; threads="$2"; shift ;;
    --skip-build) skip_build=1 ;;
    --build-only) build_only=1 ;;
    --llama-src) need_arg "$@"; llama_src="$2"; shift ;;
    --wllm) need_arg "$@"; wllm="$2"; shift ;;
    --results) need_arg "$@"; results="$2"; shift ;;
    --strict) strict=1 ;;
    --time-limit) need_arg "$@"; time_limit="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
for v in reps rounds threads time_limit; do
  [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
[[ "$pp" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "-p takes a number or a comma list of numbers, got '$pp'"
[[ "$tg" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "-n takes a number or a comma list of numbers, got '$tg'"
# each test as kind:tokens (pp:512, tg:32); zeros are skipped
tests=()
IFS=, read -r -a pp_list <<< "$pp"
IFS=, read -r -a tg_list <<< "$tg"
for n in "${pp_list[@]}"; do [ "$n" -gt 0 ] && tests+=("pp:$n"); done
for n in "${tg_list[@]}"; do [ "$n" -gt 0 ] && tests+=("tg:$n"); done
[[ "$depths" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "-d takes a comma list of numbers, got '$depths'"
IFS=, read -r -a depth_list <<< "$depths"
[ "${#tests[@]}" -gt 0 ] || die "-p and -n are both 0: nothing to measure"
[ "$reps" -ge 1 ] && [ "$rounds" -ge 1 ] || die "-r and --rounds must be at least 1"
command -v python3 >/dev/null || die "python3 is required (JSON handling)"

# ---------------------------------------------------------------- llama.cpp build

# cpu_flags, fetch_sources, build_llama: shared with bench-serve.sh
# shellcheck source=llamacpp-build.sh
source "$repo/scripts/llamacpp-build.sh"

# ---------------------------------------------------------------- models and binaries

resolve_model() {
  case "$1" in
    smollm2|smol) echo "$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    gemma3|gemma) echo "$models_dir/gemma-3-270m-q4_k_m.gguf" ;;
    gpt-oss-20b) echo "$models_dir/gpt-oss-20b-synthetic.gguf" ;;
    qwen35-9b) echo "$models_dir/qwen35-9b-synthetic-q4_k.gguf" ;;
    mistral-7b) echo "$models_dir/mistral-7b-synthetic-q4_k.gguf" ;;
    llama2-7b) echo "$models_dir/llama2-7b-synthetic-q4_k.gguf" ;;
    *) echo "$1" ;;
  esac
}

# Synthetic files of released models' shapes: made here, never downloaded.
make_synthetic() {
  local preset="$1" out="$2"
  note "writing $out (synthetic $preset weights)"
  mkdir -p "$(dirname "$out")"
  (cd "$repo" && cargo run --release --example synthetic_gguf -- "$preset" "$out.part") >&2 \
    || die "writing $out failed"
  mv "$out.part" "$out"
}

want_gpu=1; want_cpu=1
[ "$only" = cpu ] && want_gpu=0
[ "$only" = gpu ] && want_cpu=0

mkdir -p "$cache"
[ "$want_cpu" = 1 ] && build_llama cpu llama-bench
[ "$want_gpu" = 1 ] && build_llama vulkan llama-bench

if [ -z "$wllm" ]; then
  wllm="$repo/target/release/wllm"
  if [ "$skip_build" = 0 ]; then
    note "building wllm (cargo build --release -p wllm-cli)"
    (cd "$repo" && cargo build --release -p wllm-cli) >&2 || die "cargo build failed"
  fi
fi
[ -x "$wllm" ] || die "wllm binary not found at $wllm (build it or pass --wllm)"
[ "$build_only" = 1 ] && { note "build done"; exit 0; }

model_paths=()
IFS=',' read -r -a model_names <<< "$models"
for m in "${model_names[@]}"; do
  p="$(resolve_model "$m")"
  if [ ! -f "$p" ] && { [ "$m" = gpt-oss-20b ] || [ "$m" = qwen35-9b ] || [ "$m" = mistral-7b ] || [ "$m" = llama2-7b ]; }; then
    make_synthetic "$m" "$p"
  elif [ ! -f "$p" ] && [ "$p" != "$m" ]; then
    note "$p is missing; running scripts/fetch-models.sh"
    "$repo/scripts/fetch-models.sh" >&2 || die "fetching models failed"
  fi
  [ -f "$p" ] || die "model not found: $p"
  model_paths+=("$p")
done

cpu_note=""
if [ "$want_cpu" = 1 ]; then
  help="$("$wllm" bench --help 2>&1)" || die "'$wllm bench --help' failed"
  if ! grep -q -- '--gpu-layers' <<< "$help" || ! grep -q -- '--threads' <<< "$help"; then
    cpu_note="CPU rows skipped: this wllm's 'bench' has no --gpu-layers/--threads yet"
    note "$cpu_note"
    want_cpu=0
  fi
fi
[ "$want_gpu" = 1 ] || [ "$want_cpu" = 1 ] || die "nothing left to run ($cpu_note)"

# ---------------------------------------------------------------- runs

stamp_time="$(date -u +%Y%m%dT%H%M%SZ)"
results="${results:-$repo/target/bench-vs-llamacpp/$stamp_time}"
mkdir -p "$results/raw"
samples="$results/samples.jsonl"
: > "$samples"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
ncpu="$(nproc)"
if python3 -c "import sys; sys.exit(0 if float('${load_before%% *}') > $ncpu / 2 else 1)"; then
  note "WARNING: load average $load_before on $ncpu cores; other work competes for the CPU"
  note "  (lavapipe runs on it too), so every row is noisy."
  if [ "$want_cpu" = 1 ]; then
    note "  llama.cpp's CPU threads spin at barriers and collapse when a core is taken away"
    note "  (tg drops ~40x at -t 2 while a compile runs), so the CPU rows are not meaningful now."
  fi
fi

# Parses one run's raw output into a JSON line on stdout, checking where it ran.
# args: engine(wllm|llama) path(gpu|cpu) test(pp|tg) n depth stdout-file stderr-file model round
#       stamps-file killed(0|1)
parse_run() {
  python3 - "$@" <<'PY'
import json, re, statistics, sys
engine, path, test, n, depth, out, err, model, rnd, stamps, killed = sys.argv[1:]
n, depth = int(n), int(depth)
text = open(out, errors="replace").read()
errtext = open(err, errors="replace").read()
def fail(msg):
    sys.exit(f"bench-vs-llamacpp: CHECK FAILED ({engine} {path} {test}{n} on {model}): {msg}\n"
             f"  raw output: {out}\n  stderr: {err}")
name = f"{test}{n}" + (f"@d{depth}" if depth else "")
rec = {"model": model, "path": path, "test": name, "engine": engine, "round": int(rnd)}
if killed == "1":
    # llama-bench --progress names each pass as it starts. A pass followed by another line
    # finished (a warmup prompt pass evaluates the same tokens as a measured one); the one the
    # kill interrupted had run for (kill time - its start), so its tokens took at least that.
    lines = [l.split("\t", 1) for l in open(stamps, errors="replace").read().splitlines() if "\t" in l]
    lines = [(float(t), l) for t, l in lines]
    end = lines[-1][0]
    want = "(warmup )?prompt run" if test == "pp" else "generation run"
    progress = [(t, l) for t, l in lines if l.startswith("llama-bench: benchmark")]
    passes = [i for i, (t, l) in enumerate(progress) if re.search(r"benchmark (\d+)/\1: " + want, l)]
    if engine != "llama" or not passes:
        fail(f"killed after {end:.0f} s before its {name} pass started")
    finished = [n / (progress[i + 1][0] - progress[i][0]) for i in passes if i + 1 < len(progress)]
    start, phase = progress[passes[-1]]
    spent = end - start
    dev = re.findall(r"^ggml_vulkan: \d+ = (.*)$", errtext, re.M)
    if path == "gpu" and not dev:
        fail("no 'ggml_vulkan: 0 = <device>' line on llama-bench's stderr")
    rec.update(killed_in=phase.split(": ", 2)[-1], killed_after_s=round(spent, 1),
               backend="Vulkan" if path == "gpu" else "CPU", device=dev[0] if dev else "", commit="")
    if finished:
        rec.update(tps=statistics.median(finished), samples=finished, partial=True)
    else:
        rec.update(tps=n / spent, bound="below", samples=[])
    print(json.dumps(rec))
    sys.exit(0)
if engine == "wllm":
    lines = [l for l in text.strip().splitlines() if l.startswith("{")]
    if not lines:
        fail("no JSON line in wllm's output")
    j = json.loads(lines[-1])
    tps = float(j["pp_tps" if test == "pp" else "tg_tps"])
    backend = str(j.get("backend", ""))
    if path == "gpu" and backend.lower() == "cpu":
        fail("wllm's GPU run reports backend 'cpu'")
    if path == "cpu" and backend.lower() != "cpu":
        fail(f"wllm's CPU run reports backend '{backend}'")
    rec.update(tps=tps, samples=[tps], backend=backend, device=j.get("adapter", ""))
else:
    try:
        arr = json.loads(text)
    except json.JSONDecodeError as e:
        fail(f"llama-bench output is not JSON ({e})")
    rows = [r for r in arr if (r["n_prompt"], r["n_gen"]) == ((n, 0) if test == "pp" else (0, n))
            and r.get("n_depth", 0) == depth]
    if len(rows) != 1:
        fail(f"expected one {test}{n} row in llama-bench's JSON, found {len(rows)}")
    r = rows[0]
    backends = r.get("backends", "")
    gpu_info = r.get("gpu_info", "")
    if path == "gpu":
        dev = re.findall(r"^ggml_vulkan: \d+ = (.*)$", errtext, re.M)
        if "Vulkan" not in backends.split(","):
            fail(f"llama-bench backends is '{backends}', not Vulkan")
        if not gpu_info:
            fail("llama-bench found no Vulkan device (empty gpu_info); lavapipe needs GGML_VK_VISIBLE_DEVICES=0")
        if not dev:
            fail("no 'ggml_vulkan: 0 = <device>' line on llama-bench's stderr")
        if r.get("n_gpu_layers", 0) < 1:
            fail("n_gpu_layers is 0")
        device = gpu_info
    else:
        if backends != "CPU":
            fail(f"llama-bench backends is '{backends}', expected CPU")
        device = r.get("cpu_info", "")
    ts = [float(x) for x in r["samples_ts"]]
    rec.update(tps=statistics.median(ts), samples=ts, backend=backends, device=device,
               commit=r.get("build_commit", ""), threads=r.get("n_threads"))
print(json.dumps(rec))
PY
}

run_one() { # engine path test(pp|tg) tokens model round depth
  local engine="$1" path="$2" test="$3" n="$4" model="$5" rnd="$6" depth="$7"
  local -a pn
  if [ "$test" = pp ]; then pn=(-p "$n" -n 0); else pn=(-p 0 -n "$n"); fi
  if [ "$depth" -gt 0 ]; then pn+=(-d "$depth"); fi
  local -a wkv=() lkv=()
  if [ "$cache_type" != f16 ]; then
    wkv=(--cache-type-k "$cache_type" --cache-type-v "$cache_type")
    lkv=(-ctk "$cache_type" -ctv "$cache_type" -fa on)
  fi
  local base tag
  base="$(basename "$model" .gguf)"
  tag="$results/raw/$base.$path.$test$n.d$depth.$engine.r$rnd"
  local -a cmd env=()
  if [ "$engine" = wllm ]; then
    cmd=("$wllm" bench "$model" "${pn[@]}" "${wkv[@]}" -r "$reps" --json)
    [ "$path" = cpu ] && cmd+=(--gpu-layers 0 --threads "$threads")
  elif [ "$path" = gpu ]; then
    env=(GGML_VK_VISIBLE_DEVICES=0)
    cmd=("$cache/vulkan/bin/llama-bench" -m "$model" "${pn[@]}" "${lkv[@]}" -r "$reps" -ngl 99 -t "$threads" -o json)
  else
    cmd=("$cache/cpu/bin/llama-bench" -m "$model" "${pn[@]}" "${lkv[@]}" -r "$reps" -ngl 0 -t "$threads" -o json)
  fi
  if [ "$engine" = llama ] && [ "$time_limit" -gt 0 ]; then
    cmd+=(--progress)
    # first-use pipeline builds go to a pp16 test in the same process, which then stands in
    # for the warmup pass (a whole extra evaluation of the prompt, hours on lavapipe)
    if [ "$test" = pp ] && [ "$n" -gt 16 ]; then
      for i in "${!cmd[@]}"; do [ "${cmd[$i]}" = -p ] && cmd[i + 1]="16,$n"; done
      cmd+=(--no-warmup)
    fi
  fi
  echo "${env[*]} ${cmd[*]}" > "$tag.cmd"
  note "round $rnd  $path  $test$n @ d$depth  $base  $engine"
  local rc=0 killed=0
  env "${env[@]}" python3 "$repo/scripts/run-limited.py" "$time_limit" "$tag.out" "$tag.err" \
    "$tag.stamps" -- "${cmd[@]}" || rc=$?
  if [ "$rc" = 124 ]; then
    killed=1
    note "  stopped after the --time-limit of $time_limit s"
  elif [ "$rc" != 0 ] && [ "$engine" = llama ]; then
    # llama.cpp crashing (lavapipe has segfaulted under llama-bench) is its row's result,
    # not the end of the sitting
    tail -n 5 "$tag.err" >&2
    note "  llama-bench exited with status $rc: recorded as crashed (stderr in $tag.err)"
    local name="$test$n"; [ "$depth" -gt 0 ] && name+="@d$depth"
    printf '{"model": "%s", "path": "%s", "test": "%s", "engine": "llama", "round": %s, "crashed": %s, "tps": 0, "samples": [], "backend": "", "device": ""}\n' \
      "$base" "$path" "$name" "$rnd" "$rc" >> "$samples"
    return 0
  elif [ "$rc" != 0 ]; then
    tail -n 20 "$tag.err" >&2
    die "$engine failed: ${cmd[*]} (stderr in $tag.err)"
  fi
  parse_run "$engine" "$path" "$test" "$n" "$depth" "$tag.out" "$tag.err" "$base" "$rnd" \
    "$tag.stamps" "$killed" >> "$samples" || exit 1
}

paths=()
[ "$want_gpu" = 1 ] && paths+=(gpu)
[ "$want_cpu" = 1 ] && paths+=(cpu)

flip=0
for ((rnd = 1; rnd <= rounds; rnd++)); do
  for path in "${paths[@]}"; do
    for model in "${model_paths[@]}"; do
      for depth in "${depth_list[@]}"; do
        for test in "${tests[@]}"; do
          # alternate which engine goes first, so slow drifts in machine load hit both sides
          if [ "$flip" = 0 ]; then order=(wllm llama); else order=(llama wllm); fi
          flip=$((1 - flip))
          for engine in "${order[@]}"; do
            run_one "$engine" "$path" "${test%%:*}" "${test#*:}" "$model" "$rnd" "$depth"
          done
        done
      done
    done
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- report

python3 - "$samples" "$results" "$load_before" "$load_after" "$reps" "$rounds" "$threads" \
  "$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$cpu_note" "$strict" \
  "$(cat "$cache/src/.wllm-source" 2>/dev/null || echo 'unknown source')" "$(nproc)" <<'PY'
import json, statistics, sys, datetime
samples, results, lb, la, reps, rounds, threads, commit, cpu_note, strict, llama_src, ncpu = sys.argv[1:]
recs = [json.loads(l) for l in open(samples) if l.strip()]
targets = {"gpu": 4.0, "cpu": 1.0}
keys = []
for r in recs:
    k = (r["model"], r["path"], r["test"])
    if k not in keys:
        keys.append(k)
rows = []
for model, path, test in keys:
    side = {}
    for eng in ("wllm", "llama"):
        rs = [r for r in recs if (r["model"], r["path"], r["test"], r["engine"]) == (model, path, test, eng)]
        crashed = [r for r in rs if "crashed" in r]
        rs = [r for r in rs if "crashed" not in r]
        done = [r for r in rs if "bound" not in r]
        if not rs:
            # every run of this side crashed: no figure
            side[eng] = {"tps": None, "bound": None, "per_round": [], "samples": [], "killed": [],
                         "crashed": [r["crashed"] for r in crashed], "backend": "", "device": "", "commit": ""}
            continue
        # rounds stopped by --time-limit only bound the rate; finished rounds, where there are any,
        # give the figure, else the loosest bound does
        tps = statistics.median(r["tps"] for r in done) if done else max(r["tps"] for r in rs)
        shown = done[0] if done else rs[0]
        side[eng] = {"tps": tps, "bound": None if done else "below", "crashed": [r["crashed"] for r in crashed],
                     "per_round": [r["tps"] for r in rs],
                     "samples": [s for r in rs for s in r["samples"]],
                     "killed": [{k: r[k] for k in ("killed_in", "killed_after_s")} for r in rs if "bound" in r],
                     "backend": shown["backend"], "device": shown["device"],
                     "commit": shown.get("commit", "")}
    w, l = side["wllm"]["tps"], side["llama"]["tps"]
    ratio = None if l is None else (w / l if l > 0 else float("inf"))
    t = targets[path]
    rows.append({"model": model, "path": path, "test": test, "wllm_tps": w, "llamacpp_tps": l,
                 "llamacpp_bound": side["llama"]["bound"], "ratio": ratio, "target": t,
                 "pass": ratio is not None and ratio >= t, "wllm": side["wllm"], "llamacpp": side["llama"]})
llama_commit = next((r["llamacpp"]["commit"] for r in rows if r["llamacpp"]["commit"] not in ("", "unknown")),
                    llama_src)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
head = ["| model | path | test | wllm t/s | llama.cpp t/s | ratio | target | |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
def llama_cell(r):
    if r["llamacpp_tps"] is None:
        return "crashed (exit " + ", ".join(str(c) for c in r["llamacpp"]["crashed"]) + ")"
    return f"< {r['llamacpp_tps']:.3f}" if r["llamacpp_bound"] else f"{r['llamacpp_tps']:.2f}"
def ratio_cell(r):
    if r["ratio"] is None:
        return "-"
    return f"> {r['ratio']:.2f}" if r["llamacpp_bound"] else f"{r['ratio']:.2f}"
def verdict(r):
    return "no comparison" if r["ratio"] is None else ("pass" if r["pass"] else "FAIL")
body = [f"| {r['model']} | {r['path']} | {r['test']} | {r['wllm_tps']:.2f} | {llama_cell(r)} | "
        f"{ratio_cell(r)} | >= {r['target']:.1f} | {verdict(r)} |" for r in rows]
crashes = [f"- {r['model']} {r['path']} {r['test']}: llama-bench crashed in {len(r['llamacpp']['crashed'])} "
           f"run(s)" + ("" if r["llamacpp_tps"] is None else "; its figure is from the runs that finished")
           for r in rows if r["llamacpp"]["crashed"]]
stopped = [f"- {r['model']} {r['path']} {r['test']}: llama-bench stopped by --time-limit in its "
           f"'{k['killed_in']}' pass after {k['killed_after_s']} s"
           + ("" if r["llamacpp_bound"] else "; its figure is from the passes that finished")
           for r in rows for k in r["llamacpp"]["killed"]]
devs = []
for path, label in (("gpu", "GPU"), ("cpu", "CPU")):
    pr = [r for r in rows if r["path"] == path and not r["llamacpp_bound"] and r["llamacpp_tps"] is not None] or \
         [r for r in rows if r["path"] == path]
    if pr:
        devs.append(f"- {label}: wllm `{pr[0]['wllm']['backend']}` on {pr[0]['wllm']['device']}; "
                    f"llama.cpp `{pr[0]['llamacpp']['backend']}` on {pr[0]['llamacpp']['device']}")
md = [f"# wllm vs llama.cpp ({now})", "",
      f"wllm {commit}, llama.cpp {llama_commit or '?'}; medians of {reps} repetitions x {rounds} round(s), "
      f"engines interleaved; {threads} CPU threads.",
      f"Load average (1/5/15 min) on {ncpu} cores before: {lb}, after: {la}."
      + (" **Busy machine: all rows are noisy, the CPU rows especially.**" if float(lb.split()[0]) > int(ncpu) / 2 else ""),
      ""] + devs + [""] + head + body
if stopped:
    md += ["", "Rates after '<' are bounds: tokens / time the pass the limit stopped had run.", ""] + stopped
if crashes:
    md += [""] + crashes
if cpu_note:
    md += ["", cpu_note]
text = "\n".join(md) + "\n"
open(f"{results}/results.md", "w").write(text)
json.dump({"date": now, "wllm_commit": commit, "ncpu": int(ncpu), "llamacpp_commit": llama_commit, "repetitions": int(reps),
           "rounds": int(rounds), "threads": int(threads), "loadavg_before": lb, "loadavg_after": la,
           "note": cpu_note or None, "rows": rows}, open(f"{results}/results.json", "w"), indent=2)
print(text)
print(f"results: {results}/results.md, results.json, raw/")
if strict == "1" and not all(r["pass"] for r in rows):
    sys.exit(3)
PY
