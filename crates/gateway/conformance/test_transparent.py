"""A client must not be able to tell the gateway from its upstream (G1-G3).

Every test here runs twice, against llmock itself (`direct`) and through the
gateway (`gateway`), with the same assertions. Where the answer is llmock's own
(text, usage, generated tool arguments), llmock's answer to the same request,
asked directly, is the reference. Through the gateway the upstream is always
asked to stream with usage, so each collected answer here is also one the
gateway assembled from a stream.
"""

from __future__ import annotations

import json
import math

from typing import TYPE_CHECKING

import openai
import pytest

from support import (OPENAI_RATE_LIMITED, SCRIPTED_ARGUMENTS, SCRIPTED_CALLS_SENT, STREAM_MODES, TPM,
                     WEATHER_PARAMETERS, Target, check_scripted_429, messages, prompt, read_stream,
                     script_429, script_tool_calls)

if TYPE_CHECKING:
    from conftest import Llmock

MODEL = "gpt-4o-mini"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": WEATHER_PARAMETERS,
    },
}


def chat(client: openai.OpenAI, stream: bool, **request):
    """One chat request, read to its end: a stream is iterated like an application would."""
    if stream:
        return read_stream(client.chat.completions.create(stream=True, **request))
    return client.chat.completions.create(**request)


def error_of(call) -> openai.APIError:
    with pytest.raises(openai.APIError) as caught:
        call()
    return caught.value


# -- answers ------------------------------------------------------------------


def test_streamed_chat_text_is_llmocks_event_by_event(target: Target, reference: Target, tag: str):
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    want = chat(reference.client(), True, **request)
    got = chat(target.client(), True, **request)
    assert list(got.choices) == [0]
    assert got.choice(0).content, "an empty answer"
    # Forwarded as sent: the same text pieces, in the same events.
    assert got.choice(0).pieces == want.choice(0).pieces
    assert got.choice(0).finish_reason == want.choice(0).finish_reason == "stop"
    assert len(got.ids) == 1, "one completion id across the stream"


def test_collected_chat_is_llmocks_with_usage(target: Target, reference: Target, tag: str):
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    want = chat(reference.client(), False, **request)
    got = chat(target.client(), False, **request)
    assert got.object == "chat.completion"
    assert got.id.startswith("chatcmpl-")
    assert got.model == want.model == MODEL
    assert [c.index for c in got.choices] == [0]
    message = got.choices[0].message
    assert message.role == "assistant"
    assert message.content == want.choices[0].message.content
    assert message.tool_calls is None
    assert got.choices[0].finish_reason == "stop"
    # G2: usage is there for a collected client, the upstream's own numbers.
    assert got.usage is not None, "no usage in a collected answer"
    assert got.usage.model_dump() == want.usage.model_dump()
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


@pytest.mark.parametrize("ask", [False, True], ids=["usage_not_asked", "usage_asked"])
def test_streamed_usage_only_when_asked(target: Target, reference: Target, tag: str, ask: bool):
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    if ask:
        request["stream_options"] = {"include_usage": True}
    want = chat(reference.client(), True, **request)
    got = chat(target.client(), True, **request)
    assert got.choice(0).content == want.choice(0).content
    if ask:
        assert len(got.usage) == 1 and got.bare == 1, "exactly one usage chunk, without choices"
        assert got.usage[0].model_dump() == want.usage[0].model_dump()
    else:
        # The gateway always asks its upstream for usage; a client that did not must not see it.
        assert got.usage == [], f"usage in a stream that did not ask for it: {got.usage}"
        assert got.bare == 0, "a chunk without choices (the usual loop's choices[0] fails on it)"


@STREAM_MODES
def test_tool_call_chosen_by_llmock_is_assembled(target: Target, reference: Target, tag: str, stream: bool):
    request = dict(model=MODEL, messages=messages(f"What's the weather in Paris? ({tag})"), tools=[WEATHER_TOOL])
    want = chat(reference.client(), False, **request).choices[0].message.tool_calls
    assert want and len(want) == 1, "llmock did not call the offered tool"
    got = chat(target.client(), stream, **request)
    if stream:
        calls = got.tool_calls(0)
        assert [(c["name"], json.loads(c["arguments"])) for c in calls] == \
            [(want[0].function.name, json.loads(want[0].function.arguments))]
        assert calls[0]["id"] and calls[0]["id"].startswith("call_")
        assert got.choice(0).finish_reason == "tool_calls"
        assert got.choice(0).content == ""
    else:
        choice = got.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        calls = choice.message.tool_calls
        assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in calls] == \
            [("function", want[0].function.name, json.loads(want[0].function.arguments))]
        assert calls[0].id.startswith("call_")


@STREAM_MODES
def test_scripted_tool_call_arguments_arrive_intact(target: Target, mock: Llmock, tag: str, stream: bool):
    model = f"tools-{tag}"
    script_tool_calls(mock, model)
    got = chat(target.client(), stream, model=model, messages=messages(prompt(tag)), tools=[WEATHER_TOOL])
    if stream:
        calls = [(c["name"], c["arguments"]) for c in got.tool_calls(0)]
        finish = got.choice(0).finish_reason
    else:
        calls = [(c.function.name, c.function.arguments) for c in got.choices[0].message.tool_calls]
        finish = got.choices[0].finish_reason
    # Byte for byte what llmock serialised (json.dumps), merged from its fragments.
    assert calls == SCRIPTED_CALLS_SENT
    assert json.loads(calls[0][1])["big"] == SCRIPTED_ARGUMENTS["big"]
    assert finish == "tool_calls"


@STREAM_MODES
def test_n_2_gives_both_choices(target: Target, reference: Target, tag: str, stream: bool):
    request = dict(model=MODEL, messages=messages(prompt(tag)), n=2)
    want = chat(reference.client(), False, **request)
    assert len(want.choices) == 2
    got = chat(target.client(), stream, **request)
    if stream:
        assert sorted(got.choices) == [0, 1]
        assert [got.choice(i).content for i in (0, 1)] == [c.message.content for c in want.choices]
        assert [got.choice(i).finish_reason for i in (0, 1)] == ["stop", "stop"]
    else:
        assert [c.index for c in got.choices] == [0, 1]
        assert [c.message.content for c in got.choices] == [c.message.content for c in want.choices]
        assert [c.finish_reason for c in got.choices] == ["stop", "stop"]
        assert got.usage.model_dump() == want.usage.model_dump()


def test_models_list_is_llmocks(target: Target, reference: Target):
    want = [m.model_dump() for m in reference.client().models.list()]
    got = [m.model_dump() for m in target.client().models.list()]
    assert got == want
    assert "gpt-4o" in [m["id"] for m in got]


@pytest.mark.parametrize("inputs", [1, 3], ids=["one_input", "three_inputs"])
def test_embeddings_are_llmocks(target: Target, reference: Target, tag: str, inputs: int):
    text = [f"conformance {tag} #{i}" for i in range(inputs)]
    request = dict(model="text-embedding-3-small", input=text[0] if inputs == 1 else text)
    want = reference.client().embeddings.create(**request)
    got = target.client().embeddings.create(**request)
    assert [d.index for d in got.data] == list(range(inputs))
    assert all(len(d.embedding) == 1536 for d in got.data)
    assert [d.embedding for d in got.data] == [d.embedding for d in want.data]
    assert got.usage.model_dump() == want.usage.model_dump()


def test_response_headers_come_from_llmock(target: Target, tag: str):
    """G1: the headers a client acts on (x-ratelimit-*, content type) are the upstream's."""
    client = target.client()
    request = dict(model=MODEL, messages=messages(prompt(tag)))
    collected = client.chat.completions.with_raw_response.create(**request)
    assert collected.headers["content-type"].startswith("application/json")
    assert collected.headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert int(collected.headers["x-ratelimit-remaining-tokens"]) < TPM
    assert collected.parse().choices[0].message.content
    streamed = client.chat.completions.with_raw_response.create(stream=True, **request)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert read_stream(streamed.parse()).choice(0).finish_reason == "stop"


# -- requests -----------------------------------------------------------------

# Beyond 64 bits: a proxy that parses numbers into u64 or f64 would round it.
BIG_SEED = 123456789012345678901234567891


@STREAM_MODES
def test_request_body_reaches_llmock_as_sent(target: Target, reference: Target, mock: Llmock,
                                             tag: str, stream: bool):
    """G4: numbers, key order and unknown fields untouched; only `stream` and
    `stream_options` are the gateway's to set."""
    request = dict(model=f"body-{tag}", messages=messages(prompt(tag)), seed=BIG_SEED, temperature=1.0,
                   max_tokens=64, extra_body={"x_conformance": {"zeta": 1.0, "alpha": [1, 2.5, -0.0, 1e-7]}})

    def sent(client: openai.OpenAI) -> dict:
        mock.forget_requests()
        chat(client, stream, **request)
        [record] = mock.requests(path="/v1/chat/completions", model=request["model"])
        return {k: v for k, v in record["body"].items() if k not in ("stream", "stream_options")}

    want = sent(reference.client())
    got = sent(target.client())
    assert got["seed"] == BIG_SEED and type(got["seed"]) is int
    # Compared as JSON text: key order matters, and 1.0 differs from 1.
    assert json.dumps(got) == json.dumps(want)


def test_sdk_headers_reach_llmock(target: Target, mock: Llmock, tag: str):
    """G3: end-to-end request headers go upstream; llmock's journal shows the SDK's
    `x-stainless-retry-count`, coalesced endpoints and proxied paths alike."""
    client = target.client()
    chat(client, False, model=f"headers-{tag}", messages=messages(prompt(tag)))
    chat(client, True, model=f"headers-{tag}-streamed", messages=messages(prompt(tag)))
    client.models.list()
    records = mock.requests()
    assert sorted(r["path"] for r in records) == ["/v1/chat/completions", "/v1/chat/completions", "/v1/models"]
    assert [r["sdk_retry_count"] for r in records] == [0, 0, 0]


# -- errors -------------------------------------------------------------------


@STREAM_MODES
def test_429_raises_rate_limit_error_with_retry_after(target: Target, mock: Llmock, tag: str, stream: bool):
    model = f"limited-{tag}"
    script_429(mock, model)
    error = error_of(lambda: chat(target.client(), stream, model=model, messages=messages(prompt(tag))))
    assert isinstance(error, openai.RateLimitError), repr(error)
    check_scripted_429(error)
    assert error.body == OPENAI_RATE_LIMITED
    assert error.code == "rate_limit_exceeded"


@STREAM_MODES
def test_quota_429_keeps_retry_after_and_ratelimit_headers(target: Target, tag: str, stream: bool):
    # llmock's real token bucket: a request asking for twice the quota is refused
    # with the time until it could be served, and the bucket's x-ratelimit-* headers.
    error = error_of(lambda: chat(target.client(), stream, model=MODEL, messages=messages(prompt(tag)),
                                  max_tokens=2 * TPM))
    assert isinstance(error, openai.RateLimitError), repr(error)
    headers = error.response.headers
    wait = float(headers["retry-after-ms"]) / 1000
    assert 59 <= wait <= 61
    assert headers["retry-after"] == str(math.ceil(wait))
    assert headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert headers["x-ratelimit-remaining-tokens"] == str(TPM)
    assert error.code == "rate_limit_exceeded"
    assert error.type == "rate_limit_error"
    assert error.message.startswith("Error code: 429")
    assert error.body["message"].startswith(f"Rate limit reached for tokens per minute: limit {TPM}.")


@STREAM_MODES
def test_404_model_not_found_raises_not_found_error(target: Target, mock: Llmock, tag: str, stream: bool):
    # llmock serves any model name: the 404 is scripted on one name.
    model = f"no-such-model-{tag}"
    message = f"The model `{model}` does not exist or you do not have access to it."
    mock.script({"type": "fail", "status": 404, "code": "model_not_found", "message": message,
                 "match": {"model": model}})
    error = error_of(lambda: chat(target.client(), stream, model=model, messages=messages(prompt(tag))))
    assert isinstance(error, openai.NotFoundError), repr(error)
    assert error.body == {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "model_not_found"}
    assert "retry-after" not in error.response.headers


@STREAM_MODES
@pytest.mark.parametrize("status", [500, 503])
def test_5xx_raises_internal_server_error_with_its_status(target: Target, mock: Llmock, tag: str,
                                                          stream: bool, status: int):
    model = f"broken-{tag}"
    mock.script({"type": "fail", "status": status, "match": {"model": model}})
    error = error_of(lambda: chat(target.client(), stream, model=model, messages=messages(prompt(tag))))
    assert isinstance(error, openai.InternalServerError), repr(error)
    assert error.status_code == status
    assert error.body == {
        500: {"message": "Internal server error.", "type": "server_error", "param": None, "code": "internal_error"},
        503: {"message": "Service unavailable.", "type": "server_error", "param": None,
              "code": "service_unavailable"},
    }[status]
    # llmock gives a retryable 503 a one-second retry-after, and a 500 none.
    assert error.response.headers.get("retry-after") == ("1" if status == 503 else None)


@STREAM_MODES
def test_path_llmock_lacks_raises_not_found_error(target: Target, reference: Target, tag: str, stream: bool):
    # llmock has no legacy /v1/completions (which the gateway coalesces): its 404 must come through.
    def call(client: openai.OpenAI):
        result = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt(tag), stream=stream)
        return list(result) if stream else result

    want = error_of(lambda: call(reference.client()))
    got = error_of(lambda: call(target.client()))
    assert isinstance(want, openai.NotFoundError) and isinstance(got, openai.NotFoundError), repr(got)
    assert got.body == want.body


def test_upstream_failure_mid_stream_ends_the_loop_with_api_error(target: Target, reference: Target,
                                                                  mock: Llmock, tag: str):
    """llmock cannot put an error event in a stream; its nearest failure is a dropped
    connection after some chunks. Directly the SDK raises APIConnectionError; through
    the gateway, which has already sent its 200, an in-stream error event (APIError).
    Both are openai.APIError: the usual loop gets an SDK error, never a TypeError or a
    silent end, after the text sent before the failure."""
    model = f"dropped-{tag}"
    request = dict(model=model, messages=messages(prompt(tag)))
    whole = chat(reference.client(), True, **request).choice(0).content
    mock.script({"type": "stream_fault", "kind": "disconnect", "after_chunks": 3,
                 "match": {"model": model, "stream": True}})
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in target.client().chat.completions.create(stream=True, **request):
            text += chunk.choices[0].delta.content or ""  # the usual loop
    # What came before the cut came through, and nothing was invented.
    assert text and whole.startswith(text) and text != whole
