"""Every built-in policy: its own ordering and explanations, then properties all must keep."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra import (
    Catalog,
    Decision,
    Exclusion,
    ModelSpec,
    NoAllowedModelError,
    PolicyError,
    Request,
    Tier,
    UnknownModelError,
    Verdict,
)
from orchestra.config import parse_config
from orchestra.policies.base import Policy, decide_checked
from orchestra.policies.cost_saver import CostSaverPolicy
from orchestra.policies.default import DefaultPolicy
from orchestra.policies.latency_first import LatencyFirstPolicy
from orchestra.policies.local_first import LocalFirstPolicy
from orchestra.policies.matrix import MatrixPolicy
from orchestra.policies.quality_first import QualityFirstPolicy
from orchestra.policies.registry import (
    BUILTIN_POLICIES,
    PolicyConfig,
    builtin_policy_type,
    resolve_policy,
)

L, E, C = Tier.LOCAL, Tier.EDGE, Tier.CLOUD


def spec(name: str, tier: Tier, **fields: Any) -> ModelSpec:
    return ModelSpec(name=name, tier=tier, litellm_model=f"openai/{name}", **fields)


def req(**hints: object) -> Request:
    return Request.of("What is the capital of France?", **hints)


def names(decision: Decision) -> list[str]:
    return [c.model for c in decision.candidates]


def verdict(agent: str, **fields: Any) -> Verdict:
    return Verdict(agent=agent, at=0.0, **fields)


FULL = Catalog(
    [
        spec("l1", L, capabilities=frozenset({"json"}), quality=0.3, typical_latency_ms=300),
        spec("l2", L, input_cost_per_mtok=0, output_cost_per_mtok=0, size_mb=4000),
        spec("e1", E, input_cost_per_mtok=0.1, output_cost_per_mtok=0.1, typical_latency_ms=900),
        spec(
            "c1",
            C,
            input_cost_per_mtok=3,
            output_cost_per_mtok=15,
            quality=0.95,
            typical_latency_ms=2500,
            capabilities=frozenset({"vision", "json"}),
            context_window=200_000,
        ),
        spec("c2", C, input_cost_per_mtok=0.1, output_cost_per_mtok=0.1, quality=0.7),
    ]
)


# -- request hints (shared by every policy) ----------------------------------------------------


@pytest.mark.parametrize("cls", [builtin_policy_type(n) for n in BUILTIN_POLICIES])
def test_request_hints_filter_and_are_recorded(cls: type) -> None:
    decision = cls().decide(req(capabilities=frozenset({"vision"})), [], FULL)
    assert names(decision) == ["c1"]
    assert Exclusion(model="l1", by="request", reason="lacks vision") in decision.excluded
    assert "request: lacks vision" in decision.reason


@pytest.mark.parametrize("cls", [builtin_policy_type(n) for n in BUILTIN_POLICIES])
def test_context_and_latency_hints(cls: type) -> None:
    assert names(cls().decide(req(min_context=100_000), [], FULL)) == ["c1"]
    fast = cls().decide(req(latency_ms=1000), [], FULL)
    assert "c1" not in names(fast) and "l2" in names(fast)  # unknown latency is allowed
    assert any(e.model == "c1" and "2500 ms > 1000 ms" in e.reason for e in fast.excluded)


@pytest.mark.parametrize("cls", [builtin_policy_type(n) for n in BUILTIN_POLICIES])
def test_model_override_must_meet_capabilities_but_not_latency(cls: type) -> None:
    with pytest.raises(NoAllowedModelError, match="'l1' was requested but lacks vision"):
        cls().decide(req(model="l1", capabilities=frozenset({"vision"})), [], FULL)
    assert names(cls().decide(req(model="c1", latency_ms=10), [], FULL)) == ["c1"]


@pytest.mark.parametrize("cls", [builtin_policy_type(n) for n in BUILTIN_POLICIES])
def test_nothing_meets_the_hints(cls: type) -> None:
    with pytest.raises(NoAllowedModelError, match="c1 by request"):
        cls().decide(req(capabilities=frozenset({"vision"}), min_context=10**6), [], FULL)


@pytest.mark.parametrize("cls", [builtin_policy_type(n) for n in BUILTIN_POLICIES])
def test_weights_accepted_and_validated(cls: type) -> None:
    policy = cls(weights={"complexity": 2.0})
    decision = policy.decide(req(), [verdict("complexity", target=C, confidence=0.4)], FULL)
    assert decision.votes == {C: pytest.approx(0.8)}
    with pytest.raises(ValueError, match="weight for 'x'"):
        cls(weights={"x": -1})


# -- local_first --------------------------------------------------------------------------------


def test_local_first_ignores_votes() -> None:
    decision = LocalFirstPolicy().decide(req(), [verdict("complexity", target=C)], FULL)
    assert names(decision) == ["l1", "l2", "e1", "c1", "c2"]
    assert decision.target is L
    assert decision.reason.startswith("local first; votes cloud")


@pytest.mark.parametrize("state", ["critical", "no_memory"])
def test_local_first_demotes_local_when_resources_are_exhausted(state: str) -> None:
    tired = verdict("resource", target=E, state=state, reason="ram 97%")
    decision = LocalFirstPolicy().decide(req(), [tired], FULL)
    assert names(decision) == ["e1", "c1", "c2", "l1", "l2"]
    assert decision.target is E
    assert "resources exhausted (resource: ram 97%): nearest is edge" in decision.reason
    assert decision.candidates[-1].reason == f"local last: resources exhausted ({state})"


def test_local_first_resource_agent_is_a_parameter_and_neutral_is_ignored() -> None:
    tired = verdict("box", state="critical")
    assert names(LocalFirstPolicy().decide(req(), [tired], FULL))[0] == "l1"
    assert names(LocalFirstPolicy(resource_agent="box").decide(req(), [tired], FULL))[0] == "e1"
    ghost = verdict("resource", state="critical", neutral=True)
    assert names(LocalFirstPolicy().decide(req(), [ghost], FULL))[0] == "l1"
    with pytest.raises(ValueError, match="resource_agent"):
        LocalFirstPolicy(resource_agent="")


def test_local_first_when_local_is_disallowed_or_lacks_a_capability() -> None:
    offline_local = verdict("privacy", allowed=frozenset({E, C}), reason="no")
    decision = LocalFirstPolicy().decide(req(), [offline_local], FULL)
    assert names(decision) == ["e1", "c1", "c2"]
    assert "local disallowed: nearest is edge" in decision.reason
    vision = LocalFirstPolicy().decide(req(capabilities=frozenset({"vision"})), [], FULL)
    assert "no local model meets the request: nearest is cloud" in vision.reason


# -- cost_saver ---------------------------------------------------------------------------------


def test_cost_saver_cheapest_first_free_first_unknown_last() -> None:
    decision = CostSaverPolicy().decide(req(), [], FULL)
    # free l2; then e1 and c2 tie at $0.2 (lower tier first); c1 $18; l1 price unknown
    assert names(decision) == ["l2", "e1", "c2", "c1", "l1"]
    assert [c.reason for c in decision.candidates[:2]] == [
        "#1: free, local",
        "#2: $0.2/Mtok in+out, edge",
    ]
    assert decision.candidates[-1].reason == "#5: price unknown, local"
    assert decision.target is L
    assert decision.reason.startswith("cheapest first: l2")


def test_cost_saver_max_tier_is_a_hard_limit() -> None:
    policy = CostSaverPolicy(max_tier="edge")
    decision = policy.decide(req(), [], FULL)
    assert names(decision) == ["l2", "e1", "l1"]
    assert decision.excluded == (Exclusion(tier=C, by="cost_saver", reason="above max_tier edge"),)
    with pytest.raises(NoAllowedModelError, match="cost_saver: above max_tier edge"):
        policy.decide(req(model="c2"), [], FULL)
    with pytest.raises(ValueError, match="max_tier must be one of local, edge, cloud"):
        CostSaverPolicy(max_tier="moon")


# -- quality_first ------------------------------------------------------------------------------


def test_quality_first_orders_by_quality_with_tier_priors() -> None:
    decision = QualityFirstPolicy().decide(req(), [], FULL)
    # c1 0.95; c2 0.7; e1 unknown -> edge prior 0.6; l1 0.3 ties l2's local prior 0.3
    assert names(decision) == ["c1", "c2", "e1", "l1", "l2"]
    assert decision.candidates[2].reason == "#3: quality unknown, edge prior 0.60"
    assert decision.target is C


def test_quality_first_stays_within_budget_verdicts() -> None:
    broke = verdict("cost", allowed=frozenset({L, E}), denied_models=frozenset({"e1"}))
    decision = QualityFirstPolicy().decide(req(), [broke], FULL)
    assert names(decision) == ["l1", "l2"]
    custom = QualityFirstPolicy(tier_quality={"local": 0.8}).decide(req(), [], FULL)
    assert names(custom)[:2] == ["c1", "l2"]
    with pytest.raises(ValueError, match="tier_quality"):
        QualityFirstPolicy(tier_quality={"edge": 2})
    with pytest.raises(ValueError, match="tier_quality key"):
        QualityFirstPolicy(tier_quality={"moon": 0.5})


# -- latency_first ------------------------------------------------------------------------------


def test_latency_first_known_fastest_then_unknown_by_tier() -> None:
    decision = LatencyFirstPolicy().decide(req(), [], FULL)
    assert names(decision) == ["l1", "e1", "c1", "l2", "c2"]
    assert decision.candidates[0].reason == "#1: typically 300 ms, local"
    assert decision.candidates[3].reason == "#4: latency unknown, local"


# -- matrix -------------------------------------------------------------------------------------

RULES = [
    {"complexity": "high", "latency": "low", "tier": "edge"},
    {"complexity": "high", "tier": "cloud"},
    {"budget": "none", "tier": "local"},
    {"budget": "tight", "tier": "edge", "max_size_mb": 1000},
    {"tier": "local"},
]


def score(value: float) -> Verdict:
    return verdict("complexity", target=L, metrics={"score": value})


@pytest.mark.parametrize(
    ("verdicts", "hints", "target", "rule"),
    [
        ([score(0.9)], {}, C, "rule #2"),
        ([score(0.65)], {"latency_ms": 1000}, E, "rule #1"),
        ([score(0.64)], {}, L, "rule #5"),
        ([score(0.9), verdict("cost", state="over_budget")], {}, C, "rule #2"),
        ([verdict("cost", state="over_budget")], {}, L, "rule #3"),
        ([verdict("cost", state="spike")], {}, E, "rule #4"),
        ([], {}, L, "rule #5 (default -> local)"),
    ],
)
def test_matrix_first_matching_rule_wins(
    verdicts: list[Verdict], hints: dict[str, Any], target: Tier, rule: str
) -> None:
    decision = MatrixPolicy(rules=RULES).decide(req(**hints), verdicts, FULL)
    assert decision.target is target
    assert decision.candidates[0].tier is target
    assert rule in decision.reason


def test_matrix_orders_nearest_first_and_caps_size() -> None:
    decision = MatrixPolicy(rules=RULES).decide(req(), [verdict("cost", state="alert")], FULL)
    assert names(decision) == ["e1", "l1", "c1", "c2"]
    assert (
        Exclusion(
            model="l2", by="matrix", reason="size over 1000 MB (rule #4 (budget=tight -> edge))"
        )
        in decision.excluded
    )
    assert "budget=tight" in decision.reason


def test_matrix_default_rules_follow_the_complexity_score() -> None:
    policy = MatrixPolicy()
    assert policy.decide(req(), [score(0.3)], FULL).target is L
    assert policy.decide(req(), [score(0.55)], FULL).target is E
    assert policy.decide(req(), [score(0.8)], FULL).target is C
    assert MatrixPolicy(medium_from=0.2).decide(req(), [score(0.3)], FULL).target is E
    assert policy.decide(req(), [], FULL).target is L  # no score: complexity unknown


def test_matrix_without_a_matching_rule_goes_local_and_target_unavailable_falls_back() -> None:
    policy = MatrixPolicy(rules=[{"complexity": "high", "tier": "cloud"}])
    assert "no rule matched -> local" in policy.decide(req(), [], FULL).reason
    no_cloud = verdict("net", allowed=frozenset({L, E}), reason="offline")
    decision = policy.decide(req(), [score(0.9), no_cloud], FULL)
    assert names(decision) == ["e1", "l1", "l2"]
    assert "cloud unavailable, nearest is edge" in decision.reason


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"complexity": "huge", "tier": "cloud"}], "rule #1: complexity must be one of low"),
        ([{"tier": "local"}, {"mood": "good", "tier": "cloud"}], "rule #2: unknown key"),
        ([{"budget": "tight"}], "rule #1 needs a tier"),
        ([{"tier": "moon"}], "rule #1: tier must be one of"),
        ([{"tier": "edge", "max_size_mb": -1}], "max_size_mb must be a number > 0"),
        (["cloud"], "rule #1 must be a table"),
        ({"tier": "cloud"}, "rules must be a list"),
    ],
)
def test_matrix_rejects_bad_rules(rules: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MatrixPolicy(rules=rules)


def test_matrix_rejects_bad_thresholds() -> None:
    with pytest.raises(ValueError, match="medium_from <= high_from"):
        MatrixPolicy(medium_from=0.8, high_from=0.5)
    with pytest.raises(ValueError, match="low_latency_ms"):
        MatrixPolicy(low_latency_ms=0)
    with pytest.raises(ValueError, match="cost_agent must be a non-empty string"):
        MatrixPolicy(cost_agent="")


def test_matrix_from_toml() -> None:
    text = """
    [policy]
    name = "matrix"
    high_from = 0.7
    [[policy.rules]]
    complexity = "high"
    tier = "cloud"
    [[policy.rules]]
    tier = "edge"
    """
    policy = resolve_policy(parse_config(tomllib.loads(text)).policy)
    assert isinstance(policy, MatrixPolicy) and policy.high_from == 0.7
    assert policy.decide(req(), [score(0.68)], FULL).target is E
    bad = PolicyConfig.model_validate({"name": "matrix", "rules": [{"tier": "moon"}]})
    with pytest.raises(PolicyError, match="cannot build policy 'matrix'"):
        resolve_policy(bad)


@pytest.mark.parametrize("name", list(BUILTIN_POLICIES))
def test_every_builtin_resolves_by_name_with_weights(name: str) -> None:
    policy = resolve_policy(PolicyConfig(name=name, weights={"cost": 2.0}))
    assert isinstance(policy, Policy) and policy.name == name
    assert policy.weights == {"cost": 2.0}  # type: ignore[attr-defined]


def test_default_policy_is_still_the_plain_vote() -> None:
    decision = DefaultPolicy().decide(req(), [verdict("x", target=E, confidence=0.9)], FULL)
    assert names(decision) == ["e1", "l1", "l2", "c1", "c2"]


# -- properties over every built-in policy -----------------------------------------------------

CAPS = ["vision", "tools", "json"]
AGENTS = ["resource", "cost", "complexity", "net", "privacy"]


@st.composite
def models(draw: st.DrawFn, name: str, tier: Tier) -> ModelSpec:
    maybe = st.none() | st.floats(min_value=0.0, max_value=20.0)
    return spec(
        name,
        tier,
        capabilities=frozenset(draw(st.sets(st.sampled_from(CAPS)))),
        context_window=draw(st.sampled_from([2048, 8192, 128_000])),
        typical_latency_ms=draw(st.none() | st.sampled_from([100.0, 800.0, 3000.0])),
        quality=draw(st.none() | st.floats(min_value=0.0, max_value=1.0)),
        input_cost_per_mtok=draw(st.none() | st.just(0.0) | maybe),
        output_cost_per_mtok=draw(st.none() | st.just(0.0) | maybe),
        size_mb=draw(st.none() | st.sampled_from([500.0, 5000.0])),
    )


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    specs: list[ModelSpec] = []
    for tier in Tier:
        count = draw(st.integers(min_value=0, max_value=3))
        specs += [draw(models(f"{tier.value}-{i}", tier)) for i in range(count)]
    return Catalog(draw(st.permutations(specs)))


@st.composite
def verdict_lists(draw: st.DrawFn, cat: Catalog) -> list[Verdict]:
    count = draw(st.integers(min_value=0, max_value=5))
    denied = st.sets(st.sampled_from(cat.names), max_size=2) if len(cat) else st.just(set())
    return [
        Verdict(
            agent=draw(st.sampled_from(AGENTS)),
            target=draw(st.none() | st.sampled_from(list(Tier))),
            allowed=frozenset(draw(st.sets(st.sampled_from(list(Tier)), min_size=1))),
            denied_models=frozenset(draw(denied)),
            confidence=draw(st.floats(min_value=0.0, max_value=1.0)),
            state=draw(st.sampled_from(["ok", "critical", "no_memory", "alert", "over_budget"])),
            metrics={"score": draw(st.floats(min_value=0.0, max_value=1.0))},
            stale=draw(st.booleans()),
            neutral=draw(st.booleans()),
            reason=f"reason{i}",
            at=0.0,
        )
        for i in range(count)
    ]


@st.composite
def requests(draw: st.DrawFn) -> Request:
    return req(
        tier=draw(st.none() | st.sampled_from(list(Tier))),
        capabilities=frozenset(draw(st.sets(st.sampled_from(CAPS), max_size=2))),
        min_context=draw(st.none() | st.sampled_from([4096, 100_000])),
        latency_ms=draw(st.none() | st.sampled_from([500.0, 1000.0, 5000.0])),
    )


FAST = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same examples every run: deterministic CI
    suppress_health_check=[HealthCheck.too_slow],
)
ALL = pytest.mark.parametrize("name", list(BUILTIN_POLICIES))


def fits(m: ModelSpec, request: Request, verdicts: Sequence[Verdict]) -> bool:
    """Whether `m` satisfies every verdict constraint and request hint (the spec, restated)."""
    live = [v for v in verdicts if not v.neutral]
    return (
        all(m.tier in v.allowed and m.name not in v.denied_models for v in live)
        and (request.tier is None or m.tier is request.tier)
        and request.capabilities <= m.capabilities
        and (request.min_context is None or m.context_window >= request.min_context)
        and not (
            request.latency_ms is not None
            and m.typical_latency_ms is not None
            and m.typical_latency_ms > request.latency_ms
        )
    )


@ALL
@FAST
@given(data=st.data())
def test_property_constraints_and_completeness(name: str, data: st.DataObject) -> None:
    cat = data.draw(catalogs())
    verdicts = data.draw(verdict_lists(cat))
    request = data.draw(requests())
    expected = [m.name for m in cat if fits(m, request, verdicts)]
    try:
        decision = decide_checked(builtin_policy_type(name)(), request, verdicts, cat)
    except NoAllowedModelError as exc:
        assert not expected, f"refused although {expected} fit"
        assert str(exc)
        return
    got = names(decision)
    assert decision.candidates and decision.policy == name
    assert sorted(got) == sorted(expected)  # each fitting model exactly once, nothing else
    assert len(set(got)) == len(got)
    assert all(c.tier is cat.get(c.model).tier for c in decision.candidates)
    assert all(c.reason for c in decision.candidates)


@ALL
@FAST
@given(data=st.data())
def test_property_deterministic(name: str, data: st.DataObject) -> None:
    cat = data.draw(catalogs())
    verdicts = data.draw(verdict_lists(cat))
    request = data.draw(requests())

    def run() -> dict[str, Any] | str:
        try:
            return builtin_policy_type(name)().decide(request, verdicts, cat).model_dump()
        except NoAllowedModelError as exc:
            return f"refused: {exc}"

    assert run() == run()  # equal down to the explanation


@ALL
@FAST
@given(data=st.data())
def test_property_model_override_honoured_or_refused_with_reason(
    name: str, data: st.DataObject
) -> None:
    cat = data.draw(catalogs())
    verdicts = data.draw(verdict_lists(cat))
    policy = builtin_policy_type(name)()
    if not len(cat):
        with pytest.raises(UnknownModelError):
            policy.decide(req(model="anything"), verdicts, cat)
        return
    model = data.draw(st.sampled_from(cat.names))
    caps = frozenset(data.draw(st.sets(st.sampled_from(CAPS), max_size=1)))
    m = cat.get(model)
    blockers = [
        v.agent
        for v in verdicts
        if not v.neutral and (m.tier not in v.allowed or model in v.denied_models)
    ]
    if not caps <= m.capabilities:
        blockers.append("request")
    try:
        decision = policy.decide(req(model=model, capabilities=caps), verdicts, cat)
    except NoAllowedModelError as exc:
        assert blockers, "refused although nothing forbids the model"
        assert model in str(exc)
        assert any(agent in str(exc) for agent in blockers)
        return
    assert not blockers
    assert names(decision) == [model]
    assert decision.candidates[0].reason == "requested by the caller"
