"""Anthropic Messages (`POST /v1/messages`) through the gateway (G10), with the official
anthropic SDK: transparent where a client could tell (G1-G3, Anthropic's error shape and
status codes, 529 included), coalesced like chat completions, resumable (`id:` on every
event, `GET /v1/requests/{id}/events` with `Last-Event-ID`), `ping` never stored.

The gateway here runs with `--upstream <llmock>/anthropic/v1` (llmock serves Anthropic
under `/anthropic`); an SDK client points at its root, and appends `/v1/messages` itself.
Tests taking `anthropic_target` run `direct` against llmock and `gateway` through the
gateway with the same assertions; llmock's answer to the same request, asked directly, is
the reference. The others are what only the gateway does, counted by llmock's journal.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Callable

import anthropic
import pytest

from support import (ANTHROPIC_VERSION, MESSAGES, OVERLAP_S, SCRIPTED_CALLS, SCRIPTED_CALLS_SENT, STALL_S,
                     STREAM_MODES, TPM, WEATHER_PARAMETERS, AnthropicTarget, SdkEvents, anthropic_auth,
                     anthropic_through, check_herd, check_one_streamed_upstream_request, check_scripted_429,
                     concurrently, cut_and_resume, messages, prepare_herd, prompt, script_429,
                     script_tool_calls, stream_herd, strip_ids)

if TYPE_CHECKING:
    from conftest import Gateway, Llmock

MODEL = "claude-sonnet-4-6"
MAX_TOKENS = 1024

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "input_schema": WEATHER_PARAMETERS,
}


class Streamed(SdkEvents):
    """A Messages stream as the usual loop sees it (the SDK drops `ping` events)."""

    @property
    def pieces(self) -> list[str]:
        return [e.delta.text for e in self.events
                if e.type == "content_block_delta" and e.delta.type == "text_delta"]

    def tool_inputs(self) -> list[tuple[str, str]]:
        """(name, the input's JSON as merged from its fragments) of each tool_use block."""
        names: dict[int, str] = {}
        fragments: dict[int, str] = {}
        for e in self.events:
            if e.type == "content_block_start" and e.content_block.type == "tool_use":
                names[e.index] = e.content_block.name
                fragments[e.index] = ""
            elif e.type == "content_block_delta" and e.delta.type == "input_json_delta":
                fragments[e.index] += e.delta.partial_json
        return [(names[i], fragments[i]) for i in sorted(names)]

    @property
    def stop_reason(self) -> str | None:
        deltas = [e for e in self.events if e.type == "message_delta"]
        return deltas[-1].delta.stop_reason if deltas else None


def read_stream(stream: Any, into: Streamed | None = None) -> Streamed:
    """Iterate a Messages stream to its end; fills `into` as it goes, so that a caller whose
    loop raises still has the part read."""
    return (into if into is not None else Streamed()).read(stream)


def stream_until(error: type[anthropic.APIError], target: AnthropicTarget,
                 **request: Any) -> tuple[Streamed, anthropic.APIError]:
    """A Messages stream read by the usual loop until it raises `error`: what it read, and the error."""
    seen = Streamed()
    with pytest.raises(error) as caught:
        read_stream(target.client().messages.create(stream=True, max_tokens=MAX_TOKENS, **request), into=seen)
    return seen, caught.value


def create(client: anthropic.Anthropic, stream: bool, **request: Any) -> Any:
    """One Messages request, read to its end (a stream as the usual loop would)."""
    request.setdefault("max_tokens", MAX_TOKENS)
    if stream:
        return read_stream(client.messages.create(stream=True, **request))
    return client.messages.create(**request)


def error_of(call: Callable[[], Any]) -> anthropic.APIError:
    with pytest.raises(anthropic.APIError) as caught:
        call()
    return caught.value


def check_complete_stream(seen: Streamed) -> None:
    assert seen.types[0] == "message_start" and seen.types[-1] == "message_stop", seen.types
    assert "ping" not in seen.types
    assert seen.stop_reason is not None


# -- answers (direct and through the gateway) -----------------------------------


def test_streamed_message_text_is_llmocks_collected_text(anthropic_target: AnthropicTarget,
                                                         anthropic_reference: AnthropicTarget, tag: str):
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    want = create(anthropic_reference.client(), False, **request)
    want_streamed = create(anthropic_reference.client(), True, **request)
    got = create(anthropic_target.client(), True, **request)
    assert got.text, "an empty answer"
    assert got.text == want.content[0].text
    # Forwarded as sent: the same events, the same text pieces in the same events.
    assert got.types == want_streamed.types
    assert got.pieces == want_streamed.pieces
    check_complete_stream(got)
    assert got.stop_reason == want.stop_reason == "end_turn"
    [start] = [e for e in got.events if e.type == "message_start"]
    assert start.message.id.startswith("msg_") and start.message.model == MODEL


def test_stream_helper_final_message_has_content_stop_reason_and_usage(
        anthropic_target: AnthropicTarget, anthropic_reference: AnthropicTarget, tag: str):
    request = dict(model=MODEL, messages=messages(prompt(tag)), max_tokens=MAX_TOKENS)
    want = create(anthropic_reference.client(), False, **request)
    with anthropic_target.client().messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert isinstance(final, anthropic.types.Message)
    assert final.role == "assistant"
    assert [block.type for block in final.content] == ["text"]
    assert final.content[0].text == text == want.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == want.usage.input_tokens > 0
    assert final.usage.output_tokens == want.usage.output_tokens > 0


def test_collected_message_is_llmocks(anthropic_target: AnthropicTarget,
                                      anthropic_reference: AnthropicTarget, tag: str):
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    want = create(anthropic_reference.client(), False, **request)
    got = create(anthropic_target.client(), False, **request)
    assert isinstance(got, anthropic.types.Message)
    assert got.type == "message" and got.id.startswith("msg_")
    assert got.content[0].text and got.stop_reason == "end_turn"
    assert got.usage.input_tokens > 0 and got.usage.output_tokens > 0
    # G2: the same object as llmock's own (ids aside), usage included.
    assert strip_ids(got.model_dump()) == strip_ids(want.model_dump())


@STREAM_MODES
def test_tool_use_chosen_by_llmock_has_its_input_parsed(anthropic_target: AnthropicTarget,
                                                        anthropic_reference: AnthropicTarget, tag: str,
                                                        stream: bool):
    request = dict(model=MODEL, messages=messages(f"What's the weather in Paris? ({tag})"),
                   tools=[WEATHER_TOOL], max_tokens=MAX_TOKENS)
    want = create(anthropic_reference.client(), False, **request)
    assert [b.type for b in want.content] == ["tool_use"], "llmock did not call the offered tool"
    if stream:
        with anthropic_target.client().messages.stream(**request) as helper:
            events = Streamed(list(helper))
            got = helper.get_final_message()
        assert [(name, json.loads(raw)) for name, raw in events.tool_inputs()] == \
            [(want.content[0].name, want.content[0].input)]
    else:
        got = create(anthropic_target.client(), False, **request)
    assert got.stop_reason == "tool_use"
    [block] = got.content
    assert block.type == "tool_use" and block.id.startswith("toolu_")
    assert block.name == want.content[0].name
    assert isinstance(block.input, dict) and block.input == want.content[0].input


@STREAM_MODES
def test_scripted_tool_use_input_arrives_intact(anthropic_target: AnthropicTarget, mock: Llmock, tag: str,
                                                stream: bool):
    model = f"tools-{tag}"
    script_tool_calls(mock, model)
    got = create(anthropic_target.client(), stream, model=model, messages=messages(prompt(tag)),
                 tools=[WEATHER_TOOL])
    if stream:
        # Byte for byte what llmock serialised (json.dumps), merged from its fragments.
        assert got.tool_inputs() == SCRIPTED_CALLS_SENT
        assert got.stop_reason == "tool_use"
    else:
        assert [(b.type, b.name, b.input) for b in got.content] == \
            [("tool_use", name, arguments) for name, arguments in SCRIPTED_CALLS]
        assert type(got.content[0].input["big"]) is int
        assert got.stop_reason == "tool_use"


@STREAM_MODES
def test_429_raises_rate_limit_error_with_retry_after(anthropic_target: AnthropicTarget, mock: Llmock,
                                                      tag: str, stream: bool):
    model = f"limited-{tag}"
    script_429(mock, model)
    error = error_of(lambda: create(anthropic_target.client(), stream, model=model, messages=messages(prompt(tag))))
    assert isinstance(error, anthropic.RateLimitError), repr(error)
    check_scripted_429(error)
    assert error.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit exceeded."}}
    assert error.type == "rate_limit_error"


@STREAM_MODES
def test_529_raises_overloaded_error(anthropic_target: AnthropicTarget, mock: Llmock, tag: str, stream: bool):
    model = f"overloaded-{tag}"
    mock.script({"type": "fail", "status": 529, "match": {"model": model}})
    error = error_of(lambda: create(anthropic_target.client(), stream, model=model, messages=messages(prompt(tag))))
    assert isinstance(error, anthropic.OverloadedError), repr(error)
    assert error.status_code == 529
    assert error.body == {"type": "error", "error": {"type": "overloaded_error", "message": "Service overloaded."}}
    assert error.type == "overloaded_error"
    # llmock gives a retryable status a one-second retry-after.
    assert error.response.headers["retry-after"] == "1"


def test_quota_429_keeps_retry_after_and_ratelimit_headers(anthropic_target: AnthropicTarget, tag: str):
    # llmock's real token bucket: a request asking for twice the quota is refused with the
    # time until it could be served, and the bucket's anthropic-ratelimit-* headers.
    error = error_of(lambda: create(anthropic_target.client(), True, model=MODEL, messages=messages(prompt(tag)),
                                    max_tokens=2 * TPM))
    assert isinstance(error, anthropic.RateLimitError), repr(error)
    headers = error.response.headers
    assert 59 <= float(headers["retry-after-ms"]) / 1000 <= 61
    assert headers["anthropic-ratelimit-tokens-limit"] == str(TPM)
    assert headers["anthropic-ratelimit-tokens-remaining"] == str(TPM)
    assert error.type == "rate_limit_error"
    assert error.body["error"]["message"].startswith(f"Rate limit reached for tokens per minute: limit {TPM}.")


def test_response_headers_come_from_llmock(anthropic_target: AnthropicTarget, tag: str):
    """G1: the headers a client acts on (anthropic-ratelimit-*, content type) are the upstream's."""
    client = anthropic_target.client()
    request = dict(model=MODEL, messages=messages(prompt(tag)), max_tokens=MAX_TOKENS)
    collected = client.messages.with_raw_response.create(**request)
    assert collected.headers["content-type"].startswith("application/json")
    assert collected.headers["anthropic-ratelimit-tokens-limit"] == str(TPM)
    assert int(collected.headers["anthropic-ratelimit-tokens-remaining"]) < TPM
    assert collected.parse().content[0].text
    streamed = client.messages.with_raw_response.create(stream=True, **request)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["anthropic-ratelimit-tokens-limit"] == str(TPM)
    check_complete_stream(read_stream(streamed.parse()))


# Beyond 64 bits: a proxy that parses numbers into u64 or f64 would round it.
BIG = 123456789012345678901234567891


@STREAM_MODES
def test_request_body_reaches_llmock_as_sent(anthropic_target: AnthropicTarget,
                                             anthropic_reference: AnthropicTarget, mock: Llmock,
                                             tag: str, stream: bool):
    """G4: numbers, key order and unknown fields untouched; only `stream` is the gateway's."""
    request = dict(model=f"body-{tag}", messages=messages(prompt(tag)), max_tokens=64,
                   system="be brief", metadata={"user_id": f"user-{tag}"},
                   extra_body={"temperature": 1.0,
                               "x_conformance": {"zeta": 1.0, "alpha": [1, 2.5, -0.0, 1e-7], "big": BIG}})

    def sent(client: anthropic.Anthropic) -> dict:
        mock.forget_requests()
        create(client, stream, **request)
        [record] = mock.requests(path=MESSAGES, model=request["model"])
        return {k: v for k, v in record["body"].items() if k != "stream"}

    want = sent(anthropic_reference.client())
    got = sent(anthropic_target.client())
    assert got["x_conformance"]["big"] == BIG and type(got["x_conformance"]["big"]) is int
    # Compared as JSON text: key order matters, and 1.0 differs from 1.
    assert json.dumps(got) == json.dumps(want)


def test_upstream_failure_mid_stream_ends_the_loop_with_api_error(anthropic_target: AnthropicTarget,
                                                                  anthropic_reference: AnthropicTarget,
                                                                  mock: Llmock, tag: str):
    """llmock cannot put an `event: error` in a stream; its nearest failure is a dropped
    connection after some events. Directly the SDK raises APIConnectionError; through the
    gateway, which has already sent its 200, an `event: error` (APIStatusError). Both are
    anthropic.APIError, after the text sent before the failure."""
    model = f"dropped-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    whole = create(anthropic_reference.client(), True, **request).text
    mock.script({"type": "stream_fault", "kind": "disconnect", "after_chunks": 5,
                 "match": {"model": model, "stream": True}})
    seen, _ = stream_until(anthropic.APIError, anthropic_target, **request)
    assert seen.text and whole.startswith(seen.text) and seen.text != whole
    assert "message_stop" not in seen.types


# -- what only the gateway does ---------------------------------------------------


def test_10_identical_message_streams_make_one_upstream_request(anthropic_gateway: Gateway, mock: Llmock,
                                                                anthropic_reference: AnthropicTarget, tag: str):
    model = f"herd-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)), max_tokens=MAX_TOKENS)
    want = create(anthropic_reference.client(), True, **request)
    prepare_herd(mock, model)
    target = anthropic_through(anthropic_gateway)
    results = stream_herd(10, lambda: target.client().messages.with_raw_response.create(stream=True, **request),
                          read_stream)
    check_one_streamed_upstream_request(mock, MESSAGES, model, "10 identical streams")
    check_herd(results, want, check_complete_stream)


@pytest.mark.parametrize("header,values", [
    ("anthropic-beta", ("conformance-a-2030-01-01", "conformance-b-2030-01-01")),
    ("anthropic-version", (ANTHROPIC_VERSION, "2023-01-01")),
], ids=["anthropic_beta", "anthropic_version"])
def test_a_different_selector_header_makes_a_second_upstream_request(anthropic_gateway: Gateway, mock: Llmock,
                                                                     tag: str, header: str,
                                                                     values: tuple[str, str]):
    """G4/G10: `anthropic-version` and `anthropic-beta` can change the answer: in the key."""
    model = f"selector-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)), max_tokens=MAX_TOKENS)
    mock.script({"type": "slow_first_token", "seconds": OVERLAP_S, "times": 2, "match": {"model": model}})
    chosen = [values[0], values[0], values[1], values[1]]
    target = anthropic_through(anthropic_gateway)
    results = concurrently(4, lambda i: read_stream(target.client().messages.create(
        stream=True, extra_headers={header: chosen[i]}, **request)))
    assert len(mock.requests(path=MESSAGES, model=model)) == 2, "one upstream request per header value"
    assert all(seen.types[-1] == "message_stop" for seen in results)


def test_streamed_and_collected_clients_share_one_flight(anthropic_gateway: Gateway, mock: Llmock,
                                                         anthropic_reference: AnthropicTarget, tag: str):
    """G2: a collected client of a streamed flight gets the whole Message."""
    model = f"mixed-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    want = create(anthropic_reference.client(), False, **request)
    prepare_herd(mock, model)
    target = anthropic_through(anthropic_gateway)
    results = concurrently(6, lambda i: create(target.client(), i < 3, **request))
    check_one_streamed_upstream_request(mock, MESSAGES, model, "one answer")
    for seen in results[:3]:
        check_complete_stream(seen)
        assert seen.text == want.content[0].text
    for got in results[3:]:
        assert strip_ids(got.model_dump()) == strip_ids(want.model_dump())
    [start] = [e for e in results[0].events if e.type == "message_start"]
    assert {got.id for got in results[3:]} == {start.message.id}, "not the same answer"


def test_failure_mid_stream_reaches_every_stream_as_an_anthropic_error_event(anthropic_gateway: Gateway,
                                                                            mock: Llmock, tag: str):
    """After the 200, a failure is an `event: error` in Anthropic's shape: the SDK raises
    APIStatusError with that body, not a connection error, after the text sent before."""
    model = f"cut-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    mock.script({"type": "slow_first_token", "seconds": OVERLAP_S, "match": {"model": model}},
                {"type": "stream_fault", "kind": "disconnect", "after_chunks": 5, "match": {"model": model}})
    target = anthropic_through(anthropic_gateway)
    results = concurrently(3, lambda _: stream_until(anthropic.APIError, target, **request))
    assert len(mock.requests(path=MESSAGES, model=model)) == 1
    for seen, error in results:
        assert isinstance(error, anthropic.APIStatusError), f"not an error event: {error!r}"
        body = error.body
        assert isinstance(body, dict) and body.get("type") == "error", body
        assert isinstance(body["error"].get("type"), str) and isinstance(body["error"].get("message"), str), body
        assert seen.text and "message_stop" not in seen.types


def test_cut_stream_resumes_with_last_event_id(anthropic_gateway: Gateway, mock: Llmock, tag: str):
    """R18: a client that lost its connection gets, from GET /v1/requests/{id}/events with
    the id of the last event it read, exactly the events after it, then the end. `ping`
    events are the connection's own keep-alives (never stored): left out of the comparison."""
    model = f"resume-{tag}"
    body = {"model": model, "max_tokens": MAX_TOKENS, "messages": messages(prompt(tag)), "stream": True}
    # The upstream pauses after 5 events: the client leaves with most of the answer to come.
    mock.script({"type": "stream_fault", "kind": "stall", "after_chunks": 5, "stall_seconds": STALL_S,
                 "match": {"model": model}})
    before, after, everything = cut_and_resume(anthropic_gateway, f"{anthropic_gateway.root}/v1/messages",
                                               anthropic_auth(), body, skip=("ping",))
    assert len(mock.requests(path=MESSAGES, model=model)) == 1
    assert everything[0].event == "message_start" and after[-1].event == "message_stop"
    # Every event is named (the SDK drops one without `event:`), by its own type.
    assert all(e.event == e.json()["type"] for e in everything)


def test_body_over_the_limit_gets_413_in_anthropic_shape(spawn_gateway: Callable[..., Gateway], mock: Llmock,
                                                         tag: str):
    gateway = spawn_gateway("--body-limit", "65536", upstream=mock.anthropic_base_url)
    client = anthropic_through(gateway).client()
    with pytest.raises(anthropic.APIStatusError) as caught:
        create(client, False, model=MODEL, messages=messages(f"{tag} " + "x" * 100_000))
    error = caught.value
    assert error.status_code == 413, repr(error)
    # Anthropic's error shape, with Anthropic's type for this status.
    assert isinstance(error.body, dict) and error.body.get("type") == "error", error.body
    assert error.body["error"]["type"] == "request_too_large", error.body
    assert isinstance(error.body["error"].get("message"), str) and error.body["error"]["message"], error.body
    assert error.response.headers["content-type"].startswith("application/json")
    assert mock.requests(path=MESSAGES) == [], "the refused body went upstream"
    # The process stays up and serves the next request.
    assert create(client, False, model=MODEL, messages=messages(prompt(tag))).content
    gateway.check_alive()


# -- what llmock cannot send: an upstream that answers late with a 529, or an `event: error` --

OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


class FakeAnthropic:
    """A minimal Anthropic upstream for what llmock cannot script: its scripted failures
    are answered at once (a `delay` is not applied to a request that a `fail` answers), and
    it never puts an `event: error` in a stream. Each POST .../messages waits `OVERLAP_S`
    (so that identical requests share one flight), then, by `mode`:

    - "overloaded": a 529 with Anthropic's body and `retry-after`;
    - "error_event": a 200 stream (its head sent at once) of a message start, one text
      delta and an `overloaded_error` event."""

    def __init__(self, mode: str) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.requests += 1
                if mode == "overloaded":
                    time.sleep(OVERLAP_S)
                    body = json.dumps(OVERLOADED).encode()
                    self.send_response(529)
                    self.send_header("content-type", "application/json")
                    self.send_header("retry-after", "3")
                    self.send_header("content-length", str(len(body)))
                    self.send_header("connection", "close")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.flush()
                time.sleep(OVERLAP_S)
                for name, data in [
                    ("message_start", {"type": "message_start", "message": {
                        "id": "msg_conformance", "type": "message", "role": "assistant", "content": [],
                        "model": MODEL, "stop_reason": None, "stop_sequence": None,
                        "usage": {"input_tokens": 3, "output_tokens": 1}}}),
                    ("content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "Hello"}}),
                    ("error", OVERLOADED),
                ]:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.01)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_anthropic():
    started: list[FakeAnthropic] = []

    def start(mode: str) -> FakeAnthropic:
        upstream = FakeAnthropic(mode)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.close()


def test_concurrent_clients_all_get_the_upstream_529(spawn_gateway: Callable[..., Gateway],
                                                     fake_anthropic: Callable[[str], FakeAnthropic], tag: str):
    """Before the first byte, every client of the flight, streaming or not, gets the
    upstream's own status, headers and body (G1): 529 stays 529, the SDK's OverloadedError."""
    upstream = fake_anthropic("overloaded")
    gateway = spawn_gateway(upstream=upstream.base_url)
    request = dict(model=MODEL, messages=messages(prompt(tag)))

    def client(i: int):
        with pytest.raises(anthropic.OverloadedError) as caught:
            create(anthropic_through(gateway).client(), bool(i % 2), **request)
        return caught.value

    errors = concurrently(4, client)
    assert upstream.requests == 1
    for error in errors:
        assert error.status_code == 529
        assert error.body == OVERLOADED
        assert error.type == "overloaded_error"
        assert error.response.headers["retry-after"] == "3"


def test_upstream_error_event_reaches_every_stream_as_sent(spawn_gateway: Callable[..., Gateway],
                                                           fake_anthropic: Callable[[str], FakeAnthropic], tag: str):
    """An upstream `event: error` after the 200 reaches every streaming client as the
    upstream sent it: the SDK raises APIStatusError with its body, after the text before."""
    upstream = fake_anthropic("error_event")
    gateway = spawn_gateway(upstream=upstream.base_url)
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    target = anthropic_through(gateway)
    results = concurrently(3, lambda _: stream_until(anthropic.APIStatusError, target, **request))
    assert upstream.requests == 1
    for seen, error in results:
        assert seen.text == "Hello"
        assert error.body == OVERLOADED
        assert error.type == "overloaded_error"
