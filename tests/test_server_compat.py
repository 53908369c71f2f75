"""What an app written for OpenAI's API meets at `orchestra serve`, beyond the basics in
test_server_api.py: the SDK's own defaults (its retries, explicit None), headers it reads, and
a browser's view. Real uvicorn on 127.0.0.1, stub providers through LiteLLM."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from conftest import model_toml
from server_helpers import serve

from orchestra.testing import StubProvider

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
