"""The official openai SDK's view of latency, for `cargo run --example latency` (BENCHMARKS.md,
"Gateway latency"): sequential streaming chat requests on one client, each timed whole, from
`create()` until the stream's end.

Every request's prompt differs (a counter), so nothing is coalesced. Prints one JSON object on
stdout: {"samples_ms": [...], "errors": n, "first_error": str | null, "content_chunks": n}
(`content_chunks`: the fewest chunks with text seen in one answer, to check that every answer
was whole). Uses only the packages pinned in requirements.txt (the `openai` SDK).

    python latency_sdk.py --base-url http://127.0.0.1:8080/v1 --requests 200 --warmup 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import openai


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the server's base URL, /v1 included")
    parser.add_argument("--requests", type=int, default=200, help="timed requests")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests first")
    parser.add_argument("--tag", default="sdk", help="put in every prompt, so runs never share one")
    args = parser.parse_args()

    # One client, so one keep-alive connection reused request after request; no retries, so a
    # failure shows as one.
    client = openai.OpenAI(base_url=args.base_url, api_key="sk-latency", max_retries=0, timeout=30.0)
    samples_ms: list[float] = []
    errors = 0
    first_error: str | None = None
    fewest_chunks: int | None = None
    for i in range(args.warmup + args.requests):
        messages = [{"role": "user", "content": f"latency {args.tag} {i}"}]
        began = time.perf_counter()
        try:
            stream = client.chat.completions.create(model="bench", messages=messages, stream=True)
            chunks = 0
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    chunks += 1
        except openai.OpenAIError as error:
            errors += 1
            first_error = first_error or f"{type(error).__name__}: {error}"
            continue
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        if i >= args.warmup:
            samples_ms.append(elapsed_ms)
            fewest_chunks = chunks if fewest_chunks is None else min(fewest_chunks, chunks)
    client.close()
    json.dump({"samples_ms": samples_ms, "errors": errors, "first_error": first_error,
               "content_chunks": fewest_chunks}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
