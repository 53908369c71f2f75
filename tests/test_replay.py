"""Replay: a real history (stub providers, real agents and store) decided again by policies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import model_toml

from orchestra import (
    AllCandidatesFailed,
    Candidate,
    Catalog,
    Decision,
    FunctionPolicy,
    NoAllowedModelError,
    Orchestra,
    Request,
    Tier,
    Verdict,
    agent,
)
from orchestra.cli.main import main
from orchestra.lab.replay import PolicyReport, ReplayedRequest, replay
from orchestra.policies.registry import PolicyConfig, resolve_policy
from orchestra.spend.estimate import TOKENS_PER_MESSAGE
from orchestra.store import SqliteStore
from orchestra.testing import Behaviour, StubProvider

EDGE_PRICE = (0.05, 0.10)
CLOUD_PRICE = (0.15, 0.60)  # model_toml's default


@agent(name="router")
def router(request: Request | None) -> dict[str, Any] | None:
    """Votes and constraints that vary with the prompt's first word."""
    word = request.prompt.split()[0] if request is not None else ""
    if word == "edge":
        return {"target": "edge", "confidence": 1.0, "reason": "asked for edge"}
    if word == "cloud":
        return {"target": "cloud", "confidence": 1.0, "metrics": {"n": 3}}
    if word == "local":
        return {"allowed": {"local"}, "reason": "must stay on the device"}
    if word == "nocloud":
        return {"denied_models": {"stub-cloud"}, "target": "cloud", "reason": "too dear"}
    return None


PROMPTS: list[tuple[str, dict[str, Any]]] = [
    ("edge please answer", {}),
    ("edge again with more words in it", {}),
    ("cloud now", {}),
    ("cloud once more", {}),
    ("cloud three", {}),
    ("nocloud but vote cloud", {}),
    ("whatever the agents say", {}),
    ("cloud forced to edge", {"model": "stub-edge"}),
    ("edge forced to the cloud tier", {"tier": "cloud"}),
    ("local only", {}),  # refused live: no local model
]


def _config(write_config: Callable[..., Path], stub: StubProvider) -> Path:
    return write_config(
        model_toml(
            "stub-edge",
            stub.url,
            tier="edge",
            input_cost_per_mtok=EDGE_PRICE[0],
            output_cost_per_mtok=EDGE_PRICE[1],
        ),
        model_toml("stub-cloud", stub.url),
    )


async def _history(config: Path) -> tuple[list[Any], int, float, Catalog, Path]:
    """Run PROMPTS live; returns results, refused count, ledger cost, catalog and db path."""
    results, refused = [], 0
    async with Orchestra(config=config) as orc:
        orc.hook_agent(router)
        for prompt, hints in PROMPTS:
            try:
                results.append(await orc.complete(prompt, **hints))
            except NoAllowedModelError:
                refused += 1
        spend = await orc.spend_summary()
        catalog = orc.catalog
    return results, refused, spend["total_usd"], catalog, Path(orc._db_path)


def _always_cloud(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
    (spec,) = catalog.in_tier(Tier.CLOUD)
    return Decision(
        policy="always-cloud",
        candidates=(Candidate(model=spec.name, tier=Tier.CLOUD),),
        reason="cloud, always",
        target=Tier.CLOUD,
    )


async def test_replay_with_the_live_policy_agrees_with_what_happened(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    results, refused, ledger_cost, catalog, db = await _history(_config(write_config, stub))
    assert refused == 1 and len(results) == len(PROMPTS) - 1
    assert {r.tier for r in results} == {Tier.EDGE, Tier.CLOUD}  # the history is mixed

    seen: list[tuple[Request, list[Verdict]]] = []
    default = resolve_policy(PolicyConfig(name="default"))

    def spy(request: Request, verdicts: Sequence[Verdict], catalog: Catalog) -> Decision:
        seen.append((request, list(verdicts)))
        return default.decide(request, verdicts, catalog)

    ticks: list[tuple[int, int]] = []
    async with SqliteStore(db) as store:
        rep, spied = await replay(
            store,
            catalog,
            [default, FunctionPolicy(spy, name="spy")],
            progress=lambda d, t: ticks.append((d, t)),
        )
    assert ticks[0] == (0, len(PROMPTS)) and ticks[-1] == (len(PROMPTS), len(PROMPTS))
    assert rep.policy == "default" and rep.requests == len(PROMPTS)
    assert rep.decision_agreement == rep.live_decisions == len(results)
    assert rep.model_agreement_rate == rep.tier_agreement_rate == 1.0
    assert rep.tier_mix == rep.actual_tier_mix
    live_mix = {t.value: sum(r.tier is t for r in results) / len(results) for t in Tier}
    assert rep.tier_mix == pytest.approx(live_mix)
    assert rep.estimated_cost_usd == pytest.approx(ledger_cost, rel=1e-9)
    assert rep.actual_cost_usd == pytest.approx(ledger_cost, rel=1e-9)
    assert rep.no_allowed_model == rep.refused_live == rep.refused_again == 1
    assert rep.errors == 0
    assert spied.to_dict() | {"policy": "default"} == rep.to_dict()

    # Each rebuilt request carries the hints and the prompt's features, and each decision and
    # verdict list equals the live one.
    live = {r.request_id: r for r in results}
    for request, verdicts in seen:
        assert isinstance(request, ReplayedRequest)
        if request.id not in live:
            continue  # the refused one
        result = live[request.id]
        assert verdicts == list(result.verdicts)
        decision = default.decide(request, verdicts, catalog)
        assert decision.candidates == result.decision.candidates
        assert decision.target == result.decision.target
    by_prompt = {req.id: req for req, _ in seen}
    forced = next(r for r in results if r.decision.reason.startswith("model 'stub-edge'"))
    assert by_prompt[forced.request_id].model == "stub-edge"
    assert any(req.tier is Tier.CLOUD for req in by_prompt.values())
    assert {req.features["words"] for req in by_prompt.values()} >= {2, 7}


async def test_another_policy_changes_the_numbers(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    results, _, ledger_cost, catalog, db = await _history(_config(write_config, stub))
    async with SqliteStore(db) as store:
        (rep,) = await replay(store, catalog, [FunctionPolicy(_always_cloud, name="always-cloud")])
    assert rep.tier_mix == {"local": 0.0, "edge": 0.0, "cloud": 1.0}
    # A veto binds every policy, replayed ones too: "nocloud" denies the cloud model and "local
    # only" allows the local tier alone, so a policy that always picks the cloud is refused there.
    # So does the model a caller forced: it cannot be answered from the cloud model instead.
    assert (rep.no_allowed_model, rep.refused_again, rep.decided) == (3, 1, len(PROMPTS) - 3)
    on_cloud = [r for r in results if r.tier is Tier.CLOUD]
    assert rep.model_agreement == rep.tier_agreement == len(on_cloud) < len(results)
    refused = {PROMPTS.index(("nocloud but vote cloud", {})),
               PROMPTS.index(("cloud forced to edge", {"model": "stub-edge"}))}  # fmt: skip
    expected = sum(r.prompt_tokens * CLOUD_PRICE[0] + r.completion_tokens * CLOUD_PRICE[1]
                   for i, r in enumerate(results) if i not in refused) / 1e6  # fmt: skip
    assert rep.estimated_cost_usd == pytest.approx(expected) and expected > ledger_cost

    # The default policy without the router's say: its votes and bans are gone.
    muted = resolve_policy(PolicyConfig(name="default", weights={"router": 0.0}))
    async with SqliteStore(db) as store:
        (quiet,) = await replay(store, catalog, [muted])
        (newest,) = await replay(store, catalog, [muted], limit=3)
        (none,) = await replay(store, catalog, [muted], since=1e12)
    assert quiet.decision_agreement < quiet.live_decisions
    assert quiet.no_allowed_model == 1  # a ban is a constraint, not a vote: weights leave it
    assert newest.requests == 3 and none.requests == 0 and none.tier_mix["cloud"] == 0.0


async def test_a_request_that_failed_live_is_costed_apart(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    """A request every model failed has no tokens stored: replay does not count it as free, it
    estimates it apart (its prompt's estimate, the history's mean answer length)."""
    config = _config(write_config, stub)
    async with Orchestra(config=config) as orc:
        answered = [await orc.complete(p, model="stub-cloud") for p in ("one two", "three four")]
        stub.behaviour = Behaviour(kind="status", status=500)
        with pytest.raises(AllCandidatesFailed):
            await orc.complete("five six seven eight", model="stub-cloud")
        catalog, db = orc.catalog, Path(orc._db_path)
    async with SqliteStore(db) as store:
        (rep,) = await replay(store, catalog, [resolve_policy(PolicyConfig(name="default"))])
    assert rep.requests == rep.decided == 3 and rep.answered == 2 and rep.unmetered == 1
    mean_answer = sum(r.completion_tokens for r in answered) / 2
    prompt = 20 // 4 + TOKENS_PER_MESSAGE  # 20 characters (more than 4 words), one message
    expected = (prompt * CLOUD_PRICE[0] + mean_answer * CLOUD_PRICE[1]) / 1e6
    assert rep.unmetered_cost_usd == pytest.approx(expected) and expected > 0
    assert rep.estimated_cost_usd == pytest.approx(rep.actual_cost_usd)  # metered: unchanged
    assert rep.to_dict()["unmetered_cost_usd"] == pytest.approx(expected)


async def test_a_forced_model_gone_from_the_catalog_is_an_error_not_a_crash(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    _, _, _, catalog, db = await _history(_config(write_config, stub))
    smaller = Catalog(s for s in catalog if s.name != "stub-edge")
    async with SqliteStore(db) as store:
        (rep,) = await replay(store, smaller, [resolve_policy(PolicyConfig())])
    assert rep.errors == 1  # the request that forced stub-edge
    assert rep.decided + rep.no_allowed_model + rep.errors == rep.requests == len(PROMPTS)


def test_cli_replay_json_parses(
    stub: StubProvider,
    write_config: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(write_config, stub)
    asyncio.run(_history(config))
    capsys.readouterr()
    args = ["--config", str(config), "replay", "--policy", "default", "--json"]
    assert main([*args, "--policy", "default", "--since", "2000-01-01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["requests"] == len(PROMPTS)
    first, second = out["policies"]
    assert first == second and first["policy"] == "default"
    assert first["model_agreement"] == first["decision_agreement"] == 1.0
    assert first["no_allowed_model"] == 1

    assert main([*args, "--workers", "2"]) == 0  # split between two processes
    split = json.loads(capsys.readouterr().out)["policies"][0]
    costs = ("actual_cost_usd", "estimated_cost_usd")  # summed in another order
    assert split == {**first, **{k: pytest.approx(first[k], rel=1e-12) for k in costs}}
    with pytest.raises(SystemExit) as bad:
        main([*args, "--workers", "0"])
    assert bad.value.code == 2 and "positive integer" in capsys.readouterr().err

    assert main(["--config", str(config), "replay", "--limit", "4"]) == 0
    table = capsys.readouterr().out
    assert "Replay of 4 request(s)" in table and "no allowed model" in table
    assert main([*args, "--since", "yesterday"]) == 2


def test_policy_report_rates_without_data() -> None:
    rep = PolicyReport(policy="p")
    assert rep.model_agreement_rate is None and rep.tier_mix == {"local": 0, "edge": 0, "cloud": 0}
    assert json.loads(json.dumps(rep.to_dict()))["decision_agreement"] is None
