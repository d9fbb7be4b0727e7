#!/usr/bin/env python3
"""`wllm serve` through the official `openai` package, unmodified.

Run by cli/tests/serve.rs against a server it started; by hand:

    wllm serve MODEL --parallel 8 --api-key k &
    python3 tests/serve/openai_e2e.py --base-url http://127.0.0.1:8080/v1 --api-key k --model MODEL_ID

Each check prints `ok NAME` or the reason it failed; the exit status is 1 if any failed.
"""

import argparse
import concurrent.futures
import json
import sys
import threading
import traceback
import urllib.request

import openai


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Checks:
    def __init__(self, client, model, base_url):
        self.c = client
        self.model = model
        self.base_url = base_url

    # --- helpers ---

    def chat(self, content, **kw):
        kw.setdefault("max_tokens", 16)
        kw.setdefault("temperature", 0)
        return self.c.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}], **kw
        )

    def chat_stream(self, content, **kw):
        """The streamed text, the chunks, and the finish reason."""
        kw.setdefault("max_tokens", 16)
        kw.setdefault("temperature", 0)
        chunks = list(
            self.c.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": content}],
                stream=True,
                **kw,
            )
        )
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        return text, chunks, finish

    def tokenize(self, text):
        """llama-server's /tokenize (not part of OpenAI's API), with the tokenizer's BOS."""
        url = self.base_url.rstrip("/").removesuffix("/v1") + "/tokenize"
        body = json.dumps({"content": text, "add_special": True}).encode()
        req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {self.c.api_key}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)["tokens"]

    # --- checks ---

    def models(self):
        ids = [m.id for m in self.c.models.list().data]
        expect(ids == [self.model], f"models: {ids}")
        expect(self.c.models.retrieve(self.model).id == self.model, "retrieve")

    def chat_whole(self):
        r = self.chat("What is the capital of France?")
        expect(r.object == "chat.completion", r.object)
        expect(r.id.startswith("chatcmpl-"), r.id)
        expect(r.model == self.model, r.model)
        ch = r.choices[0]
        expect(ch.message.role == "assistant", ch.message.role)
        expect(ch.message.content, "empty reply")
        expect(ch.finish_reason in ("stop", "length"), ch.finish_reason)
        u = r.usage
        expect(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 16, u)
        expect(u.total_tokens == u.prompt_tokens + u.completion_tokens, u)

    def chat_streamed(self):
        whole = self.chat("Name three colors.").choices[0].message.content
        text, chunks, finish = self.chat_stream("Name three colors.", stream_options={"include_usage": True})
        expect(chunks[0].choices[0].delta.role == "assistant", chunks[0])
        expect(chunks[0].object == "chat.completion.chunk", chunks[0].object)
        expect(text == whole, f"streamed {text!r} != whole {whole!r}")
        expect(len(finish) == 1 and finish[0] in ("stop", "length"), finish)
        last = chunks[-1]
        expect(last.choices == [] and last.usage is not None, f"no usage chunk: {last}")
        expect(last.usage.completion_tokens > 0, last.usage)
        expect(all(ch.usage is None for ch in chunks[:-1]), "usage before the last chunk")

    def completions(self):
        r = self.c.completions.create(model=self.model, prompt="The capital of France is", max_tokens=8, temperature=0)
        expect(r.object == "text_completion", r.object)
        expect(r.id.startswith("cmpl-"), r.id)
        whole = r.choices[0].text
        expect(whole, "empty completion")
        expect(r.usage.completion_tokens > 0, r.usage)
        parts = list(
            self.c.completions.create(
                model=self.model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
            )
        )
        streamed = "".join(p.choices[0].text for p in parts if p.choices)
        expect(streamed == whole, f"streamed {streamed!r} != whole {whole!r}")
        # Token ids as the prompt give what their text gives.
        ids = self.tokenize("The capital of France is")
        r2 = self.c.completions.create(model=self.model, prompt=ids, max_tokens=8, temperature=0)
        expect(r2.choices[0].text == whole, f"{r2.choices[0].text!r} != {whole!r}")

    def embeddings(self):
        text = "The capital of France is Paris."
        # The client asks for base64 unless told otherwise, and decodes it.
        r = self.c.embeddings.create(model=self.model, input=text)
        expect(r.object == "list" and r.model == self.model, r)
        expect(len(r.data) == 1 and r.data[0].index == 0 and r.data[0].object == "embedding", r.data)
        v = r.data[0].embedding
        norm = sum(x * x for x in v) ** 0.5
        expect(len(v) > 0 and abs(norm - 1) < 1e-4, f"{len(v)} values of length {norm}")
        ids = self.tokenize(text)
        expect(r.usage.prompt_tokens == len(ids) and r.usage.total_tokens == len(ids), r.usage)
        as_float = self.c.embeddings.create(model=self.model, input=text, encoding_format="float")
        close = lambda a, b: max(abs(x - y) for x, y in zip(a, b)) < 1e-6 and len(a) == len(b)
        expect(close(as_float.data[0].embedding, v), "float and base64 differ")
        # Arrays of strings, token ids, and arrays of token ids: one vector per input, in order.
        many = self.c.embeddings.create(model=self.model, input=[text, "Snow is cold.", text])
        expect([d.index for d in many.data] == [0, 1, 2], many.data)
        expect(close(many.data[0].embedding, v) and close(many.data[2].embedding, v), "batch vs alone")
        expect(not close(many.data[1].embedding, v), "different texts, the same vector")
        by_ids = self.c.embeddings.create(model=self.model, input=ids)
        expect(close(by_ids.data[0].embedding, v), "token ids vs text")
        nested = self.c.embeddings.create(model=self.model, input=[ids, ids[:3]])
        expect(len(nested.data) == 2 and close(nested.data[0].embedding, v), "arrays of token ids")
        try:
            self.c.embeddings.create(model=self.model, input=[])
            raise AssertionError("an empty input was accepted")
        except openai.BadRequestError as e:
            expect(e.status_code == 400 and "input" in str(e), e)

    def max_tokens_is_length(self):
        for stream in (False, True):
            if stream:
                text, chunks, finish = self.chat_stream("Write a long story about a dragon.", max_tokens=3)
                expect(finish == ["length"], finish)
            else:
                r = self.chat("Write a long story about a dragon.", max_completion_tokens=3)
                expect(r.choices[0].finish_reason == "length", r.choices[0].finish_reason)
                expect(r.usage.completion_tokens == 3, r.usage)

    def stop_strings(self):
        prompt = "Count from 1 to 20, separated by commas."
        full = self.chat(prompt, max_tokens=40).choices[0].message.content
        # A two-character stop string whose first occurrence is well inside the reply.
        k = next((k for k in range(4, len(full) - 2) if full.find(full[k : k + 2]) == k), None)
        expect(k is not None, f"no stop string to pick in {full!r}")
        stop = full[k : k + 2]
        r = self.chat(prompt, max_tokens=40, stop=[stop, "never-appears"])
        expect(r.choices[0].message.content == full[:k], f"stop {stop!r}: {r.choices[0].message.content!r} != {full[:k]!r}")
        expect(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
        text, _, finish = self.chat_stream(prompt, max_tokens=40, stop=stop)
        expect(text == full[:k] and finish == ["stop"], f"streamed with stop {stop!r}: {text!r} {finish}")
        t = self.c.completions.create(model=self.model, prompt="1, 2, 3, 4,", max_tokens=16, temperature=0, stop=["7"])
        expect("7" not in t.choices[0].text and t.choices[0].finish_reason == "stop", t.choices[0])

    def cached_tokens(self):
        system = "You are a careful assistant. " * 12
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Say hi."}]
        first = self.c.chat.completions.create(model=self.model, messages=msgs, max_tokens=4, temperature=0)
        again = self.c.chat.completions.create(model=self.model, messages=msgs, max_tokens=4, temperature=0)
        cached = again.usage.prompt_tokens_details.cached_tokens
        expect(cached > 0, f"cached_tokens {cached} on a repeated prompt")
        expect(cached < again.usage.prompt_tokens, again.usage)
        expect(again.choices[0].message.content == first.choices[0].message.content, "reuse changed the reply")

    def logprobs(self):
        r = self.chat("Name a fruit.", max_tokens=6, logprobs=True, top_logprobs=3)
        content = r.choices[0].logprobs.content
        expect(len(content) == r.usage.completion_tokens, f"{len(content)} logprobs, {r.usage.completion_tokens} tokens")
        for e in content:
            expect(e.logprob <= 0 and len(e.top_logprobs) == 3, e)
            # Greedy: the chosen token is the most likely one.
            expect(e.token == e.top_logprobs[0].token and abs(e.logprob - e.top_logprobs[0].logprob) < 1e-6, e)
            expect(bytes(e.bytes).decode("utf-8", "replace") == e.token, e)
        _, chunks, _ = self.chat_stream("Name a fruit.", max_tokens=6, logprobs=True)
        streamed = [x for ch in chunks if ch.choices and ch.choices[0].logprobs for x in ch.choices[0].logprobs.content]
        expect([x.token for x in streamed] == [x.token for x in content], "streamed logprobs differ")
        t = self.c.completions.create(model=self.model, prompt="The sky is", max_tokens=4, temperature=0, logprobs=2)
        lp = t.choices[0].logprobs
        expect(len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and len(lp.top_logprobs) == 4, lp)
        expect(all(len(alts) == 2 for alts in lp.top_logprobs), lp.top_logprobs)

    def sampling_fields(self):
        r = self.chat(
            "Tell me a joke.",
            max_tokens=8,
            temperature=0.7,
            top_p=0.9,
            seed=42,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            logit_bias={"0": -100},
            extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1},
        )
        again = self.chat(
            "Tell me a joke.",
            max_tokens=8,
            temperature=0.7,
            top_p=0.9,
            seed=42,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            logit_bias={"0": -100},
            extra_body={"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1},
        )
        expect(r.choices[0].message.content == again.choices[0].message.content, "same seed, different text")

    def errors(self):
        bad = openai.OpenAI(base_url=self.base_url, api_key="wrong-key", max_retries=0)
        try:
            bad.models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError:
            pass
        for kw in ({"n": 2}, {"temperature": 5}):
            try:
                self.chat("hi", **kw)
                raise AssertionError(f"{kw} was accepted")
            except openai.BadRequestError as e:
                expect(e.status_code == 400, e)
        try:
            self.c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
            raise AssertionError("an unknown model was accepted")
        except openai.NotFoundError:
            pass

    def structured_output(self):
        """response_format json_schema / json_object, llama-server's grammar, and a bad schema."""
        schema = {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer"}},
            "required": ["city", "population"],
            "additionalProperties": False,
        }
        for temperature in (0, 1.0):
            r = self.c.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": "Name a big city and its population as JSON."}],
                max_tokens=64,
                temperature=temperature,
                seed=3,
                response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
            )
            v = json.loads(r.choices[0].message.content)
            expect(set(v) == {"city", "population"} and isinstance(v["population"], int), v)
            expect(len(v["city"]) <= 20 and r.choices[0].finish_reason == "stop", r)
        r = self.c.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": 'Reply with exactly this JSON object: {"ok": true}'}],
            max_tokens=256,
            temperature=0,
            response_format={"type": "json_object"},
        )
        expect(r.choices[0].finish_reason == "stop", r)
        expect(isinstance(json.loads(r.choices[0].message.content), dict), r)
        text = self.chat_stream(
            "Is the sky blue?", max_tokens=8, extra_body={"grammar": 'root ::= ("yes" | "no") "."'}
        )[0]
        expect(text in ("yes.", "no."), text)
        try:
            self.chat("hi", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})
            raise AssertionError("an invalid schema was accepted")
        except openai.BadRequestError as e:
            expect(e.status_code == 400 and "response_format" in str(e), e)

    def tool_calls(self):
        """tools with tool_choice required / named (grammar-constrained), streamed deltas, and
        a round trip: the call and the tool's answer go back through the template."""
        tools = [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 30}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }, {
            "type": "function",
            "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
        }]
        question = [{"role": "user", "content": "What is the weather in Paris?"}]
        r = self.c.chat.completions.create(
            model=self.model, messages=question, tools=tools, tool_choice="required",
            parallel_tool_calls=False, max_tokens=64, temperature=0,
        )
        choice = r.choices[0]
        expect(choice.finish_reason == "tool_calls", r)
        calls = choice.message.tool_calls
        expect(len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time"), r)
        args = json.loads(calls[0].function.arguments)
        expect(isinstance(args, dict), r)
        if calls[0].function.name == "get_weather":
            expect(isinstance(args.get("city"), str), r)
        named = {"type": "function", "function": {"name": "get_weather"}}
        chunks = list(self.c.chat.completions.create(
            model=self.model, messages=question, tools=tools, tool_choice=named,
            max_tokens=64, temperature=0.7, seed=2, stream=True,
        ))
        deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
        expect(len(deltas) == 1 and deltas[0].function.name == "get_weather" and deltas[0].index == 0, chunks)
        expect(isinstance(json.loads(deltas[0].function.arguments)["city"], str), deltas)
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        expect(finish == ["tool_calls"], finish)
        call = deltas[0]
        follow = question + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function",
                 "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        ]
        r = self.c.chat.completions.create(
            model=self.model, messages=follow, tools=tools, tool_choice="none", max_tokens=16, temperature=0,
        )
        expect(r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length"), r)
        try:
            self.c.chat.completions.create(
                model=self.model, messages=question, tools=tools,
                tool_choice={"type": "function", "function": {"name": "nope"}},
            )
            raise AssertionError("an unknown tool was accepted")
        except openai.BadRequestError as e:
            expect("tool_choice" in str(e), e)

    def tool_calls_generic(self):
        """Through a template that shows no tools (the generic JSON format): the same checks,
        and with `auto` the JSON reply comes back as calls or as plain content, never as the
        raw JSON envelope."""
        self.tool_calls()
        tools = [{"type": "function", "function": {
            "name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                           "required": ["city"]}}}]
        for seed in range(4):
            r = self.c.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "Say hello to Anna."}], tools=tools,
                max_tokens=200, temperature=1.0, seed=seed,
            )
            choice = r.choices[0]
            if choice.finish_reason == "tool_calls":
                for call in choice.message.tool_calls:
                    expect(call.function.name == "get_weather", r)
                    expect(isinstance(json.loads(call.function.arguments)["city"], str), r)
            elif choice.finish_reason == "stop":
                content = choice.message.content or ""
                expect(choice.message.tool_calls is None and not content.lstrip().startswith('{"response"'), r)

    def equivalence(self, threads):
        """Greedy streams at once give each the text it gets alone."""
        subjects = ["cats", "the sea", "bread", "winter", "music", "trains", "gardens", "the moon",
                    "rivers", "clocks", "bees", "mountains", "paper", "lamps", "boats", "coffee"]
        prompts = [f"Write one sentence about {s}." for s in subjects[:threads]]
        alone = [self.chat_stream(p, max_tokens=24)[0] for p in prompts]
        barrier = threading.Barrier(threads)

        def run(p):
            barrier.wait()
            return self.chat_stream(p, max_tokens=24)[0]

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            together = list(pool.map(run, prompts))
        for p, a, t in zip(prompts, alone, together):
            expect(a == t, f"{p!r}: alone {a!r} != concurrent {t!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--only", nargs="*", help="run only these checks")
    a = ap.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key=a.api_key, max_retries=0, timeout=120)
    checks = Checks(client, a.model, a.base_url)
    names = a.only or [
        "models", "chat_whole", "chat_streamed", "completions", "max_tokens_is_length", "stop_strings",
        "cached_tokens", "logprobs", "sampling_fields", "errors", "structured_output", "equivalence",
        "embeddings",
    ]
    failed = []
    print(f"openai {openai.__version__}", flush=True)
    for name in names:
        try:
            f = getattr(checks, name)
            f(a.threads) if name == "equivalence" else f()
            print(f"ok {name}", flush=True)
        except Exception:
            failed.append(name)
            print(f"FAILED {name}:\n{traceback.format_exc()}", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
