"""`orchestra serve` on PostgreSQL: two servers (two hosts, say) on one database share the
models changed while running, the history and the spend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import model_toml
from server_helpers import serve, wait_for_model
from test_server_admin import ASK, TOKEN, new_model

from orchestra.testing import StubProvider


def test_two_servers_on_one_database_share_models_history_and_spend(
    pg_url: str, stub: StubProvider, stub2: StubProvider, write_config: Callable[..., Path]
) -> None:
    extra = f'[server]\nmodels_sync_s = 0.1\n[store]\nurl = "{pg_url}"\n'
    config = write_config(model_toml("stub-cloud", stub.url), extra=extra)
    with serve(config, token=TOKEN) as first, serve(config, token=TOKEN) as second:
        with first.http(TOKEN) as http:
            assert http.post("/admin/models", json=new_model(stub2.url)).status_code == 201
        client = second.client(TOKEN)
        wait_for_model(client, "added")
        one = client.chat.completions.create(model="added", messages=ASK)
        two = first.client(TOKEN).chat.completions.create(model="stub-cloud", messages=ASK)
        with first.http(TOKEN) as http:
            history = http.get("/v1/history", params={"limit": 10}).json()
            status = http.get("/status").json()
    ids = [entry["request_id"] for entry in history["data"]]
    assert sorted(ids) == sorted(a.id.removeprefix("chatcmpl-") for a in (one, two)), "one history"
    assert status["spend"]["today_usd"] > 0, "both servers' spend, read from the shared ledger"
