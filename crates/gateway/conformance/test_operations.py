"""The gateway as an operator runs it, seen from the SDK: graceful shutdown (G8)
and bounds answered in OpenAI's error shape (G7). Each test starts a gateway of
its own, with the flags it needs, in front of the session's llmock."""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Callable

import openai
import pytest

from support import Target, messages, prompt, read_stream, through

if TYPE_CHECKING:
    from conftest import Gateway, Llmock

EXIT_DEADLINE_S = 20.0


def test_sigterm_lets_a_stream_in_flight_finish_then_exits_0(spawn_gateway: Callable[..., Gateway],
                                                             mock: Llmock, reference: Target, tag: str):
    gateway = spawn_gateway("--shutdown-grace", "10s")
    model = f"shutdown-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    want = read_stream(reference.client().chat.completions.create(stream=True, **request))
    # The first token comes after the signal: the stream is in flight, not finished.
    mock.script({"type": "slow_first_token", "seconds": 1.5, "match": {"model": model}})
    raw = through(gateway).client().chat.completions.with_raw_response.create(stream=True, **request)
    gateway.process.send_signal(signal.SIGTERM)
    got = read_stream(raw.parse())
    assert got.choice(0).pieces == want.choice(0).pieces
    assert got.choice(0).finish_reason == "stop"
    assert gateway.process.wait(timeout=EXIT_DEADLINE_S) == 0


def test_body_over_the_limit_gets_413_in_openai_shape(spawn_gateway: Callable[..., Gateway], tag: str):
    gateway = spawn_gateway("--body-limit", "65536")
    client = through(gateway).client()
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages(f"{tag} " + "x" * 100_000))
    error = caught.value
    assert error.status_code == 413, repr(error)
    assert isinstance(error.body, dict) and error.body.get("message") and error.body.get("type"), error.body
    # The process stays up and serves the next request.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=messages(prompt(tag))).choices
    gateway.check_alive()


def test_over_max_concurrent_requests_gets_503_with_retry_after(spawn_gateway: Callable[..., Gateway],
                                                                mock: Llmock, tag: str):
    gateway = spawn_gateway("--max-concurrent-requests", "1")
    target = through(gateway)
    model = f"busy-{tag}"
    mock.script({"type": "slow_first_token", "seconds": 1.5, "match": {"model": model}})
    # The first request holds the only slot from its response head until its stream ends.
    held = target.client().chat.completions.with_raw_response.create(
        stream=True, model=model, messages=messages(prompt(tag)))
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        target.client().chat.completions.create(model="gpt-4o-mini", messages=messages(f"another {tag}"))
    assert time.monotonic() - started < 1.5, "the second request waited for a slot instead of being refused"
    error = caught.value
    assert error.status_code == 503, repr(error)
    assert int(error.response.headers["retry-after"]) >= 1
    assert isinstance(error.body, dict) and error.body.get("message"), error.body
    assert read_stream(held.parse()).choice(0).finish_reason == "stop"
    # Once the slot is free again, requests are served.
    assert target.client().models.list().data
