"""What only the gateway does: identical requests in flight share one upstream
request (counted by llmock's journal), request ids, cancellation, and answers
collected from a stream that failed.

llmock has no per-request token pacing (its `--stream-chunk-delay-ms` is global),
so concurrent clients are made to overlap by scripting a slow first token (or a
delay, for embeddings) on the one upstream request they should share: a second
upstream request would not get it, and would show in the journal anyway.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import openai
import pytest

from support import (CHAT, EMBEDDINGS, OVERLAP_S, REQUEST_ID, TENANT_A, TENANT_B, TPM, Streamed, Target,
                     concurrently, http, messages, prompt, read_stream, slow_first_token, through)

if TYPE_CHECKING:
    from conftest import Gateway, Llmock

MODEL = "gpt-4o-mini"


def upstream_bodies(mock: Llmock, path: str, model: str) -> list[dict]:
    return [r["body"] for r in mock.requests(path=path, model=model)]


def test_20_identical_streams_make_one_upstream_request(gateway: Gateway, mock: Llmock,
                                                        reference: Target, tag: str):
    model = f"herd-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    want = read_stream(reference.client().chat.completions.create(stream=True, **request))
    mock.forget_requests()
    slow_first_token(mock, model)

    def client(_: int):
        raw = through(gateway).client().chat.completions.with_raw_response.create(stream=True, **request)
        return raw.headers.get("x-request-id"), read_stream(raw.parse())

    results = concurrently(20, client)
    bodies = upstream_bodies(mock, CHAT, model)
    assert len(bodies) == 1, f"{len(bodies)} upstream requests for 20 identical streams"
    for request_id, seen in results:
        assert seen.choice(0).pieces == want.choice(0).pieces, "a stream is incomplete or altered"
        assert seen.choice(0).finish_reason == "stop"
        assert seen.usage == [] and seen.bare == 0
        assert request_id and REQUEST_ID.match(request_id), request_id
    assert len({request_id for request_id, _ in results}) == 20, "request ids are not per request"


def test_identical_embeddings_make_one_upstream_request(gateway: Gateway, mock: Llmock,
                                                        reference: Target, tag: str):
    request = dict(model=f"text-embedding-{tag}", input=[f"conformance {tag} a", f"conformance {tag} b"])
    want = reference.client().embeddings.create(**request)
    mock.forget_requests()
    mock.script({"type": "delay", "seconds": OVERLAP_S,
                 "match": {"model": request["model"], "path": EMBEDDINGS}})
    results = concurrently(8, lambda _: through(gateway).client().embeddings.create(**request))
    assert len(upstream_bodies(mock, EMBEDDINGS, request["model"])) == 1
    for got in results:
        assert [d.embedding for d in got.data] == [d.embedding for d in want.data]
        assert got.usage.model_dump() == want.usage.model_dump()


def test_streamed_and_collected_clients_share_one_flight(gateway: Gateway, mock: Llmock,
                                                         reference: Target, tag: str):
    """Same body up to `stream`, key order and whitespace: one upstream request, which
    is asked to stream with usage; each client gets what it asked for (G2)."""
    model = f"mixed-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    want = reference.client().chat.completions.create(**request)
    mock.forget_requests()
    slow_first_token(mock, model)
    # The same body as raw bytes, keys reversed and spaced out, as another client library might send it.
    reordered = json.dumps({"messages": request["messages"], "model": model}, indent=3).encode()

    def client(i: int):
        if i < 3:
            return read_stream(through(gateway).client().chat.completions.create(stream=True, **request))
        if i < 6:
            return through(gateway).client().chat.completions.create(**request)
        status, _, body = http("POST", f"{gateway.base_url}/chat/completions", raw=reordered,
                               headers={"authorization": f"Bearer {TENANT_A}"}, timeout=30)
        return status, json.loads(body)

    results = concurrently(7, client)
    bodies = upstream_bodies(mock, CHAT, model)
    assert len(bodies) == 1, f"{len(bodies)} upstream requests for one answer"
    assert bodies[0]["stream"] is True
    assert bodies[0]["stream_options"] == {"include_usage": True}
    assert bodies[0]["messages"] == request["messages"]
    for seen in results[:3]:
        assert seen.choice(0).content == want.choices[0].message.content
        assert seen.usage == [] and seen.bare == 0, "usage reached a stream that did not ask for it"
    for got in results[3:6]:
        assert got.object == "chat.completion"
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.usage.model_dump() == want.usage.model_dump()
    status, body = results[6]
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == want.choices[0].message.content
    assert body["usage"] == want.usage.model_dump(exclude_none=True)


def test_tenants_do_not_share_a_flight(gateway: Gateway, mock: Llmock, tag: str):
    model = f"tenants-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    mock.script({"type": "slow_first_token", "seconds": OVERLAP_S, "times": 2, "match": {"model": model}})
    keys = [TENANT_A, TENANT_B, TENANT_A, TENANT_B]
    results = concurrently(4, lambda i: read_stream(
        through(gateway).client(keys[i]).chat.completions.create(stream=True, **request)))
    assert len(upstream_bodies(mock, CHAT, model)) == 2, "one upstream request per tenant"
    assert len({seen.choice(0).content for seen in results}) == 1


def test_share_across_tenants_makes_one_upstream_request(shared_gateway: Gateway, mock: Llmock, tag: str):
    model = f"shared-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    slow_first_token(mock, model)
    keys = [TENANT_A, TENANT_B, "sk-conformance-tenant-c"]
    results = concurrently(3, lambda i: read_stream(
        through(shared_gateway).client(keys[i]).chat.completions.create(stream=True, **request)))
    assert len(upstream_bodies(mock, CHAT, model)) == 1
    assert all(seen.choice(0).finish_reason == "stop" for seen in results)


def test_every_response_has_a_request_id(gateway: Gateway, mock: Llmock, tag: str):
    client = through(gateway).client()
    model = f"ids-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    heads = {
        "chat collected": client.chat.completions.with_raw_response.create(**request).headers,
        "embeddings": client.embeddings.with_raw_response.create(model="text-embedding-3-small",
                                                                  input=prompt(tag)).headers,
        "models (proxied)": client.models.with_raw_response.list().headers,
    }
    streamed = client.chat.completions.with_raw_response.create(stream=True, **request)
    heads["chat streamed"] = streamed.headers
    read_stream(streamed.parse())
    mock.script({"type": "fail", "status": 429, "match": {"model": model}})
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**request)
    heads["an upstream 429"] = caught.value.response.headers
    ids = {what: headers.get("x-request-id") for what, headers in heads.items()}
    assert all(value and REQUEST_ID.match(value) for value in ids.values()), ids
    assert len(set(ids.values())) == len(ids), ids


def test_cancelled_stream_ends_the_usual_loop_with_api_error(gateway: Gateway, mock: Llmock, tag: str):
    model = f"cancel-{tag}"
    # A stream that sends a few chunks, then stalls far longer than the test waits.
    mock.script({"type": "stream_fault", "kind": "stall", "after_chunks": 3, "stall_seconds": 20,
                 "match": {"model": model}})
    client = through(gateway).client(TENANT_A)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages(prompt(tag)), stream=True)
    request_id = raw.headers.get("x-request-id")
    assert request_id and REQUEST_ID.match(request_id), request_id
    chunks = iter(raw.parse())
    assert next(chunks).choices[0].delta.role == "assistant"

    # G5: another tenant, or no credentials at all, cannot cancel it: 404, as if it did not exist.
    assert gateway.cancel(request_id, TENANT_B)[0] == 404
    assert gateway.cancel(request_id, None)[0] == 404
    status, body = gateway.cancel(request_id, TENANT_A)
    assert 200 <= status < 300, (status, body)

    started = time.monotonic()
    with pytest.raises(openai.APIError) as caught:
        for chunk in chunks:
            chunk.choices[0].delta.content  # the usual loop: no TypeError, KeyError, IndexError
    assert time.monotonic() - started < 10, "the stream ran on after its cancellation"
    error = caught.value
    assert type(error) is openai.APIError, repr(error)
    assert error.code == "request_cancelled"
    assert error.type == "cancelled"
    assert isinstance(error.body, dict) and error.body["param"] is None and error.body["message"]


def test_shared_upstream_failure_mid_stream_reaches_every_stream_as_an_error_event(
        gateway: Gateway, mock: Llmock, tag: str):
    """After the 200 has gone out, a failure is an in-stream error event (G1): the SDK
    raises APIError with the error object, not a connection error."""
    model = f"cut-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    slow_first_token(mock, model)
    mock.script({"type": "stream_fault", "kind": "disconnect", "after_chunks": 3, "match": {"model": model}})

    def client(_: int):
        seen = Streamed()
        with pytest.raises(openai.APIError) as caught:
            read_stream(through(gateway).client().chat.completions.create(stream=True, **request), into=seen)
        return seen, caught.value

    results = concurrently(3, client)
    assert len(upstream_bodies(mock, CHAT, model)) == 1
    for seen, error in results:
        assert not isinstance(error, openai.APIConnectionError), f"the connection was cut: {error!r}"
        assert isinstance(error.body, dict) and error.body.get("message"), error.body
        assert seen.choice(0).content and seen.choice(0).finish_reason is None


@pytest.mark.parametrize("kind", ["disconnect", "malformed", "truncate"])
def test_broken_upstream_stream_never_gives_a_collected_client_200(gateway: Gateway, mock: Llmock,
                                                                   tag: str, kind: str):
    """The upstream is streamed even for a collected client; if that stream breaks
    (dropped, a chunk that is not JSON, or ended without finish reason and [DONE]),
    the client gets an error status, never a 200 with part of an answer."""
    model = f"broken-{kind}-{tag}"
    mock.script({"type": "stream_fault", "kind": kind, "after_chunks": 2, "match": {"model": model}})
    with pytest.raises(openai.APIStatusError) as caught:
        through(gateway).client().chat.completions.create(model=model, messages=messages(prompt(tag)))
    error = caught.value
    assert error.status_code >= 500, repr(error)
    assert isinstance(error.body, dict) and error.body.get("message"), error.body
    records = mock.requests(path=CHAT, model=model)
    assert len(records) == 1 and records[0]["fault"], records


def test_concurrent_clients_all_get_the_upstream_429(gateway: Gateway, mock: Llmock, tag: str):
    """One upstream 429 for a shared flight: every waiting client, streaming or not,
    gets it with its retry-after and x-ratelimit-* headers (G1)."""
    model = f"quota-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)), max_tokens=2 * TPM)
    # Held before llmock's quota check, so that every client joins the one flight.
    mock.script({"type": "delay", "seconds": OVERLAP_S, "match": {"model": model}})

    def client(i: int):
        with pytest.raises(openai.RateLimitError) as caught:
            if i % 2:
                read_stream(through(gateway).client().chat.completions.create(stream=True, **request))
            else:
                through(gateway).client().chat.completions.create(**request)
        return caught.value

    errors = concurrently(4, client)
    assert len(upstream_bodies(mock, CHAT, model)) == 1
    for error in errors:
        assert error.response.headers["retry-after"] in ("60", "61")
        assert error.response.headers["x-ratelimit-limit-tokens"] == str(TPM)
        assert error.code == "rate_limit_exceeded"


def test_seeds_differing_in_the_last_digit_do_not_share_a_flight(gateway: Gateway, mock: Llmock, tag: str):
    """G4: the key is the body, losslessly: seeds beyond 64 bits that differ in their
    last digit are two requests, each reaching llmock with its own seed."""
    model = f"seeds-{tag}"
    seeds = [123456789012345678901234567890, 123456789012345678901234567891]
    mock.script({"type": "slow_first_token", "seconds": OVERLAP_S, "times": 2, "match": {"model": model}})
    concurrently(2, lambda i: read_stream(through(gateway).client().chat.completions.create(
        stream=True, model=model, messages=messages(prompt(tag)), seed=seeds[i])))
    assert sorted(body["seed"] for body in upstream_bodies(mock, CHAT, model)) == seeds
