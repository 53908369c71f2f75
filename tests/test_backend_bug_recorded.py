"""A backend that raises something other than a provider's failure (a bug in a user's backend)
is recorded as what it is, not as a caller who went away: the request's error kind names the
exception, its attempt says "error", and the caller gets the exception itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestra import Orchestra
from orchestra.config import parse_config
from orchestra.testing import Call, FunctionBackend

KEY = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def buggy(call: Call) -> str:
    raise ValueError(f"my backend broke while holding {KEY}")


def runtime(tmp_path: Path, backend: FunctionBackend | None = None) -> Orchestra:
    config = parse_config(
        {"embedded": {"enabled": False}, "health": {"enabled": False},
         "models": [{"name": "mine", "tier": "edge", "litellm_model": "openai/mine"}],
         "store": {"path": str(tmp_path / "o.db")}}
    )  # fmt: skip
    return Orchestra(config, agents=[], backend=backend or FunctionBackend(buggy))


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_a_backends_bug_is_recorded_as_an_error_not_a_cancellation(
    tmp_path: Path, stream: bool
) -> None:
    async with runtime(tmp_path) as orc:
        with pytest.raises(ValueError, match="my backend broke"):
            if stream:
                async with orc.stream("hello") as s:
                    async for _ in s:
                        pass
            else:
                await orc.complete("hello")
        (entry,) = await orc.history(limit=5)
    assert entry["status"] == "error"
    assert entry["error_kind"] == "ValueError"
    assert KEY not in (entry["error"] or ""), "a secret in the message is masked"
    (attempt,) = entry["attempts"]
    assert attempt["error_kind"] == "error" and "ValueError" in attempt["error"]


async def test_a_caller_that_leaves_is_still_recorded_as_cancelled(tmp_path: Path) -> None:
    async def slow(call: Call) -> str:
        await asyncio.sleep(30)
        return "late"

    async with runtime(tmp_path, FunctionBackend(slow)) as orc:
        task = asyncio.create_task(orc.complete("hello"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        (entry,) = await orc.history(limit=5)
    assert entry["error_kind"] == "cancelled"
    (attempt,) = entry["attempts"]
    assert attempt["error_kind"] == "cancelled"
