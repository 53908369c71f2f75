"""What an app written for OpenAI's API meets at `orchestra serve`, beyond the basics in
test_server_api.py: the SDK's own defaults (its retries, explicit None), headers it reads, and
a browser's view. Real uvicorn on 127.0.0.1, stub providers through LiteLLM."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import model_toml
from server_helpers import serve

from orchestra import Orchestra
from orchestra.testing import Behaviour, StubProvider

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def test_an_unrecorded_answer_is_not_retried_by_the_sdk_so_it_is_paid_for_once(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    """The SDK retries a 500 twice by default: each retry of an answer the store could not
    record would pay the provider again, unseen by the budget."""
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server:
        with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON requests"
                " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
            )
        db.close()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")  # SDK's retries
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="stub-cloud", messages=FRANCE)
    assert caught.value.body["code"] == "not_recorded"  # type: ignore[index]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert stub.served.calls == 1, "one client call, one paid provider call"


# Every OpenAI chat parameter Orchestra does not honour, at its default: what an app's wrapper
# sends when it passes its own unset options on (the SDKs send a None argument as null).
AT_DEFAULTS: dict[str, object] = {
    name: None
    for name in (
        "stream", "n", "logprobs", "top_logprobs", "stop", "tools", "tool_choice", "functions",
        "function_call", "response_format", "logit_bias", "modalities", "audio", "prediction",
        "reasoning_effort", "verbosity", "web_search_options", "moderation", "top_p", "seed",
        "user", "safety_identifier", "metadata", "store", "presence_penalty", "frequency_penalty",
        "service_tier", "parallel_tool_calls", "prompt_cache_key", "prompt_cache_retention",
        "prompt_cache_options", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature",
    )
} | {"logit_bias": {}, "functions": [], "modalities": ["text"]}  # fmt: skip


def test_openais_parameters_at_their_defaults_are_accepted_and_other_values_refused(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server:
        client = server.client()
        nulls = client.chat.completions.create(
            model="stub-cloud", messages=FRANCE, logit_bias=None, top_logprobs=None,
            reasoning_effort=None, stream=None, audio=None, prediction=None,
        )  # fmt: skip
        assert nulls.choices[0].message.content == "Paris"
        with server.http() as http:
            body = {"model": "stub-cloud", "messages": FRANCE}
            defaults = http.post("/v1/chat/completions", json=body | AT_DEFAULTS)
            assert defaults.status_code == 200, defaults.text
            assert "logit_bias" not in stub.requests[-1]["body"], "not passed on"
            bookkeeping = {"safety_identifier": "user-42", "prompt_cache_key": "app"}
            assert http.post("/v1/chat/completions", json=body | bookkeeping).status_code == 200
            for name, value in (
                ("logit_bias", {"50256": -100}), ("reasoning_effort", "low"),
                ("modalities", ["text", "audio"]), ("functions", [{"name": "f"}]),
                ("stream", "yes"),
            ):  # fmt: skip
                refused = http.post("/v1/chat/completions", json=body | {name: value})
                assert refused.status_code == 400, (name, refused.text)
                assert refused.json()["error"]["param"] == name
        assert len(stub.requests) == 3, "nothing refused reached the provider"
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="stub-cloud", messages=FRANCE, logit_bias={"50256": -100}
            )
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "unsupported_parameter"
    assert error["message"] == "logit_bias is not supported here (only its default)"


def test_the_sdks_request_id_is_orchestras_for_answers_streams_and_errors(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    """OpenAI's SDKs read `x-request-id` (`_request_id`, `APIStatusError.request_id`): apps
    log it, and here it is the id `/v1/history` and `/v1/feedback` know."""
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server:
        client = server.client()
        answer = client.chat.completions.create(model="stub-cloud", messages=FRANCE)
        assert answer._request_id == answer.model_extra["orchestra"]["request_id"]  # type: ignore[index]
        with client.chat.completions.with_streaming_response.create(
            model="stub-cloud", messages=FRANCE, stream=True
        ) as streamed:
            rid = streamed.headers["x-request-id"]
            last = list(streamed.parse())[-1]
        assert rid == last.model_extra["orchestra"]["request_id"]  # type: ignore[index]
        secret = [{"role": "user", "content": "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"}]
        with pytest.raises(openai.UnprocessableEntityError) as vetoed:  # privacy: never cloud
            client.chat.completions.create(model="stub-cloud", messages=secret)
        history = server.http().get("/v1/history").json()["data"]
    assert vetoed.value.request_id == history[0]["request_id"]
    assert [e["request_id"] for e in history[1:]] == [rid, answer._request_id]


def test_a_page_from_a_configured_origin_may_read_the_decision_and_backoff_headers(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    """A browser hides a cross-origin response's headers from the page unless they are
    exposed: without that a page could not read which model answered or the request's id."""
    app = "http://app.example"
    config = write_config(
        model_toml("stub-cloud", stub.url), extra=f'[server]\ncors_origins = ["{app}"]\n'
    )
    with serve(config) as server, server.http() as browser:
        body = {"model": "stub-cloud", "messages": FRANCE}
        for stream in (False, True):
            call = browser.post(
                "/v1/chat/completions", json=body | {"stream": stream}, headers={"origin": app}
            )
            assert call.status_code == 200 and call.headers["x-orchestra-model"] == "stub-cloud"
            exposed = {h.strip() for h in call.headers["access-control-expose-headers"].split(",")}
            assert {"x-orchestra-request-id", "x-orchestra-tier", "x-orchestra-model"} <= exposed
            assert {"x-request-id", "retry-after", "x-should-retry"} <= exposed


class _BrokenHistory(Orchestra):
    async def history(self, *args: Any, **kwargs: Any) -> Any:
        raise ZeroDivisionError("a bug")


def test_a_bug_answered_to_a_page_carries_its_cors_headers(
    write_config: Callable[..., Path],
) -> None:
    """Whatever escapes a route becomes OpenAI's 500; a page from a configured origin must be
    able to read it (without CORS headers the browser shows the page a network error)."""
    app = "http://app.example"
    config = write_config(
        model_toml("stub-cloud", "http://127.0.0.1:9/v1"),
        extra=f'[server]\ncors_origins = ["{app}"]\n',
    )
    runtime = lambda c: _BrokenHistory(c, agents=[])  # noqa: E731
    with serve(config, runtime=runtime) as server, server.http() as browser:
        response = browser.get("/v1/history", headers={"origin": app})
    assert response.status_code == 500, response.text
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers.get("access-control-allow-origin") == app


def test_open_breakers_say_when_to_come_back(write_config: Callable[..., Path]) -> None:
    """Every model skipped for an open breaker is a 503 whose `Retry-After` is the breaker's
    recovery left: the SDK's retries wait for it, rather than hit the same open breaker."""
    with StubProvider(Behaviour(kind="status", status=500)) as broken:
        config = write_config(
            model_toml("stub-cloud", broken.url),
            extra="[breaker]\nfailure_threshold = 1\nrecovery_s = 30\n"
            "[retry]\nattempts_per_model = 1\n",
        )
        with serve(config) as server, server.http() as http:
            body = {"model": "stub-cloud", "messages": FRANCE}
            assert http.post("/v1/chat/completions", json=body).status_code == 502
            skipped = http.post("/v1/chat/completions", json=body)
    assert skipped.status_code == 503, skipped.text
    assert skipped.json()["error"]["code"] == "no_model_available"
    assert 25 <= int(skipped.headers["retry-after"]) <= 30
