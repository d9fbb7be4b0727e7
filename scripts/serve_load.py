#!/usr/bin/env python3
"""serve_load.py: a load generator for OpenAI-style completion servers (bench-serve.sh, issue 15).

For each concurrency level N it starts N client threads together; each sends --requests
streaming POST /v1/completions back to back (a fresh connection per request) and times them:

  * TTFT: from just before the connection is opened to the first SSE chunk whose text is not
    empty;
  * generated tokens: `usage.completion_tokens` of the final usage chunk (asked for with
    `stream_options.include_usage`), else the number of chunks that carried text;
  * the level's wall time: from the moment all clients are released to the end of the last
    request; aggregate t/s = all generated tokens of the level / that wall time.

Every prompt is distinct (no two requests share more than a handful of leading tokens, also
across levels, so neither server can reuse a cached prefix) and built from --seed, so a rerun
sends exactly the same requests. One warm-up request (its own prompt) runs before the first
level and is not counted.

Any failed request (connection error, HTTP status other than 200, an `error` object in the
stream, a stream without `data: [DONE]`, no text at all) is printed on stderr and makes the exit
status 2: the numbers of a run with failures are written (marked) but must not be reported.

Standard library only.
"""
import argparse
import http.client
import json
import math
import random
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = """
river mountain lantern harbor meadow copper violin garden winter orchard candle thunder
bridge castle pepper marble falcon ribbon silver forest island engine velvet comet canyon
tiger saddle glacier anchor pillow compass desert kettle ladder meadowlark noodle oyster
parrot quilt rocket sapphire tunnel umbrella valley walnut yacht zebra blanket cactus dolphin
emerald feather giraffe hammock igloo jasmine kayak lemon mirror nutmeg olive pebble quartz
raven sparrow teapot volcano whistle basket cherry drum elbow fountain gravel honey ivory
jungle kitten lighthouse magnet needle ocean piano riddle shovel tractor unicorn vinegar
window yarn acorn beacon crystal dragon ember flute goblet helmet inkwell jewel knapsack
lagoon mosaic nectar opal pyramid quiver rhubarb scarf trumpet urn vessel wagon zephyr
""".split()

VERBS = """
carried found painted followed watched built repaired borrowed counted polished described
remembered discovered hid opened measured crossed visited gathered sketched traded
""".split()

ADJS = """
old quiet bright narrow heavy gentle curious distant golden hollow tiny enormous patient
crooked silent rusty fragrant wooden restless clever
""".split()

NAMES = """
Ada Bruno Clara Dmitri Elena Farid Greta Hugo Ines Jonas Kira Luca Mira Nils Olga Pavel
Rosa Sami Tova Umar Vera Wim Yara Zeno
""".split()


def make_prompt(rng, index, target_words):
    """A distinct story opening of about target_words words that invites a long continuation."""
    # A unique head: the request number spelled out plus random names and words, so that two
    # prompts diverge within their first few tokens.
    who = rng.choice(NAMES)
    head = (f"Story {index}. {who} and {rng.choice(NAMES)} lived near the {rng.choice(ADJS)} "
            f"{rng.choice(WORDS)}.")
    tail = f"Then {who} told a long story about what happened next:"
    body_words = max(target_words - len(tail.split()), len(head.split()))
    parts = [head]
    n = len(head.split())
    while n < body_words:
        adj = rng.choice(ADJS)
        s = (f"One day {rng.choice(NAMES)} {rng.choice(VERBS)} {'an' if adj[0] in 'aeiou' else 'a'} {adj} "
             f"{rng.choice(WORDS)} by the {rng.choice(WORDS)}, and the {rng.choice(WORDS)} "
             f"was {rng.choice(ADJS)}.")
        parts.append(s)
        n += len(s.split())
    words = " ".join(parts).split()[:body_words]
    body = " ".join(words).rstrip(",.")
    return f"{body}. {tail}"


class Client:
    def __init__(self, url, model, max_tokens, ignore_eos, timeout, api_key):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            sys.exit(f"serve_load: --url must be http://HOST:PORT, got {url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.model = model
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def get_json(self, path):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers=self.headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {r.status}: {body[:300]!r}")
            return json.loads(body)
        finally:
            conn.close()

    def complete(self, prompt):
        """One streaming completion; returns a record (with 'error' set when it failed)."""
        body = {"prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0,
                "stream": True, "stream_options": {"include_usage": True}}
        if self.model:
            body["model"] = self.model
        if self.ignore_eos:
            body["ignore_eos"] = True
        data = json.dumps(body).encode()
        rec = {"t_start": time.perf_counter(), "ttft_s": None, "chunks": 0, "text_chunks": 0,
               "usage": None, "finish_reason": None, "error": None, "done": False, "text": ""}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        text = []
        try:
            conn.request("POST", "/v1/completions", body=data, headers=self.headers)
            r = conn.getresponse()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {r.read()[:500]!r}")
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.strip()
                if not line or line.startswith(b":"):
                    continue
                if line.startswith(b"error:"):
                    raise RuntimeError(f"error event: {line[:500]!r}")
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    rec["done"] = True
                    rec["t_end"] = time.perf_counter()
                    # read the end of the HTTP body so the server sees a clean close, not a reset
                    try:
                        conn.sock.settimeout(5)
                        r.read()
                    except Exception:
                        pass
                    break
                ev = json.loads(payload)
                if "error" in ev:
                    raise RuntimeError(f"error in stream: {json.dumps(ev['error'])[:500]}")
                rec["chunks"] += 1
                if ev.get("usage"):
                    rec["usage"] = ev["usage"]
                for ch in ev.get("choices") or []:
                    t = ch.get("text")
                    if t is None:  # a chat-style delta, should a server send one
                        t = (ch.get("delta") or {}).get("content")
                    if t:
                        if rec["ttft_s"] is None:
                            rec["ttft_s"] = time.perf_counter() - rec["t_start"]
                        rec["text_chunks"] += 1
                        text.append(t)
                    if ch.get("finish_reason"):
                        rec["finish_reason"] = ch["finish_reason"]
            if not rec["done"]:
                raise RuntimeError("stream ended without 'data: [DONE]'")
            if rec["ttft_s"] is None:
                raise RuntimeError("no text in the whole stream")
        except Exception as e:  # every failure is recorded and fails the run
            rec["error"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
        rec.setdefault("t_end", time.perf_counter())
        rec["text"] = "".join(text)
        u = rec["usage"] or {}
        if isinstance(u.get("completion_tokens"), int):
            rec["gen_tokens"], rec["gen_tokens_from"] = u["completion_tokens"], "usage"
        else:
            rec["gen_tokens"], rec["gen_tokens_from"] = rec["text_chunks"], "chunks"
        rec["prompt_tokens"] = u.get("prompt_tokens")
        return rec


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default); None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_level(client, n_clients, per_client, prompts):
    barrier = threading.Barrier(n_clients + 1)
    results = [[] for _ in range(n_clients)]

    def worker(i):
        barrier.wait()
        for j in range(per_client):
            results[i].append(client.complete(prompts[i * per_client + j]))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    recs = [dict(r, client=i, seq=j) for i, rs in enumerate(results) for j, r in enumerate(rs)]
    for r in recs:
        r["t_start"] -= t0
        r["t_end"] -= t0
    return wall, recs


def summarize(n_clients, per_client, wall, recs, max_tokens):
    ok = [r for r in recs if not r["error"]]
    gen = sum(r["gen_tokens"] for r in ok)
    ttft = [r["ttft_s"] * 1e3 for r in ok]
    counts = [r["gen_tokens"] for r in ok]
    pt = [r["prompt_tokens"] for r in ok if isinstance(r["prompt_tokens"], int)]
    # per-request decode rate after the first token (tokens 2..n over the time since the first)
    dec = [(r["gen_tokens"] - 1) / (r["t_end"] - r["t_start"] - r["ttft_s"])
           for r in ok if r["gen_tokens"] > 1 and r["t_end"] - r["t_start"] > r["ttft_s"]]
    finish = {}
    for r in ok:
        finish[str(r["finish_reason"])] = finish.get(str(r["finish_reason"]), 0) + 1
    return {
        "clients": n_clients, "requests_per_client": per_client, "requests": len(recs),
        "failed": len(recs) - len(ok), "wall_s": wall, "generated_tokens": gen,
        "agg_tps": gen / wall if wall > 0 and not (len(recs) - len(ok)) else None,
        "ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p99": percentile(ttft, 99),
        "ttft_ms_max": max(ttft) if ttft else None,
        "per_request_decode_tps_median": statistics.median(dec) if dec else None,
        "gen_tokens_min": min(counts) if counts else None,
        "gen_tokens_max": max(counts) if counts else None,
        "short_requests": sum(1 for c in counts if c < max_tokens),
        "gen_tokens_from": sorted({r["gen_tokens_from"] for r in ok}),
        "prompt_tokens_mean": statistics.mean(pt) if pt else None,
        "prompt_tokens_min": min(pt) if pt else None,
        "prompt_tokens_max": max(pt) if pt else None,
        "finish_reasons": finish,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--levels", default="1,4,8,16", help="comma list of client counts")
    ap.add_argument("--requests", type=int, default=3, help="requests per client per level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=100,
                    help="words per prompt (100 words are 122..132 tokens for SmolLM2's tokenizer)")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--no-ignore-eos", action="store_true", help="do not send \"ignore_eos\": true")
    ap.add_argument("--model", default=None,
                    help="the request's model field (default: the first id of GET /v1/models)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--warmup", type=int, default=1, help="warm-up requests before the first level")
    ap.add_argument("--timeout", type=float, default=600.0, help="socket timeout per request, seconds")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", help="write the JSON result here (default: stdout)")
    ap.add_argument("--print-prompt", action="store_true", help="print the first prompt and exit")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",") if x.strip()]
    if not levels or min(levels) < 1 or a.requests < 1 or a.max_tokens < 1:
        sys.exit("serve_load: levels, --requests and --max-tokens must be at least 1")

    rng = random.Random(a.seed)
    n_prompts = a.warmup + sum(levels) * a.requests
    prompts = [make_prompt(rng, i + 1, a.prompt_words) for i in range(n_prompts)]
    if len(set(prompts)) != len(prompts):
        sys.exit("serve_load: internal error: prompts are not distinct")
    if a.print_prompt:
        print(prompts[0])
        return 0

    client = Client(a.url, a.model, a.max_tokens, not a.no_ignore_eos, a.timeout, a.api_key)
    model = a.model
    if model is None:
        try:
            m = client.get_json("/v1/models")
            model = m["data"][0]["id"]
        except Exception as e:
            sys.exit(f"serve_load: GET /v1/models on {a.url} failed: {e}")
        client.model = model

    out = {"url": a.url, "label": a.label, "model": model, "seed": a.seed, "max_tokens": a.max_tokens,
           "prompt_words": a.prompt_words, "ignore_eos": not a.no_ignore_eos,
           "requests_per_client": a.requests, "warmup": [], "levels": []}
    failures = 0
    used = 0
    for _ in range(a.warmup):
        r = client.complete(prompts[used])
        used += 1
        out["warmup"].append(r)
        if r["error"]:
            failures += 1
            print(f"serve_load: {a.label} warm-up request failed: {r['error']}", file=sys.stderr)
    for n in levels:
        if failures:
            break
        lv_prompts = prompts[used:used + n * a.requests]
        used += n * a.requests
        wall, recs = run_level(client, n, a.requests, lv_prompts)
        s = summarize(n, a.requests, wall, recs, a.max_tokens)
        s["requests_detail"] = recs
        out["levels"].append(s)
        for r in recs:
            if r["error"]:
                failures += 1
                print(f"serve_load: {a.label} {n} clients, client {r['client']} request {r['seq']}: "
                      f"{r['error']}", file=sys.stderr)
        def f(x, spec):
            return format(x, spec) if x is not None else "-"
        print(f"serve_load: {a.label} {n:>2} clients: {s['generated_tokens']} tokens in {wall:.2f} s = "
              f"{f(s['agg_tps'], '.2f')} t/s, TTFT p50 {f(s['ttft_ms_p50'], '.0f')} ms "
              f"p99 {f(s['ttft_ms_p99'], '.0f')} ms, gen tokens {s['gen_tokens_min']}..{s['gen_tokens_max']}, "
              f"prompt tokens {s['prompt_tokens_min']}..{s['prompt_tokens_max']}"
              + (f", {s['failed']} FAILED" if s["failed"] else ""), file=sys.stderr)
    out["failed_requests"] = failures
    text = json.dumps(out, indent=1)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    else:
        print(text)
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
