#!/usr/bin/env python3
"""Memory benchmark of streamflight-gateway: resident memory per held stream, and what is kept
after a burst of streams, measured from outside on live gateway processes.

Usage: python3 scripts/memory.py [--binary PATH] [--quick] [--only ROW] [--gateway-args "..."]

Build first: `cargo build --release -p streamflight-gateway` (default binary:
target/release/streamflight-gateway). Standard library only (asyncio, raw HTTP/1.1 over TCP).

Rows (printed as a markdown table, with the command line and each row's raw figures):
  1. N unique streaming requests held open, simulated model: RSS per stream.
  2. The same, proxied: the measured (front) gateway's `--upstream` is a second gateway process
     running the simulated model; only the front one is measured. The front speaks HTTP/2 to it
     (`--upstream-http2`, h2c; with TLS it is negotiated), as to an https:// provider.
  2b. The same over HTTP/1.1, as to an upstream without h2c (vLLM, Ollama): a connection each.
  3. 2N identical requests (one flight), simulated model: RSS per stream.
  4. Rounds of M concurrent unique streams read to `[DONE]` on a fast simulated model, then 10 s
     idle: RSS kept against the idle baseline (the goal: within 2x of it).

Method (rows 1-3): a fresh gateway; 10 warm-up requests to completion and 100 GETs of /metrics;
wait until it is idle (no active request or flight, RSS steady within 64 kB) and read VmRSS from /proc/<pid>/status (baseline);
open the streams at once, each reading until its first `data:` event and then holding its
connection without reading further (the model is slow, one token a second, so the streams stay
open); read VmRSS again from 1 s after the last first event, every 0.25 s, until it has not
fallen for 1.5 s (jemalloc gives the opening burst's freed memory back over 1 s, in steps; at
most 6 s), and take the lowest reading. Per stream = (while - baseline) / N.
KB here is /proc's kB: 1,024 bytes.

`--gateway-args` is appended to every gateway started (both of row 2); a flag given there replaces
the script's own default for that flag (e.g. `--gateway-args "--log info --resume-window 0s"`).
Every phase has a deadline; every gateway started is stopped on every exit path (finally, atexit,
SIGTERM/SIGHUP handlers, and PR_SET_PDEATHSIG should the script itself be killed).

The gateways inherit this script's environment and its RLIMIT_NOFILE (raised to the hard limit),
so e.g. `TOKIO_WORKER_THREADS=8` or `MALLOC_ARENA_MAX=1` in front of the command applies to them.
A full run takes about 30-40 s on two cores, `--quick` about 20 s (row 4 idles 10 s either way).
"""

import argparse
import asyncio
import atexit
import ctypes
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

PHASE_TIMEOUT = 60.0  # seconds allowed for any one phase (start, warm-up, opening N streams, a round)
HOST = "127.0.0.1"
WARMUP_REQUESTS = 10
WARMUP_SCRAPES = 100  # GET /metrics after the warm-up requests, before the baseline
IDLE_RSS_KB = 64  # how far RSS may move between two polls of an idle gateway (wait_idle)
IDLE_SECONDS = 10.0  # row 4: idle time before the "kept" reading
SETTLE_SECONDS = 1.0  # rows 1-3: wait after the last first event before reading VmRSS ...
SETTLE_STILL_SECONDS = 1.5  # ... then until it has not fallen for this long ...
SETTLE_MAX_SECONDS = 6.0  # ... or this long in all (the burst's freed memory given back)

# Slow model for held streams: first event after 100 ms, then one token a second for 10 minutes,
# so no stream ends during a measurement, however loaded the machine is (the simulated model is
# lazy: the token count costs nothing up front).
SLOW_SIM = [
    ("--sim-token-interval", "1s"),
    ("--sim-tokens", "600"),
    ("--sim-first-token-delay", "100ms"),
]
# Fast model for row 4: each stream ends ~0.3 s after it starts.
FAST_SIM = [
    ("--sim-token-interval", "5ms"),
    ("--sim-tokens", "40"),
    ("--sim-first-token-delay", "100ms"),
]


class BenchError(Exception):
    """A phase failed or ran out of time: reported as one clear line, no traceback."""


def log(message):
    """Progress goes to stderr, so stdout is the table alone."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_status(pid):
    """The kB fields of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, ...) as ints, plus Threads."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0])
            elif name == "Threads":
                fields[name] = int(parts[0])
    return fields


def cpu_ticks(pid):
    """utime + stime of the process (clock ticks): unchanged over a pause means it is idle."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its closing parenthesis.
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


# ---------------------------------------------------------------------------------------------
# Gateway processes

LIVE = []  # every gateway started and not yet stopped, for the atexit / signal clean-up


def free_port():
    """A port free right now: the kernel picks it, we pass it on with --listen."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def die_with_parent():
    """Runs in the child before exec: the kernel kills the gateway if this script dies, even by
    SIGKILL (no finally or atexit runs then)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def merge_args(defaults, extra):
    """The script's (flag, value) defaults (value None: a switch), less those whose flag `extra`
    gives, then `extra`: clap refuses a flag given twice, and the reader's choice should win."""
    given = {token.split("=", 1)[0] for token in extra if token.startswith("--")}
    merged = []
    for flag, value in defaults:
        if flag not in given:
            merged += [flag] if value is None else [flag, value]
    return merged + list(extra)


class Gateway:
    """One streamflight-gateway process on a free 127.0.0.1 port, its output in a log file."""

    def __init__(self, binary, name, args, logdir):
        self.name = name
        self.port = free_port()
        self.log_path = os.path.join(logdir, f"{name}-{self.port}.log")
        self.argv = [binary, "--listen", f"{HOST}:{self.port}", *args]
        self.log_file = open(self.log_path, "wb")
        log(f"starting {name}: {shlex.join(self.argv)}")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        LIVE.append(self)
        self.pid = self.proc.pid

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited with code {self.proc.returncode}; the end of its output:\n"
                + self.log_tail()
            )

    def status(self):
        self.check_alive()
        return proc_status(self.pid)

    def rss(self):
        return self.status()["VmRSS"]

    async def wait_ready(self):
        """Until GET /healthz answers 200."""
        deadline = time.monotonic() + PHASE_TIMEOUT
        while True:
            self.check_alive()
            try:
                status, _ = await asyncio.wait_for(http_get(self.port, "/healthz"), 2)
                if status == 200:
                    return
            except (OSError, EOFError, ValueError, asyncio.TimeoutError, BenchError):  # not up yet
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer GET /healthz within {PHASE_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)

    async def metrics(self):
        """The gateway's /metrics as {name without prefix: int}."""
        status, body = await asyncio.wait_for(http_get(self.port, "/metrics"), 10)
        if status != 200:
            raise BenchError(f"{self.name}: GET /metrics answered {status}")
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name.removeprefix("streamflight_")] = int(float(value))
        return values

    async def wait_idle(self):
        """Until no request or flight is active and, over 0.5 s, RSS moves by at most
        IDLE_RSS_KB and CPU time by at most one tick: the baseline is read then.

        Not "holds still": each of these polls moves an idle gateway's RSS by some 20 kB (its
        /metrics answer's allocations, on whichever pages jemalloc takes them), and the poll
        itself, the connection threads' one-second timers and jemalloc's background thread
        cross a clock tick now and then; waiting for neither to move failed one run in four."""
        deadline = time.monotonic() + PHASE_TIMEOUT
        previous = None
        while True:
            m = await self.metrics()
            now = (self.rss(), cpu_ticks(self.pid))
            busy = any(m.get(gauge) for gauge in ("active_requests", "active_flights", "in_flight_requests"))
            still = previous is not None and abs(now[0] - previous[0]) <= IDLE_RSS_KB and now[1] - previous[1] <= 1
            if not busy and still:
                return
            previous = None if busy else now
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not become idle within {PHASE_TIMEOUT:.0f} s ({m})")
            await asyncio.sleep(0.5)

    def stop(self):
        """SIGTERM (open streams are closed by then, so it exits at once), SIGKILL if it does not."""
        if self in LIVE:
            LIVE.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log(f"{self.name} still running 10 s after SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def stop_all():
    for gateway in list(LIVE):
        try:
            gateway.stop()
        except Exception:
            gateway.proc.kill()


atexit.register(stop_all)


def exit_on_signal(signum, _frame):
    # SIGTERM/SIGHUP would otherwise end Python without finally or atexit: turn them into an exit.
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client


async def read_head(reader):
    """(status, {lowercase header: value}) of a response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


class Body:
    """The body of a response, chunked or with a length, read piece by piece."""

    def __init__(self, reader, headers):
        self.reader = reader
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.left = int(headers.get("content-length", "0")) if not self.chunked else 0
        self.ended = False

    async def read(self):
        """The next bytes of the body; b"" at its end."""
        if self.ended:
            return b""
        if not self.chunked:
            if self.left == 0:
                self.ended = True
                return b""
            data = await self.reader.read(min(self.left, 65536))
            if not data:
                raise BenchError("connection closed before the end of the body")
            self.left -= len(data)
            return data
        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await self.reader.readuntil(b"\r\n")  # no trailers expected: the final CRLF
            self.ended = True
            return b""
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def read_all(self):
        parts = []
        while data := await self.read():
            parts.append(data)
        return b"".join(parts)


class Events:
    """The SSE events of a body: each `next()` is one event's `data:` text (None for an event
    without data), or raises at the body's end."""

    def __init__(self, body):
        self.body = body
        self.buffer = b""

    async def next(self):
        while b"\n\n" not in self.buffer:
            data = await self.body.read()
            if not data:
                raise BenchError("the stream ended without [DONE]")
            self.buffer += data.replace(b"\r\n", b"\n")
        event, self.buffer = self.buffer.split(b"\n\n", 1)
        data = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
        return b"\n".join(data).decode() if data else None


async def http_get(port, path):
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        status, headers = await read_head(reader)
        return status, await Body(reader, headers).read_all()
    finally:
        writer.close()


def chat_body(content, max_tokens=None):
    # Written by hand (no json module needed): `content` holds only [a-z0-9 -].
    extra = f',"max_tokens":{max_tokens}' if max_tokens else ""
    message = '{"role":"user","content":"' + content + '"}'
    return ('{"model":"m","messages":[' + message + '],"stream":true' + extra + "}").encode()


def chat_request(port, body):
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body


async def start_stream(port, body, opened):
    """Sends one streaming request; returns (reader, writer, events) once the 200 head is read.
    The writer goes into `opened` at once, so whoever called can close it whatever happens."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
    opened.append(writer)
    writer.write(chat_request(port, body))
    status, headers = await read_head(reader)
    body_reader = Body(reader, headers)
    if status != 200:
        text = (await body_reader.read_all())[:300].decode(errors="replace")
        raise BenchError(f"a stream got HTTP {status}: {text}")
    return reader, writer, Events(body_reader)


async def first_event_then_hold(port, body, opened):
    """Reads until the first `data:` event, then stops reading: the connection stays open and
    the gateway keeps the stream, with no reader draining it."""
    _, writer, events = await start_stream(port, body, opened)
    while await events.next() is None:
        pass
    writer.transport.pause_reading()  # nothing more read from the socket, not even into a buffer


async def read_to_done(port, body, opened):
    """A whole stream: every event until `data: [DONE]`, then the connection is closed."""
    _, writer, events = await start_stream(port, body, opened)
    while (await events.next()) != "[DONE]":
        pass
    writer.close()


async def close_all(writers):
    for writer in writers:
        writer.transport.abort()  # at once: nobody will read what is still queued either side
    writers.clear()
    await asyncio.sleep(0)


async def run_all(label, coroutines, opened):
    """Runs the coroutines at once, within PHASE_TIMEOUT; the first failure fails the phase."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, pending = await asyncio.wait(
            tasks, timeout=PHASE_TIMEOUT, return_when=asyncio.FIRST_EXCEPTION
        )
        for task in done:
            if task.exception():
                error = task.exception()
                raise BenchError(f"{label}: {type(error).__name__}: {error}") from None
        if pending:
            raise BenchError(
                f"{label}: {len(pending)} of {len(tasks)} not done within {PHASE_TIMEOUT:.0f} s"
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Measurements


async def warm_up_and_baseline(gateway):
    """10 requests to completion (cut to 2 tokens: the slow model would take minutes), then the
    idle baseline: threads started, buffers and the allocator warmed, as in a serving gateway."""
    opened = []
    try:
        await run_all(
            f"{gateway.name} warm-up",
            (
                read_to_done(gateway.port, chat_body(f"warm up {i}", max_tokens=2), opened)
                for i in range(WARMUP_REQUESTS)
            ),
            opened,
        )
    finally:
        await close_all(opened)
    # The scrapes a serving gateway answers, which leave the allocator's pages as they will be
    # (each first answer moves RSS by some 20 kB, for tens of them): without these, the polls of
    # `wait_idle` move the baseline by up to 1 MB (a KB a stream at N = 1,000), as they go.
    for _ in range(WARMUP_SCRAPES):
        await gateway.metrics()
    await gateway.wait_idle()
    return gateway.status()


async def settled(gateway):
    """The gateway's status once its RSS has stopped falling: read every 0.25 s from SETTLE_SECONDS
    after the streams are open until it has not fallen for SETTLE_STILL_SECONDS (at most
    SETTLE_MAX_SECONDS); the lowest reading. The gateway's jemalloc gives freed pages back at
    once; with a decay (`--binary` of another build, or `_RJEM_MALLOC_CONF`) they go back over
    it, in steps, and this waits for that, so the reading is what the held streams hold."""
    await asyncio.sleep(SETTLE_SECONDS)
    lowest = gateway.status()
    fell = time.monotonic()
    deadline = fell + SETTLE_MAX_SECONDS - SETTLE_SECONDS
    while time.monotonic() < deadline and time.monotonic() - fell < SETTLE_STILL_SECONDS:
        await asyncio.sleep(0.25)
        now = gateway.status()
        if now["VmRSS"] < lowest["VmRSS"]:
            lowest, fell = now, time.monotonic()
    return lowest


async def held_streams(gateway, n, unique, upstream=None, snapshot=False):
    """Rows 1-3: RSS of `gateway` with n streams held, against its idle baseline. `upstream`:
    row 2's upstream gateway, whose RSS is noted alongside (not counted). `snapshot`: send the
    gateway SIGUSR1 while the streams are held (a `dhat-heap` build writes its profile then)."""
    base = await warm_up_and_baseline(gateway)
    before = await gateway.metrics()
    kind = "unique" if unique else "identical"
    log(f"{gateway.name}: baseline VmRSS {base['VmRSS']} kB; opening {n} {kind} streams")
    opened = []
    try:
        started = time.monotonic()
        await run_all(
            f"opening {n} streams",
            (
                first_event_then_hold(gateway.port, chat_body(f"memory client {i if unique else 0}"), opened)
                for i in range(n)
            ),
            opened,
        )
        opening = time.monotonic() - started
        held = await settled(gateway)
        after = await gateway.metrics()
        upstream_rss = upstream.rss() if upstream else None
        if snapshot:
            gateway.proc.send_signal(signal.SIGUSR1)
            await asyncio.sleep(SETTLE_SECONDS)
    finally:
        await close_all(opened)
    # The figures mean something only if every stream was still open and coalesced as asked.
    active = after["active_requests"] - before["active_requests"]
    if active != n:
        raise BenchError(f"expected {n} active requests while held, /metrics says {active}")
    flights = after["flights_total"] - before["flights_total"]
    if flights != (n if unique else 1):
        raise BenchError(f"expected {n if unique else 1} flight(s) for {n} streams, /metrics counted {flights}")
    return {
        "n": n,
        "base": base,
        "held": held,
        "flights": flights,
        "opening_s": opening,
        "upstream_rss": upstream_rss,
        "per_stream_kb": (held["VmRSS"] - base["VmRSS"]) / n,
    }


async def sample_peak(gateway, peak):
    """Row 4: VmRSS every 0.2 s, the highest kept in peak["rss"] (VmHWM is read as well)."""
    while True:
        try:
            peak["rss"] = max(peak["rss"], gateway.rss())
        except (OSError, BenchError):
            return
        await asyncio.sleep(0.2)


async def rounds_then_idle(gateway, streams, rounds, snapshot=False):
    """Row 4: rounds of concurrent unique streams read to [DONE], then idle; RSS kept."""
    base = await warm_up_and_baseline(gateway)
    before = await gateway.metrics()
    log(f"{gateway.name}: baseline VmRSS {base['VmRSS']} kB; {rounds} rounds of {streams} streams")
    peak = {"rss": base["VmRSS"]}
    sampler = asyncio.ensure_future(sample_peak(gateway, peak))
    after_rounds = []
    started = time.monotonic()
    try:
        for r in range(rounds):
            opened = []
            round_start = time.monotonic()
            try:
                await run_all(
                    f"round {r + 1}",
                    (
                        read_to_done(gateway.port, chat_body(f"memory round {r} client {i}"), opened)
                        for i in range(streams)
                    ),
                    opened,
                )
            finally:
                await close_all(opened)
            after_rounds.append(gateway.rss())
            took = time.monotonic() - round_start
            log(f"round {r + 1}/{rounds}: {streams} streams in {took:.1f} s, VmRSS {after_rounds[-1]} kB")
    finally:
        sampler.cancel()
    rounds_s = time.monotonic() - started
    flights = (await gateway.metrics())["flights_total"] - before["flights_total"]
    if flights != streams * rounds:
        raise BenchError(f"expected {streams * rounds} flights, /metrics counted {flights}")
    log(f"idle {IDLE_SECONDS:.0f} s")
    await asyncio.sleep(IDLE_SECONDS)
    kept = gateway.status()
    if snapshot:
        gateway.proc.send_signal(signal.SIGUSR1)
        await asyncio.sleep(SETTLE_SECONDS)
    return {
        "base": base,
        "kept": kept,
        "peak": max(peak["rss"], kept["VmRSS"], kept["VmHWM"]),
        "after_rounds": after_rounds,
        "rounds_s": rounds_s,
        "active_after_idle": (await gateway.metrics())["active_requests"],
        "streams": streams,
        "rounds": rounds,
    }


# ---------------------------------------------------------------------------------------------
# The rows


def gateway_args(sim, n, extra):
    """`sim` and the defaults every gateway gets, then `extra` (which wins)."""
    defaults = sim + [
        ("--max-concurrent-requests", str(max(4 * n, 10000))),  # admission must refuse none of ours
        ("--log", "warn"),  # info writes a line per request: not what is measured
        ("--shutdown-grace", "2s"),  # the streams are closed before SIGTERM anyway
    ]
    return merge_args(defaults, extra)


async def row_held(opts, name, n, unique):
    gateway = Gateway(opts.binary, name, gateway_args(SLOW_SIM, n, opts.extra), opts.logdir)
    try:
        await gateway.wait_ready()
        return await held_streams(gateway, n, unique, snapshot=opts.dhat_snapshot)
    finally:
        gateway.stop()


async def row_proxied(opts, n, http2):
    upstream = Gateway(opts.upstream_binary or opts.binary, "upstream", gateway_args(SLOW_SIM, n, opts.extra), opts.logdir)
    front = None
    try:
        await upstream.wait_ready()
        to_upstream = [("--upstream", f"http://{HOST}:{upstream.port}/v1")]
        if http2:
            to_upstream.append(("--upstream-http2", None))
        front = Gateway(opts.binary, "front", gateway_args(to_upstream, n, opts.extra), opts.logdir)
        await front.wait_ready()
        return await held_streams(front, n, True, upstream=upstream, snapshot=opts.dhat_snapshot)
    finally:
        if front:
            front.stop()
        upstream.stop()


async def row_rounds(opts, streams, rounds):
    gateway = Gateway(opts.binary, "fast", gateway_args(FAST_SIM, streams, opts.extra), opts.logdir)
    try:
        await gateway.wait_ready()
        return await rounds_then_idle(gateway, streams, rounds, snapshot=opts.dhat_snapshot)
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------
# Report


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def raw_figures(row, r):
    """One line of the figures a row's result comes from."""
    b = r["base"]
    if row != "4":
        h = r["held"]
        text = (
            f"baseline VmRSS {b['VmRSS']:,} kB (RssAnon {b['RssAnon']:,}), "
            f"while held {h['VmRSS']:,} kB (RssAnon {h['RssAnon']:,}, threads {h['Threads']}), "
            f"N {r['n']:,}, flights {r['flights']:,}, all open after {r['opening_s']:.1f} s"
        )
        if r["upstream_rss"] is not None:
            text += f"; the upstream gateway (not counted) {r['upstream_rss']:,} kB while held"
        return text
    k = r["kept"]
    return (
        f"baseline VmRSS {b['VmRSS']:,} kB (RssAnon {b['RssAnon']:,}), peak {r['peak']:,} kB "
        f"(VmHWM {k['VmHWM']:,}), after each round {', '.join(f'{x:,}' for x in r['after_rounds'])} kB, "
        f"kept after {IDLE_SECONDS:.0f} s idle {k['VmRSS']:,} kB (RssAnon {k['RssAnon']:,}, "
        f"threads {k['Threads']}); {r['streams']:,} streams x {r['rounds']} rounds in {r['rounds_s']:.1f} s, "
        f"active requests after idle {r['active_after_idle']}"
    )


def print_table(opts, results):
    print(f"Command: `{shlex.join(['python3', *sys.argv])}`")
    line = f"Binary: `{opts.binary}`"
    if opts.extra:
        line += f", gateway args: `{shlex.join(opts.extra)}`"
    print(line)
    print()
    print("| streams held | RSS per stream |")
    print("|---|---|")
    for row, title, r in results:
        if row != "4":
            print(f"| {title} | {r['per_stream_kb']:.1f} KB |")
        else:
            base, kept = r["base"]["VmRSS"], r["kept"]["VmRSS"]
            print(
                f"| {title} | kept {mb(kept)} vs idle baseline {mb(base)}: {kept / base:.1f}x "
                f"(peak {mb(r['peak'])}; goal: within 2x) |"
            )
    print()
    print("Raw figures (VmRSS, RssAnon, VmHWM from /proc/<pid>/status; kB and KB = 1,024 bytes):")
    print()
    for row, _, r in results:
        print(f"{row}. {raw_figures(row, r)}")


# ---------------------------------------------------------------------------------------------
# Main


def raise_nofile(needed):
    """Lifts the soft RLIMIT_NOFILE to the hard one (the gateways inherit it), checks `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        raise BenchError(
            f"RLIMIT_NOFILE is {soft} (hard limit {hard}) but this run needs about {needed} file "
            "descriptors in one process: raise the hard limit (ulimit -Hn as root, limits.conf, the "
            "container's nofile) or use --quick"
        )


async def main(opts):
    held_n = 200 if opts.quick else 1000
    rounds_n, rounds = (400, 2) if opts.quick else (2000, 7)
    rows = [
        ("1", f"{held_n:,} unique requests, simulated model", lambda: row_held(opts, "sim", held_n, True)),
        (
            "2",
            f"{held_n:,} unique requests, proxied to an upstream over HTTP/2",
            lambda: row_proxied(opts, held_n, True),
        ),
        (
            "2b",
            f"{held_n:,} unique requests, proxied to an upstream over HTTP/1.1",
            lambda: row_proxied(opts, held_n, False),
        ),
        (
            "3",
            f"{2 * held_n:,} identical requests (one flight), simulated model",
            lambda: row_held(opts, "sim-same", 2 * held_n, False),
        ),
        (
            "4",
            f"{rounds_n:,} unique streams, {rounds} rounds, then idle {IDLE_SECONDS:.0f} s",
            lambda: row_rounds(opts, rounds_n, rounds),
        ),
    ]
    # The widest process: row 2's front gateway (a client and an upstream socket per stream), row
    # 3's gateway or this script (2N sockets), or row 4's; plus room for everything else.
    raise_nofile(max(2 * held_n, rounds_n) + 256)
    results = []
    started = time.monotonic()
    for row, title, run in rows:
        if opts.only and row != opts.only:
            continue
        log(f"row {row}: {title}")
        row_start = time.monotonic()
        results.append((row, title, await run()))
        log(f"row {row} done in {time.monotonic() - row_start:.0f} s")
    log(f"all done in {time.monotonic() - started:.0f} s")
    print_table(opts, results)


def parse_args():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--binary",
        default=os.path.join(root, "target", "release", "streamflight-gateway"),
        help="the gateway binary (default: target/release/streamflight-gateway)",
    )
    parser.add_argument(
        "--upstream-binary",
        help="row 2's upstream gateway, if not --binary (e.g. to profile the front alone)",
    )
    parser.add_argument("--quick", action="store_true", help="small N (200/400 streams, 2 rounds)")
    parser.add_argument(
        "--dhat-snapshot",
        action="store_true",
        help="send the measured gateway SIGUSR1 while its streams are held (row 4: after the idle): a build with "
        "--features dhat-heap writes dhat-heap.json then (see scripts/dhat_breakdown.py --at end)",
    )
    parser.add_argument("--only", choices=["1", "2", "2b", "3", "4"], help="run this row alone")
    parser.add_argument(
        "--gateway-args",
        default="",
        help='flags appended to every gateway started, e.g. "--resume-window 0s"',
    )
    # argparse would take a value starting with "--" (--gateway-args "--log info") for an option
    # of its own: glue it to its flag.
    argv = sys.argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "--gateway-args":
            argv[i : i + 2] = [f"--gateway-args={argv[i + 1]}"]
            break
    opts = parser.parse_args(argv)
    opts.extra = shlex.split(opts.gateway_args)
    if not os.access(opts.binary, os.X_OK):
        parser.error(f"{opts.binary} is not executable; build it: cargo build --release -p streamflight-gateway")
    return opts


if __name__ == "__main__":
    options = parse_args()
    signal.signal(signal.SIGTERM, exit_on_signal)
    signal.signal(signal.SIGHUP, exit_on_signal)
    with tempfile.TemporaryDirectory(prefix="streamflight-memory-") as options.logdir:
        try:
            asyncio.run(main(options))
        except BenchError as error:
            print(f"memory.py: {error}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("memory.py: interrupted", file=sys.stderr)
            sys.exit(130)
        finally:
            stop_all()
