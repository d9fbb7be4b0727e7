#!/usr/bin/env bash
# bench-serve.sh: `wllm serve` against llama.cpp's `llama-server` under concurrent load, on the
# same machine, in one sitting (issue 15, item 8).
#
# What it does
#   1. Builds llama.cpp's llama-server (and llama-bench) if missing, the same way
#      bench-vs-llamacpp.sh does (scripts/llamacpp-build.sh: the llama-cpp-python==0.3.36 sdist,
#      cache dir $WLLM_LLAMACPP_CACHE, default ~/.cache/wllm/llama.cpp, flavours cpu/ and vulkan/,
#      -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF), and wllm (cargo build --release -p wllm-cli).
#   2. For each path, starts one server at a time, waits for GET /health = 200, runs
#      scripts/serve_load.py against it, stops it; the order of the two servers alternates:
#        CPU: wllm serve M --parallel 16 --ctx C --gpu-layers 0 --threads T
#             llama-server -m M --parallel 16 -c 16*C --cont-batching -ngl 0 -t T -tb T  (CPU build)
#        GPU: wllm serve M --parallel 16 --ctx C            (wllm's default adapter: lavapipe here)
#             GGML_VK_VISIBLE_DEVICES=0 llama-server ... -ngl 99 -t T -tb T            (Vulkan build)
#   3. The load (serve_load.py): at 1, 4, 8 and 16 concurrent clients, each sending --requests
#      streaming POST /v1/completions back to back: a distinct ~128-token prompt (fixed seed),
#      max_tokens 64, temperature 0, "ignore_eos": true, stream_options.include_usage; one
#      warm-up request first. Per level: aggregate generated tokens/s (all generated tokens /
#      the level's wall time) and time to first token p50/p99 (per request, from sending to the
#      first chunk with text).
#   4. Checks: a server that does not come up, dies, or answers any request with an error aborts
#      the run (no table is printed from partial data); the Vulkan llama-server must list a
#      Vulkan device (--list-devices, same environment), the CPU one none; wllm's `ready:` line
#      must name the backend the path asks for.
#   5. Prints the table with the ratios and the targets (at 8 clients: wllm >= 1.5x
#      llama-server's aggregate on each path; wllm(8)/wllm(1) >= 4 on lavapipe, >= 2.5 on the
#      CPU; wllm's TTFT p99 below llama-server's) and writes results.md, results.json and raw/
#      (commands, server logs, per-request records) into the results dir (default
#      target/bench-serve/<UTC time>).
#
# Usage
#   scripts/bench-serve.sh [options]
#     --quick              smoke test: 1 and 8 clients, 2 requests per client
#     --only cpu|gpu       run only the CPU or only the lavapipe/GPU path
#     --engines LIST       wllm,llama (default both); one alone gives no ratios
#     --models LIST        comma list of smollm2, gemma3 or .gguf paths (default: smollm2)
#     --levels LIST        client counts (default 1,4,8,16)
#     --requests N         requests per client per level (default 3)
#     -n N                 max_tokens per request (default 64)
#     --prompt-words N     words per prompt (default 100: 122..132 SmolLM2 tokens)
#     --ctx N              context per sequence (default 512; llama-server gets -c 16*N)
#     --parallel N         server slots (default 16)
#     --threads N          CPU threads for both servers (default 2)
#     --start-timeout S    seconds to wait for /health (default 600)
#     --skip-build         never build: use the existing wllm and llama-server binaries
#     --build-only         build what is missing and stop
#     --llama-src DIR      copy llama.cpp sources from DIR instead of downloading the sdist
#     --wllm PATH          wllm binary to use (implies no cargo build)
#     --results DIR        where to write results
#     --strict             exit 3 when a target is missed (or could not be evaluated)
#     --wllm-args "..."    extra arguments for wllm serve (split on spaces)
#     --llama-args "..."   extra arguments for llama-server (split on spaces), e.g. "-ub 128"
# Environment: WLLM_MODELS (model dir), WLLM_LLAMACPP_CACHE, XDG_RUNTIME_DIR (defaults to /tmp).
set -euo pipefail

die() { echo "bench-serve: error: $*" >&2; exit 1; }
note() { echo "bench-serve: $*" >&2; }

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${WLLM_LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wllm/llama.cpp}"
models_dir="${WLLM_MODELS:-$HOME/.cache/wllm/models}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

models="smollm2"
only=""
engines="wllm,llama"
levels="1,4,8,16"
requests=3
max_tokens=64
prompt_words=100
ctx=512
parallel=16
threads=2
start_timeout=600
skip_build=0
build_only=0
llama_src=""
wllm=""
results=""
strict=0
quick=0
wllm_args=""
llama_args=""

need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "option $1 needs a value"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; levels="1,8"; requests=2 ;;
    --only) need_arg "$@"; only="$2"; shift
      case "$only" in gpu|cpu) ;; *) die "--only takes gpu or cpu, not '$only'" ;; esac ;;
    --engines) need_arg "$@"; engines="$2"; shift ;;
    --models) need_arg "$@"; models="$2"; shift ;;
    --levels) need_arg "$@"; levels="$2"; shift ;;
    --requests) need_arg "$@"; requests="$2"; shift ;;
    -n) need_arg "$@"; max_tokens="$2"; shift ;;
    --prompt-words) need_arg "$@"; prompt_words="$2"; shift ;;
    --ctx) need_arg "$@"; ctx="$2"; shift ;;
    --parallel) need_arg "$@"; parallel="$2"; shift ;;
    --threads) need_arg "$@"; threads="$2"; shift ;;
    --start-timeout) need_arg "$@"; start_timeout="$2"; shift ;;
    --skip-build) skip_build=1 ;;
    --build-only) build_only=1 ;;
    --llama-src) need_arg "$@"; llama_src="$2"; shift ;;
    --wllm) need_arg "$@"; wllm="$2"; shift ;;
    --results) need_arg "$@"; results="$2"; shift ;;
    --strict) strict=1 ;;
    --wllm-args) need_arg "$@"; wllm_args="$2"; shift ;;
    --llama-args) need_arg "$@"; llama_args="$2"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
for v in requests max_tokens prompt_words ctx parallel threads start_timeout; do
  [[ "${!v}" =~ ^[0-9]+$ ]] && [ "${!v}" -ge 1 ] || die "$v must be a positive number, got '${!v}'"
done
[[ "$levels" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--levels must be a comma list of numbers, got '$levels'"
want_wllm=0; want_llama=0
IFS=',' read -r -a engine_list <<< "$engines"
for e in "${engine_list[@]}"; do
  case "$e" in wllm) want_wllm=1 ;; llama|llama-server|llamacpp) want_llama=1 ;;
    *) die "--engines takes wllm and/or llama, not '$e'" ;; esac
done
IFS=',' read -r -a level_list <<< "$levels"
for n in "${level_list[@]}"; do
  [ "$n" -le "$parallel" ] || note "WARNING: $n clients > --parallel $parallel: requests will queue"
done
command -v python3 >/dev/null || die "python3 is required (load generator and report)"

# ---------------------------------------------------------------- builds

# cpu_flags, fetch_sources, build_llama: shared with bench-vs-llamacpp.sh
# shellcheck source=llamacpp-build.sh
source "$repo/scripts/llamacpp-build.sh"

want_gpu=1; want_cpu=1
[ "$only" = cpu ] && want_gpu=0
[ "$only" = gpu ] && want_cpu=0

if [ "$want_llama" = 1 ]; then
  mkdir -p "$cache"
  [ "$want_cpu" = 1 ] && build_llama cpu llama-server
  [ "$want_gpu" = 1 ] && build_llama vulkan llama-server
fi

if [ "$want_wllm" = 1 ]; then
  if [ -z "$wllm" ]; then
    wllm="$repo/target/release/wllm"
    if [ "$skip_build" = 0 ]; then
      note "building wllm (cargo build --release -p wllm-cli)"
      (cd "$repo" && cargo build --release -p wllm-cli) >&2 || die "cargo build failed"
    fi
  fi
  [ -x "$wllm" ] || die "wllm binary not found at $wllm (build it or pass --wllm)"
  serve_help="$("$wllm" serve --help 2>&1)" \
    || die "'$wllm serve --help' failed: this wllm has no 'serve' subcommand (pass --engines llama to measure llama-server alone)"
  for flag in --parallel --port --host --ctx; do
    grep -q -- "$flag" <<< "$serve_help" || die "'$wllm serve' has no $flag option"
  done
  if [ "$want_cpu" = 1 ]; then
    for flag in --gpu-layers --threads; do
      grep -q -- "$flag" <<< "$serve_help" || die "'$wllm serve' has no $flag option (needed for the CPU path)"
    done
  fi
fi
[ "$build_only" = 1 ] && { note "build done"; exit 0; }

model_paths=()
resolve_model() {
  case "$1" in
    smollm2|smol) echo "$models_dir/SmolLM2-135M-Instruct.Q4_1.gguf" ;;
    gemma3|gemma) echo "$models_dir/gemma-3-270m-q4_k_m.gguf" ;;
    *) echo "$1" ;;
  esac
}
IFS=',' read -r -a model_names <<< "$models"
for m in "${model_names[@]}"; do
  p="$(resolve_model "$m")"
  if [ ! -f "$p" ] && [ "$p" != "$m" ]; then
    note "$p is missing; running scripts/fetch-models.sh"
    "$repo/scripts/fetch-models.sh" >&2 || die "fetching models failed"
  fi
  [ -f "$p" ] || die "model not found: $p"
  model_paths+=("$p")
done

# ---------------------------------------------------------------- servers

stamp_time="$(date -u +%Y%m%dT%H%M%SZ)"
results="${results:-$repo/target/bench-serve/$stamp_time}"
mkdir -p "$results/raw"
runs="$results/runs.jsonl"
: > "$runs"

server_pid=""
stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      note "server $server_pid did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$server_pid" 2>/dev/null || true
    fi
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap stop_server EXIT
trap 'note "interrupted"; exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# GET URL/health until it answers 200; fails if the server process exits or the time runs out.
wait_health() { # url log
  local url="$1" log="$2" t0=$SECONDS code
  while :; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -n 30 "$log" >&2
      die "the server exited before it became healthy (log: $log)"
    fi
    code="$(python3 - "$url/health" <<'PY' 2>/dev/null || true
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
PY
)"
    [ "$code" = 200 ] && return 0
    if [ $((SECONDS - t0)) -ge "$start_timeout" ]; then
      tail -n 30 "$log" >&2
      die "the server did not answer /health with 200 within ${start_timeout}s (last: ${code:-none}; log: $log)"
    fi
    sleep 0.5
  done
}

# Checks where a server runs; prints a one-line device description. For llama-server, `devices`
# is what `llama-server --list-devices` printed with the server's environment (its default log
# level does not name the device or the offloaded layers).
check_device() { # engine path log [devices]
  python3 - "$@" <<'PY'
import re, sys
engine, path, log = sys.argv[1:4]
text = open(log, errors="replace").read()
def fail(msg):
    sys.exit(f"bench-serve: CHECK FAILED ({engine}, {path}): {msg} (log: {log})")
if engine == "llama":
    devs = open(sys.argv[4], errors="replace").read()
    vk = re.findall(r"^\s*(Vulkan\d+): (.*)$", devs, re.M)
    off = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", text)
    if path == "gpu":
        if not vk:
            fail("llama-server --list-devices shows no Vulkan device "
                 "(lavapipe needs GGML_VK_VISIBLE_DEVICES=0)")
        if off and int(off[-1][0]) < 1:
            fail("no layers offloaded to the Vulkan device")
        print(f"{vk[0][0]}: {vk[0][1].strip()}, -ngl 99")
    else:
        if vk:
            fail("the CPU build lists a Vulkan device")
        if off and int(off[-1][0]) > 0:
            fail(f"{off[-1][0]} layers offloaded on the CPU path")
        print("CPU (no GPU device listed)")
else:
    # wllm serve prints "ready: PATH on BACKEND (ADAPTER), N sequences of M tokens" once loaded
    m = re.findall(r"^ready: .* on (\S+) \((.*)\), (\d+) sequences of (\d+) tokens", text, re.M)
    if not m:
        fail("no 'ready: PATH on BACKEND (ADAPTER), N sequences of M tokens' line in wllm's log")
    backend, adapter, seqs, n_ctx = m[-1]
    if path == "gpu" and backend == "cpu":
        fail(f"wllm runs on the CPU on the GPU path ({adapter})")
    if path == "gpu" and backend.startswith("cpu+"):
        fail(f"wllm split the model between the CPU and the GPU ({backend}) on the GPU path")
    if path == "cpu" and backend != "cpu":
        fail(f"wllm runs on '{backend}' on the CPU path")
    print(f"{backend} ({adapter}), {seqs} sequences of {n_ctx} tokens")
PY
}

run_one() { # engine path model
  local engine="$1" path="$2" model="$3"
  local base port url tag
  base="$(basename "$model" .gguf)"
  tag="$results/raw/$base.$path.$engine"
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  local -a cmd env=()
  if [ "$engine" = wllm ]; then
    cmd=("$wllm" serve "$model" --host 127.0.0.1 --port "$port" --parallel "$parallel" --ctx "$ctx")
    [ "$path" = cpu ] && cmd+=(--gpu-layers 0 --threads "$threads")
    local -a extra; read -r -a extra <<< "$wllm_args"; cmd+=("${extra[@]}")
  else
    local bin="$cache/cpu/bin/llama-server" ngl=0
    if [ "$path" = gpu ]; then
      bin="$cache/vulkan/bin/llama-server"; ngl=99; env=(GGML_VK_VISIBLE_DEVICES=0)
    fi
    cmd=("$bin" -m "$model" --host 127.0.0.1 --port "$port" --parallel "$parallel"
         -c $((parallel * ctx)) --cont-batching -ngl "$ngl" -t "$threads" -tb "$threads")
    local -a extra; read -r -a extra <<< "$llama_args"; cmd+=("${extra[@]}")
  fi
  echo "${env[*]} ${cmd[*]}" > "$tag.cmd"
  if [ "$engine" = llama ]; then
    env "${env[@]}" "${cmd[0]}" --list-devices > "$tag.devices" 2>&1 \
      || die "${env[*]} ${cmd[0]} --list-devices failed (output in $tag.devices)"
  fi
  note "$path  $base  $engine: starting  ${env[*]} ${cmd[*]}"
  env "${env[@]}" "${cmd[@]}" > "$tag.log" 2>&1 &
  server_pid=$!
  local t0=$SECONDS
  wait_health "$url" "$tag.log"
  local load_s=$((SECONDS - t0)) device
  device="$(check_device "$engine" "$path" "$tag.log" "$tag.devices")" || { stop_server; exit 1; }
  note "$path  $base  $engine: healthy after ${load_s}s on $device; load: levels $levels, $requests request(s) per client"
  local -a load=(python3 "$repo/scripts/serve_load.py" --url "$url" --levels "$levels"
                 --requests "$requests" --max-tokens "$max_tokens" --prompt-words "$prompt_words"
                 --label "$engine/$path" --out "$tag.load.json")
  echo "${load[*]}" >> "$tag.cmd"
  local rc=0
  "${load[@]}" || rc=$?
  if ! kill -0 "$server_pid" 2>/dev/null; then
    local st=0
    wait "$server_pid" 2>/dev/null || st=$?
    server_pid=""
    tail -n 30 "$tag.log" >&2
    if [ "$st" -gt 128 ]; then st="killed by signal $((st - 128))$( [ $((st - 128)) = 11 ] && echo ' (SIGSEGV)')"
    else st="exit status $st"; fi
    die "$engine ($path) died during the load, $st (log: $tag.log)"
  fi
  stop_server
  [ "$rc" = 0 ] || { tail -n 20 "$tag.log" >&2; die "$engine ($path): the load generator failed (exit $rc); server log: $tag.log, records: $tag.load.json"; }
  python3 - "$tag.load.json" "$engine" "$path" "$base" "$device" "${env[*]} ${cmd[*]}" "$load_s" >> "$runs" <<'PY'
import json, sys
f, engine, path, model, device, cmd, load_s = sys.argv[1:]
d = json.load(open(f))
print(json.dumps({"engine": engine, "path": path, "model": model, "device": device,
                  "command": cmd.strip(), "startup_s": int(load_s), "load_file": f}))
PY
}

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
ncpu="$(nproc)"
if python3 -c "import sys; sys.exit(0 if float('${load_before%% *}') > $ncpu / 2 else 1)"; then
  note "WARNING: load average $load_before on $ncpu cores; other work competes for the CPU"
  note "  (lavapipe runs on it too): every figure is noisy, and llama.cpp's spinning threads"
  note "  suffer most when a core is taken away."
fi

paths=()
[ "$want_cpu" = 1 ] && paths+=(cpu)
[ "$want_gpu" = 1 ] && paths+=(gpu)
order_all=()
[ "$want_wllm" = 1 ] && order_all+=(wllm)
[ "$want_llama" = 1 ] && order_all+=(llama)

flip=0
for model in "${model_paths[@]}"; do
  for path in "${paths[@]}"; do
    # alternate which server goes first, so slow drifts in machine load hit both sides
    if [ "$flip" = 0 ] || [ ${#order_all[@]} -lt 2 ]; then order=("${order_all[@]}")
    else order=("${order_all[1]}" "${order_all[0]}"); fi
    flip=$((1 - flip))
    for engine in "${order[@]}"; do
      run_one "$engine" "$path" "$model"
    done
  done
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- report

python3 - "$runs" "$results" "$load_before" "$load_after" "$threads" "$parallel" "$ctx" \
  "$(cd "$repo" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$strict" \
  "$(cat "$cache/src/.wllm-source" 2>/dev/null || echo 'unknown source')" "$ncpu" "$quick" <<'PY'
import json, sys, datetime
(runs, results, lb, la, threads, parallel, ctx, commit, strict, llama_src, ncpu, quick) = sys.argv[1:]
runs = [json.loads(l) for l in open(runs) if l.strip()]
for r in runs:
    r["load"] = json.load(open(r["load_file"]))
    for lv in r["load"]["levels"]:
        if lv["failed"] or lv["agg_tps"] is None:
            sys.exit(f"bench-serve: {r['engine']} {r['path']} has failed requests; no report")

def level(run, n):
    if run is None:
        return None
    return next((lv for lv in run["load"]["levels"] if lv["clients"] == n), None)

def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)

targets_scale = {"cpu": 2.5, "gpu": 4.0}
path_name = {"cpu": "CPU", "gpu": "lavapipe (Vulkan)"}
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
md = [f"# wllm serve vs llama-server ({now})", ""]
first = runs[0]["load"] if runs else {}
md.append(f"wllm {commit}, llama.cpp {llama_src}; {parallel} slots, {ctx} tokens of context per slot, "
          f"{threads} CPU threads; each client sends {first.get('requests_per_client', '?')} request(s) "
          f"back to back per level (+{len(first.get('warmup', []))} warm-up request); prompts ~"
          f"{first.get('prompt_words', '?')} words, max_tokens {first.get('max_tokens', '?')}, "
          f"temperature 0, ignore_eos {str(first.get('ignore_eos', '?')).lower()}, distinct prompts (seed {first.get('seed', '?')}).")
md.append(f"Load average (1/5/15 min) on {ncpu} cores before: {lb}, after: {la}."
          + (" **Busy machine: every figure is noisy.**" if float(lb.split()[0]) > int(ncpu) / 2 else ""))
md.append("")
md.append("TTFT is per request, from sending it to the first chunk with text; p99 interpolates "
          "between the two largest of few samples, so it is close to the maximum. "
          "Aggregate t/s = all generated tokens of a level / the level's wall time. "
          "`scale` = a server's aggregate at N clients / its own at 1 client.")
targets = []
rows_json = []
for model in dict.fromkeys(r["model"] for r in runs):
    for path in ("cpu", "gpu"):
        w = next((r for r in runs if (r["model"], r["path"], r["engine"]) == (model, path, "wllm")), None)
        l = next((r for r in runs if (r["model"], r["path"], r["engine"]) == (model, path, "llama")), None)
        if w is None and l is None:
            continue
        md += ["", f"## {model}, {path_name[path]}", ""]
        if w: md.append(f"- wllm: `{w['command']}` on {w['device']} (ready after {w['startup_s']} s)")
        if l: md.append(f"- llama-server: `{l['command']}` on {l['device']} (ready after {l['startup_s']} s)")
        md += ["",
               "| clients | wllm t/s | llama-server t/s | ratio | wllm TTFT p50 / p99 ms | llama-server TTFT p50 / p99 ms | wllm scale | llama-server scale | gen tokens wllm / llama-server |",
               "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        ns = sorted({lv["clients"] for r in (w, l) if r for lv in r["load"]["levels"]})
        w1, l1 = level(w, 1), level(l, 1)
        for n in ns:
            wl, ll = level(w, n), level(l, n)
            wt = wl["agg_tps"] if wl else None
            lt = ll["agg_tps"] if ll else None
            ratio = wt / lt if wt and lt else None
            ws = wt / w1["agg_tps"] if wt and w1 else None
            ls = lt / l1["agg_tps"] if lt and l1 else None
            def gen(lv):
                if not lv: return "-"
                s = f"{lv['gen_tokens_min']}..{lv['gen_tokens_max']}"
                if lv["short_requests"]: s += f" ({lv['short_requests']} short)"
                if "usage" not in lv["gen_tokens_from"]: s += " (chunks)"
                return s
            md.append(f"| {n} | {fmt(wt)} | {fmt(lt)} | {fmt(ratio, '.2f')} | "
                      f"{fmt(wl and wl['ttft_ms_p50'], '.0f')} / {fmt(wl and wl['ttft_ms_p99'], '.0f')} | "
                      f"{fmt(ll and ll['ttft_ms_p50'], '.0f')} / {fmt(ll and ll['ttft_ms_p99'], '.0f')} | "
                      f"{fmt(ws, '.2f')} | {fmt(ls, '.2f')} | {gen(wl)} / {gen(ll)} |")
            rows_json.append({"model": model, "path": path, "clients": n, "wllm_tps": wt, "llama_tps": lt,
                              "ratio": ratio, "wllm_scale": ws, "llama_scale": ls,
                              "wllm_ttft_ms_p50": wl and wl["ttft_ms_p50"], "wllm_ttft_ms_p99": wl and wl["ttft_ms_p99"],
                              "llama_ttft_ms_p50": ll and ll["ttft_ms_p50"], "llama_ttft_ms_p99": ll and ll["ttft_ms_p99"]})
        w8, l8 = level(w, 8), level(l, 8)
        r8 = w8["agg_tps"] / l8["agg_tps"] if w8 and l8 else None
        s8 = w8["agg_tps"] / w1["agg_tps"] if w8 and w1 else None
        t8 = (w8["ttft_ms_p99"], l8["ttft_ms_p99"]) if w8 and l8 else None
        ts = targets_scale[path]
        targets += [
            {"model": model, "path": path, "what": "wllm / llama-server aggregate t/s at 8 clients",
             "value": r8, "target": ">= 1.5", "pass": r8 is not None and r8 >= 1.5},
            {"model": model, "path": path, "what": "wllm(8) / wllm(1) aggregate t/s",
             "value": s8, "target": f">= {ts}", "pass": s8 is not None and s8 >= ts},
            {"model": model, "path": path, "what": "TTFT p99 at 8 clients, wllm vs llama-server (ms)",
             "value": t8, "target": "wllm < llama-server", "pass": t8 is not None and t8[0] < t8[1]},
        ]
if targets:
    md += ["", "## Targets (issue 15)", "", "| model | path | measure | value | target | |",
           "| --- | --- | --- | ---: | ---: | --- |"]
    for t in targets:
        v = t["value"]
        vs = "-" if v is None else (f"{v[0]:.0f} vs {v[1]:.0f}" if isinstance(v, tuple) else f"{v:.2f}")
        verdict = "pass" if t["pass"] else ("not measured" if v is None else "MISSED")
        md.append(f"| {t['model']} | {t['path']} | {t['what']} | {vs} | {t['target']} | {verdict} |")
if quick == "1":
    md += ["", "_--quick run: few requests per level; not for the issue's table._"]
text = "\n".join(md) + "\n"
open(f"{results}/results.md", "w").write(text)
json.dump({"date": now, "wllm_commit": commit, "llamacpp_source": llama_src, "ncpu": int(ncpu),
           "threads": int(threads), "parallel": int(parallel), "ctx_per_slot": int(ctx),
           "loadavg_before": lb, "loadavg_after": la, "quick": quick == "1", "rows": rows_json,
           "targets": targets, "runs": runs}, open(f"{results}/results.json", "w"), indent=1)
print(text)
print(f"results: {results}/results.md, results.json, raw/")
if strict == "1" and not all(t["pass"] for t in targets):
    sys.exit(3)
PY
