"""Helpers shared by the tests: what a client saw, reduced to what can be compared."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import openai

# Two tenants: the gateway keys flights (and the right to cancel) by Authorization.
TENANT_A = "sk-conformance-tenant-a"
TENANT_B = "sk-conformance-tenant-b"

HTTP_TIMEOUT_S = 10.0
CLIENT_TIMEOUT_S = 30.0

# llmock's token quota. High enough never to refuse an ordinary request, but it
# makes llmock send `x-ratelimit-*` headers on every answer (checked through the
# gateway), and a request whose max_tokens exceeds it gets a genuine quota 429.
TPM = 1_000_000

# Pacing of every llmock stream, so that events arrive one by one, as from a model.
CHUNK_DELAY_MS = 5

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"

T = TypeVar("T")


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = HTTP_TIMEOUT_S, raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the stdlib (independent of the SDK under test): status,
    lower-cased headers and body, error statuses included. `raw` is a body sent as is."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


@dataclass
class Target:
    """Where a test's SDK clients point: llmock itself, or a gateway in front of it."""

    name: str
    base_url: str

    def client(self, api_key: str = TENANT_A, **options: Any) -> openai.OpenAI:
        # No retries: a test sees the first answer, and the journal counts exactly.
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", CLIENT_TIMEOUT_S)
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, **options)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@dataclass
class Choice:
    content: str = ""
    pieces: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Streamed:
    """A chat stream as the usual SDK loop sees it."""

    choices: dict[int, Choice] = field(default_factory=dict)
    usage: list[Any] = field(default_factory=list)
    chunks: int = 0
    bare: int = 0
    """Chunks without choices: OpenAI's usage chunk is the only one."""
    ids: set[str] = field(default_factory=set)

    def choice(self, index: int = 0) -> Choice:
        return self.choices[index]

    def tool_calls(self, index: int = 0) -> list[dict[str, Any]]:
        calls = self.choices[index].tool_calls
        return [calls[i] for i in sorted(calls)]


def read_stream(stream: Any, into: Streamed | None = None) -> Streamed:
    """Iterate a chat stream to its end, assembling each choice like a client would.

    Fills `into` as it goes, so that a caller whose loop raises still has the part read."""
    seen = into if into is not None else Streamed()
    for chunk in stream:
        seen.chunks += 1
        seen.ids.add(chunk.id)
        if chunk.usage is not None:
            seen.usage.append(chunk.usage)
        if not chunk.choices:
            seen.bare += 1
        for part in chunk.choices:
            choice = seen.choices.setdefault(part.index, Choice())
            delta = part.delta
            if delta.content:
                choice.content += delta.content
                choice.pieces.append(delta.content)
            for call in delta.tool_calls or []:
                # Tool calls arrive in fragments keyed by index: id and name first, then arguments.
                slot = choice.tool_calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            if part.finish_reason is not None:
                choice.finish_reason = part.finish_reason
    return seen


def concurrently(count: int, work: Callable[[int], T], timeout: float = 60.0) -> list[T]:
    """Run `work(i)` for i in 0..count on as many threads, released together, each
    bounded by `timeout`. Re-raises the first failure."""
    gate = threading.Barrier(count, timeout=timeout)

    def run(i: int) -> T:
        gate.wait()
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        return [future.result(timeout=timeout) for future in futures]
