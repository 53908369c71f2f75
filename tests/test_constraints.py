"""Hard constraints belong to the runtime: whatever a policy returns, a veto binds it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from orchestra import (
    Agent,
    Candidate,
    Decision,
    ModelSpec,
    NoAllowedModelError,
    Orchestra,
    Request,
    Tier,
    Verdict,
)
from orchestra.config import parse_config
from orchestra.core.catalog import Catalog
from orchestra.policies.base import FunctionPolicy, decide_checked
from orchestra.testing import FunctionBackend

CONFIG = parse_config(
    {
        "embedded": {"enabled": False},
        "health": {"enabled": False},
        "models": [
            {"name": "cloud-a", "tier": "cloud", "litellm_model": "openai/a"},
            {"name": "cloud-b", "tier": "cloud", "litellm_model": "openai/b"},
            {"name": "on-device", "tier": "local", "litellm_model": "openai/l"},
        ],
    }
)


class Secretive(Agent):
    """Plays the privacy agent: a prompt with a secret stays on this device."""

    name = "privacy"

    async def check(self, request: Request | None) -> Verdict:
        if request is not None and "SECRET" in request.prompt:
            return self.verdict(allowed=frozenset({Tier.LOCAL}), reason="a credential")
        return self.verdict(confidence=0.0, reason="clean")


class DeniesB(Agent):
    name = "cost"

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(denied_models=frozenset({"cloud-b"}), confidence=0.0, reason="dear")


def cloud_first(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    """A user policy that ignores every verdict and lists the cloud first."""
    order = ["cloud-a", "cloud-b", "on-device"]
    return Decision(
        policy="cloud-first",
        candidates=tuple(Candidate(model=m, tier=catalog.get(m).tier) for m in order),
        reason="cloud, whatever they say",
    )


def run(*agents: Agent, policy: Any = cloud_first) -> tuple[Orchestra, FunctionBackend]:
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    orc = Orchestra(CONFIG, agents=agents, policy=FunctionPolicy(policy), backend=backend)
    return orc, backend


async def test_a_policy_cannot_send_a_flagged_prompt_to_the_cloud() -> None:
    orc, backend = run(Secretive())
    async with orc:
        flagged = await orc.complete("my SECRET is 1234")
        plain = await orc.complete("hello")
        history = await orc.history()
    assert flagged.model == "on-device"
    assert [c.model for c in flagged.decision.candidates] == ["on-device"]
    removed = [e for e in flagged.decision.excluded if e.by == "runtime"]
    assert {e.model for e in removed} == {"cloud-a", "cloud-b"}
    assert all("disallowed by privacy" in e.reason for e in removed)
    assert plain.model == "cloud-a", "no veto, the policy's order stands"
    assert [c.model for c in backend.calls] == ["on-device", "cloud-a"]
    stored = next(h for h in history if h["request_id"] == flagged.request_id)
    assert any(e["by"] == "runtime" for e in stored["decision"]["excluded"]), "it is recorded"


async def test_a_denied_model_is_removed_from_any_policy() -> None:
    orc, _ = run(DeniesB())
    async with orc:
        first = await orc.complete("hello")
    assert [c.model for c in first.decision.candidates] == ["cloud-a", "on-device"]
    assert any(e.model == "cloud-b" and "denied by cost" in e.reason
               for e in first.decision.excluded)  # fmt: skip


async def test_a_policy_cannot_relabel_a_cloud_model_as_local() -> None:
    def sneaky(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        return Decision(
            policy="sneaky",
            candidates=(Candidate(model="cloud-a", tier=Tier.LOCAL),),
            reason="it is local, honest",
        )

    orc, backend = run(Secretive(), policy=sneaky)
    async with orc:
        with pytest.raises(NoAllowedModelError, match="vetoed"):
            await orc.complete("the SECRET again")
        relabelled = await orc.complete("hello")
        history = await orc.history()
    assert backend.calls and all(c.model == "cloud-a" for c in backend.calls)
    assert len(backend.calls) == 1, "the flagged prompt never left"
    assert relabelled.decision.candidates[0].tier is Tier.CLOUD
    assert history[1]["status"] == "error" and history[1]["error_kind"] == "NoAllowedModelError"


def test_a_list_found_right_once_is_checked_again_against_a_changed_catalog() -> None:
    specs = [ModelSpec(name=f"m{i}", tier=Tier.CLOUD, litellm_model=f"openai/m{i}")
             for i in range(50)]  # fmt: skip
    before = Catalog(specs)
    candidates = tuple(Candidate(model=s.name, tier=Tier.CLOUD) for s in specs)

    def same_list(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        return Decision(policy="same", candidates=candidates, reason="")

    policy = FunctionPolicy(same_list)
    request = Request.of("hi")
    assert decide_checked(policy, request, (), before).candidates == candidates
    assert decide_checked(policy, request, (), before).candidates == candidates
    # m0 moves on device: the same list is now wrong about it, and is corrected.
    moved = before.replacing(specs[0].model_copy(update={"tier": Tier.LOCAL}))
    first = decide_checked(policy, request, (), moved).candidates[0]
    assert (first.model, first.tier) == ("m0", Tier.LOCAL)
    # m1 leaves the catalog: the list is refused, not waved through from memory.
    with pytest.raises(Exception, match="m1"):
        decide_checked(policy, request, (), before.removing("m1"))
