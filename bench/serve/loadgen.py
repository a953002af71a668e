#!/usr/bin/env python3
"""Closed-loop load generator for OpenAI-compatible chat servers.

N clients each send a streaming chat completion (`stream: true`, greedy,
fixed `max_tokens`, `stream_options.include_usage`), read the stream to its
end, and send the next request at once: for --ramp seconds (not measured:
the first wave's prompts all arrive together), then for --duration seconds
(the measured window). Then no new requests start and the ones in flight
are drained (up to --drain seconds), so every request ends up completed,
failed or lost.

Standard library only (asyncio streams speaking HTTP/1.1), so the same
interpreter runs it anywhere and the client costs the same for every server.

    loadgen.py --url http://127.0.0.1:8080 --clients 16 --ramp 10 --duration 30

Prints one JSON object on stdout (or to --json FILE) and a readable line on
stderr. What the figures mean:
- tok_s: generated tokens whose chunk arrived inside the measured window,
  divided by the window (tok_s_whole_run: all tokens over the whole run,
  ramp and drain included). A request's tokens come from its usage
  (`completion_tokens`) and are spread evenly over its content chunks, so a
  server that puts several tokens into one chunk is counted right.
- ttft: from sending the request to the first chunk with non-empty content;
  like itl, over the requests started inside the window (all requests when
  none did).
- itl: gaps between consecutive content chunks of a request (what a reader
  of the stream sees; a chunk carrying several tokens shows as one gap).
- failed: an HTTP status other than 200, an error event in the stream, or a
  connection error. lost: a stream that ended without `[DONE]` or without
  a finish_reason, or that was still running when the drain ran out.
"""

import argparse
import asyncio
import json
import random
import sys
import time
import urllib.parse
import urllib.request

# Fixed material for the prompts: the set is a pure function of --seed.
TOPICS = [
    "a lighthouse keeper who finds a message in a bottle",
    "the history of the printing press",
    "how bees choose a new home",
    "a city where it never stops raining",
    "the first winter on a research station in Antarctica",
    "why bridges are built the way they are",
    "a chess game between two old friends",
    "the life cycle of a star",
    "a baker who opens a shop on the moon",
    "how rivers shape valleys over millions of years",
    "a robot learning to paint",
    "the journey of a letter through the postal system",
]
SENTENCES = [
    "The morning was quiet and the sea was grey.",
    "Records from that time are incomplete, but several accounts agree.",
    "Nobody in the village expected the storm to last three days.",
    "Engineers measured the load on every beam twice.",
    "She wrote everything down in a small notebook with a blue cover.",
    "The committee met on Tuesdays in a room above the library.",
    "Most of the colony stays behind while scouts search for a site.",
    "Light from the nearest star takes more than four years to arrive.",
    "The bread had to rise slowly in the cold air of the dome.",
    "Water carries sand and stones that grind the riverbed deeper.",
    "Its first brush strokes were careful, straight and far too thin.",
    "A sorting machine reads the postcode in a fraction of a second.",
    "He moved the knight and leaned back, smiling at the board.",
    "Every answer raised two new questions for the team.",
]
# Sentences of notes per prompt, by --mix. "mixed": short, medium and long
# prompts (roughly 20, 150 and 450 tokens with SmolLM2's tokenizer, all well
# inside a 1024 context with 64 new tokens), which makes reading prompts most
# of the work. "short": the one-line requests only, so generation is.
NOTES_PER_PROMPT = {"mixed": [0, 0, 10, 10, 30], "short": [0]}


def make_prompts(seed, count, mix="mixed"):
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        topic = rng.choice(TOPICS)
        n = rng.choice(NOTES_PER_PROMPT[mix])
        notes = " ".join(rng.choice(SENTENCES) for _ in range(n))
        if notes:
            prompts.append(f"Here are some notes:\n{notes}\n\nUsing them, write a long story about {topic}.")
        else:
            prompts.append(f"Write a long story about {topic}.")
    return prompts


def deepest_prompt(prompts, seed):
    """The longest prompt of the set with 5 more sentences of notes: longer
    in tokens than any prompt of the set, so a request with it reaches every
    KV position the set's requests can reach."""
    rng = random.Random(seed)
    extra = " ".join(rng.choice(SENTENCES) for _ in range(5))
    longest = max(prompts, key=len)
    if longest.startswith("Here are some notes:\n"):
        return longest.replace("Here are some notes:\n", f"Here are some notes:\n{extra} ", 1)
    return f"Here are some notes:\n{extra}\n\n{longest}"


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class Result:
    __slots__ = ("start", "status", "chunk_times", "tokens", "finish", "done", "error")

    def __init__(self, start):
        self.start = start
        self.status = None
        self.chunk_times = []
        self.tokens = None
        self.finish = None
        self.done = False
        self.error = None


async def read_chunked(reader):
    """Yields the body of a chunked HTTP/1.1 response piece by piece."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise ConnectionError("connection closed inside a chunked body")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def read_plain(reader, length):
    if length is not None:
        yield await reader.readexactly(length)
        return
    while True:
        data = await reader.read(65536)
        if not data:
            return
        yield data


async def one_request(url, body, headers_extra, result):
    parsed = urllib.parse.urlsplit(url)
    host, port = parsed.hostname, parsed.port or 80
    path = parsed.path.rstrip("/") + "/v1/chat/completions"
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n{headers_extra}\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + payload)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2:
            raise ConnectionError(f"bad status line {status_line!r}")
        result.status = int(parts[1])
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body_iter = read_chunked(reader)
        else:
            length = headers.get("content-length")
            body_iter = read_plain(reader, int(length) if length else None)
        if result.status != 200:
            text = b"".join([d async for d in body_iter]).decode("utf-8", "replace")
            result.error = f"HTTP {result.status}: {text[:300]}"
            return
        buf = b""
        async for data in body_iter:
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    line = line.rstrip(b"\r")
                    if not line.startswith(b"data:"):
                        continue
                    data_text = line[5:].strip()
                    if data_text == b"[DONE]":
                        result.done = True
                        return
                    handle_event(json.loads(data_text), result)
                    if result.error:
                        return
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def handle_event(msg, result):
    now = time.perf_counter()
    if "error" in msg:
        result.error = f"error event: {json.dumps(msg['error'])[:300]}"
        return
    for choice in msg.get("choices") or []:
        content = (choice.get("delta") or {}).get("content")
        if content:
            result.chunk_times.append(now)
        if choice.get("finish_reason"):
            result.finish = choice["finish_reason"]
    usage = msg.get("usage")
    if usage and usage.get("completion_tokens") is not None:
        result.tokens = usage["completion_tokens"]


async def client(index, args, prompts, stop_at, results):
    k = 0
    # Every client sends at least one request, however short the duration.
    while k == 0 or time.perf_counter() < stop_at:
        prompt = args.deepest or prompts[(index * 7 + k) % len(prompts)]
        k += 1
        body = {
            "model": args.model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        result = Result(time.perf_counter())
        results.append(result)
        try:
            await one_request(args.url, body, args.headers, result)
        except (OSError, ConnectionError, ValueError, asyncio.IncompleteReadError) as e:
            result.error = f"{type(e).__name__}: {e}"


async def warmup(args):
    body = {
        "model": args.model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
        "max_tokens": 8,
        "temperature": 0,
    }
    result = Result(time.perf_counter())
    await one_request(args.url, body, args.headers, result)
    if result.error or not result.done:
        raise SystemExit(f"loadgen: warm-up request failed: {result.error or 'no [DONE]'}")


async def run(args):
    prompts = make_prompts(args.seed, args.prompts, args.mix)
    args.deepest = deepest_prompt(prompts, args.seed) if args.deepest else None
    if args.warmup:
        await warmup(args)
    results = []
    t0 = time.perf_counter()
    window = (t0 + args.ramp, t0 + args.ramp + args.duration)
    tasks = [asyncio.ensure_future(client(i, args, prompts, window[1], results)) for i in range(args.clients)]
    _, pending = await asyncio.wait(tasks, timeout=args.ramp + args.duration + args.drain)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    t_end = time.perf_counter()
    return summarize(args, results, t0, window, t_end)


def summarize(args, results, t0, window, t_end):
    completed = failed = lost = 0
    window_tokens = 0.0
    all_tokens = completed_tokens = 0
    last_chunk = t0
    ttft, itl, errors = [], [], {}
    # Latencies of the steady state: requests started inside the window
    # (all requests when none did, e.g. when every request outlasts it).
    in_window = [r for r in results if r.start >= window[0]] or results
    for r in in_window:
        if r.chunk_times:
            ttft.append(r.chunk_times[0] - r.start)
            itl.extend(b - a for a, b in zip(r.chunk_times, r.chunk_times[1:]))
    for r in results:
        if r.error:
            failed += 1
            key = r.error[:120]
            errors[key] = errors.get(key, 0) + 1
        elif r.done and r.finish:
            completed += 1
            completed_tokens += r.tokens if r.tokens is not None else len(r.chunk_times)
        else:
            lost += 1
        if r.chunk_times:
            last_chunk = max(last_chunk, r.chunk_times[-1])
            # Without usage (a stream cut short) count one token per chunk.
            tokens = r.tokens if r.tokens is not None else len(r.chunk_times)
            all_tokens += tokens
            per_chunk = tokens / len(r.chunk_times)
            window_tokens += per_chunk * sum(1 for t in r.chunk_times if window[0] <= t <= window[1])
    ms = lambda v: None if v is None else round(v * 1000, 1)
    return {
        "url": args.url,
        "clients": args.clients,
        "duration_s": args.duration,
        "ramp_s": args.ramp,
        "max_tokens": args.max_tokens,
        "seed": args.seed,
        "mix": args.mix,
        "tok_s": round(window_tokens / args.duration, 2),
        "tok_s_whole_run": round(all_tokens / (last_chunk - t0), 2) if last_chunk > t0 else 0.0,
        "latency_requests": len(in_window),
        "requests": len(results),
        "completed": completed,
        "failed": failed,
        "lost": lost,
        "generated_tokens": all_tokens,
        "mean_tokens_per_request": round(completed_tokens / completed, 1) if completed else None,
        "ttft_p50_ms": ms(percentile(ttft, 50)),
        "ttft_p99_ms": ms(percentile(ttft, 99)),
        "itl_p50_ms": ms(percentile(itl, 50)),
        "itl_p99_ms": ms(percentile(itl, 99)),
        "drain_s": round(t_end - window[1], 1),
        "errors": errors,
    }


def served_model(args):
    request = urllib.request.Request(args.url.rstrip("/") + "/v1/models")
    if args.api_key:
        request.add_header("Authorization", f"Bearer {args.api_key}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise SystemExit(f"loadgen: GET /v1/models failed ({e}); pass --model")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (http only)")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--duration", type=float, default=30.0, help="seconds measured, after the ramp")
    p.add_argument("--ramp", type=float, default=0.0,
                   help="seconds of load before the measured window (the first wave's prompts arrive all at once)")
    p.add_argument("--drain", type=float, default=180.0, help="seconds to let running requests finish")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234, help="chooses the prompt set")
    p.add_argument("--prompts", type=int, default=64, help="size of the prompt set")
    p.add_argument("--mix", choices=sorted(NOTES_PER_PROMPT), default="mixed",
                   help="prompt lengths: mixed (about 20, 150 and 450 tokens) or short (about 20)")
    p.add_argument("--model", default=None, help="the request's model field (default: the first of GET /v1/models)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--deepest", action="store_true",
                   help="every request sends one prompt longer than any of the set (to fill each slot's KV cache "
                        "as deep as the set's requests can reach, e.g. before measuring memory)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--label", default="", help="name shown in the readable line")
    p.add_argument("--json", default=None, help="also write the JSON here")
    args = p.parse_args()
    if args.clients < 1 or args.duration <= 0 or args.max_tokens < 1 or args.ramp < 0:
        p.error("--clients, --duration and --max-tokens must be positive, --ramp not negative")
    if not args.url.startswith("http://"):
        p.error("--url must be http://HOST:PORT")
    args.headers = f"Authorization: Bearer {args.api_key}\r\n" if args.api_key else ""
    if args.model is None:
        args.model = served_model(args)
    summary = asyncio.run(run(args))
    summary["label"] = args.label
    text = json.dumps(summary)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(
        f"[loadgen] {args.label or args.url} clients={args.clients}: {summary['tok_s']} tok/s, "
        f"TTFT p50/p99 {summary['ttft_p50_ms']}/{summary['ttft_p99_ms']} ms, "
        f"ITL p50/p99 {summary['itl_p50_ms']}/{summary['itl_p99_ms']} ms, "
        f"{summary['completed']} completed / {summary['failed']} failed / {summary['lost']} lost "
        f"of {summary['requests']}, {summary['mean_tokens_per_request']} tokens/request",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
