"""Offline-first resilience: what one process cannot do (a key it lacks) is not a provider's
outage, a breaker never strands the last model that could answer, and a half-open breaker's trial
is given back when no call was made."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra import Orchestra
from orchestra.config import Config, parse_config
from orchestra.testing import FunctionBackend


def shared(db: Path, **extra: object) -> Config:
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(db)},
            "breaker": {"failure_threshold": 2, "recovery_s": 600},
            "retry": {"attempts_per_model": 1},
            "models": [
                {"name": "keyed", "tier": "local", "litellm_model": "openai/keyed",
                 "api_key_env": "KEYED_API_KEY", "input_cost_per_mtok": 0.0,
                 "output_cost_per_mtok": 0.0},
                {"name": "spare", "tier": "local", "litellm_model": "openai/spare"},
            ],
            **extra,
        }
    )  # fmt: skip


async def test_a_key_missing_in_one_process_does_not_open_the_breaker_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shared.db"
    monkeypatch.delenv("KEYED_API_KEY", raising=False)
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    async with Orchestra(shared(db), agents=[], backend=backend) as keyless:
        results = [await keyless.complete("hello") for _ in range(3)]
    assert all(r.model == "spare" for r in results)
    missing = results[-1].attempts[0]
    assert missing.model == "keyed" and "KEYED_API_KEY" in (missing.error or "")
    assert not missing.skipped, "the key is looked for at every call: no breaker skips it"
    monkeypatch.setenv("KEYED_API_KEY", "sk-keyed-0123456789")
    async with Orchestra(shared(db), agents=[], backend=backend) as keyed:
        answered = await keyed.complete("hello")
    assert answered.model == "keyed", answered.attempts
