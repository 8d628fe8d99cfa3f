#!/usr/bin/env python3
"""Turns the criterion results of `cargo bench -p streamflight-tokio --bench flights` into
docs/fanout.svg (fan-out throughput against K) and the markdown tables of BENCHMARKS.md.

Usage: python3 scripts/fanout_plot.py [--svg OUT] [CRITERION_DIR ...]
(defaults: docs/fanout.svg, target/criterion). Each figure is criterion's median; given
several result directories (copies of target/criterion from repeated runs), the median of
their medians. Standard library only.
"""

import json
import math
import os
import sys

KS = [1, 16, 256, 4096]
SYSTEMS = [
    ("streamflight", "streamflight (Flights::request)", "#d62728"),
    ("tokio-broadcast", "tokio::sync::broadcast", "#1f77b4"),
    ("async-broadcast", "async-broadcast", "#2ca02c"),
]
MODES = [("fanout-full", "full speed"), ("fanout-paced", "paced (Pending after every item)")]


def load(roots, *path):
    """(median ns per iteration, elements per iteration or None), or None if not measured."""
    got = [one for one in (load_one(root, *path) for root in roots) if one]
    if not got:
        return None
    return median([ns for ns, _ in got]), got[0][1]


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    middle = len(xs) // 2
    return xs[middle] if len(xs) % 2 else (xs[middle - 1] + xs[middle]) / 2


def load_one(root, *path):
    base = os.path.join(root, *path, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            median = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(base, "benchmark.json")) as f:
            throughput = json.load(f).get("throughput") or {}
    except FileNotFoundError:
        return None
    return median, throughput.get("Elements")


def rate(roots, group, system, k):
    """Deliveries per second, in millions."""
    got = load(roots, group, system, str(k))
    if not got or not got[1]:
        return None
    median, elements = got
    return elements / median * 1e3


def fmt(x, digits=1):
    return "—" if x is None else f"{x:.{digits}f}"


def ratio(roots, group, a, b, k):
    """The median over runs of each run's own ratio of a's rate to b's."""
    pairs = [(rate([root], group, a, k), rate([root], group, b, k)) for root in roots]
    return median([x / y for x, y in pairs if x and y])


def svg(roots, out):
    width, height = 980, 452
    panel_w, top, bottom, left = 380, 80, 380, 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="16">'
        "Fan-out through Flights::request: one upstream, K subscribers, each on its own task</text>",
        f'<text x="{width / 2}" y="42" text-anchor="middle" font-size="11" fill="#555">'
        "tokio multi-thread runtime, 2 workers; N = 100,000 small Bytes (6,250 at K = 4096), cloned per "
        "delivery; medians (see BENCHMARKS.md)</text>",
    ]
    rates = {(g, s, k): rate(roots, g, s, k) for g, _ in MODES for s, _, _ in SYSTEMS for k in KS}
    top_rate = max([r for r in rates.values() if r] or [1])
    y_max = max(10, math.ceil(top_rate / 10) * 10)
    for p, (group, title) in enumerate(MODES):
        x0 = left + p * (panel_w + 90)

        def x(k):
            return x0 + KS.index(k) / (len(KS) - 1) * panel_w

        def y(r):
            return bottom - r / y_max * (bottom - top)

        parts.append(f'<text x="{x0 + panel_w / 2}" y="{top - 12}" text-anchor="middle" font-size="14">{title}</text>')
        for tick in range(0, y_max + 1, 10):
            parts.append(f'<line x1="{x0}" x2="{x0 + panel_w}" y1="{y(tick)}" y2="{y(tick)}" stroke="#ddd"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y(tick) + 4}" text-anchor="end">{tick}</text>')
        for k in KS:
            parts.append(f'<text x="{x(k)}" y="{bottom + 18}" text-anchor="middle">{k}</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{bottom + 36}" text-anchor="middle">K (subscribers)</text>')
        parts.append(
            f'<text transform="translate({x0 - 42},{(top + bottom) / 2}) rotate(-90)" text-anchor="middle">'
            "M deliveries/s (median)</text>"
        )
        parts.append(f'<rect x="{x0}" y="{top}" width="{panel_w}" height="{bottom - top}" fill="none" stroke="#888"/>')
        for system, _, color in SYSTEMS:
            points = [(x(k), y(rates[group, system, k])) for k in KS if rates[group, system, k]]
            if len(points) > 1:
                path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"/>')
            for px, py in points:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{color}"/>')
    for i, (_, label, color) in enumerate(SYSTEMS):
        lx = left + i * 260
        parts.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{height - 14}" y2="{height - 14}" stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text x="{lx + 30}" y="{height - 10}">{label}</text>')
    parts.append("</svg>")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


def tables(roots):
    print("| mode | K | N | streamflight | tokio broadcast | async-broadcast | vs tokio | vs async-broadcast |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for group, title in MODES:
        for k in KS:
            sf, tb, ab = (rate(roots, group, s, k) for s, _, _ in SYSTEMS)
            got = load(roots, group, "streamflight", str(k))
            n = f"{got[1] // k:,}" if got and got[1] else "—"
            print(
                f"| {title.split(' (')[0]} | {k} | {n} | {fmt(sf)} | {fmt(tb)} | {fmt(ab)} "
                f"| {fmt(ratio(roots, group, 'streamflight', 'tokio-broadcast', k), 2)}x "
                f"| {fmt(ratio(roots, group, 'streamflight', 'async-broadcast', k), 2)}x |"
            )
    print()
    for group, names in [
        ("request", ["streamflight", "spawn+mpsc"]),
        ("join", ["streamflight", "streamflight-join+drop", "mutex-map+broadcast"]),
    ]:
        print(f"| {group} | ns per op (median) | vs {names[-1]} |")
        print("|---|---:|---:|")
        for name in names:
            got = load(roots, group, name)
            times = [(load_one(root, group, name), load_one(root, group, names[-1])) for root in roots]
            slower = median([x[0] / y[0] for x, y in times if x and y])
            print(f"| {name} | {fmt(got and got[0])} | {fmt(slower, 2)}x |")
        print()
    print("| scale: 100,000 subscribers x 1,000 items | ms (median) | M deliveries/s | streamflight's speed-up |")
    print("|---|---:|---:|---:|")
    for system in ["streamflight", "tokio-broadcast"]:
        got = load(roots, "scale", system, "100000x1000")
        up = ratio(roots, "scale", "streamflight", system, "100000x1000")
        print(
            f"| {system} | {fmt(got and got[0] / 1e6)} | {fmt(rate(roots, 'scale', system, '100000x1000'))} "
            f"| {fmt(up, 2)}x |"
        )


def main():
    args = sys.argv[1:]
    out = "docs/fanout.svg"
    if args[:1] == ["--svg"]:
        out, args = args[1], args[2:]
    roots = args or ["target/criterion"]
    svg(roots, out)
    tables(roots)
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
