#!/usr/bin/env python3
"""What the heap held, by who allocated it: reads a dhat-heap.json (the gateway built with
`--features dhat-heap`) and prints bytes and blocks per owner, divided by N (the streams held),
at the global peak (t-gmax; the gateway stopped with SIGTERM) or, with `--at end`, when the
profile was written (the gateway sent SIGUSR1 while its streams are held: `scripts/memory.py
--dhat-snapshot`), which is the held state itself, the idle heap included.

    python3 scripts/dhat_breakdown.py dhat-heap.json --per 1000 [--at end] [--frames 3]

An allocation's owner is the first frame of its stack, from the allocator up, that names a
crate or module below; `--frames` prints the top allocation sites themselves as well.
"""
import argparse
import json
import re
from collections import defaultdict

# From the most specific: the first that matches a frame of the stack names the owner.
OWNERS = [
    ("streamflight history (items, chunks)", r"streamflight_core::history"),
    ("streamflight machine and driver", r"streamflight_core::"),
    ("gateway simulated model", r"streamflight_gateway::sim"),
    ("gateway reply (SSE body, per client)", r"streamflight_gateway::reply"),
    ("gateway upstream (SSE decoding)", r"streamflight_gateway::(upstream|sse)"),
    ("gateway request path (body, key, registry)", r"streamflight_gateway::"),
    ("tracing", r"tracing"),
    ("reqwest / hyper client", r"(reqwest|hyper_util::client|hyper::client|hyper::proto::h2::client)"),
    ("h2 (HTTP/2 streams and connections)", r"\bh2::"),
    ("hyper server (connection, buffers)", r"(hyper::|hyper_util::)"),
    ("axum / tower", r"(axum|tower)"),
    ("tokio (tasks, timers, I/O)", r"tokio::"),
    ("rustls", r"rustls"),
    ("serde_json", r"serde_json"),
    ("bytes", r"bytes::"),
]


def owner(frames):
    for frame in frames:
        for name, pattern in OWNERS:
            if re.search(pattern, frame):
                return name
    return "other"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--per", type=int, default=1, help="divide by this many streams")
    parser.add_argument("--at", choices=["peak", "end"], default="peak", help="which moment")
    parser.add_argument("--frames", type=int, default=0, help="also print the top N sites")
    args = parser.parse_args()
    with open(args.profile) as f:
        dhat = json.load(f)
    table = dhat["ftbl"]
    totals = defaultdict(lambda: [0, 0])
    sites = []
    for pp in dhat["pps"]:
        gb, gbk = (pp.get("gb", 0), pp.get("gbk", 0)) if args.at == "peak" else (pp.get("eb", 0), pp.get("ebk", 0))
        if gb == 0:
            continue
        frames = [table[i] for i in pp["fs"]]
        # Skip the allocator's own frames.
        frames = [f for f in frames if "alloc::" not in f.split(":", 1)[-1][:40] or "streamflight" in f]
        who = owner(frames)
        totals[who][0] += gb
        totals[who][1] += gbk
        sites.append((gb, gbk, who, frames[:6]))
    total = sum(b for b, _ in totals.values())
    moment = "at its peak" if args.at == "peak" else "when written"
    print(f"heap {moment}: {total} bytes; per stream (/{args.per}):\n")
    print("| owner | bytes per stream | blocks per stream | share |")
    print("|---|---:|---:|---:|")
    for who, (b, k) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"| {who} | {b / args.per:,.0f} | {k / args.per:.1f} | {100 * b / total:.0f}% |")
    print(f"| **total** | **{total / args.per:,.0f}** | | |")
    for gb, gbk, who, frames in sorted(sites, reverse=True)[: args.frames]:
        print(f"\n{gb / args.per:,.0f} B/stream in {gbk / args.per:.1f} blocks ({who}):")
        for frame in frames:
            print("    " + frame[:160])


if __name__ == "__main__":
    main()
