"""Helpers shared by the tests: what a client saw, reduced to what can be compared."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generic, Iterable, Iterator, TypeVar

import anthropic
import httpx
import openai
import pytest

if TYPE_CHECKING:
    # conftest imports this module: its classes only name types here.
    from conftest import Gateway, Llmock

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

# Long enough for every client of a test to have joined before the first token.
OVERLAP_S = 1.5
# A pause in the middle of an upstream stream: the flight is live while a test acts in it.
STALL_S = 1.5
# How long a test waits for the gateway to notice that a client hung up (the next write).
DETACH_DEADLINE_S = 5.0

# The anthropic-version header this suite's raw requests send.
ANTHROPIC_VERSION = "2023-06-01"

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
RESPONSES = "/v1/responses"
# Anthropic Messages, as llmock's journal names it (the gateway's client-side path is /v1/messages).
MESSAGES = "/anthropic/v1/messages"

# The JSON schema of the weather tool's arguments, the same in every API's tool definition.
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city", "days"],
}

# Tool arguments for llmock to send as scripted: long enough to be streamed in several
# fragments (llmock cuts arguments every 12 characters), with escapes, non-ASCII, nesting
# and an integer beyond 64 bits, which a careless merge breaks.
SCRIPTED_ARGUMENTS = {
    "city": "Zürich",
    "note": 'a "quoted" word, a back\\slash and a newline\n',
    "when": {"days": [1, 2, 3], "from": "2030-01-01T00:00:00Z"},
    "big": 12345678901234567890123,
}

# The tool calls llmock is scripted to answer with (`script_tool_calls`): (name, arguments).
SCRIPTED_CALLS = [("get_weather", SCRIPTED_ARGUMENTS), ("get_weather", {"city": "Paris", "days": 2})]
# The same as llmock sends them: the arguments as it serialises them (json.dumps).
SCRIPTED_CALLS_SENT = [(name, json.dumps(arguments)) for name, arguments in SCRIPTED_CALLS]

STREAM_MODES = pytest.mark.parametrize("stream", [False, True], ids=["collected", "streamed"])

# The body of llmock's 429 (`script_429`) to an OpenAI API request.
OPENAI_RATE_LIMITED = {"message": "Rate limit exceeded.", "type": "rate_limit_error",
                       "param": None, "code": "rate_limit_exceeded"}

T = TypeVar("T")
Client = TypeVar("Client", openai.OpenAI, anthropic.Anthropic)


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
class SdkTarget(Generic[Client]):
    """Where a test's SDK clients point: llmock itself, or a gateway in front of it."""

    name: str
    base_url: str
    sdk: ClassVar[Callable[..., Any]]

    def client(self, api_key: str = TENANT_A, **options: Any) -> Client:
        # No retries: a test sees the first answer, and the journal counts exactly.
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", CLIENT_TIMEOUT_S)
        return self.sdk(base_url=self.base_url, api_key=api_key, **options)


class Target(SdkTarget[openai.OpenAI]):
    """The openai SDK's: llmock's `/v1`, or a gateway's."""

    sdk = openai.OpenAI


class AnthropicTarget(SdkTarget[anthropic.Anthropic]):
    """The anthropic SDK's: llmock's Anthropic root (`/anthropic`), or a gateway's root; the
    SDK appends `/v1/messages` itself."""

    sdk = anthropic.Anthropic


def through(gateway: Gateway) -> Target:
    """The openai SDK through `gateway`."""
    return Target("gateway", gateway.base_url)


def anthropic_through(gateway: Gateway) -> AnthropicTarget:
    """The anthropic SDK through `gateway`."""
    return AnthropicTarget("gateway", gateway.root)


def auth(api_key: str = TENANT_A) -> dict[str, str]:
    """The credential header an openai client sends."""
    return {"authorization": f"Bearer {api_key}"}


def anthropic_auth(api_key: str = TENANT_A) -> dict[str, str]:
    """The headers the anthropic SDK sends that matter here: its credential and API version."""
    return {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}


def strip_ids(value: Any) -> Any:
    """`value` (a model_dump) without what differs between two answers to one request: ids
    (of the answer, its items, its tool calls) and creation times."""
    if isinstance(value, dict):
        return {k: strip_ids(v) for k, v in value.items()
                if k not in ("id", "call_id", "item_id", "created_at")}
    if isinstance(value, list):
        return [strip_ids(v) for v in value]
    return value


# -- raw SSE, read without an SDK ---------------------------------------------


@dataclass
class SseEvent:
    """One server-sent event as sent: its own `id:` (None when it had none), `event:` and data."""

    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """The events of an SSE body given line by line (comments skipped). Unlike a browser,
    which keeps the last id, each event carries only the `id:` it was sent with."""
    ident: str | None = None
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(ident, name, "\n".join(data))
            ident, name, data = None, None, []
            continue
        if line.startswith(":"):
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "data":
            data.append(value)
        elif field_name == "event":
            name = value
        elif field_name == "id":
            ident = value


class SseReader:
    """An SSE response read event by event with httpx (no SDK in the way), which can be
    closed mid-stream like a client that lost its connection."""

    def __init__(self, method: str, url: str, headers: dict[str, str], body: Any = None,
                 timeout: float = CLIENT_TIMEOUT_S) -> None:
        self._client = httpx.Client(timeout=timeout)
        try:
            request = self._client.build_request(method, url, headers=headers, json=body)
            self.response = self._client.send(request, stream=True)
        except BaseException:
            self._client.close()
            raise
        self.status = self.response.status_code
        self.headers = self.response.headers
        self._events = parse_sse(self.response.iter_lines())

    def take(self, count: int, skip: tuple[str, ...] = ()) -> list[SseEvent]:
        """The next events up to `count` of them not named in `skip` (those are returned too)."""
        taken: list[SseEvent] = []
        kept = 0
        while kept < count:
            event = next(self._events)
            taken.append(event)
            if event.event not in skip:
                kept += 1
        return taken

    def rest(self) -> list[SseEvent]:
        """Every event to the end of the body."""
        return list(self._events)

    def body(self) -> bytes:
        return self.response.read()

    def close(self) -> None:
        self.response.close()
        self._client.close()

    def __enter__(self) -> "SseReader":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def resume(gateway: Gateway, request_id: str, last_event_id: str | None,
           credentials: dict[str, str]) -> SseReader:
    """GET /v1/requests/{id}/events after `last_event_id`, with `credentials` (the headers of
    the client that asked); retried while the gateway has not yet noticed that the client's
    connection is gone (409), which it can only learn from TCP."""
    deadline = time.monotonic() + DETACH_DEADLINE_S
    headers = {**credentials, "last-event-id": last_event_id or ""}
    while True:
        reader = SseReader("GET", f"{gateway.root}/v1/requests/{request_id}/events", headers)
        if reader.status == 200:
            return reader
        body = reader.body()
        reader.close()
        assert reader.status == 409 and time.monotonic() < deadline, (reader.status, body)
        time.sleep(0.05)


def check_ids(events: list[SseEvent]) -> None:
    """Every event has an `id:` of its own."""
    ids = [e.id for e in events]
    assert all(ids), f"an event without an id: line: {ids}"
    assert len(set(ids)) == len(ids), f"an id repeated: {ids}"


def cut_and_resume(gateway: Gateway, url: str, credentials: dict[str, str], body: Any,
                   skip: tuple[str, ...] = ()) -> tuple[list[SseEvent], list[SseEvent], list[SseEvent]]:
    """A client POSTs `body` (a streamed request) to the gateway's `url` and hangs up after 3
    events; then, of the same flight, a second client reads it whole while the first resumes
    (GET /v1/requests/{id}/events with the id of the last event it read). Returns the events
    the first client read before and after, and the whole stream, events named in `skip`
    (keep-alives, never stored) left out; checked: each event has an id of its own, and
    before and after add up to the whole."""

    def kept(events: list[SseEvent]) -> list[SseEvent]:
        return [e for e in events if e.event not in skip]

    with SseReader("POST", url, credentials, body) as cut:
        assert cut.status == 200, cut.body()
        request_id = cut.headers.get("x-request-id")
        assert request_id and REQUEST_ID.match(request_id), request_id
        before = kept(cut.take(3, skip=skip))
    # A second client of the same flight reads it whole: what the first should hold in the end.
    with SseReader("POST", url, credentials, body) as whole, \
            resume(gateway, request_id, before[-1].id, credentials) as resumed:
        assert whole.status == 200
        assert resumed.headers.get("x-request-id") == request_id
        after = kept(resumed.rest())
        everything = kept(whole.rest())
    check_ids(before + after)
    check_ids(everything)
    assert [(e.event, e.data) for e in before + after] == [(e.event, e.data) for e in everything]
    return before, after, everything


# -- streams of typed events, scripted answers, flights ---------------------------


E = TypeVar("E", bound="SdkEvents")


@dataclass
class SdkEvents:
    """A stream of typed events (Responses, Messages) as the usual loop sees it, each event as
    the SDK gave it."""

    events: list[Any] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    @property
    def pieces(self) -> list[str]:
        """The text deltas, in order."""
        raise NotImplementedError

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def dump(self) -> list[dict[str, Any]]:
        return [e.model_dump() for e in self.events]

    def read(self: E, stream: Iterable[Any]) -> E:
        """Iterate `stream` to its end, keeping the events as they come, so that a caller whose
        loop raises still has the part read."""
        for event in stream:
            self.events.append(event)
        return self


def slow_first_token(mock: Llmock, model: str) -> None:
    """llmock holds back the first token of `model`'s next answer for `OVERLAP_S`, so that
    the clients of a test overlap."""
    mock.script({"type": "slow_first_token", "seconds": OVERLAP_S, "match": {"model": model}})


def prepare_herd(mock: Llmock, model: str) -> None:
    """From here on: an empty journal, and `model`'s next answer held back before its first
    token (`slow_first_token`), so that the clients a test starts now join one flight."""
    mock.forget_requests()
    slow_first_token(mock, model)


def check_one_streamed_upstream_request(mock: Llmock, path: str, model: str, what: str) -> None:
    """The journal holds a single request to `path` for `model` (the one the clients of a
    flight, `what`, shared), asked to stream."""
    records = mock.requests(path=path, model=model)
    assert len(records) == 1, f"{len(records)} upstream requests for {what}"
    assert records[0]["body"]["stream"] is True


def stream_herd(count: int, create_raw: Callable[[], Any], read: Callable[[Any], T]
                ) -> list[tuple[str | None, str | None, T]]:
    """`count` clients at once, each sending one streamed request (`create_raw`, an SDK's
    `with_raw_response` create) and reading its events with `read`: for each, its
    x-request-id and x-streamflight-role headers, and what it read."""

    def client(_: int) -> tuple[str | None, str | None, T]:
        raw = create_raw()
        return raw.headers.get("x-request-id"), raw.headers.get("x-streamflight-role"), read(raw.parse())

    return concurrently(count, client)


def check_herd(results: list[tuple[str | None, str | None, E]], want: E,
               check_complete: Callable[[E], None]) -> None:
    """What the clients of one flight read (`stream_herd`): each a complete stream
    (`check_complete`) with llmock's text pieces (`want`), all the very same events (one
    upstream answer: ids included), each with a request id of its own, one the leader."""
    first = results[0][2]
    for _, _, seen in results:
        check_complete(seen)
        assert seen.pieces == want.pieces, "a stream is incomplete or altered"
        assert seen.dump() == first.dump(), "clients of one flight got different events"
    check_request_ids_and_roles(results)


def check_request_ids_and_roles(results: list[tuple[str | None, str | None, Any]]) -> None:
    """(x-request-id, x-streamflight-role, …) of each client of one flight: each has a request
    id of its own, and exactly one led the flight."""
    for request_id, _, _ in results:
        assert request_id and REQUEST_ID.match(request_id), request_id
    ids = {request_id for request_id, _, _ in results}
    assert len(ids) == len(results), "request ids are not per request"
    roles = sorted(role for _, role, _ in results)
    assert roles.count("leader") == 1 and set(roles) <= {"leader", "follower", "joiner"}, roles


def script_tool_calls(mock: Llmock, model: str) -> None:
    """llmock answers `model`'s next request with the tool calls of `SCRIPTED_CALLS`."""
    calls = [{"name": name, "arguments": arguments} for name, arguments in SCRIPTED_CALLS]
    mock.script({"type": "reply", "match": {"model": model}, "tool_calls": calls})


def script_429(mock: Llmock, model: str) -> None:
    """llmock answers `model`'s next request with a 429 and a retry-after of 7 s."""
    mock.script({"type": "fail", "status": 429, "retry_after": 7, "match": {"model": model}})


def check_scripted_429(error: openai.APIStatusError | anthropic.APIStatusError) -> None:
    """What a client sees of llmock's 429 (`script_429`), in any SDK: the status, the wait in
    both forms, a JSON body."""
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "7"
    assert error.response.headers["retry-after-ms"] == "7000"
    assert error.response.headers["content-type"].startswith("application/json")


def prompt(tag: str) -> str:
    return f"conformance {tag}: say something short"


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
