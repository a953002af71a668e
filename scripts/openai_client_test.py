"""Drives a running `hanzo-candle serve` with the official `openai` client.

    python scripts/openai_client_test.py main  BASE_URL MODEL API_KEY
    python scripts/openai_client_test.py small BASE_URL MODEL API_KEY

`main` expects a server with several slots and the API key API_KEY;
`small` one started with `--slots 1 --queue 1 --timeout 5` (overload,
disconnects and timeouts); `config` one started with `--config` serving the
model as MODEL and as "second"; `encoders FIXTURES` one serving
all-MiniLM-L6-v2 as MODEL and the tiny cross-encoder of FIXTURES (the
engine's encoder fixtures) as "reranker".
Run by crates/hanzo-candle/tests/serve_openai.rs, which starts the servers.
Every check raises on failure; the last line printed is "ok".
"""

import json
import math
import socket
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

mode, base_url, model, api_key = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=300)

# The greedy continuation of this prompt is " Paris.\n\nThe United States has"
# (crates/candle-engine/tests/real_model.rs checks the tokens against
# llama.cpp), so the stop string ".\n\nThe" spans several tokens.
FRANCE = "The capital of France is"


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_error(status, param, call):
    try:
        call()
    except openai.APIStatusError as e:
        check(e.status_code == status, f"expected {status}, got {e.status_code}: {e}")
        body = e.body if isinstance(e.body, dict) else {}
        if param is not None:
            check(body.get("param") == param, f"expected param {param!r}: {e.body}")
        check(bool(body.get("message")), f"no message: {e.body}")
        return e
    raise AssertionError(f"expected HTTP {status} for param {param!r}, got success")


def chat(content, stream=False, **kw):
    messages = [{"role": "user", "content": content}]
    if not stream:
        r = client.chat.completions.create(model=model, messages=messages, **kw)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage
    text, finish, usage, roles = [], None, None, []
    for chunk in client.chat.completions.create(model=model, messages=messages, stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                text.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    check(roles == ["assistant"], f"roles {roles}")
    return "".join(text), finish, usage


def complete(prompt, stream=False, **kw):
    if not stream:
        r = client.completions.create(model=model, prompt=prompt, **kw)
        return r.choices[0].text, r.choices[0].finish_reason, r.usage
    pieces, finish, usage = [], None, None
    for chunk in client.completions.create(model=model, prompt=prompt, stream=True, **kw):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.text)
            if c.finish_reason:
                finish = c.finish_reason
    return pieces, finish, usage


def raw(method, path, body=None, headers=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(base_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        request.add_header(k, v)
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_models_and_health():
    check([m.id for m in client.models.list().data] == [model], "models list")
    status, _, body = raw("GET", "/health")
    check(status == 200 and json.loads(body)["status"] == "ok", f"health {status} {body}")


def test_streaming_equals_non_streaming():
    greedy = dict(max_tokens=24, temperature=0)
    text, finish, usage = chat("What is the capital of France?", **greedy)
    s_text, s_finish, s_usage = chat(
        "What is the capital of France?", stream=True, stream_options={"include_usage": True}, **greedy
    )
    check(text == s_text and text, f"chat: {text!r} vs streamed {s_text!r}")
    check(finish == s_finish and finish in ("stop", "length"), f"finish {finish} {s_finish}")
    check(usage.prompt_tokens == s_usage.prompt_tokens > 0, f"usage {usage} {s_usage}")
    check(usage.completion_tokens == s_usage.completion_tokens <= 24, f"usage {usage} {s_usage}")
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage {usage}")
    c_text, c_finish, c_usage = complete(FRANCE, max_tokens=8, temperature=0)
    pieces, s_finish, s_usage = complete(
        FRANCE, stream=True, max_tokens=8, temperature=0, stream_options={"include_usage": True}
    )
    check(c_text == "".join(pieces), f"completion: {c_text!r} vs streamed {pieces}")
    check(c_text.startswith(" Paris.\n\nThe"), f"greedy text {c_text!r}")
    check(c_finish == s_finish == "length" and c_usage.completion_tokens == 8, f"{c_finish} {c_usage}")
    check(s_usage is not None and s_usage.completion_tokens == 8, f"stream usage {s_usage}")
    # Content as text parts is the same prompt as the string.
    parts = [{"type": "text", "text": "What is the capital "}, {"type": "text", "text": "of France?"}]
    check(chat(parts, **greedy)[0] == text, "text parts")
    # max_completion_tokens is max_tokens' newer name.
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_completion_tokens=3, temperature=0
    )
    check(r.usage.completion_tokens <= 3, f"max_completion_tokens {r.usage}")


def test_stop_strings_never_leak():
    stop = ["Paris!", ".\n\nThe"]
    text, finish, _ = complete(FRANCE, max_tokens=16, temperature=0, stop=stop)
    check(text == " Paris" and finish == "stop", f"stop: {text!r} {finish}")
    pieces, finish, _ = complete(FRANCE, stream=True, max_tokens=16, temperature=0, stop=stop)
    check("".join(pieces) == " Paris" and finish == "stop", f"streamed stop: {pieces} {finish}")


def test_concurrent_requests_give_the_outputs_they_give_alone():
    prompts = [
        ("Once upon a time", 20),
        ("The capital of France is", 9),
        ("def fibonacci(n):", 28),
        ("List three colors:", 14),
        ("In 1492, Columbus", 24),
        ("Water boils at", 6),
        ("The quick brown fox", 17),
        ("My favourite food is", 11),
        ("Photosynthesis is", 15),
        ("import numpy as np", 22),
        ("The tallest mountain", 8),
        ("Dear Sir or Madam,", 19),
        ("Three plus four equals", 5),
        ("The Moon orbits", 26),
        ("SELECT * FROM", 12),
        ("Roses are red,", 18),
    ]
    # top_k and min_p are not in the client's signature; they travel in the body.
    seeded = dict(temperature=0.9, top_p=0.95, seed=1234, extra_body={"top_k": 40, "min_p": 0.05})
    alone = [complete(p, max_tokens=n, temperature=0)[0] for p, n in prompts]
    alone_seeded = complete("Tell me a story:", max_tokens=16, **seeded)[0]
    results = [None] * len(prompts)
    seeded_result = []

    def run(i):
        # Different lengths and start times: requests join and leave the
        # running batch at different steps.
        time.sleep(0.05 * i)
        p, n = prompts[i]
        if i % 2:
            results[i] = "".join(complete(p, stream=True, max_tokens=n, temperature=0)[0])
        else:
            results[i] = complete(p, max_tokens=n, temperature=0)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    threads.append(
        threading.Thread(target=lambda: seeded_result.append(complete("Tell me a story:", max_tokens=16, **seeded)[0]))
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (p, _), a, b in zip(prompts, alone, results):
        check(a == b, f"{p!r}: alone {a!r}, under load {b!r}")
    check(seeded_result == [alone_seeded], f"seeded: {alone_seeded!r} vs {seeded_result}")
    # n choices: each its own seed (seed + index), so they are reproducible.
    r1 = client.completions.create(model=model, prompt="Tell me a story:", max_tokens=8, n=2, **seeded)
    r2 = client.completions.create(model=model, prompt="Tell me a story:", max_tokens=8, n=2, **seeded)
    check([c.index for c in r1.choices] == [0, 1], "n=2 indices")
    check([c.text for c in r1.choices] == [c.text for c in r2.choices], "n=2 reproducible")


def test_the_next_turn_reuses_the_cached_prefix():
    """The engine's tests check that reuse leaves the output unchanged
    (crates/candle-engine/tests/decoder.rs); here, that the server reports it."""
    turn = [{"role": "user", "content": "Name a fruit."}]
    r1 = client.chat.completions.create(model=model, messages=turn, max_tokens=12, temperature=0)
    turn += [
        {"role": "assistant", "content": r1.choices[0].message.content},
        {"role": "user", "content": "And a vegetable?"},
    ]
    r2 = client.chat.completions.create(model=model, messages=turn, max_tokens=12, temperature=0)
    cached = r2.usage.prompt_tokens_details.cached_tokens
    check(r1.usage.prompt_tokens <= cached < r2.usage.prompt_tokens, f"cached {cached}: {r1.usage} {r2.usage}")


def metrics():
    """`/metrics` as {name{labels}: value}."""
    status, _, body = raw("GET", "/metrics")
    check(status == 200, f"/metrics: {status}")
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def check_nothing_leaked(name=None):
    """Once requests are answered, no sequence holds a slot or waits."""
    name = name or model
    for _ in range(100):
        m = metrics()
        busy = [f"hanzo_candle_{g}{{model=\"{name}\"}}" for g in ("running_sequences", "queue_depth", "requests_in_flight")]
        if all(m.get(k, 0) == 0 for k in busy):
            return m
        time.sleep(0.1)
    raise AssertionError(f"leaked: {[(k, m.get(k)) for k in busy]}")


def test_metrics():
    m = check_nothing_leaked()
    label = f'{{model="{model}"}}'
    check(m[f"hanzo_candle_slots{label}"] >= 1, "slots")
    for counter in ("prompt_tokens_total", "generated_tokens_total", "cached_tokens_total"):
        check(m[f"hanzo_candle_{counter}{label}"] > 0, f"{counter}: {m}")
    check(m[f"hanzo_candle_time_to_first_token_seconds_count{label}"] > 0, "TTFT observed")
    check(m[f"hanzo_candle_inter_token_latency_seconds_count{label}"] > 0, "ITL observed")
    ok = 'hanzo_candle_requests_total{endpoint="/v1/chat/completions",status="200"}'
    bad = 'hanzo_candle_requests_total{endpoint="/v1/chat/completions",status="400"}'
    check(m[ok] > 0 and m[bad] > 0, "requests by endpoint and status")


def test_logprobs():
    """Log-probabilities are the model's (before sampling): the greedy token
    is the most likely alternative, alternatives come most likely first and
    hold at most all the mass; streamed and whole answers carry the same."""
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    check(len(content) == r.usage.completion_tokens, f"one entry per token: {content}")
    check("".join(c.token for c in content) == r.choices[0].message.content, "tokens spell the text")
    for c in content:
        top = c.top_logprobs
        check(len(top) == 3 and top[0].token == c.token and abs(top[0].logprob - c.logprob) < 1e-6, f"greedy is top-1: {c}")
        check(all(a.logprob >= b.logprob for a, b in zip(top, top[1:])), f"ordered: {top}")
        check(sum(math.exp(t.logprob) for t in top) <= 1 + 1e-5 and c.logprob <= 0, f"a distribution: {top}")
        check(bytes(c.bytes) == c.token.encode(), f"bytes: {c}")
    streamed = []
    for chunk in client.chat.completions.create(
        model=model, messages=msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, stream=True
    ):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += chunk.choices[0].logprobs.content
    check([(c.token, round(c.logprob, 5)) for c in streamed] == [(c.token, round(c.logprob, 5)) for c in content], f"streamed {streamed}")
    # Without top_logprobs: the chosen token only.
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=2, temperature=0, logprobs=True)
    check(all(c.top_logprobs == [] for c in r.choices[0].logprobs.content), "no alternatives asked")
    # Completions' shape: parallel lists and offsets into the text.
    r = client.completions.create(model=model, prompt=FRANCE, max_tokens=5, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    check("".join(lp.tokens) == r.choices[0].text, f"tokens {lp.tokens}")
    check(lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))], f"offsets {lp.text_offset}")
    check(all(len(t) == 2 and max(t.values()) == l for t, l in zip(lp.top_logprobs, lp.token_logprobs)), f"{lp}")
    check(client.completions.create(model=model, prompt=FRANCE, max_tokens=2).choices[0].logprobs is None, "none unless asked")


def test_errors_name_the_field():
    msgs = [{"role": "user", "content": "Hi"}]
    create = client.chat.completions.create
    e = expect_error(404, "model", lambda: create(model="no-such-model", messages=msgs))
    check(e.body.get("code") == "model_not_found", f"{e.body}")
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    expect_error(400, "tools", lambda: create(model=model, messages=msgs, tools=[tool]))
    expect_error(400, "response_format", lambda: create(model=model, messages=msgs, response_format={"type": "json_object"}))
    expect_error(400, "top_logprobs", lambda: create(model=model, messages=msgs, logprobs=True, top_logprobs=21))
    expect_error(400, "top_logprobs", lambda: create(model=model, messages=msgs, top_logprobs=2))
    expect_error(400, "logprobs", lambda: client.completions.create(model=model, prompt="x", logprobs=6))
    expect_error(400, "presence_penalty", lambda: create(model=model, messages=msgs, presence_penalty=0.5))
    expect_error(400, "temperature", lambda: create(model=model, messages=msgs, temperature=5))
    expect_error(400, "top_p", lambda: create(model=model, messages=msgs, top_p=0))
    expect_error(400, "max_tokens", lambda: create(model=model, messages=msgs, max_tokens=10**6))
    expect_error(400, "n", lambda: create(model=model, messages=msgs, n=0))
    expect_error(400, "messages", lambda: create(model=model, messages=[]))
    expect_error(400, "messages[0].role", lambda: create(model=model, messages=[{"role": "tool", "content": "x"}]))
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    expect_error(400, "messages[0].content[0].type", lambda: create(model=model, messages=[{"role": "user", "content": image}]))
    expect_error(400, "stop", lambda: create(model=model, messages=msgs, stop=["a", "b", "c", "d", "e"]))
    expect_error(400, "frobnicate", lambda: create(model=model, messages=msgs, extra_body={"frobnicate": 1}))
    expect_error(400, "prompt", lambda: client.completions.create(model=model, prompt=[1, 2, 3]))
    auth = {"Authorization": "Bearer " + api_key}
    status, _, body = raw("POST", "/v1/chat/completions", b"{not json", auth)
    check(status == 400 and "JSON" in json.loads(body)["error"]["message"], f"malformed JSON: {status} {body}")
    status, _, body = raw("POST", "/v1/completions", {"prompt": "x"}, auth)
    check(status == 400 and json.loads(body)["error"]["param"] == "model", f"missing model: {status} {body}")
    # Without the key: 401 on /v1, /health stays open.
    bad = openai.OpenAI(base_url=base_url + "/v1", api_key="wrong", max_retries=0)
    expect_error(401, None, lambda: bad.models.list())
    check(raw("GET", "/health")[0] == 200, "health without a key")


def test_overload_and_disconnect():
    """One slot, a queue of one: a third request gets 429; a client that
    goes away frees its slot, so the next request runs."""
    long = dict(model=model, prompt="Once upon a time", max_tokens=400, temperature=0)
    first = client.completions.create(stream=True, **long)
    next(iter(first))  # running: holds the only slot
    second = client.completions.create(stream=True, **long)  # queued
    status, headers, body = raw("POST", "/v1/completions", dict(long, stream=False))
    check(status == 429, f"expected 429, got {status} {body}")
    check(headers.get("retry-after") == "1", f"Retry-After: {headers}")
    check(json.loads(body)["error"]["type"] == "rate_limit_error", f"{body}")
    # Both clients disconnect; their sequences are cancelled.
    first.close()
    second.close()
    # The server notices within a step; until then it may still be full.
    for _ in range(100):
        status, _, body = raw("POST", "/v1/completions", dict(long, max_tokens=4))
        if status != 429:
            break
        time.sleep(0.1)
    check(status == 200, f"after disconnect: {status} {body}")
    choice = json.loads(body)["choices"][0]
    check(choice["finish_reason"] == "length", f"{body}")
    text, finish, _ = complete(FRANCE, max_tokens=4, temperature=0)
    check(text == " Paris.\n\n" and finish == "length", f"after disconnect: {text!r} {finish}")
    # A non-streaming client that goes away is cancelled too.
    host, port = base_url.split("//")[1].split(":")
    body = json.dumps(dict(long, max_tokens=4000)).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        for _ in range(100):
            if metrics()[f'hanzo_candle_running_sequences{{model="{model}"}}'] == 1:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the non-streaming request never ran")
    check_nothing_leaked()
    m = metrics()
    check(m['hanzo_candle_requests_total{endpoint="/v1/completions",status="429"}'] >= 1, "429 counted")


def test_timeout():
    """The server runs with --timeout 5: a request that cannot finish in
    time is cancelled with 504, streaming or not, and the slot is freed."""
    long = dict(model=model, prompt="Once upon a time", max_tokens=4000, temperature=0)
    status, _, body = raw("POST", "/v1/completions", long)
    check(status == 504 and json.loads(body)["error"]["type"] == "timeout_error", f"{status} {body}")
    errors = []
    try:
        for _ in client.completions.create(stream=True, **long):
            pass
    except openai.APIError as e:
        errors.append(e)
    check(errors and "timeout" in str(errors[0]), f"streamed: {errors}")
    text, finish, _ = complete(FRANCE, max_tokens=4, temperature=0)
    check(text == " Paris.\n\n" and finish == "length", f"after timeouts: {text!r} {finish}")
    check_nothing_leaked()
    check(metrics()['hanzo_candle_requests_total{endpoint="/v1/completions",status="504"}'] >= 1, "504 counted")


def test_several_models():
    """The server started from a config file with this model twice: as
    MODEL and as "second" (one slot, f32 cache). Each answers by its name."""
    names = [m.id for m in client.models.list().data]
    check(names == [model, "second"], f"models {names}")
    for name in names:
        r = client.completions.create(model=name, prompt=FRANCE, max_tokens=4, temperature=0)
        check(r.model == name and r.choices[0].text == " Paris.\n\n", f"{name}: {r}")
        check_nothing_leaked(name)
    m = metrics()
    check(m['hanzo_candle_slots{model="second"}'] == 1, "per-model slots")
    e = expect_error(404, "model", lambda: client.completions.create(model="third", prompt="x"))
    check(model in str(e) and "second" in str(e), f"404 names the models: {e}")


def test_embeddings(fixtures):
    """all-MiniLM-L6-v2 against sentence-transformers' vectors
    (crates/candle-engine/tests/fixtures/encoders/minilm.json, made by
    scripts/gen_encoder_fixtures.py): cosine >= 0.99999 and max |diff| <= 1e-4
    per vector, as the engine's own test; base64 equals float; errors."""
    import base64
    import struct

    # OpenAI's API refuses empty strings (checked below); the fixture's
    # empty text is for the library.
    reference = [i for i in json.load(open(f"{fixtures}/minilm.json"))["items"] if i["text"]]
    texts = [item["text"] for item in reference]
    r = client.embeddings.create(model=model, input=texts)
    check(r.model == model and len(r.data) == len(texts), f"{r.model} {len(r.data)}")
    for item, got in zip(reference, r.data):
        want = item["embedding"]
        vec = got.embedding
        dot = sum(a * b for a, b in zip(vec, want))
        cos = dot / math.sqrt(sum(a * a for a in vec) * sum(b * b for b in want))
        diff = max(abs(a - b) for a, b in zip(vec, want))
        check(cos >= 0.99999 and diff <= 1e-4, f"{item['text'][:40]!r}: cos {cos} diff {diff}")
        check(got.model_extra.get("truncated") == item["truncated"], f"truncated flag of {item['text'][:40]!r}")
    check(r.usage.prompt_tokens == sum(item["tokens"] for item in reference), f"usage {r.usage}")
    one = client.embeddings.create(model=model, input=texts[0]).data[0].embedding
    check(max(abs(a - b) for a, b in zip(one, r.data[0].embedding)) <= 1e-5, "alone equals in a batch")
    status, _, body = raw("POST", "/v1/embeddings", {"model": model, "input": texts[:2], "encoding_format": "base64"})
    check(status == 200, f"base64: {status} {body}")
    for item, want in zip(json.loads(body)["data"], r.data[:2]):
        raw_bytes = base64.b64decode(item["embedding"])
        vec = struct.unpack(f"<{len(raw_bytes) // 4}f", raw_bytes)
        check(max(abs(a - b) for a, b in zip(vec, want.embedding)) <= 1e-6, "base64 decodes to the floats")
    tokens = client.embeddings.create(model=model, input=[[101, 7592, 2088, 102]])
    check(len(tokens.data[0].embedding) == len(one) and tokens.usage.prompt_tokens == 4, "token ids")
    dim = len(one)
    create = client.embeddings.create
    check(len(create(model=model, input="x", dimensions=dim).data[0].embedding) == dim, "dimensions = width")
    expect_error(400, "dimensions", lambda: create(model=model, input="x", dimensions=dim // 2))
    expect_error(400, "input", lambda: create(model=model, input=[]))
    expect_error(400, "input[1]", lambda: create(model=model, input=["a", ""]))
    expect_error(400, "input[0]", lambda: create(model=model, input=[[10**9]]))
    expect_raw(400, "encoding_format", "/v1/embeddings", {"model": model, "input": "x", "encoding_format": "int8"})
    long = [item["text"] for item in reference if item["truncated"]]
    if long:
        expect_raw(400, "input[0]", "/v1/embeddings", {"model": model, "input": long[:1], "truncate": False})
    expect_error(400, "model", lambda: create(model="reranker", input="x"))


def test_rerank(fixtures):
    """The tiny cross-encoder's scores against transformers'
    (bert-reranker.json): raw logits within 1e-4, default scores their
    sigmoid, results most relevant first."""
    cases = json.load(open(f"{fixtures}/bert-reranker.json"))["rerank"]
    for case in cases:
        status, _, body = raw("POST", "/v1/rerank", {"model": "reranker", "query": case["query"], "texts": case["docs"], "raw_scores": True, "return_text": True})
        check(status == 200, f"rerank {status} {body}")
        ranked = json.loads(body)
        check([r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True), "most relevant first")
        for r in ranked:
            check(abs(r["score"] - case["scores"][r["index"]]) <= 1e-4 and r["text"] == case["docs"][r["index"]], f"{r} vs {case}")
        status, _, body = raw("POST", "/v1/rerank", {"model": "reranker", "query": case["query"], "texts": case["docs"]})
        for r in json.loads(body):
            want = 1 / (1 + math.exp(-case["scores"][r["index"]]))
            check(abs(r["score"] - want) <= 1e-4 and "text" not in r, f"sigmoid {r}")
    expect_raw(400, "texts", "/v1/rerank", {"model": "reranker", "query": "q", "texts": []})
    expect_raw(400, "model", "/v1/rerank", {"model": model, "query": "q", "texts": ["a"]})
    expect_raw(400, "query", "/v1/rerank", {"model": "reranker", "texts": ["a"]})
    check_nothing_leaked()


def expect_raw(status, param, path, body):
    got, _, answer = raw("POST", path, body)
    check(got == status and json.loads(answer)["error"]["param"] == param, f"{path} {body}: {got} {answer}")


if mode == "main":
    test_models_and_health()
    test_streaming_equals_non_streaming()
    test_stop_strings_never_leak()
    test_concurrent_requests_give_the_outputs_they_give_alone()
    test_the_next_turn_reuses_the_cached_prefix()
    test_errors_name_the_field()
    test_logprobs()
    test_metrics()
elif mode == "small":
    test_overload_and_disconnect()
    test_timeout()
elif mode == "config":
    test_several_models()
elif mode == "encoders":
    test_embeddings(sys.argv[5])
    test_rerank(sys.argv[5])
else:
    raise SystemExit(f"unknown mode {mode}")
print("ok")
