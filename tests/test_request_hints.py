"""Hints given beside a ready-made `Request` are checked like any other: a bad one is a clear
`RequestError` before any model is called or any money held, and nothing recorded is lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestra import Orchestra, Request, RequestError
from orchestra.config import parse_config
from orchestra.testing import StubProvider


def config(home: Path, stub: StubProvider) -> Any:
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(home / "orchestra.db")},
            "budget": {"daily_usd": 1.0},
            "models": [
                {"name": "paid", "tier": "cloud", "litellm_model": "openai/paid",
                 "api_base": stub.url, "api_key_env": "STUB_API_KEY",
                 "input_cost_per_mtok": 10.0, "output_cost_per_mtok": 10.0},
            ],
        }
    )  # fmt: skip


BAD_HINTS = [
    {"max_tokens": -5},
    {"max_tokens": 0},
    {"temperature": 9.0},
    {"tier": "bogus"},
    {"timeout_s": -1.0},
    {"no_such_hint": 1},
]


@pytest.mark.parametrize("hints", BAD_HINTS)
async def test_bad_hints_beside_a_request_are_refused_before_any_call(
    tmp_path: Path, stub: StubProvider, hints: dict[str, Any]
) -> None:
    async with Orchestra(config(tmp_path, stub)) as orc:
        with pytest.raises(RequestError, match="malformed request"):
            await orc.complete(Request.of("What is the capital of France?"), **hints)
        with pytest.raises(RequestError, match="malformed request"):
            orc.stream(Request.of("What is the capital of France?"), **hints)
        assert stub.requests == [], "no model was called"
        result = await orc.complete(Request.of("And of Italy?"), max_tokens=5)
        assert (await orc.history(limit=5))[0]["request_id"] == result.request_id
        assert (await orc.spend_summary())["reserved_usd"] == 0.0


async def test_good_hints_beside_a_request_apply(tmp_path: Path, stub: StubProvider) -> None:
    request = Request.of("What is the capital of France?")
    async with Orchestra(config(tmp_path, stub)) as orc:
        result = await orc.complete(request, max_tokens=7, tier="cloud")
    assert result.request_id == request.id
    assert stub.requests[-1]["body"]["max_tokens"] == 7
