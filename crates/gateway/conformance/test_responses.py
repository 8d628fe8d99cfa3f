"""The OpenAI Responses API (`POST /v1/responses`) through the gateway (G10): transparent
where a client could tell (G1-G3), coalesced like chat completions (one upstream request
for identical requests in flight), resumable (`id:` on every event, `GET
/v1/requests/{id}/events` with `Last-Event-ID`, and the API's own `GET
/v1/responses/{id}?stream=true&starting_after=N` answered from the flight).

Tests taking `target` run `direct` against llmock and `gateway` through the gateway with
the same assertions; llmock's answer to the same request, asked directly, is the
reference (its text is a pure function of model and prompt). The others are what only
the gateway does, counted by llmock's journal.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import openai
import pytest

from support import (OPENAI_RATE_LIMITED, OVERLAP_S, RESPONSES, SCRIPTED_ARGUMENTS, SCRIPTED_CALLS_SENT,
                     STALL_S, STREAM_MODES, TPM, WEATHER_PARAMETERS, SdkEvents, Target, auth, check_herd,
                     check_one_streamed_upstream_request, check_scripted_429, concurrently, cut_and_resume,
                     http, prepare_herd, prompt, script_429, script_tool_calls, stream_herd, strip_ids,
                     through)

if TYPE_CHECKING:
    from conftest import Gateway, Llmock

MODEL = "gpt-4o-mini"

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": WEATHER_PARAMETERS,
}


class Events(SdkEvents):
    """A Responses stream as the usual loop sees it."""

    @property
    def sequence(self) -> list[int]:
        return [e.sequence_number for e in self.events]

    @property
    def pieces(self) -> list[str]:
        return [e.delta for e in self.events if e.type == "response.output_text.delta"]

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]

    @property
    def final(self) -> Any:
        [completed] = self.of("response.completed")
        return completed.response

    def function_calls(self) -> list[tuple[str, str]]:
        """(name, arguments) of each function call, arguments merged from their deltas and
        checked against the item's own."""
        calls = []
        for done in self.of("response.output_item.done"):
            if done.item.type != "function_call":
                continue
            merged = "".join(e.delta for e in self.of("response.function_call_arguments.delta")
                             if e.item_id == done.item.id)
            assert merged == done.item.arguments, "argument deltas do not add up to the item's arguments"
            calls.append((done.item.name, done.item.arguments))
        return calls


def read_events(stream: Any) -> Events:
    return Events().read(stream)


def respond(client: openai.OpenAI, stream: bool, **request: Any) -> Any:
    """One Responses request, read to its end (a stream as the usual loop would)."""
    if stream:
        return read_events(client.responses.create(stream=True, **request))
    return client.responses.create(**request)


def error_of(call) -> openai.APIError:
    with pytest.raises(openai.APIError) as caught:
        call()
    return caught.value


def check_complete_stream(seen: Events) -> None:
    """A whole Responses stream: numbered from 0 with no gap, one response id, completed."""
    assert seen.sequence == list(range(len(seen.events))), seen.sequence
    assert seen.types[0] == "response.created" and seen.types[-1] == "response.completed", seen.types
    assert seen.events[0].response.id == seen.final.id, "the response id changed within the stream"
    assert seen.final.status == "completed"


# -- answers (direct and through the gateway) -----------------------------------


def test_streamed_response_text_is_llmocks_collected_text(target: Target, reference: Target, tag: str):
    request = dict(model=MODEL, input=prompt(tag))
    want = respond(reference.client(), False, **request)
    want_streamed = respond(reference.client(), True, **request)
    got = respond(target.client(), True, **request)
    assert got.text, "an empty answer"
    assert got.text == want.output_text
    # Forwarded as sent: the same events, the same text pieces in the same events.
    assert got.types == want_streamed.types
    assert got.pieces == want_streamed.pieces
    check_complete_stream(got)
    assert got.final.output_text == want.output_text


def test_stream_helper_final_response_has_text_and_usage(target: Target, reference: Target, tag: str):
    request = dict(model=MODEL, input=prompt(tag))
    want = respond(reference.client(), False, **request)
    with target.client().responses.stream(**request) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) == want.output_text
    assert final.usage is not None, "no usage in the final response"
    assert final.usage.model_dump() == want.usage.model_dump()


def test_collected_response_is_llmocks_with_usage(target: Target, reference: Target, tag: str):
    request = dict(model=MODEL, input=prompt(tag))
    want = respond(reference.client(), False, **request)
    got = respond(target.client(), False, **request)
    assert got.object == "response"
    assert got.id.startswith("resp_")
    assert got.status == "completed"
    assert got.model == MODEL
    assert got.output_text and got.output_text == want.output_text
    # G2: the whole object, usage included, is the upstream's own (ids and times aside).
    usage = got.usage
    assert usage is not None, "no usage in a collected answer"
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.model_dump() == want.usage.model_dump()
    assert strip_ids(got.model_dump()) == strip_ids(want.model_dump())


@STREAM_MODES
def test_function_call_chosen_by_llmock_has_json_arguments(target: Target, reference: Target, tag: str,
                                                           stream: bool):
    request = dict(model=MODEL, input=f"What's the weather in Paris? ({tag})", tools=[WEATHER_TOOL])
    want = [item for item in respond(reference.client(), False, **request).output if item.type == "function_call"]
    assert len(want) == 1, "llmock did not call the offered tool"
    got = respond(target.client(), stream, **request)
    if stream:
        check_complete_stream(got)
        calls = got.function_calls()
        items = [i for i in got.final.output if i.type == "function_call"]
    else:
        items = [i for i in got.output if i.type == "function_call"]
        calls = [(i.name, i.arguments) for i in items]
        assert got.status == "completed"
    assert [(name, json.loads(arguments)) for name, arguments in calls] == \
        [(want[0].name, json.loads(want[0].arguments))]
    assert isinstance(json.loads(calls[0][1]), dict)
    assert [i.call_id.startswith("call_") for i in items] == [True]


@STREAM_MODES
def test_scripted_function_call_arguments_arrive_intact(target: Target, mock: Llmock, tag: str, stream: bool):
    model = f"tools-{tag}"
    script_tool_calls(mock, model)
    got = respond(target.client(), stream, model=model, input=prompt(tag), tools=[WEATHER_TOOL])
    if stream:
        calls = got.function_calls()
    else:
        calls = [(i.name, i.arguments) for i in got.output if i.type == "function_call"]
    # Byte for byte what llmock serialised (json.dumps), merged from its fragments.
    assert calls == SCRIPTED_CALLS_SENT
    assert json.loads(calls[0][1])["big"] == SCRIPTED_ARGUMENTS["big"]


@STREAM_MODES
def test_429_raises_rate_limit_error_with_retry_after(target: Target, mock: Llmock, tag: str, stream: bool):
    model = f"limited-{tag}"
    script_429(mock, model)
    error = error_of(lambda: respond(target.client(), stream, model=model, input=prompt(tag)))
    assert isinstance(error, openai.RateLimitError), repr(error)
    check_scripted_429(error)
    assert error.body == OPENAI_RATE_LIMITED


# Beyond 64 bits: a proxy that parses numbers into u64 or f64 would round it.
BIG = 123456789012345678901234567891


@STREAM_MODES
def test_request_body_reaches_llmock_as_sent(target: Target, reference: Target, mock: Llmock,
                                             tag: str, stream: bool):
    """G4: numbers, key order and unknown fields untouched; only `stream` and
    `stream_options` are the gateway's to set."""
    request = dict(model=f"body-{tag}", input=prompt(tag), temperature=1.0, max_output_tokens=64,
                   extra_body={"x_conformance": {"zeta": 1.0, "alpha": [1, 2.5, -0.0, 1e-7], "big": BIG}})

    def sent(client: openai.OpenAI) -> dict:
        mock.forget_requests()
        respond(client, stream, **request)
        [record] = mock.requests(path=RESPONSES, model=request["model"])
        return {k: v for k, v in record["body"].items() if k not in ("stream", "stream_options")}

    want = sent(reference.client())
    got = sent(target.client())
    assert got["x_conformance"]["big"] == BIG and type(got["x_conformance"]["big"]) is int
    # Compared as JSON text: key order matters, and 1.0 differs from 1.
    assert json.dumps(got) == json.dumps(want)


def test_response_headers_come_from_llmock(target: Target, tag: str):
    """G1: the headers a client acts on (x-ratelimit-*, content type) are the upstream's."""
    client = target.client()
    request = dict(model=MODEL, input=prompt(tag))
    collected = client.responses.with_raw_response.create(**request)
    assert collected.headers["content-type"].startswith("application/json")
    assert collected.headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert collected.parse().output_text
    streamed = client.responses.with_raw_response.create(stream=True, **request)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-ratelimit-limit-tokens"] == str(TPM)
    check_complete_stream(read_events(streamed.parse()))


# -- what only the gateway does ---------------------------------------------------


def test_10_identical_response_streams_make_one_upstream_request(gateway: Gateway, mock: Llmock,
                                                                 reference: Target, tag: str):
    model = f"herd-{tag}"
    request = dict(model=model, input=prompt(tag))
    want = respond(reference.client(), True, **request)
    prepare_herd(mock, model)
    results = stream_herd(10, lambda: through(gateway).client().responses.with_raw_response.create(
        stream=True, **request), read_events)
    check_one_streamed_upstream_request(mock, RESPONSES, model, "10 identical streams")
    check_herd(results, want, check_complete_stream)


def test_streamed_and_collected_clients_share_one_flight(gateway: Gateway, mock: Llmock,
                                                         reference: Target, tag: str):
    """G2: a collected client of a streamed flight gets the whole Response object."""
    model = f"mixed-{tag}"
    request = dict(model=model, input=prompt(tag))
    want = respond(reference.client(), False, **request)
    prepare_herd(mock, model)
    results = concurrently(6, lambda i: respond(through(gateway).client(), i < 3, **request))
    check_one_streamed_upstream_request(mock, RESPONSES, model, "one answer")
    for seen in results[:3]:
        check_complete_stream(seen)
        assert seen.text == want.output_text
    for got in results[3:]:
        assert got.object == "response" and got.status == "completed"
        assert strip_ids(got.model_dump()) == strip_ids(want.model_dump())
    # The same answer: the streams' response is the collected clients' one.
    assert {got.id for got in results[3:]} == {results[0].final.id}


def test_cut_stream_resumes_with_last_event_id(gateway: Gateway, mock: Llmock, tag: str):
    """R18: a client that lost its connection gets, from GET /v1/requests/{id}/events with
    the id of the last event it read, exactly the events after it, then the end."""
    model = f"resume-{tag}"
    body = {"model": model, "input": prompt(tag), "stream": True}
    # The upstream pauses after 4 events: the client leaves with most of the answer to come.
    mock.script({"type": "stream_fault", "kind": "stall", "after_chunks": 4, "stall_seconds": STALL_S,
                 "match": {"model": model}})
    before, after, everything = cut_and_resume(gateway, f"{gateway.base_url}/responses", auth(), body)
    assert len(mock.requests(path=RESPONSES, model=model)) == 1
    sequence = [e.json()["sequence_number"] for e in before + after]
    assert sequence == list(range(len(sequence)))
    assert after[-1].json()["type"] == "response.completed"


def test_retrieve_stream_starting_after_is_served_from_the_live_flight(gateway: Gateway, mock: Llmock,
                                                                       tag: str):
    """The API's own resume, GET /v1/responses/{id}?stream=true&starting_after=N, while the
    flight is live: the events numbered above N from the flight, no upstream request."""
    model = f"retrieve-{tag}"
    mock.script({"type": "stream_fault", "kind": "stall", "after_chunks": 6, "stall_seconds": STALL_S,
                 "match": {"model": model}})
    client = through(gateway).client()
    events = iter(client.responses.create(model=model, input=prompt(tag), stream=True))
    head = [next(events) for _ in range(5)]
    assert [e.sequence_number for e in head] == [0, 1, 2, 3, 4]
    response_id = head[0].response.id
    started = time.monotonic()
    retrieved = read_events(client.responses.retrieve(response_id, stream=True, starting_after=2))
    assert time.monotonic() - started < STALL_S + 10
    whole = Events(head + list(events))
    check_complete_stream(whole)
    assert retrieved.sequence == [n for n in whole.sequence if n > 2]
    assert retrieved.dump() == whole.dump()[3:]
    records = mock.requests()
    assert [(r["method"], r["path"]) for r in records] == [("POST", RESPONSES)], \
        "the retrieve went upstream"


def test_background_requests_pass_through_each_to_llmock(gateway: Gateway, mock: Llmock, tag: str):
    """`background: true` makes a stored response of the client's own: never coalesced,
    each request reaches llmock as sent."""
    model = f"background-{tag}"
    request = dict(model=model, input=prompt(tag), background=True)
    mock.script({"type": "delay", "seconds": OVERLAP_S, "times": 3, "match": {"model": model}})
    results = concurrently(3, lambda _: through(gateway).client().responses.create(**request))
    records = mock.requests(path=RESPONSES, model=model)
    assert len(records) == 3, f"{len(records)} upstream requests for 3 background requests"
    for record in records:
        assert record["body"] == {"model": model, "input": prompt(tag), "background": True}
    assert len({got.id for got in results}) == 3
    # And one on its own, raw, comes back as llmock sent it.
    status, headers, raw = http("POST", f"{gateway.base_url}/responses", request, auth(), timeout=30)
    assert status == 200, raw
    assert headers["content-type"].startswith("application/json")
    assert json.loads(raw)["object"] == "response"
    assert len(mock.requests(path=RESPONSES, model=model)) == 4
