"""What the caller asks for binds every policy, as a veto does: a user's policy that ignores the
request's hints cannot answer from another model or tier than the one asked for, or from a model
that lacks what the request needs, in the library or through the server."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import model_toml
from server_helpers import serve

from orchestra import Candidate, Decision, NoAllowedModelError, Orchestra, Request, Tier, Verdict
from orchestra.config import Config, parse_config
from orchestra.core.catalog import Catalog
from orchestra.policies.base import FunctionPolicy
from orchestra.testing import FunctionBackend

MODELS = [
    {"name": "cloud-a", "tier": "cloud", "litellm_model": "openai/a", "context_window": 128000,
     "capabilities": ["vision"], "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
    {"name": "cloud-b", "tier": "cloud", "litellm_model": "openai/b", "context_window": 8000,
     "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
    {"name": "on-device", "tier": "local", "litellm_model": "openai/l", "context_window": 4000,
     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
]  # fmt: skip


def cheapest_cloud_b(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    """A user's policy that reads no hint: cloud-b, then the device, then cloud-a."""
    order = ("cloud-b", "on-device", "cloud-a")
    return Decision(
        policy="mine",
        candidates=tuple(Candidate(model=n, tier=catalog.get(n).tier) for n in order),
        reason="my order, whatever is asked",
    )


def only_cloud_b(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    return Decision(
        policy="stubborn", candidates=(Candidate(model="cloud-b", tier=Tier.CLOUD),), reason="b"
    )


def runtime(tmp_path: Path, fn: Any = cheapest_cloud_b) -> tuple[Orchestra, FunctionBackend]:
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    config = parse_config(
        {"embedded": {"enabled": False}, "health": {"enabled": False}, "models": MODELS,
         "store": {"path": str(tmp_path / "o.db")}}
    )  # fmt: skip
    return Orchestra(config, agents=[], policy=FunctionPolicy(fn), backend=backend), backend


@pytest.mark.parametrize(
    ("hints", "answered_by"),
    [
        ({}, "cloud-b"),  # no hint: the policy's own order
        ({"model": "cloud-a"}, "cloud-a"),
        ({"tier": "local"}, "on-device"),
        ({"capabilities": ["vision"]}, "cloud-a"),
        ({"min_context": 5000}, "cloud-b"),
        ({"min_context": 10000}, "cloud-a"),
    ],
)
async def test_a_policy_that_ignores_the_hints_is_held_to_them(
    tmp_path: Path, hints: dict[str, Any], answered_by: str
) -> None:
    orc, backend = runtime(tmp_path)
    async with orc:
        result = await orc.complete("hello", **hints)
        (entry,) = await orc.history(limit=1)
    assert result.model == answered_by
    assert [c.model for c in backend.calls] == [answered_by], "no other model was called"
    if hints:
        removed = [e for e in result.decision.excluded if e.by == "request"]
        assert removed, "each model the hints ruled out is said"
    assert entry["model"] == answered_by


async def test_a_policy_that_offers_nothing_asked_for_is_refused_clearly(tmp_path: Path) -> None:
    orc, backend = runtime(tmp_path, only_cloud_b)
    async with orc:
        with pytest.raises(NoAllowedModelError, match=r"stubborn.*'cloud-a' was requested"):
            await orc.complete("hello", model="cloud-a")
        (entry,) = await orc.history(limit=1)
    assert backend.calls == []
    assert entry["status"] == "error", "the refusal is recorded"


def test_the_server_answers_from_the_model_asked_for(write_config: Callable[..., Path]) -> None:
    """An OpenAI client that names a model gets that model, whatever the policy prefers."""
    url = "http://127.0.0.1:9/v1"  # never called: the backend answers
    config = write_config(
        model_toml("cloud-a", url), model_toml("cloud-b", url),
        model_toml("on-device", url, tier="local"),
    )  # fmt: skip
    backend = FunctionBackend(lambda call: f"{call.model} answers")

    def runtime(c: Config) -> Orchestra:
        return Orchestra(c, agents=[], policy=FunctionPolicy(cheapest_cloud_b), backend=backend)

    with serve(config, runtime=runtime) as server:
        for stream in (False, True):
            reply = server.client().chat.completions.create(
                model="cloud-a", messages=[{"role": "user", "content": "hello"}], stream=stream
            )
            chunks = list(reply) if stream else [reply]
            assert {c.model for c in chunks} == {"cloud-a"}  # type: ignore[union-attr]
    assert {c.model for c in backend.calls} == {"cloud-a"}
