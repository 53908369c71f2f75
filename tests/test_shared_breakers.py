"""Breakers are shared through the store: a provider one process found dead is skipped by every
process sharing the home (two runtimes on one file play two processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from orchestra import Orchestra, ProviderError
from orchestra.config import Config, parse_config
from orchestra.testing import Call, FunctionBackend


def config(db: Path) -> Config:
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(db)},
            "breaker": {"failure_threshold": 1, "recovery_s": 60},
            "retry": {"attempts_per_model": 1},
            "models": [
                {"name": "flaky", "tier": "local", "litellm_model": "openai/flaky"},
                {"name": "spare", "tier": "local", "litellm_model": "openai/spare"},
            ],
        }
    )


def down(call: Call) -> str:
    if call.model == "flaky":
        raise ProviderError("flaky: HTTP 500", kind="server", model="flaky")
    return f"{call.model} answers"


async def test_a_breaker_one_runtime_opens_is_seen_open_by_another(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    healthy = FunctionBackend(lambda call: f"{call.model} answers")
    async with (
        Orchestra(config(db), agents=[], backend=FunctionBackend(down)) as first,
        Orchestra(config(db), agents=[], backend=healthy) as second,
    ):
        before = await second.complete("hello")
        assert before.model == "flaky", "for the second runtime, flaky is fine so far"
        opened = await first.complete("hello")
        assert (opened.attempts[0].model, opened.attempts[0].error_kind) == ("flaky", "server")
        for _ in range(40):  # it takes up to a second (and a commit) to be seen
            await asyncio.sleep(0.1)
            assert second.executor is not None and second.executor.safeguards.breakers
            if second.executor.safeguards.breakers.get("flaky").state == "open":
                break
        after = await second.complete("hello")
    assert after.model == "spare"
    skipped = after.attempts[0]
    assert (skipped.model, skipped.error_kind, skipped.skipped) == ("flaky", "breaker_open", True)
    assert [c.model for c in healthy.calls] == ["flaky", "spare"], "flaky was not called again"
