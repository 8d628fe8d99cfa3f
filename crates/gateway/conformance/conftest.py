"""Fixtures of the conformance suite: llmock and the gateway as real processes.

llmock (an OpenAI-compatible mock nobody here wrote) runs once per session on a
free loopback port; the gateway runs in front of it from the binary that
`STREAMFLIGHT_GATEWAY_BIN` names (default: the debug build). A test that takes
`target` runs twice, `direct` against llmock and `gateway` through the gateway,
with the same assertions: where the gateway must be transparent, llmock is the
reference. `anthropic_target` does the same for Anthropic Messages, with the anthropic
SDK, through a second gateway whose upstream is llmock's Anthropic root
(`/anthropic/v1`). llmock is driven over its `/_llmock` HTTP API (scripted failures,
request journal); its own pytest plugin is disabled in pytest.ini.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable

# Imported here so that a missing package fails the whole run at once, never a skip.
import anthropic  # noqa: F401
import llmock  # noqa: F401
import openai  # noqa: F401
import pytest

from support import CHUNK_DELAY_MS, TPM, AnthropicTarget, SdkTarget, Target, anthropic_through, http, through

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0

CONFORMANCE_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONFORMANCE_DIR.parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ExitedEarly(RuntimeError):
    """The server exited before it was ready (a port taken meanwhile, or a bad flag)."""


def wait_ready(url: str, process: subprocess.Popen, log: Path, what: str) -> None:
    """Poll `url` until it answers 200; fail with the log if the process dies or the deadline passes."""
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ExitedEarly(f"{what} exited with {process.returncode} before it was ready:\n{tail(log)}")
        try:
            status, _, _ = http("GET", url, timeout=1.0)
            if status == 200:
                return
        except (OSError, HTTPException):
            pass
        time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"{what} not ready within {START_DEADLINE_S:.0f} s:\n{tail(log)}")


def start(spawn: Callable[[int], subprocess.Popen], health: str, log: Path, what: str
          ) -> tuple[int, subprocess.Popen]:
    """Start a server on a free port, ready when `health` answers 200. A port picked
    here can be taken before the server binds it: an early exit is retried twice."""
    for attempt in range(3):
        port = free_port()
        process = spawn(port)
        try:
            wait_ready(f"http://127.0.0.1:{port}{health}", process, log, what)
            return port, process
        except ExitedEarly:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it outlives the deadline."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_DEADLINE_S)


# -- llmock -------------------------------------------------------------------


class Llmock:
    """llmock in a subprocess, with its control API at `/_llmock`."""

    def __init__(self, logdir: Path) -> None:
        self.log = logdir / "llmock.log"
        self.port, self.process = start(self._spawn, "/health", self.log, "llmock")

    def _spawn(self, port: int) -> subprocess.Popen:
        # No LLMOCK_* from the caller's environment: every setting is given here.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOCK_")}
        args = [
            sys.executable, "-m", "llmock.cli", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--stream-chunk-delay-ms", str(CHUNK_DELAY_MS), "--tpm", str(TPM),
            "--response-style", "varied", "--tool-mode", "auto",
        ]
        # Its banner goes to stdout; uvicorn's log, tracebacks included, to stderr.
        with open(self.log, "ab") as log:
            return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    @property
    def anthropic_root(self) -> str:
        """Where the anthropic SDK points (it appends `/v1/messages` itself)."""
        return f"{self.root}/anthropic"

    @property
    def anthropic_base_url(self) -> str:
        """llmock's Anthropic API root, `/v1` included: a gateway's `--upstream` for Messages."""
        return f"{self.anthropic_root}/v1"

    def control(self, method: str, path: str, body: Any = None) -> Any:
        status, _, raw = http(method, f"{self.root}/_llmock{path}", body)
        assert 200 <= status < 300, f"llmock {method} {path}: {status} {raw[:300]!r}"
        return json.loads(raw)

    def reset(self) -> None:
        """Forget the journal, queued behaviours and spent quota."""
        self.control("POST", "/reset")

    def forget_requests(self) -> None:
        self.control("DELETE", "/requests")

    def script(self, *behaviors: dict[str, Any]) -> None:
        """Queue behaviours (llmock's JSON form, e.g. {"type": "fail", "status": 429})."""
        self.control("POST", "/scenario", {"behaviors": list(behaviors)})

    def requests(self, path: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """The journal (llmock waits up to 2 s for requests still in flight)."""
        records = self.control("GET", "/requests")["requests"]
        return [r for r in records
                if (path is None or r["path"] == path) and (model is None or r["model"] == model)]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"llmock died with {self.process.returncode}:\n{tail(self.log)}")


# -- the gateway --------------------------------------------------------------


def gateway_binary() -> Path:
    configured = os.environ.get("STREAMFLIGHT_GATEWAY_BIN")
    path = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "streamflight-gateway"
    return path if path.is_absolute() else REPO_ROOT / path


class Gateway:
    """`streamflight-gateway` in a subprocess, in front of llmock (its OpenAI root, or the
    root that `upstream_url` names, e.g. llmock's Anthropic one)."""

    def __init__(self, upstream: Llmock, logdir: Path, name: str, *extra: str,
                 upstream_url: str | None = None) -> None:
        binary = gateway_binary()
        if not os.access(binary, os.X_OK):
            # A failure, not a skip: the suite exists to run the gateway.
            raise RuntimeError(f"gateway binary not found or not executable: {binary} "
                               "(build it: cargo build -p streamflight-gateway, or set STREAMFLIGHT_GATEWAY_BIN)")
        self.log = logdir / f"{name}.log"
        flags = ["--upstream", upstream_url or upstream.base_url, "--log", "warn", *extra]

        def spawn(port: int) -> subprocess.Popen:
            # STREAMFLIGHT_* from the caller could change what is tested: only the flags count.
            env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLIGHT_")}
            with open(self.log, "ab") as log:
                return subprocess.Popen([str(binary), "--listen", f"127.0.0.1:{port}", *flags],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)

        self.port, self.process = start(spawn, "/healthz", self.log, f"gateway {' '.join(flags)}")

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def cancel(self, request_id: str, api_key: str | None) -> tuple[int, bytes]:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        status, _, body = http("DELETE", f"{self.root}/v1/requests/{request_id}", headers=headers)
        return status, body

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the gateway died with {self.process.returncode}:\n{tail(self.log)}")


# Where the servers' logs go; shown at the end of a run that failed.
LOGDIR = Path(tempfile.mkdtemp(prefix="streamflight-conformance-"))


@pytest.fixture(scope="session")
def logdir() -> Path:
    return LOGDIR


@pytest.fixture(scope="session")
def llmock_process(logdir: Path):
    server = Llmock(logdir)
    yield server
    stop(server.process)


@pytest.fixture
def mock(llmock_process: Llmock) -> Llmock:
    """llmock, reset for this test: empty journal, no queued behaviour."""
    llmock_process.check_alive()
    llmock_process.reset()
    return llmock_process


def gateway_fixtures(name: str, log: str, *flags: str, upstream: Callable[[Llmock], str] | None = None,
                     doc: str = "A gateway in front of llmock."):
    """The fixtures of one gateway for the whole session, run with `flags` in front of llmock's
    OpenAI root (or of `upstream` of llmock), its log `log`.log: `{name}_process`, which starts
    it once and stops it at the end, and `{name}`, the same for a test, checked alive, with
    llmock reset (`mock`)."""

    def process(llmock_process: Llmock, logdir: Path):
        url = upstream(llmock_process) if upstream is not None else None
        server = Gateway(llmock_process, logdir, log, *flags, upstream_url=url)
        yield server
        stop(server.process)

    def for_test(request: pytest.FixtureRequest) -> Gateway:
        server: Gateway = request.getfixturevalue(f"{name}_process")
        request.getfixturevalue("mock")
        server.check_alive()
        return server

    process.__doc__ = for_test.__doc__ = doc
    return (pytest.fixture(process, scope="session", name=f"{name}_process"),
            pytest.fixture(for_test, name=name))


gateway_process, gateway = gateway_fixtures("gateway", "gateway")
shared_gateway_process, shared_gateway = gateway_fixtures(
    "shared_gateway", "gateway-shared", "--share-across-tenants", "--upstream-api-key", "sk-conformance-upstream",
    doc="A second gateway, sharing flights across tenants with its own upstream key.")
anthropic_gateway_process, anthropic_gateway = gateway_fixtures(
    "anthropic_gateway", "gateway-anthropic", upstream=lambda llmock: llmock.anthropic_base_url,
    doc="A gateway in front of llmock's Anthropic API (`/anthropic/v1`): Messages clients point at its root, "
        "and their `/v1/messages` goes to llmock's `/anthropic/v1/messages`.")


@pytest.fixture
def spawn_gateway(llmock_process: Llmock, logdir: Path, mock: Llmock):
    """Starts a gateway of the test's own, with extra flags (and `upstream=` another root
    than llmock's OpenAI one); stops it at the test's end."""
    started: list[Gateway] = []

    def spawn(*flags: str, upstream: str | None = None) -> Gateway:
        server = Gateway(llmock_process, logdir, f"gateway-{uuid.uuid4().hex[:8]}", *flags, upstream_url=upstream)
        started.append(server)
        return server

    yield spawn
    for server in started:
        stop(server.process)


def sdk_target_fixtures(prefix: str, kind: type[SdkTarget], llmock_url: Callable[[Llmock], str],
                        gateway_fixture: str, through_gateway: Callable[[Gateway], SdkTarget], api: str):
    """The fixtures of one SDK's targets (`kind`, at `llmock_url` of llmock): `{prefix}target`,
    the same test `direct` against llmock and through the gateway that `gateway_fixture`
    names, and `{prefix}reference`, llmock itself, for the answer the gateway must reproduce."""

    def target(request: pytest.FixtureRequest, mock: Llmock) -> SdkTarget:
        if request.param == "direct":
            return kind("direct", llmock_url(mock))
        return through_gateway(request.getfixturevalue(gateway_fixture))

    def reference(mock: Llmock) -> SdkTarget:
        return kind("reference", llmock_url(mock))

    target.__doc__ = f"The same {api} test against llmock and through the gateway."
    reference.__doc__ = f"llmock's {api} itself, for the answer the gateway must reproduce."
    return (pytest.fixture(target, name=f"{prefix}target", params=["direct", "gateway"]),
            pytest.fixture(reference, name=f"{prefix}reference"))


target, reference = sdk_target_fixtures("", Target, lambda llmock: llmock.base_url, "gateway", through,
                                        "OpenAI API")
anthropic_target, anthropic_reference = sdk_target_fixtures(
    "anthropic_", AnthropicTarget, lambda llmock: llmock.anthropic_root, "anthropic_gateway",
    anthropic_through, "Anthropic Messages")


@pytest.fixture
def tag() -> str:
    """Unique per test: put in prompts and model names, so that no two tests can share a
    flight in the gateway and a scripted behaviour fires only for its own test."""
    return uuid.uuid4().hex[:12]


# -- the end of a run -----------------------------------------------------------


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int) -> None:
    if terminalreporter.stats.get("skipped"):
        terminalreporter.write_line("conformance: a skipped test did not run, so the run fails")
    # A failure through the gateway is often explained by what it logged (warn and above).
    if not (terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")):
        return
    for log in sorted(LOGDIR.glob("*.log")):
        if log.stat().st_size:
            terminalreporter.write_sep("-", f"last lines of {log}")
            terminalreporter.write_line(tail(log, 30))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A skipped test is a test that did not run: the run fails.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
