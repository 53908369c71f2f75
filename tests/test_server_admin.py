"""Models added, changed and removed while the server runs, kept across restarts and shared by
every server (worker) on the same store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from conftest import model_toml
from server_helpers import serve, wait_for_model

from orchestra.testing import Behaviour, StubProvider

TOKEN = "admin-token-0123456789abcdef"
ASK = [{"role": "user", "content": "What is the capital of Italy?"}]


def new_model(url: str, **fields: object) -> dict[str, object]:
    return {
        "name": "added",
        "tier": "cloud",
        "litellm_model": "openai/added",
        "api_base": url,
        "api_key_env": "STUB_API_KEY",
        "input_cost_per_mtok": 1.0,
        "output_cost_per_mtok": 2.0,
        **fields,
    }


def test_add_use_restart_patch_delete(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("stub-cloud", stub.url))
    with serve(config, token=TOKEN) as server, server.http(TOKEN) as http:
        added = http.post("/admin/models", json=new_model(stub2.url))
        assert added.status_code == 201, added.text
        assert added.json()["id"] == "added" and added.json()["api_base"] == stub2.url
        client = server.client(TOKEN)
        assert [m.id for m in client.models.list()] == ["auto", "stub-cloud", "added"]
        answer = client.chat.completions.create(model="added", messages=ASK)
        assert answer.choices[0].message.content == "Rome"
        assert http.post("/admin/models", json=new_model(stub2.url)).status_code == 409

    with serve(config, token=TOKEN) as server, server.http(TOKEN) as http:  # a restart
        client = server.client(TOKEN)
        assert [m.id for m in client.models.list()] == ["auto", "stub-cloud", "added"]
        assert client.chat.completions.create(model="added", messages=ASK).model == "added"

        patched = http.patch("/admin/models/added", json={"api_base": stub.url, "quality": 0.9})
        assert patched.status_code == 200, patched.text
        assert patched.json()["api_base"] == stub.url and patched.json()["quality"] == 0.9
        assert patched.json()["input_cost_per_mtok"] == 1.0, "unpatched fields are kept"
        answer = client.chat.completions.create(model="added", messages=ASK)
        assert answer.choices[0].message.content == "Paris", "the patched endpoint answers"

        assert http.delete("/admin/models/added").json() == {
            "id": "added", "object": "model", "deleted": True,
        }  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="added", messages=ASK)
        assert http.delete("/admin/models/added").status_code == 404
        # A configured model can be removed too; the removal is kept like any change.
        assert http.delete("/admin/models/stub-cloud").status_code == 200

    with serve(config, token=TOKEN) as server:
        assert [m.id for m in server.client(TOKEN).models.list()] == ["auto"]


def test_bad_models_are_refused_with_the_field_named(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    config = write_config(model_toml("stub-cloud", stub.url))
    with serve(config, token=TOKEN) as server, server.http(TOKEN) as http:
        cases = [
            (new_model(stub.url, tier="moon"), "tier"),
            (new_model(stub.url, api_key="sk-abc"), "api_key"),
            (new_model(stub.url, api_key_env="ORCHESTRA_TOKEN"), "api_key_env"),
            (new_model(stub.url, name="auto"), "name"),
            (new_model(stub.url, embedded=True), "embedded"),
            (new_model(stub.url, colour="blue"), "colour"),
        ]
        for body, param in cases:
            refused = http.post("/admin/models", json=body)
            assert refused.status_code == 400, (param, refused.text)
            assert refused.json()["error"]["param"] == param
        renamed = http.patch("/admin/models/stub-cloud", json={"name": "other"})
        assert renamed.status_code == 400
        assert http.patch("/admin/models/ghost", json={}).status_code == 404
        assert [m["id"] for m in http.get("/admin/models").json()["data"]] == ["stub-cloud"]


def test_a_change_reaches_every_server_on_the_same_store(
    stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    """Two servers on one store stand for two workers: a change made through one reaches the
    other within its sync interval (`[server] models_sync_s`)."""
    extra = "[server]\nmodels_sync_s = 0.1\n"
    config = write_config(model_toml("stub-cloud", stub.url), extra=extra)
    with serve(config, token=TOKEN) as first, serve(config, token=TOKEN) as second:
        with first.http(TOKEN) as http:
            assert http.post("/admin/models", json=new_model(stub2.url)).status_code == 201
        client = second.client(TOKEN)
        wait_for_model(client, "added")
        assert client.chat.completions.create(model="added", messages=ASK).model == "added"


def test_a_request_in_flight_keeps_the_catalog_it_started_with(
    write_config: Callable[..., Path],
) -> None:
    with StubProvider(Behaviour(reply="slow answer", delay_s=0.6)) as slow:
        config = write_config(model_toml("stub-cloud", slow.url))
        with serve(config, token=TOKEN) as server, server.http(TOKEN) as http:
            answers: list[str | None] = []

            def ask() -> None:
                answer = server.client(TOKEN).chat.completions.create(
                    model="stub-cloud", messages=ASK
                )
                answers.append(answer.choices[0].message.content)

            call = threading.Thread(target=ask)
            call.start()
            time.sleep(0.3)  # the call is waiting on the provider
            assert http.delete("/admin/models/stub-cloud").status_code == 200
            call.join(10)
            assert answers == ["slow answer"]
