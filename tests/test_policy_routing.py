"""Which policies replay asks for a route alone, and that a route is what `decide` gives."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from replay_history import MODELS, POLICIES

from orchestra import Catalog, Decision, Request, Tier, Verdict
from orchestra.core.errors import NoAllowedModelError
from orchestra.policies.default import DefaultPolicy
from orchestra.policies.registry import resolve_policy
from orchestra.policies.routing import router

CATALOG = Catalog(MODELS)


class Custom(DefaultPolicy):
    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        return super().decide(request, verdicts, catalog)


def test_only_builtins_as_shipped_are_routed() -> None:
    for config in POLICIES:
        assert router(resolve_policy(config)) is not None
    assert router(Custom()) is None  # a subclass may decide otherwise
    patched = DefaultPolicy()
    patched.decide = lambda r, v, c: DefaultPolicy().decide(r, v, c)  # type: ignore[method-assign]
    assert router(patched) is None


VERDICTS = [
    [],
    [Verdict(agent="a", target=Tier.CLOUD, confidence=0.9, denied_models=frozenset({"big"}))],
    [Verdict(agent="r", allowed=frozenset({Tier.EDGE, Tier.CLOUD}), state="critical"),
     Verdict(agent="resource", state="no_memory", target=Tier.LOCAL, stale=True)],
    [Verdict(agent="complexity", target=Tier.EDGE, metrics={"score": 0.9}, confidence=0.4),
     Verdict(agent="cost", state="over_budget", allowed=frozenset({Tier.LOCAL}))],
]  # fmt: skip
REQUESTS = [
    Request.of("hi"),
    Request.of("hi", tier="edge"),
    Request.of("hi", model="mini"),
    Request.of("hi", model="big"),
    Request.of("hi", capabilities=frozenset({"vision"})),
]


@pytest.mark.parametrize("config", POLICIES, ids=lambda c: c.name)
def test_a_route_is_the_decisions_target_and_candidates(config: object) -> None:
    policy = resolve_policy(config)  # type: ignore[arg-type]
    for verdicts in VERDICTS:
        for request in REQUESTS:
            try:
                decision = policy.decide(request, verdicts, CATALOG)
            except NoAllowedModelError:
                with pytest.raises(NoAllowedModelError):
                    policy.route(request, verdicts, CATALOG)  # type: ignore[attr-defined]
                continue
            route = policy.route(request, verdicts, CATALOG)  # type: ignore[attr-defined]
            assert (route.target, route.candidates) == (decision.target, decision.candidates)
