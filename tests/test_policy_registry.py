"""Your own policies: registered functions and classes, TOML parameters, entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from orchestra import (
    Candidate,
    Catalog,
    Decision,
    FunctionPolicy,
    Orchestra,
    PolicyError,
    Request,
    Tier,
    Verdict,
    register_policy,
)
from orchestra.config import parse_config
from orchestra.policies.registry import PolicyConfig, resolve_policy


def last_model(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    spec = list(catalog)[-1]
    return Decision(
        policy="last",
        candidates=(Candidate(model=spec.name, tier=spec.tier, reason="always the last model"),),
        reason="a toy policy",
    )


class Pinned:
    """Pins one tier, with a parameter from TOML."""

    name = "pinned"

    def __init__(self, tier: str = "local") -> None:
        self.tier = Tier(tier)

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        specs = catalog.in_tier(self.tier)
        return Decision(
            policy=self.name,
            candidates=tuple(Candidate(model=s.name, tier=s.tier) for s in specs),
            reason=f"pinned to {self.tier}",
        )


def test_a_registered_function_is_a_policy() -> None:
    register_policy("last", last_model)
    policy = resolve_policy(PolicyConfig(name="last"))
    assert isinstance(policy, FunctionPolicy) and policy.name == "last"


def test_a_registered_class_gets_its_toml_parameters() -> None:
    register_policy("pinned", Pinned)
    config = parse_config({"policy": {"name": "pinned", "tier": "cloud"}})
    policy = resolve_policy(config.policy)
    assert isinstance(policy, Pinned) and policy.tier is Tier.CLOUD
    with pytest.raises(PolicyError, match="cannot build policy 'pinned'"):
        resolve_policy(PolicyConfig.model_validate({"name": "pinned", "tier": "moon"}))


async def test_the_runtime_uses_a_registered_policy() -> None:
    register_policy("last", last_model)
    config = parse_config(
        {
            "policy": {"name": "last"},
            "models": [
                {
                    "name": "a",
                    "tier": "cloud",
                    "litellm_model": "openai/a",
                    "api_base": "http://127.0.0.1:9",
                },
                {
                    "name": "b",
                    "tier": "edge",
                    "litellm_model": "openai/b",
                    "api_base": "http://127.0.0.1:9",
                },
            ],
            "embedded": {"enabled": False},
        }
    )
    async with Orchestra(config, agents=[], preload_backend=False) as orc:
        decision, _ = await orc.decide("hello")
    assert [c.model for c in decision.candidates] == ["b"] and decision.policy == "last"


@pytest.fixture
def installed_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    site = tmp_path / "site"
    (site / "tier_pin").mkdir(parents=True)
    (site / "tier_pin" / "__init__.py").write_text(
        "class Edge:\n"
        "    name = 'edge-only'\n"
        "    def __init__(self, **params):\n"
        "        self.params = params\n"
        "    def decide(self, request, verdicts, catalog):\n"
        "        raise RuntimeError('not needed here')\n"
    )  # fmt: skip
    dist = site / "tier_pin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tier-pin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[orchestra.policies]\nedge-only = tier_pin:Edge\n")
    monkeypatch.syspath_prepend(str(site))
    yield
    sys.modules.pop("tier_pin", None)


def test_entry_point_policies(installed_policy: None) -> None:
    policy = resolve_policy(PolicyConfig.model_validate({"name": "edge-only", "strict": True}))
    assert policy.name == "edge-only" and policy.params == {"strict": True}  # type: ignore[attr-defined]


def test_a_function_with_the_wrong_shape_is_refused() -> None:
    register_policy("bad", lambda request: None)
    with pytest.raises(PolicyError, match="not a policy"):
        resolve_policy(PolicyConfig(name="bad"))
