"""The default policy (constraints, vote, nearest tier first) and `decide_checked`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra import (
    Candidate,
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
from orchestra.policies.base import Policy, decide_checked
from orchestra.policies.default import DefaultPolicy

L, E, C = Tier.LOCAL, Tier.EDGE, Tier.CLOUD


def spec(name: str, tier: Tier) -> ModelSpec:
    return ModelSpec(name=name, tier=tier, litellm_model=f"openai/{name}")


def catalog(*pairs: tuple[str, Tier]) -> Catalog:
    return Catalog([spec(name, tier) for name, tier in pairs])


FULL = catalog(("l1", L), ("l2", L), ("e1", E), ("c1", C), ("c2", C))


def req(**hints: object) -> Request:
    return Request.of("What is the capital of France?", **hints)


def vote(agent: str, target: Tier | None, confidence: float = 0.5, **fields: object) -> Verdict:
    return Verdict(agent=agent, target=target, confidence=confidence, **fields)


def names(decision: Decision) -> list[str]:
    return [c.model for c in decision.candidates]


def decide(
    verdicts: Sequence[Verdict] = (),
    cat: Catalog = FULL,
    policy: DefaultPolicy | None = None,
    **hints: object,
) -> Decision:
    return (policy or DefaultPolicy()).decide(req(**hints), verdicts, cat)


# -- constraints -------------------------------------------------------------------------------


def test_constraint_removes_tiers_and_exclusion_names_agent_and_reason() -> None:
    offline = Verdict(agent="net", allowed=frozenset({L}), state="offline", reason="no route")
    decision = decide([offline, vote("complexity", C, 0.9)])
    assert names(decision) == ["l1", "l2"]
    assert {c.tier for c in decision.candidates} == {L}
    assert set(decision.excluded) == {
        Exclusion(tier=E, by="net", reason="no route"),
        Exclusion(tier=C, by="net", reason="no route"),
    }
    assert "net" in decision.reason and "no route" in decision.reason


def test_exclusion_reason_falls_back_to_state() -> None:
    decision = decide([Verdict(agent="cost", allowed=frozenset({L, E}), state="over_budget")])
    assert decision.excluded == (Exclusion(tier=C, by="cost", reason="over_budget"),)
    assert "c1" not in names(decision)


def test_neutral_verdict_neither_constrains_nor_votes() -> None:
    broken = Verdict(agent="x", target=C, allowed=frozenset({C}), confidence=1.0, neutral=True)
    decision = decide([broken])
    assert decision.excluded == ()
    assert decision.votes == {}
    assert decision.target is L
    assert len(decision.candidates) == len(FULL)


# -- the vote ----------------------------------------------------------------------------------


def test_confidence_weighted_vote() -> None:
    verdicts = [vote("complexity", C, 0.6), vote("resource", L, 0.5)]
    assert decide(verdicts).target is C
    weighted = decide(verdicts, policy=DefaultPolicy(weights={"complexity": 0.5}))
    assert weighted.votes == {C: pytest.approx(0.3), L: pytest.approx(0.5)}
    assert weighted.target is L
    assert names(weighted)[:2] == ["l1", "l2"]


def test_votes_of_one_tier_add_up() -> None:
    verdicts = [vote("a", E, 0.3), vote("b", E, 0.3), vote("c", C, 0.5)]
    decision = decide(verdicts)
    assert decision.votes == {E: pytest.approx(0.6), C: pytest.approx(0.5)}
    assert decision.target is E


def test_weights_do_not_leak_between_policies() -> None:
    weights = {"complexity": 0.1}
    policy = DefaultPolicy(weights=weights)
    weights["complexity"] = 10.0
    assert policy.weights == {"complexity": 0.1}


def test_stale_verdict_counts_half() -> None:
    verdicts = [vote("resource", C, 0.8, stale=True), vote("complexity", L, 0.5)]
    decision = decide(verdicts)
    assert decision.votes == {C: pytest.approx(0.4), L: pytest.approx(0.5)}
    assert decision.target is L
    fresh = decide([vote("resource", C, 0.8), vote("complexity", L, 0.5)])
    assert fresh.target is C


def test_stale_and_weight_multiply() -> None:
    policy = DefaultPolicy(weights={"resource": 2.0})
    decision = decide([vote("resource", E, 0.3, stale=True)], policy=policy)
    assert decision.votes == {E: pytest.approx(0.3)}


def test_neutral_votes_ignored_even_with_high_confidence() -> None:
    verdicts = [
        Verdict(agent="timeout", target=C, confidence=1.0, neutral=True, state="timeout"),
        vote("complexity", E, 0.2),
    ]
    decision = decide(verdicts)
    assert decision.votes == {E: pytest.approx(0.2)}
    assert decision.target is E


@pytest.mark.parametrize(("a", "b", "winner"), [(E, C, E), (L, C, L), (L, E, L), (C, E, E)])
def test_tie_goes_to_the_cheaper_tier(a: Tier, b: Tier, winner: Tier) -> None:
    decision = decide([vote("x", a, 0.5), vote("y", b, 0.5)])
    assert decision.target is winner
    assert decision.candidates[0].tier is winner


def test_no_votes_means_local_first() -> None:
    decision = decide([Verdict(agent="quiet", target=None, confidence=0.9)])
    assert decision.target is L
    assert decision.votes == {}
    assert names(decision) == ["l1", "l2", "e1", "c1", "c2"]
    assert "no votes" in decision.reason


def test_zero_weight_vote_does_not_pick_the_tier() -> None:
    policy = DefaultPolicy(weights={"complexity": 0.0})
    decision = decide([vote("complexity", C, 0.9)], policy=policy)
    assert decision.target is L


# -- candidate order ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (L, ["l1", "l2", "e1", "c1", "c2"]),
        (E, ["e1", "l1", "l2", "c1", "c2"]),  # local and cloud equally near: local first
        (C, ["c1", "c2", "e1", "l1", "l2"]),
    ],
)
def test_candidates_nearest_tier_first(target: Tier, expected: list[str]) -> None:
    decision = decide([vote("a", target, 0.9)])
    assert names(decision) == expected
    assert decision.candidates[0].reason.startswith("target tier")


def test_catalog_order_within_tier() -> None:
    cat = catalog(("c-b", C), ("l-z", L), ("c-a", C), ("l-a", L))
    decision = decide([vote("a", C, 0.9)], cat=cat)
    assert names(decision) == ["c-b", "c-a", "l-z", "l-a"]
    assert [c.tier for c in decision.candidates] == [C, C, L, L]


def test_target_tier_without_models_falls_to_nearest() -> None:
    cat = catalog(("l1", L), ("e1", E))
    decision = decide([vote("a", C, 0.9)], cat=cat)
    assert decision.target is C
    assert names(decision) == ["e1", "l1"]
    assert "nearest is edge" in decision.reason


def test_equally_near_fallback_prefers_cheaper() -> None:
    cat = catalog(("c1", C), ("l1", L))
    decision = decide([vote("a", E, 0.9)], cat=cat)
    assert names(decision) == ["l1", "c1"]


def test_disallowed_target_tier_falls_to_nearest_allowed() -> None:
    verdicts = [vote("complexity", C, 0.9), Verdict(agent="cost", allowed=frozenset({L, E}))]
    decision = decide(verdicts)
    assert decision.target is C
    assert names(decision) == ["e1", "l1", "l2"]


# -- caller hints ------------------------------------------------------------------------------


def test_model_hint_is_honoured() -> None:
    decision = decide([vote("a", L, 1.0)], model="c2")
    assert decision.candidates == (Candidate(model="c2", tier=C, reason="requested by the caller"),)
    assert decision.target is C
    assert "requested" in decision.reason


def test_model_hint_in_disallowed_tier_names_the_agent() -> None:
    verdicts = [Verdict(agent="cost", allowed=frozenset({L}), reason="daily budget spent")]
    with pytest.raises(NoAllowedModelError) as info:
        decide(verdicts, model="c1")
    message = str(info.value)
    assert "c1" in message and "cost" in message and "daily budget spent" in message


def test_unknown_model_hint() -> None:
    with pytest.raises(UnknownModelError) as info:
        decide(model="gpt-9")
    assert info.value.name == "gpt-9"
    assert "l1" in str(info.value)


def test_tier_hint_limits_candidates() -> None:
    decision = decide([vote("a", L, 1.0)], tier=C)
    assert names(decision) == ["c1", "c2"]
    assert "tier cloud requested" in decision.reason


def test_tier_hint_on_disallowed_tier() -> None:
    verdicts = [Verdict(agent="net", allowed=frozenset({L}), reason="offline")]
    with pytest.raises(NoAllowedModelError) as info:
        decide(verdicts, tier=C)
    message = str(info.value)
    assert "tier cloud was requested" in message
    assert "net" in message and "offline" in message


def test_tier_hint_on_empty_tier() -> None:
    with pytest.raises(NoAllowedModelError, match="tier edge was requested"):
        decide(cat=catalog(("l1", L)), tier=E)


def test_nothing_allowed_explains_who_excluded_what() -> None:
    verdicts = [
        Verdict(agent="net", allowed=frozenset({L}), reason="offline"),
        Verdict(agent="resource", allowed=frozenset({E, C}), reason="no memory"),
    ]
    with pytest.raises(NoAllowedModelError) as info:
        decide(verdicts)
    message = str(info.value)
    assert "net" in message and "offline" in message
    assert "resource" in message and "no memory" in message
    assert "local" in message and "cloud" in message  # the tiers that do hold models


def test_empty_catalog_says_so() -> None:
    with pytest.raises(NoAllowedModelError, match="catalog holds no model"):
        decide(cat=Catalog([]))


# -- decide_checked ----------------------------------------------------------------------------


class FakePolicy:
    def __init__(self, answer: object = None, error: Exception | None = None) -> None:
        self.name = "fake"
        self.answer = answer
        self.error = error

    def decide(self, request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        if self.error is not None:
            raise self.error
        return self.answer  # type: ignore[return-value]


def test_decide_checked_passes_a_valid_decision() -> None:
    policy = DefaultPolicy()
    assert isinstance(policy, Policy)
    decision = decide_checked(policy, req(), [vote("a", E, 0.9)], FULL)
    assert names(decision) == ["e1", "l1", "l2", "c1", "c2"]


def test_decide_checked_wraps_a_crash() -> None:
    boom = KeyError("weights")
    with pytest.raises(PolicyError) as info:
        decide_checked(FakePolicy(error=boom), req(), [], FULL)
    assert "fake" in str(info.value) and "KeyError" in str(info.value)
    assert info.value.__cause__ is boom


def test_decide_checked_lets_orchestra_errors_through() -> None:
    refusal = NoAllowedModelError("nothing left")
    with pytest.raises(NoAllowedModelError) as info:
        decide_checked(FakePolicy(error=refusal), req(), [], FULL)
    assert info.value is refusal


def test_decide_checked_rejects_non_decision() -> None:
    with pytest.raises(PolicyError, match="returned dict, not a Decision"):
        decide_checked(FakePolicy(answer={"candidates": ["l1"]}), req(), [], FULL)


def test_decide_checked_rejects_empty_candidates() -> None:
    empty = Decision(policy="fake", candidates=(), reason="nothing")
    with pytest.raises(PolicyError, match="no candidates"):
        decide_checked(FakePolicy(answer=empty), req(), [], FULL)


def test_decide_checked_rejects_candidate_outside_catalog() -> None:
    ghost = Decision(
        policy="fake",
        candidates=(Candidate(model="l1", tier=L), Candidate(model="ghost", tier=C)),
        reason="made up",
    )
    with pytest.raises(PolicyError, match="'ghost', not in the catalog"):
        decide_checked(FakePolicy(answer=ghost), req(), [], FULL)


# -- properties --------------------------------------------------------------------------------


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    models: list[ModelSpec] = []
    for tier in Tier:
        count = draw(st.integers(min_value=0, max_value=3))
        models += [spec(f"{tier.value}-{i}", tier) for i in range(count)]
    return Catalog(draw(st.permutations(models)))


@st.composite
def verdict_lists(draw: st.DrawFn) -> list[Verdict]:
    count = draw(st.integers(min_value=0, max_value=5))
    return [
        Verdict(
            agent=f"agent{i}",
            target=draw(st.none() | st.sampled_from(list(Tier))),
            allowed=frozenset(draw(st.sets(st.sampled_from(list(Tier))))),
            confidence=draw(st.floats(min_value=0.0, max_value=1.0)),
            stale=draw(st.booleans()),
            neutral=draw(st.booleans()),
            reason=f"reason{i}",
            at=0.0,
        )
        for i in range(count)
    ]


weights = st.dictionaries(
    st.sampled_from([f"agent{i}" for i in range(5)]), st.floats(min_value=0.0, max_value=3.0)
)
tier_hints = st.none() | st.sampled_from(list(Tier))
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: deterministic CI
    suppress_health_check=[HealthCheck.too_slow],
)


def allowed_tiers(verdicts: Sequence[Verdict]) -> set[Tier]:
    allowed = set(Tier)
    for v in verdicts:
        if not v.neutral:
            allowed &= v.allowed
    return allowed


@FAST
@given(cat=catalogs(), verdicts=verdict_lists(), w=weights, tier=tier_hints)
def test_property_constraints_and_completeness(
    cat: Catalog, verdicts: list[Verdict], w: dict[str, float], tier: Tier | None
) -> None:
    allowed = allowed_tiers(verdicts)
    if tier is not None:
        allowed &= {tier}
    expected = [m.name for m in cat if m.tier in allowed]
    try:
        decision = DefaultPolicy(w).decide(req(tier=tier), verdicts, cat)
    except NoAllowedModelError as exc:
        assert not expected, f"refused although {expected} are allowed"
        assert str(exc)
        return
    assert decision.candidates, "a decision always has a candidate"
    got = names(decision)
    assert all(c.tier in allowed for c in decision.candidates)
    assert sorted(got) == sorted(expected)  # each allowed model exactly once, nothing else
    assert len(set(got)) == len(got)
    assert decide_checked(DefaultPolicy(w), req(tier=tier), verdicts, cat) == decision


@FAST
@given(cat=catalogs(), verdicts=verdict_lists(), w=weights)
def test_property_order_follows_target(
    cat: Catalog, verdicts: list[Verdict], w: dict[str, float]
) -> None:
    try:
        decision = DefaultPolicy(w).decide(req(), verdicts, cat)
    except NoAllowedModelError:
        return
    target = decision.target
    assert target is not None
    keys = [(c.tier.distance(target), c.tier.rank) for c in decision.candidates]
    assert keys == sorted(keys)
    for tier in Tier:
        in_decision = [c.model for c in decision.candidates if c.tier is tier]
        in_catalog = [m.name for m in cat.in_tier(tier)]
        assert in_decision in ([], in_catalog)


@FAST
@given(cat=catalogs(), verdicts=verdict_lists(), w=weights, tier=tier_hints)
def test_property_deterministic(
    cat: Catalog, verdicts: list[Verdict], w: dict[str, float], tier: Tier | None
) -> None:
    request = req(tier=tier)

    def run() -> Decision | str:
        try:
            return DefaultPolicy(w).decide(request, verdicts, cat)
        except NoAllowedModelError as exc:
            return f"refused: {exc}"

    first = run()
    second = run()
    assert second == first
    if isinstance(first, Decision):
        assert first.model_dump() == second.model_dump()  # equal down to the explanation


@FAST
@given(cat=catalogs(), verdicts=verdict_lists(), data=st.data())
def test_property_model_hint_honoured_or_refused_with_reason(
    cat: Catalog, verdicts: list[Verdict], data: st.DataObject
) -> None:
    if not len(cat):
        with pytest.raises(UnknownModelError):
            DefaultPolicy().decide(req(model="anything"), verdicts, cat)
        return
    name = data.draw(st.sampled_from(cat.names))
    tier = cat.get(name).tier
    blockers = [v.agent for v in verdicts if not v.neutral and tier not in v.allowed]
    try:
        decision = DefaultPolicy().decide(req(model=name), verdicts, cat)
    except NoAllowedModelError as exc:
        assert blockers, "refused although no agent disallows the tier"
        assert all(agent in str(exc) for agent in blockers)
        return
    assert not blockers
    assert names(decision) == [name]
    assert decision.candidates[0].tier is tier
