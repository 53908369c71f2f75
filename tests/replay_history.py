"""A varied, deterministic stored history for replay tests: ambient samples that change, budget
states, denials, neutral and stale verdicts, forced models and tiers, refusals and failures."""

from __future__ import annotations

import random

from orchestra import Catalog, ModelSpec, Request, Result, Tier, Verdict
from orchestra.core.errors import NoAllowedModelError
from orchestra.core.result import Attempt
from orchestra.policies.registry import PolicyConfig, resolve_policy
from orchestra.store import RequestRecord, Store

START = 1_700_000_000.0
MODELS = [
    ModelSpec(name="tiny", tier=Tier.LOCAL, litellm_model="ollama/tiny", input_cost_per_mtok=0,
              output_cost_per_mtok=0, quality=0.2, size_mb=800, typical_latency_ms=900),
    ModelSpec(name="small", tier=Tier.LOCAL, litellm_model="ollama/small", size_mb=4000),
    ModelSpec(name="lan", tier=Tier.EDGE, litellm_model="openai/lan", input_cost_per_mtok=0.05,
              output_cost_per_mtok=0.1, typical_latency_ms=300),
    ModelSpec(name="mini", tier=Tier.CLOUD, litellm_model="openai/mini", input_cost_per_mtok=0.15,
              output_cost_per_mtok=0.6, quality=0.7, typical_latency_ms=400),
    ModelSpec(name="big", tier=Tier.CLOUD, litellm_model="openai/big", input_cost_per_mtok=2.5,
              output_cost_per_mtok=10, quality=0.95),
    ModelSpec(name="gone", tier=Tier.EDGE, litellm_model="openai/gone", input_cost_per_mtok=0.01,
              output_cost_per_mtok=0.01),
]  # fmt: skip
# The catalog at replay time: "gone" was removed since, so requests that forced it are errors.
REPLAY_CATALOG = Catalog(m for m in MODELS if m.name != "gone")
ALLOWED = [frozenset(Tier), frozenset({Tier.LOCAL, Tier.EDGE}), frozenset({Tier.LOCAL}),
           frozenset({Tier.EDGE, Tier.CLOUD})]  # fmt: skip
COST_STATES = [
    ("ok", frozenset(Tier), frozenset()),
    ("no_budget", frozenset(Tier), frozenset()),
    ("alert", frozenset(Tier), frozenset({"big"})),
    ("spike", frozenset(Tier), frozenset({"big", "mini"})),
    ("over_budget", frozenset({Tier.LOCAL, Tier.EDGE}), frozenset()),
]
WORDS = ["the", "a", "of", "what", "how", "why", "explain", "prove", "compute", "code"]


def _sample(agent: str, at: float, rng: random.Random) -> Verdict:
    """An ambient sample: sometimes neutral, sometimes stale, with a state policies read."""
    if rng.random() < 0.1:
        return Verdict.neutral_for(agent, "pending", "not sampled yet")
    state = rng.choice(["ok", "ok", "critical", "no_memory"]) if agent == "resource" else "ok"
    return Verdict(agent=agent, target=rng.choice([None, *Tier]), allowed=rng.choice(ALLOWED),
                   confidence=round(rng.random(), 2), state=state, reason=f"{agent} {state}",
                   metrics={"reading": round(rng.random(), 3)}, at=at,
                   stale=rng.random() < 0.2)  # fmt: skip


def _per_request(rng: random.Random, at: float) -> list[Verdict]:
    """Cost, complexity and privacy verdicts for one request."""
    state, allowed, denied = rng.choice(COST_STATES)
    cost = Verdict(agent="cost", confidence=0.0 if state == "no_budget" else 0.6, state=state,
                   allowed=allowed, denied_models=denied, reason=f"budget {state}",
                   target=Tier.LOCAL if state == "over_budget" else None, at=at)  # fmt: skip
    score = round(rng.random(), 4)
    target = Tier.CLOUD if score >= 0.65 else Tier.EDGE if score >= 0.5 else Tier.LOCAL
    complexity = Verdict(agent="complexity", target=target, confidence=round(rng.random(), 3),
                         metrics={"score": score, "signals": {"w": rng.randint(1, 9)}},
                         reason=f"complexity score {score:.2f}", at=at)  # fmt: skip
    sensitive = rng.random() < 0.15
    privacy = Verdict(agent="privacy", allowed=frozenset({Tier.LOCAL}) if sensitive else ALLOWED[0],
                      state="sensitive" if sensitive else "clean", confidence=0.9,
                      target=Tier.LOCAL if sensitive else None, at=at)  # fmt: skip
    return [cost, complexity, privacy]


def _hints(i: int, rng: random.Random) -> dict[str, object]:
    roll = rng.random()
    if roll < 0.06:
        return {"model": rng.choice(["big", "tiny", "lan", "gone"])}
    if roll < 0.12:
        return {"tier": rng.choice(list(Tier))}
    if roll < 0.14:
        return {"model": "mini", "tier": Tier.EDGE}  # refused: the model is not in that tier
    return {}


async def fill(store: Store, n: int = 400, seed: int = 11) -> None:
    """Record `n` requests as the default policy decided them live."""
    rng = random.Random(seed)
    policy = resolve_policy(PolicyConfig(name="default"))
    catalog = Catalog(MODELS)
    samples: dict[str, Verdict] = {}
    for i in range(n):
        at = START + i * 0.5
        for agent, every in (("resource", 4.0), ("connectivity", 11.0)):
            if agent not in samples or at - samples[agent].at >= every:
                samples[agent] = _sample(agent, at, rng)
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        request = Request.of(f"{words} {i}", **_hints(i, rng))
        verdicts = (samples["resource"], samples["connectivity"], *_per_request(rng, at))
        store.record(_record(request, verdicts, policy, catalog, at, rng))
    await store.flush()


def _record(
    request: Request,
    verdicts: tuple[Verdict, ...],
    policy: object,
    catalog: Catalog,
    at: float,
    rng: random.Random,
) -> RequestRecord:
    """What the runtime would record: a refusal, a failure or an answer."""
    common = {"request": request, "verdicts": verdicts, "created_at": at, "latency_ms": 5.0,
              "ambient": frozenset({"resource", "connectivity"}),
              "keep_text": rng.random() < 0.1}  # fmt: skip
    try:
        decision = policy.decide(request, verdicts, catalog)  # type: ignore[attr-defined]
    except NoAllowedModelError as exc:
        return RequestRecord(decision=None, result=None, error_kind="NoAllowedModelError",
                             error=str(exc), **common)  # type: ignore[arg-type]  # fmt: skip
    spec = catalog.get(decision.candidates[0].model)
    if rng.random() < 0.1:
        failed = (Attempt(model=spec.name, tier=spec.tier, ok=False, latency_ms=3.0,
                          error_kind="ProviderError", error="boom"),)  # fmt: skip
        return RequestRecord(decision=decision, result=None, attempts=failed,
                             error_kind="ProviderError", error="boom", **common)  # type: ignore[arg-type]  # fmt: skip
    pt, ct = rng.randint(10, 2000), rng.randint(5, 500)
    price = (pt * (spec.input_cost_per_mtok or 0) + ct * (spec.output_cost_per_mtok or 0)) / 1e6
    attempts = (Attempt(model=spec.name, tier=spec.tier, ok=True, latency_ms=5.0),)
    result = Result(request_id=request.id, text="", model=spec.name, tier=spec.tier,
                    cost_usd=price, latency_ms=5.0, prompt_tokens=pt, completion_tokens=ct,
                    decision=decision, verdicts=verdicts, attempts=attempts,
                    created_at=at)  # fmt: skip
    return RequestRecord(decision=decision, result=result, attempts=attempts,
                         **common)  # type: ignore[arg-type]  # fmt: skip


# Every built-in policy, with parameters that exercise its branches.
POLICIES: list[PolicyConfig] = [
    PolicyConfig(name="default"),
    PolicyConfig(name="default", weights={"complexity": 0.0, "resource": 2.0}),
    PolicyConfig(name="local_first"),
    PolicyConfig(name="cost_saver"),
    PolicyConfig(name="cost_saver", max_tier="edge"),
    PolicyConfig(name="quality_first", tier_quality={"edge": 0.75}),
    PolicyConfig(name="latency_first"),
    PolicyConfig(name="matrix"),
    PolicyConfig.model_validate({"name": "matrix", "rules": [
        {"complexity": "high", "budget": "normal", "tier": "cloud"},
        {"budget": "none", "tier": "local", "max_size_mb": 1000},
        {"complexity": "low", "tier": "local", "max_size_mb": 1000},
        {"tier": "edge"},
    ]}),
]  # fmt: skip
