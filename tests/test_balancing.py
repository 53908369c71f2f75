"""Ordering models within a tier: each strategy, the latency tracker, and permutation properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra import Candidate, Decision
from orchestra.core.catalog import Catalog
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.balancing import (
    STRATEGIES,
    Balancer,
    LatencyTracker,
    Strategy,
    price_per_mtok,
)
from orchestra.execution.endpoints import Endpoints
from orchestra.execution.executor import Executor
from orchestra.execution.safeguards import Safeguards
from orchestra.testing import FunctionBackend


def spec(name: str, inp: float | None = None, out: float | None = None) -> ModelSpec:
    return ModelSpec(
        name=name,
        tier=Tier.CLOUD,
        litellm_model=f"openai/{name}",
        input_cost_per_mtok=inp,
        output_cost_per_mtok=out,
    )


def names(models: list[ModelSpec]) -> list[str]:
    return [m.name for m in models]


ABC = [spec("a"), spec("b"), spec("c")]

prices = st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False))
catalogs = st.lists(st.tuples(prices, prices), max_size=8).map(
    lambda ps: [spec(f"m{i}", inp, out) for i, (inp, out) in enumerate(ps)]
)
strategy_names = st.sampled_from(sorted(STRATEGIES))


# -- LatencyTracker -------------------------------------------------------------------------


def test_tracker_ewma() -> None:
    tracker = LatencyTracker(alpha=0.5)
    assert tracker.ewma("a") is None
    tracker.observe("a", 100)
    assert tracker.ewma("a") == 100
    tracker.observe("a", 200)
    assert tracker.ewma("a") == pytest.approx(150)
    tracker.observe("a", 50)
    assert tracker.ewma("a") == pytest.approx(100)
    assert tracker.snapshot() == {"a": pytest.approx(100)}
    assert tracker.ewma("b") is None


@pytest.mark.parametrize("alpha", [0, -0.1, 1.5])
def test_tracker_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError):
        LatencyTracker(alpha)


@pytest.mark.parametrize("ms", [-1, float("nan"), float("inf")])
def test_tracker_rejects_bad_latency(ms: float) -> None:
    with pytest.raises(ValueError):
        LatencyTracker().observe("a", ms)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=30))
def test_tracker_stays_within_observed_range(samples: list[float]) -> None:
    tracker = LatencyTracker(alpha=0.3)
    for ms in samples:
        tracker.observe("a", ms)
    ewma = tracker.ewma("a")
    assert ewma is not None
    assert min(samples) - 1e-6 <= ewma <= max(samples) + 1e-6


# -- strategies -----------------------------------------------------------------------------


def test_default_is_priority() -> None:
    balancer = Balancer()
    assert balancer.strategy(Tier.CLOUD) == "priority"
    assert names(balancer.order(Tier.CLOUD, ABC)) == ["a", "b", "c"]


def test_round_robin_rotates_per_tier() -> None:
    balancer = Balancer({Tier.CLOUD: "round_robin", Tier.EDGE: "round_robin"})
    seen = [names(balancer.order(Tier.CLOUD, ABC)) for _ in range(4)]
    assert seen == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    # Another tier has its own counter.
    assert names(balancer.order(Tier.EDGE, ABC)) == ["a", "b", "c"]
    assert balancer.order(Tier.CLOUD, []) == []


def test_least_latency_unknown_first_then_fastest() -> None:
    tracker = LatencyTracker()
    tracker.observe("a", 300)
    tracker.observe("c", 100)
    balancer = Balancer({Tier.CLOUD: "least_latency"}, tracker)
    assert balancer.latency is tracker
    assert names(balancer.order(Tier.CLOUD, ABC)) == ["b", "c", "a"]
    tracker.observe("b", 200)
    assert names(balancer.order(Tier.CLOUD, ABC)) == ["c", "b", "a"]


def test_least_latency_ties_keep_catalog_order() -> None:
    tracker = LatencyTracker()
    for name in ("a", "b", "c"):
        tracker.observe(name, 50)
    balancer = Balancer({Tier.CLOUD: "least_latency"}, tracker)
    assert names(balancer.order(Tier.CLOUD, ABC)) == ["a", "b", "c"]
    assert names(balancer.order(Tier.CLOUD, ABC[::-1])) == ["c", "b", "a"]


def test_cheapest() -> None:
    models = [
        spec("unknown", None, None),
        spec("pricey", 5, 15),
        spec("half-known", 0.1, None),
        spec("cheap", 0.15, 0.6),
        spec("free", 0, 0),
        spec("cheap-too", 0.5, 0.25),
    ]
    balancer = Balancer({Tier.CLOUD: "cheapest"})
    assert names(balancer.order(Tier.CLOUD, models)) == [
        "free",
        "cheap",
        "cheap-too",
        "pricey",
        "unknown",
        "half-known",
    ]


def test_strategies_are_per_tier() -> None:
    balancer = Balancer({Tier.EDGE: "cheapest"})
    models = [spec("pricey", 5, 5), spec("free", 0, 0)]
    assert names(balancer.order(Tier.EDGE, models)) == ["free", "pricey"]
    assert names(balancer.order(Tier.CLOUD, models)) == ["pricey", "free"]


def test_rejects_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="fastest"):
        Balancer({Tier.CLOUD: "fastest"})  # type: ignore[dict-item]


def test_order_does_not_mutate_input() -> None:
    models = list(ABC)
    out = Balancer({Tier.CLOUD: "round_robin"}).order(Tier.CLOUD, models)
    out.reverse()
    assert names(models) == ["a", "b", "c"]


# -- properties -----------------------------------------------------------------------------


@given(
    catalogs,
    strategy_names,
    st.dictionaries(st.sampled_from([f"m{i}" for i in range(8)]), st.floats(0, 1e4)),
    st.integers(min_value=1, max_value=5),
)
def test_order_is_a_permutation(
    models: list[ModelSpec], strategy: Strategy, latencies: dict[str, float], calls: int
) -> None:
    tracker = LatencyTracker()
    for name, ms in latencies.items():
        tracker.observe(name, ms)
    balancer = Balancer({Tier.CLOUD: strategy}, tracker)
    for _ in range(calls):
        ordered = balancer.order(Tier.CLOUD, models)
        assert sorted(names(ordered)) == sorted(names(models))
        assert len(ordered) == len(models)


@given(catalogs)
def test_priority_is_identity(models: list[ModelSpec]) -> None:
    assert Balancer({Tier.CLOUD: "priority"}).order(Tier.CLOUD, models) == models


@given(catalogs)
def test_cheapest_is_sorted_by_price(models: list[ModelSpec]) -> None:
    ordered = Balancer({Tier.CLOUD: "cheapest"}).order(Tier.CLOUD, models)
    known = [price_per_mtok(m) for m in ordered if price_per_mtok(m) is not None]
    assert known == sorted(known)
    # Unknown prices only after every known one.
    flags = [price_per_mtok(m) is None for m in ordered]
    assert flags == sorted(flags)
    # Equal prices keep catalog order.
    index = {m.name: i for i, m in enumerate(models)}
    for first, second in itertools.pairwise(ordered):
        if price_per_mtok(first) == price_per_mtok(second):
            assert index[first.name] < index[second.name]


@given(catalogs, st.integers(min_value=0, max_value=20))
def test_round_robin_is_a_rotation(models: list[ModelSpec], turns: int) -> None:
    balancer = Balancer({Tier.CLOUD: "round_robin"})
    for _ in range(turns):
        balancer.order(Tier.CLOUD, models)
    ordered = balancer.order(Tier.CLOUD, models)
    if models:
        start = turns % len(models)
        assert ordered == models[start:] + models[:start]


# -- the executor's plan -------------------------------------------------------------------


def _executor(catalog: Catalog, balancer: Balancer | None) -> Executor:
    return Executor(
        FunctionBackend(lambda *_: "unused"), catalog, Endpoints(),
        safeguards=Safeguards(balancer=balancer),
    )  # fmt: skip


def _decision(models: list[ModelSpec]) -> Decision:
    candidates = tuple(Candidate(model=m.name, tier=m.tier) for m in models)
    return Decision(policy="p", reason="", candidates=candidates)


def test_a_planned_order_is_reused_only_for_the_same_candidates_and_catalog() -> None:
    local = ModelSpec(name="l", tier=Tier.LOCAL, litellm_model="openai/l")
    before = Catalog([*ABC, local])
    decision = _decision([*ABC, local])
    executor = _executor(before, Balancer())
    assert names(executor.plan(decision)) == ["a", "b", "c", "l"]
    assert names(executor.plan(decision)) == ["a", "b", "c", "l"]
    # b moves on device: the same candidates (now wrong about b's tier) against the new
    # catalog group b with the local model, as planned from scratch.
    moved = before.replacing(ABC[1].model_copy(update={"tier": Tier.LOCAL}))
    assert names(executor.plan(decision, moved)) == ["a", "c", "b", "l"]
    assert names(executor.plan(_decision([ABC[2], *ABC[:2]]), before)) == ["c", "a", "b"]


def test_a_moving_strategy_is_planned_every_time() -> None:
    executor = _executor(Catalog(ABC), Balancer({Tier.CLOUD: "round_robin"}))
    decision = _decision(ABC)
    assert [names(executor.plan(decision)) for _ in range(3)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"],
    ]  # fmt: skip
