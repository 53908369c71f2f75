"""A veto binds every policy, on every path: built-in and user policies, a forced model,
failover, the response cache, streaming, the server, replay and experiments."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import model_toml
from server_helpers import serve

from orchestra import (
    Agent,
    Candidate,
    Decision,
    NoAllowedModelError,
    Orchestra,
    Request,
    Tier,
    Verdict,
)
from orchestra.config import parse_config
from orchestra.core.catalog import Catalog
from orchestra.core.errors import AllCandidatesFailed, ProviderError
from orchestra.lab.experiment import run_experiment, scenario_catalog
from orchestra.lab.replay import replay
from orchestra.lab.scenario import Scenario
from orchestra.policies.base import FunctionPolicy, Policy
from orchestra.policies.registry import BUILTIN_POLICIES, PolicyConfig, resolve_policy
from orchestra.testing import Call, FunctionBackend

# One model a tier, so a tier credited is a model credited.
MODELS = [
    {"name": "cloud-a", "tier": "cloud", "litellm_model": "openai/a", "quality": 0.99,
     "typical_latency_ms": 1.0, "input_cost_per_mtok": 1.0, "output_cost_per_mtok": 2.0},
    {"name": "edge-x", "tier": "edge", "litellm_model": "openai/e", "quality": 0.9,
     "typical_latency_ms": 2.0, "input_cost_per_mtok": 0.5, "output_cost_per_mtok": 1.0},
    {"name": "on-device", "tier": "local", "litellm_model": "openai/l",
     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
]  # fmt: skip
# Every built-in, and routing tables that send everything to the cloud.
POLICIES: list[dict[str, Any]] = [
    *({"name": n} for n in BUILTIN_POLICIES),
    {"name": "matrix", "rules": [{"tier": "cloud"}]},
    {"name": "cost_saver", "max_tier": "cloud"},
]
# prompt word -> the models its veto forbids
FORBIDDEN = {"SECRET": {"cloud-a", "edge-x"}, "OFFLINE": {"cloud-a", "edge-x"},
             "NOCLOUD": {"cloud-a"}}  # fmt: skip


class Vetoes(Agent):
    """A user's agent: a secret stays on the device, offline means local, and one model denied."""

    name = "mine"

    async def check(self, request: Request | None) -> Verdict:
        prompt = request.prompt if request is not None else ""
        if "SECRET" in prompt:
            return self.verdict(allowed=frozenset({Tier.LOCAL}), reason="a secret")
        if "OFFLINE" in prompt:
            return self.verdict(allowed=frozenset({Tier.LOCAL}), state="offline", reason="offline")
        if "NOCLOUD" in prompt:
            return self.verdict(denied_models=frozenset({"cloud-a"}), reason="too dear")
        return self.verdict(confidence=0.0, reason="no opinion")


class WantsCloud(Agent):
    """Votes for the cloud as hard as it can: a vote never beats a veto."""

    name = "wants-cloud"

    async def check(self, request: Request | None) -> Verdict:
        return self.verdict(target=Tier.CLOUD, confidence=1.0, reason="cloud please")


def cloud_first(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    """A user's policy that reads no verdict and honours no hint: cloud, edge, then local."""
    ordered = sorted(catalog, key=lambda m: -m.tier.rank)
    return Decision(
        policy="cloud-first",
        candidates=tuple(Candidate(model=m.name, tier=m.tier) for m in ordered),
        reason="the cloud, whatever they say",
    )


def policy_of(spec: dict[str, Any] | None) -> Policy:
    return FunctionPolicy(cloud_first) if spec is None else resolve_policy(PolicyConfig(**spec))


def answer(call: Call) -> str:
    if "FAIL" in call.prompt and call.model == "on-device":
        raise ProviderError("the device is busy", kind="server", model=call.model, status_code=500)
    return f"{call.model} answers"


def runtime(spec: dict[str, Any] | None, backend: FunctionBackend, tmp_path: Path) -> Orchestra:
    config = parse_config(
        {"embedded": {"enabled": False}, "health": {"enabled": False}, "models": MODELS,
         "cache": {"enabled": True}, "store": {"path": str(tmp_path / "o.db")}}
    )  # fmt: skip
    return Orchestra(
        config, agents=[Vetoes(), WantsCloud()], policy=policy_of(spec), backend=backend
    )


async def ask(orc: Orchestra, prompt: str, stream: bool, **hints: Any) -> str:
    if not stream:
        return (await orc.complete(prompt, **hints)).model
    async with orc.stream(prompt, **hints) as s:
        assert [p async for p in s]
    assert s.result is not None
    return s.result.model


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("spec", [*POLICIES, None], ids=lambda s: (s and str(s)) or "user")
async def test_no_policy_path_reaches_a_vetoed_model(
    spec: dict[str, Any] | None, stream: bool, tmp_path: Path
) -> None:
    backend = FunctionBackend(answer)
    async with runtime(spec, backend, tmp_path) as orc:
        for word, forbidden in FORBIDDEN.items():
            for prompt in (f"hello {word}", f"hello {word}"):  # the second: a cache hit
                assert await ask(orc, prompt, stream) not in forbidden
            # The first choice fails: failover must not reach a vetoed model.
            with contextlib.suppress(AllCandidatesFailed):
                assert await ask(orc, f"{word} FAIL", stream) not in forbidden
            # A forced model the veto denies is refused, by every policy that honours it (the
            # user's ignores the hint: the veto still binds what it chose instead).
            for name in forbidden:
                with contextlib.suppress(NoAllowedModelError):
                    assert await ask(orc, f"forced {word}", stream, model=name) not in forbidden
    called = [c for c in backend.calls if any(w in c.prompt for w in FORBIDDEN)]
    assert called, "the vetoed prompts were answered"
    for call in called:
        word = next(w for w in FORBIDDEN if w in call.prompt)
        assert call.model not in FORBIDDEN[word], f"{call.prompt!r} reached {call.model}"


class Switch(Agent):
    """Denies cloud-a once switched on: the same prompt, before and after a veto."""

    name = "switch"
    on = False

    async def check(self, request: Request | None) -> Verdict:
        denied = frozenset({"cloud-a"}) if self.on else frozenset()
        return self.verdict(denied_models=denied, confidence=0.0, reason="switched")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("spec", [{"name": "default"}, None], ids=["default", "user"])
async def test_the_cache_serves_no_answer_of_a_model_vetoed_since(
    spec: dict[str, Any] | None, stream: bool, tmp_path: Path
) -> None:
    """cloud-b is a cloud model too: the cache key (the tier) matches, the answer's model not."""
    models = [*MODELS, {**MODELS[0], "name": "cloud-b", "litellm_model": "openai/b"}]
    config = parse_config(
        {"embedded": {"enabled": False}, "health": {"enabled": False}, "models": models,
         "cache": {"enabled": True}, "store": {"path": str(tmp_path / "o.db")}}
    )  # fmt: skip
    backend, switch = FunctionBackend(answer), Switch()
    agents = [switch, WantsCloud()]
    async with Orchestra(config, agents=agents, policy=policy_of(spec), backend=backend) as orc:
        assert await ask(orc, "the same words", stream) == "cloud-a"
        assert await ask(orc, "the same words", stream) == "cloud-a", "from the cache"
        switch.on = True
        assert await ask(orc, "the same words", stream) == "cloud-b"
    assert [c.model for c in backend.calls] == ["cloud-a", "cloud-b"]


async def test_replay_credits_no_policy_with_a_model_a_recorded_veto_denied(
    tmp_path: Path,
) -> None:
    backend = FunctionBackend(answer)
    async with runtime({"name": "default"}, backend, tmp_path) as orc:
        for i in range(4):
            for word in FORBIDDEN:
                await orc.complete(f"{word} {i}")
        for hints in ({"model": "cloud-a"}, {"tier": "cloud"}):
            with pytest.raises(NoAllowedModelError):
                await orc.complete("SECRET forced", **hints)
        policies = [policy_of(s) for s in (*POLICIES[:-2], None)]
        reports = await replay(orc.store, orc.catalog, policies)
        builtins = [p for p in policies if p.name != "cloud_first"]
        parallel = await replay(orc.store, orc.catalog, builtins, workers=2)
    for report in [*reports, *parallel]:
        assert report.requests == 4 * len(FORBIDDEN) + 2
        # NOCLOUD leaves the edge; SECRET and OFFLINE only the device; the forced ones nothing.
        assert report.tier_counts.get("cloud", 0) == 0, report
        assert report.tier_counts.get("edge", 0) <= 4, report
        assert report.no_allowed_model == 2 or report.policy == "cloud_first", report
    for one, other in zip(reports, parallel, strict=False):
        assert (one.tier_counts, one.estimated_cost_usd) == (
            other.tier_counts,
            pytest.approx(other.estimated_cost_usd),
        )


def test_experiments_answer_nothing_on_a_tier_or_model_their_events_rule_out() -> None:
    scenario = Scenario.model_validate(
        {
            "seed": 3,
            "requests": {"count": 300, "rate_per_s": 2},
            "models": [{k: v for k, v in m.items() if k != "litellm_model"} for m in MODELS],
            "events": [
                {"kind": "network_drop", "at": "20s", "for": "30s", "tiers": ["cloud"]},
                {"kind": "network_drop", "at": "60s", "for": "20s"},
                {"kind": "outage", "at": "100s", "for": "30s", "model": "edge-x"},
            ],
        }
    )
    catalog = scenario_catalog(scenario)
    policies = [policy_of(s) for s in POLICIES[:-2]] + [policy_of(None)]
    result = run_experiment(scenario, policies, catalog)
    for run in result.runs:
        for row in run.rows:
            assert not (20 <= row.t_s < 50 and row.tier == "cloud"), (run.policy, row)
            assert not (60 <= row.t_s < 80 and row.tier in ("edge", "cloud")), (run.policy, row)
            assert not (100 <= row.t_s < 130 and row.model == "edge-x"), (run.policy, row)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_the_server_keeps_a_secret_on_the_device_wherever_it_sits(
    write_config: Callable[..., Path], stream: bool
) -> None:
    """The real privacy agent, through the OpenAI SDK: a key in any message or part."""
    config = write_config(
        model_toml("stub-cloud", "http://127.0.0.1:9/v1"),
        model_toml("stub-local", "http://127.0.0.1:9/v1", tier="local"),
        extra='[agents]\nenabled = ["privacy"]\n[policy]\nname = "quality_first"\n',
    )
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    conversations: list[list[dict[str, Any]]] = [
        [{"role": "developer", "content": f"use {key}"}, {"role": "user", "content": "hi"}],
        [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                      {"type": "text", "text": f"key={key}"}]}],
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": key},
         {"role": "user", "content": "again"}],
    ]  # fmt: skip
    with serve(config, runtime=lambda c: Orchestra(c, backend=backend)) as server:
        client = server.client()
        for messages in conversations:
            chosen = client.chat.completions.create(
                model="auto",
                messages=messages,
                stream=stream,  # type: ignore[arg-type]
            )
            model = (
                next(c.model for c in chosen)  # type: ignore[union-attr]
                if stream
                else chosen.model  # type: ignore[union-attr]
            )
            assert model == "stub-local"
            with pytest.raises(openai.UnprocessableEntityError) as refused:
                client.chat.completions.create(
                    model="stub-cloud",
                    messages=messages,
                    stream=stream,  # type: ignore[arg-type]
                )
            assert refused.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    assert [c.model for c in backend.calls] == ["stub-local"] * len(conversations)
