"""Offline-first resilience: what one process cannot do (a key it lacks) is not a provider's
outage, a breaker never strands the last model that could answer, and a half-open breaker's trial
is given back when no call was made."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from orchestra import AllCandidatesFailed, Orchestra, ProviderError
from orchestra.config import Config, parse_config
from orchestra.testing import Call, FunctionBackend


def shared(db: Path, **extra: object) -> Config:
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(db)},
            "breaker": {"failure_threshold": 2, "recovery_s": 600},
            "retry": {"attempts_per_model": 1},
            "models": [
                {"name": "keyed", "tier": "local", "litellm_model": "openai/keyed",
                 "api_key_env": "KEYED_API_KEY", "input_cost_per_mtok": 0.0,
                 "output_cost_per_mtok": 0.0},
                {"name": "spare", "tier": "local", "litellm_model": "openai/spare"},
            ],
            **extra,
        }
    )  # fmt: skip


async def test_a_key_missing_in_one_process_does_not_open_the_breaker_for_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shared.db"
    monkeypatch.delenv("KEYED_API_KEY", raising=False)
    backend = FunctionBackend(lambda call: f"{call.model} answers")
    async with Orchestra(shared(db), agents=[], backend=backend) as keyless:
        results = [await keyless.complete("hello") for _ in range(3)]
    assert all(r.model == "spare" for r in results)
    missing = results[-1].attempts[0]
    assert missing.model == "keyed" and "KEYED_API_KEY" in (missing.error or "")
    assert not missing.skipped, "the key is looked for at every call: no breaker skips it"
    monkeypatch.setenv("KEYED_API_KEY", "sk-keyed-0123456789")
    async with Orchestra(shared(db), agents=[], backend=backend) as keyed:
        answered = await keyed.complete("hello")
    assert answered.model == "keyed", answered.attempts


def local_and_remote(db: Path) -> Config:
    return parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(db)},
            "breaker": {"failure_threshold": 1, "recovery_s": 600},
            "retry": {"attempts_per_model": 1},
            "models": [
                {"name": "on-device", "tier": "local", "litellm_model": "openai/on-device"},
                {"name": "lan", "tier": "edge", "litellm_model": "openai/lan"},
            ],
        }
    )


async def test_an_open_breaker_never_strands_the_last_local_model(tmp_path: Path) -> None:
    calls: list[str] = []

    def network_down(call: Call) -> str:
        calls.append(call.model)
        if call.model == "lan":
            raise ProviderError("lan: connection refused", kind="connection", model="lan")
        if calls.count("on-device") == 1:  # a busy moment: the local model overran once
            raise ProviderError("on-device: no answer", kind="timeout", model="on-device")
        return "Paris"

    db = tmp_path / "o.db"
    async with Orchestra(
        local_and_remote(db), agents=[], backend=FunctionBackend(network_down)
    ) as orc:
        with pytest.raises(AllCandidatesFailed):
            await orc.complete("hello")  # both fail: both breakers open
        assert orc.executor is not None and orc.executor.safeguards.breakers is not None
        assert orc.executor.safeguards.breakers.get("on-device").state == "open"
        result = await orc.complete("hello")
        # Its answer says it works again: its breaker closes, as after a trial call.
        assert orc.executor.safeguards.breakers.get("on-device").state == "closed"
    assert (result.model, result.text) == ("on-device", "Paris")
    said = [(a.model, a.skipped, a.error_kind) for a in result.attempts]
    assert said == [
        ("on-device", True, "breaker_open"),  # deferred, and the decision says why
        ("lan", True, "breaker_open"),
        ("on-device", False, None),
    ]
    assert calls == ["on-device", "lan", "on-device"]
    # A restart reads the open breakers from the store, and still answers.
    async with Orchestra(
        local_and_remote(db), agents=[], backend=FunctionBackend(network_down)
    ) as orc:
        again = await orc.complete("hello")
    assert again.model == "on-device"


async def test_a_local_model_with_an_open_breaker_is_tried_after_the_others(tmp_path: Path) -> None:
    calls: list[str] = []

    def recovering(call: Call) -> str:
        calls.append(call.model)
        if call.model == "on-device" and calls.count("on-device") == 1:
            raise ProviderError("on-device: no answer", kind="timeout", model="on-device")
        return f"{call.model} answers"

    async with Orchestra(
        local_and_remote(tmp_path / "o.db"), agents=[], backend=FunctionBackend(recovering)
    ) as orc:
        first = await orc.complete("hello")
        second = await orc.complete("hello")
    assert first.model == "lan" and second.model == "lan", "while another model answers"
    assert calls == ["on-device", "lan", "lan"]


async def test_a_trial_call_that_says_nothing_of_the_provider_gives_the_trial_back(
    tmp_path: Path,
) -> None:
    config = parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "store": {"path": str(tmp_path / "o.db")},
            "breaker": {"failure_threshold": 1, "recovery_s": 0.3},
            "retry": {"attempts_per_model": 1},
            "models": [
                {"name": "flaky", "tier": "edge", "litellm_model": "openai/flaky"},
                {"name": "spare", "tier": "edge", "litellm_model": "openai/spare"},
            ],
        }
    )
    outcomes = iter(["server", "bad_request", "ok"])
    calls: list[str] = []

    def flaky(call: Call) -> str:
        calls.append(call.model)
        if call.model == "flaky" and (kind := next(outcomes)) != "ok":
            raise ProviderError(f"flaky: {kind}", kind=kind, model="flaky")  # type: ignore[arg-type]
        return f"{call.model} answers"

    async with Orchestra(config, agents=[], backend=FunctionBackend(flaky)) as orc:
        assert (await orc.complete("one")).model == "spare"  # flaky's breaker opens
        await asyncio.sleep(0.35)
        # The trial call is refused as a bad request: the provider's health is still unknown.
        assert (await orc.complete("two")).model == "spare"
        third = await orc.complete("three")  # so the next request may make the trial
    assert third.model == "flaky", third.attempts
    assert calls == ["flaky", "spare", "flaky", "spare", "flaky"]


@pytest.mark.parametrize(("trip_on", "opens"), [(None, True), (["timeout", "server"], False)])
async def test_which_failures_trip_a_breaker_is_a_setting(
    tmp_path: Path, trip_on: list[str] | None, opens: bool
) -> None:
    """A provider's 429s count against its breaker by default (a quota run out answers 429 on
    every call); `[breaker] trip_on` says which kinds do."""

    def limited(call: Call) -> str:
        if call.model == "cloud":
            raise ProviderError("429 slow down", kind="rate_limit", model="cloud", status_code=429)
        return "local answers"

    breaker: dict[str, object] = {"failure_threshold": 2}
    if trip_on is not None:
        breaker["trip_on"] = trip_on
    config = parse_config(
        {"embedded": {"enabled": False}, "health": {"enabled": False}, "breaker": breaker,
         "retry": {"attempts_per_model": 1}, "policy": {"name": "quality_first"},
         "store": {"path": str(tmp_path / "o.db")},
         "models": [{"name": "cloud", "tier": "cloud", "litellm_model": "openai/c",
                     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0},
                    {"name": "local", "tier": "local", "litellm_model": "openai/l",
                     "input_cost_per_mtok": 0.0, "output_cost_per_mtok": 0.0}]}
    )  # fmt: skip
    async with Orchestra(config, agents=[], backend=FunctionBackend(limited)) as orc:
        for _ in range(3):
            assert (await orc.complete("hello")).model == "local"
        states = orc._executor.safeguards.breakers.states()  # type: ignore[union-attr]
    assert (states["cloud"] == "open") is opens
