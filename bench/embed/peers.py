#!/usr/bin/env python3
"""Timing of one embedding engine on one text file, for bench/embed/run.sh.

    peers.py st MODEL_DIR TEXTS BATCH THREADS
    peers.py llamacpp URL TEXTS BATCH

`st`: sentence-transformers' `encode` (PyTorch CPU, THREADS intra-op
threads) on the model directory. `llamacpp`: a running `llama-server
--embeddings` at URL, one `/v1/embeddings` request per batch (its slots run
the batch's texts together). Either way every text is embedded once untimed
first, then all texts in batches of BATCH; prints `texts/s` as a JSON line.
"""
import json
import sys
import time
import urllib.request


def batches(texts, size):
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def main():
    kind, model, path, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    texts = [line for line in open(path, encoding="utf-8").read().splitlines() if line.strip()]
    if kind == "st":
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(int(sys.argv[5]))
        st = SentenceTransformer(model, device="cpu")
        st.encode(texts[:1])

        def run(batch):
            st.encode(batch, batch_size=size)

    elif kind == "llamacpp":

        def run(batch):
            body = json.dumps({"input": batch}).encode()
            request = urllib.request.Request(
                f"{model}/v1/embeddings", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request) as response:
                assert len(json.load(response)["data"]) == len(batch)

        run(texts[:1])
    else:
        sys.exit(f"unknown engine {kind}")
    start = time.perf_counter()
    for batch in batches(texts, size):
        run(batch)
    seconds = time.perf_counter() - start
    print(json.dumps({"texts": len(texts), "seconds": seconds, "texts_per_s": len(texts) / seconds}))


if __name__ == "__main__":
    main()
