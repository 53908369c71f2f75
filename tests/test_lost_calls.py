"""A call that reached the provider and brought nothing back (a body cut off, a read that timed
out, a caller that left) may have been billed: it is charged at its reservation, as a dead
process's is. One that never reached it (connection refused) or that it refused with an error
status is not: its reservation is released. Through LiteLLM, to stubs on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from test_partial_cost_recorded import WantsCloud, config

from orchestra import Orchestra
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.litellm_backend import import_litellm, provider_error
from orchestra.testing import Behaviour, StubProvider

SPEC = ModelSpec(name="paid", tier=Tier.CLOUD, litellm_model="openai/paid")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _failure(url: str, timeout_s: float = 5.0) -> BaseException:
    litellm = import_litellm()
    try:
        await litellm.acompletion(model="openai/paid", api_base=url, api_key="sk-test",
                                  messages=[{"role": "user", "content": "hi"}],
                                  timeout=timeout_s, max_retries=0)  # fmt: skip
    except Exception as exc:
        return exc
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize(
    ("behaviour", "sent"),
    [
        (Behaviour(kind="drop_stream", reply="a b c d"), True),  # half the body, then closed
        (Behaviour(kind="malformed"), True),  # a 200 it could not read
        (Behaviour(kind="hang"), True),  # read timed out
        (Behaviour(kind="status", status=500), False),
        (Behaviour(kind="status", status=429), False),
        (Behaviour(kind="status", status=400), False),
    ],
)
async def test_what_may_have_been_billed_is_told_apart(behaviour: Behaviour, sent: bool) -> None:
    with StubProvider(behaviour) as stub:
        exc = await _failure(stub.url, timeout_s=0.5 if behaviour.kind == "hang" else 5.0)
    assert provider_error(exc, SPEC).sent is sent


async def test_a_refused_connection_was_never_sent() -> None:
    exc = await _failure(f"http://127.0.0.1:{_free_port()}/v1")
    assert provider_error(exc, SPEC).sent is False


async def _spend_after(tmp_path: Path, paid: StubProvider, free: StubProvider) -> dict[str, Any]:
    async with Orchestra(config(tmp_path, paid, free), agents=[WantsCloud()]) as orc:
        result = await orc.complete("Tell me a story", timeout_s=3.0)
        assert result.model == "free"
        summary = await orc.spend_summary()
        (entry,) = await orc.history(limit=5)
    return {**summary, "recorded": entry["cost_usd"]}


async def test_a_read_that_timed_out_is_charged_at_its_reservation(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    stub.behaviour = Behaviour(kind="hang")
    spend = await _spend_after(tmp_path, stub, stub2)
    assert spend["total_usd"] > 0 and spend["recorded"] == pytest.approx(spend["total_usd"])
    assert spend["reserved_usd"] == 0, "nothing left held"


@pytest.mark.parametrize("status", [500, 429])
async def test_an_error_status_is_not_charged(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider, status: int
) -> None:
    stub.behaviour = Behaviour(kind="status", status=status)
    spend = await _spend_after(tmp_path, stub, stub2)
    assert stub.requests and spend["total_usd"] == 0 and spend["recorded"] == 0


async def test_a_caller_that_leaves_mid_call_is_charged_at_its_reservation(
    tmp_path: Path, stub: StubProvider, stub2: StubProvider
) -> None:
    stub.behaviour = Behaviour(kind="hang")
    async with Orchestra(config(tmp_path, stub, stub2), agents=[WantsCloud()]) as orc:
        call = asyncio.create_task(orc.complete("Tell me a story"))
        for _ in range(500):  # until the stub has the request (it never answers)
            if stub.requests:
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        summary = await orc.spend_summary()
    assert summary["total_usd"] > 0 and summary["reserved_usd"] == 0
