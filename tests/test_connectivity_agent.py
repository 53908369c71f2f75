"""The connectivity agent: real sockets on 127.0.0.1 only, plus properties of its pure `judge`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import model_toml
from hypothesis import given
from hypothesis import strategies as st

from orchestra import ALL_TIERS, AgentContext, Budget, Catalog, ModelSpec, Orchestra, Tier
from orchestra.agents.connectivity import ConnectivityAgent, Probe, ProbeResult, probe_for
from orchestra.spend.tracker import SpendTracker
from orchestra.testing import Behaviour, StubProvider, refused_url

# Generous bound proving "did not stall" (never a performance assertion).
STALL_BOUND_S = 2.0


def spec(name: str, tier: Tier, api_base: str | None = None) -> ModelSpec:
    return ModelSpec(name=name, tier=tier, litellm_model=f"openai/{name}", api_base=api_base)


def context(*models: ModelSpec) -> AgentContext:
    return AgentContext(
        catalog=Catalog(models), budget=Budget(), spend=SpendTracker.seeded(0.0, 0.0)
    )


async def started(agent: ConnectivityAgent, **urls: tuple[Tier, str]) -> ConnectivityAgent:
    await agent.start(context(*(spec(n, tier, url) for n, (tier, url) in urls.items())))
    return agent


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[str]:
    """A plain asyncio server on 127.0.0.1; yields its base URL."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a client going away, or the server stopping, ends the connection quietly
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.close()
        for task in list(handlers):  # Python 3.11 has no Server.close_clients()
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


def answer(
    delay_s: float = 0.0, body: bytes = b"ok", chunks: int = 1, gap_s: float = 0.0
) -> Handler:
    """Answer 200 after `delay_s`, sending `body` in `chunks` pieces `gap_s` apart."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay_s)
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode())
        size = -(-len(body) // chunks)
        for i in range(0, len(body), size):
            writer.write(body[i : i + size])
            await writer.drain()
            await asyncio.sleep(gap_s)

    return handle


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and read, never answer."""
    await asyncio.sleep(3600)


def tiers_of(verdict_metrics: dict[str, object], tier: Tier) -> dict[str, object]:
    return verdict_metrics["tiers"][str(tier)]  # type: ignore[index]


# -- endpoints and settings --------------------------------------------------------------------


def test_probe_targets() -> None:
    edge = spec("x", Tier.EDGE, api_base="http://10.0.0.5:8080/v1")
    assert probe_for(edge) == Probe("10.0.0.5", 8080, Tier.EDGE, "http")
    cloud = ModelSpec(name="g", tier=Tier.CLOUD, litellm_model="openai/gpt-4o-mini")
    assert probe_for(cloud) == Probe("api.openai.com", 443, Tier.CLOUD, "https")
    odd = ModelSpec(name="o", tier=Tier.CLOUD, litellm_model="somewhere/model")
    assert probe_for(odd) is None


def test_settings_defaults_and_extra_hosts() -> None:
    agent = ConnectivityAgent(extra_hosts=["127.0.0.1:9", "[::1]:443"])
    assert agent.interval == 5.0 and agent.window == 10 and agent.http_every == 3
    assert (agent.degraded_latency_ms, agent.degraded_loss) == (200.0, 0.10)
    assert agent.degraded_bandwidth_mbps == 5.0
    assert agent.timeout_s > agent.probe_timeout_s  # check() is bounded by the probe deadline
    assert [p.key for p in agent._probes] == ["127.0.0.1:9", "[::1]:443"]


@pytest.mark.parametrize(
    "settings",
    [
        {"interval": 0},
        {"probe_timeout_s": -1},
        {"probe_timeout_s": "1"},
        {"dns_timeout_s": 2.0, "probe_timeout_s": 1.0},
        {"window": 0},
        {"window": 2.5},
        {"http_every": -1},
        {"degraded_loss": 1.5},
        {"degraded_latency_ms": True},
        {"ewma_alpha": 0},
        {"extra_hosts": "example:80"},
        {"extra_hosts": ["no-port"]},
        {"extra_hosts": ["host:99999"]},
    ],
)
def test_invalid_settings_raise_value_error(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ConnectivityAgent(**settings)  # type: ignore[arg-type]


async def test_measure_bandwidth_without_speedtest_is_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "speedtest", None)  # makes `import speedtest` fail
    assert await ConnectivityAgent().measure_bandwidth() is None


# -- real sockets ------------------------------------------------------------------------------


async def test_states_and_allowed_tiers(stub: StubProvider) -> None:
    agent = await started(
        ConnectivityAgent(probe_timeout_s=0.5, dns_timeout_s=0.2),
        lan=(Tier.EDGE, stub.url),
        cloud=(Tier.CLOUD, refused_url()),
    )
    verdict = await agent.check(None)
    assert verdict.state == "degraded"
    assert verdict.allowed == frozenset({Tier.LOCAL, Tier.EDGE})
    assert verdict.target is Tier.EDGE and 0 < verdict.confidence < 0.9
    assert "cloud unreachable" in verdict.reason
    edge = tiers_of(verdict.metrics, Tier.EDGE)
    assert edge["state"] == "connected" and edge["http_ms"] is not None
    assert tiers_of(verdict.metrics, Tier.CLOUD)["error"] == "tcp_ConnectionRefusedError"

    stub.stop()  # the LAN box goes away too: offline
    offline = await agent.check(None)
    assert offline.state == "offline" and offline.allowed == frozenset({Tier.LOCAL})
    assert offline.target is Tier.LOCAL
    await agent.stop()


async def test_all_up_is_connected_with_latency_metrics(stub: StubProvider) -> None:
    agent = await started(ConnectivityAgent(http_every=1), lan=(Tier.EDGE, stub.url))
    for _ in range(3):
        verdict = await agent.check(None)
    await agent.stop()
    assert verdict.state == "connected" and verdict.allowed == ALL_TIERS
    assert verdict.target is None
    edge = tiers_of(verdict.metrics, Tier.EDGE)
    assert edge["samples"] == 3 and edge["loss"] == 0
    assert 0 < edge["p50_ms"] <= edge["p95_ms"]  # type: ignore[operator]
    assert edge["ewma_ms"] is not None and edge["jitter_ms"] is not None
    assert edge["throughput_mbps"] is None  # a 404 page is too small to measure bandwidth


async def test_with_nothing_remote_abstains() -> None:
    agent = await started(ConnectivityAgent())
    verdict = await agent.check(None)
    assert verdict.state == "local_only" and verdict.allowed == ALL_TIERS and verdict.target is None


async def test_stalled_endpoint_costs_at_most_the_deadline(stub: StubProvider) -> None:
    async with http_server(stall) as hung:
        agent = await started(
            ConnectivityAgent(probe_timeout_s=0.3, dns_timeout_s=0.1),
            lan=(Tier.EDGE, stub.url),
            cloud=(Tier.CLOUD, hung),
        )
        for _ in range(2):  # the second round re-tries HTTP because the first failed
            began = time.perf_counter()
            verdict = await agent.check(None)
            assert time.perf_counter() - began < STALL_BOUND_S
            assert tiers_of(verdict.metrics, Tier.CLOUD)["error"] == "http_timeout"
            assert verdict.allowed == frozenset({Tier.LOCAL, Tier.EDGE})
        await agent.stop()


async def test_hanging_stub_provider_is_down() -> None:
    # The stub's "hang" only hangs chat calls; its TCP port still accepts, so TCP-only is up.
    with StubProvider(Behaviour(kind="hang")) as hung:
        agent = await started(ConnectivityAgent(http_every=0), cloud=(Tier.CLOUD, hung.url))
        assert (await agent.check(None)).state == "connected"
        await agent.stop()


async def test_delayed_answer_is_measured_and_can_degrade() -> None:
    async with http_server(answer(delay_s=0.3)) as slow:
        agent = await started(
            ConnectivityAgent(degraded_http_ms=200, http_every=1), cloud=(Tier.CLOUD, slow)
        )
        verdict = await agent.check(None)
        await agent.stop()
    cloud = tiers_of(verdict.metrics, Tier.CLOUD)
    assert cloud["http_ms"] >= 300  # type: ignore[operator]
    assert verdict.state == "degraded" and verdict.target is Tier.LOCAL
    assert verdict.allowed == ALL_TIERS  # slow is not unreachable
    assert "http" in verdict.reason


async def test_throughput_from_real_bodies() -> None:
    body = bytes(64 * 1024)
    async with (
        http_server(answer(body=body)) as fast,
        http_server(answer(body=body, chunks=8, gap_s=0.03)) as trickle,
    ):
        agent = await started(
            ConnectivityAgent(http_every=1), lan=(Tier.EDGE, fast), cloud=(Tier.CLOUD, trickle)
        )
        verdict = await agent.check(None)
        await agent.stop()
    edge, cloud = tiers_of(verdict.metrics, Tier.EDGE), tiers_of(verdict.metrics, Tier.CLOUD)
    assert edge["state"] == "connected" and edge["throughput_mbps"] > 5  # type: ignore[operator]
    assert cloud["state"] == "degraded" and cloud["throughput_mbps"] < 5  # type: ignore[operator]
    assert verdict.target is Tier.EDGE  # cloud is slow, the LAN is fine


async def test_offline_and_recovery_each_take_one_round_and_loss_slides(
    stub: StubProvider,
) -> None:
    agent = await started(ConnectivityAgent(window=4), cloud=(Tier.CLOUD, stub.url))
    assert (await agent.check(None)).state == "connected"
    stub.stop()
    down = await agent.check(None)
    assert down.state == "offline" and down.allowed == frozenset({Tier.LOCAL})
    stub.start()  # same port
    back = await agent.check(None)
    assert back.state == "degraded" and back.allowed == ALL_TIERS  # left offline at once
    assert tiers_of(back.metrics, Tier.CLOUD)["loss"] == pytest.approx(1 / 3, abs=1e-3)
    states = [(await agent.check(None)).state for _ in range(3)]
    assert states == ["degraded", "degraded", "connected"]  # the failure slides out of 4
    await agent.stop()


async def test_stuck_dns_is_cut_and_never_piles_up(
    stub: StubProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A getaddrinfo that blocks (black-holed DNS) costs the DNS deadline, once per host."""
    release = threading.Event()
    calls: list[str] = []
    real = socket.getaddrinfo

    def blocking(host: str, *args: object, **kwargs: object) -> object:
        if host != "stuck.test":
            return real(host, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(host)
        release.wait(10)
        return real("127.0.0.1", *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", blocking)
    url = f"http://stuck.test:{stub.port}/v1"
    agent = await started(
        ConnectivityAgent(probe_timeout_s=0.5, dns_timeout_s=0.2), cloud=(Tier.CLOUD, url)
    )
    try:
        errors = []
        for _ in range(3):
            began = time.perf_counter()
            verdict = await agent.check(None)
            assert time.perf_counter() - began < STALL_BOUND_S
            assert verdict.state == "offline"
            errors.append(tiers_of(verdict.metrics, Tier.CLOUD)["error"])
        assert errors == ["dns_timeout", "dns_pending", "dns_pending"]
        assert calls == ["stuck.test"]  # one lookup outstanding, not one per round

        release.set()  # the resolver answers at last: cached, and the next round connects
        for _ in range(50):
            if "stuck.test" in agent._dns_cache:
                break
            await asyncio.sleep(0.02)
        assert (await agent.check(None)).state != "offline"
        assert (await agent.check(None)).allowed == ALL_TIERS
        assert calls == ["stuck.test"]  # served from the cache
    finally:
        release.set()
        await agent.stop()


async def test_resolver_that_never_returns_does_not_stall_the_check(stub: StubProvider) -> None:
    never_calls = 0

    async def never(host: str, port: int) -> list[str]:
        nonlocal never_calls
        never_calls += 1
        await asyncio.Event().wait()
        return []

    agent = ConnectivityAgent(probe_timeout_s=0.4, dns_timeout_s=0.2)
    agent.resolver = never
    await started(
        agent, cloud=(Tier.CLOUD, f"http://never.test:{stub.port}/v1"), lan=(Tier.EDGE, stub.url)
    )
    began = time.perf_counter()
    verdict = await agent.check(None)
    assert time.perf_counter() - began < STALL_BOUND_S
    assert verdict.state == "degraded" and verdict.allowed == frozenset({Tier.LOCAL, Tier.EDGE})
    await agent.check(None)
    assert never_calls == 1
    await agent.stop()


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    try:
        return (
            subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=5).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


NAMESPACE_SCRIPT = """
import asyncio, json, time
from orchestra.agents.connectivity import ConnectivityAgent
from orchestra import AgentContext, Budget, Catalog, ModelSpec, Tier
from orchestra.spend.tracker import SpendTracker

async def main():
    models = [
        ModelSpec(name="box", tier=Tier.EDGE, litellm_model="openai/box",
                  api_base="http://192.0.2.10:8080/v1"),
        ModelSpec(name="gpt", tier=Tier.CLOUD, litellm_model="openai/gpt-4o-mini"),
    ]
    ctx = AgentContext(catalog=Catalog(models), budget=Budget(),
                       spend=SpendTracker.seeded(0.0, 0.0))
    agent = ConnectivityAgent(probe_timeout_s=1.0, dns_timeout_s=0.5)
    await agent.start(ctx)
    began = time.perf_counter()
    verdict = await agent.check(None)
    elapsed = time.perf_counter() - began
    await agent.stop()
    allowed = sorted(str(t) for t in verdict.allowed)
    print(json.dumps({"state": verdict.state, "allowed": allowed, "elapsed": elapsed}))

asyncio.run(main())
"""


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -n` (root, user namespaces)")
def test_empty_network_namespace_is_offline_quickly(tmp_path: Path) -> None:
    """No interface is up in a fresh namespace: nothing can leave, every probe must fail fast."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(NAMESPACE_SCRIPT))
    root = Path(__file__).resolve().parents[1]
    began = time.perf_counter()
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - began < 20  # the interpreter exits: no stuck lookup is joined
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["state"] == "offline" and out["allowed"] == ["local"]
    assert out["elapsed"] < STALL_BOUND_S


# -- judge: properties -------------------------------------------------------------------------

EDGE_BOX = Probe("10.1.1.1", 8080, Tier.EDGE, "http")
CLOUD_API = Probe("api.example", 443, Tier.CLOUD, "https")
CLOUD_ALT = Probe("api2.example", 443, Tier.CLOUD, "https")
PROBES = (EDGE_BOX, CLOUD_API, CLOUD_ALT)
RANK = {"connected": 0, "degraded": 1, "offline": 2}

latency = st.floats(0.0, 5000.0, allow_nan=False)
rate = st.none() | st.floats(0.0, 1e9, allow_nan=False)


@st.composite
def histories(draw: st.DrawFn) -> list[ProbeResult]:
    probes = draw(st.lists(st.sampled_from(PROBES), min_size=1, max_size=3, unique=True))
    out = []
    for _ in range(draw(st.integers(1, 15))):
        for p in probes:
            ok = draw(st.booleans())
            http = draw(st.none() | latency)
            out.append(ProbeResult(p, ok, draw(latency), "" if ok else "x", http, draw(rate)))
    return out


@given(histories())
def test_judge_never_disallows_local(history: list[ProbeResult]) -> None:
    verdict = ConnectivityAgent().judge(history)
    assert Tier.LOCAL in verdict.allowed
    assert verdict.state in {"connected", "degraded", "offline"}
    json.dumps(verdict.metrics)  # the store can persist it


@given(
    st.lists(st.sampled_from(PROBES), min_size=1, max_size=3, unique=True),
    st.integers(1, 12),
    st.floats(0.0, 199.0),
    st.none() | st.floats(0.0, 999.0),
    st.none() | st.floats(5e6 / 8, 1e9),
)
def test_all_probes_ok_is_connected(
    probes: list[Probe], rounds: int, ms: float, http: float | None, bps: float | None
) -> None:
    history = [ProbeResult(p, True, ms, "", http, bps) for _ in range(rounds) for p in probes]
    verdict = ConnectivityAgent().judge(history)
    assert verdict.state == "connected" and verdict.allowed == ALL_TIERS
    assert verdict.target is None


@st.composite
def worsening(draw: st.DrawFn) -> tuple[list[ProbeResult], list[ProbeResult]]:
    """A history and a worse one: the same probes, higher latencies, a superset of failures."""
    probes = draw(st.lists(st.sampled_from(PROBES), min_size=1, max_size=3, unique=True))
    rounds = draw(st.integers(1, 12))
    better, worse = [], []
    for _ in range(rounds):
        for p in probes:
            ms, extra = draw(latency), draw(st.floats(0.0, 1000.0))
            failed = draw(st.booleans())
            fails_later = failed or draw(st.booleans())
            better.append(ProbeResult(p, not failed, ms))
            worse.append(ProbeResult(p, not fails_later, ms + extra))
    return better, worse


@given(worsening())
def test_latency_and_loss_getting_worse_never_improves_the_state(
    pair: tuple[list[ProbeResult], list[ProbeResult]],
) -> None:
    agent = ConnectivityAgent()
    better, worse = pair
    # Latency alone, then latency and loss together: neither may improve the state.
    same_failures = [
        ProbeResult(w.probe, b.ok, w.ms if b.ok else b.ms)
        for b, w in zip(better, worse, strict=True)
    ]
    assert RANK[agent.judge(same_failures).state] >= RANK[agent.judge(better).state]
    uniform = [ProbeResult(b.probe, b.ok, 50.0) for b in better]
    uniform_worse = [ProbeResult(w.probe, w.ok, 50.0) for w in worse]
    assert RANK[agent.judge(uniform_worse).state] >= RANK[agent.judge(uniform).state]


def test_judge_metrics_over_the_window() -> None:
    agent = ConnectivityAgent(window=4, ewma_alpha=0.5)
    ms = [999.0, 10.0, 30.0, 20.0, 40.0]  # the first one slides out of the window
    history = [ProbeResult(CLOUD_API, True, m) for m in ms]
    history.insert(3, ProbeResult(CLOUD_API, False, 1.0, "tcp_timeout"))
    endpoint = agent.judge(history).metrics["endpoints"]["api.example:443"]
    # Window: 30, fail, 20, 40 → latencies 30, 20, 40.
    assert endpoint["loss"] == 0.25 and endpoint["samples"] == 4
    assert (endpoint["p50_ms"], endpoint["p95_ms"]) == (30.0, 40.0)
    assert endpoint["jitter_ms"] == 15.0  # (|20-30| + |40-20|) / 2
    assert endpoint["ewma_ms"] == 32.5  # 30 → 25 → 32.5
    assert endpoint["state"] == "degraded" and "loss" in endpoint["why"][0]


def test_tier_is_as_good_as_its_best_endpoint() -> None:
    agent = ConnectivityAgent()
    history = [ProbeResult(CLOUD_API, True, 10.0), ProbeResult(CLOUD_ALT, False, 1.0, "x")]
    verdict = agent.judge(history)
    assert verdict.state == "connected" and verdict.allowed == ALL_TIERS
    cloud = tiers_of(verdict.metrics, Tier.CLOUD)
    assert (cloud["endpoints"], cloud["reachable"]) == (2, 1)


def test_edge_trouble_with_a_healthy_cloud_does_not_vote() -> None:
    agent = ConnectivityAgent()
    verdict = agent.judge(
        [ProbeResult(CLOUD_API, True, 10.0), ProbeResult(EDGE_BOX, False, 1.0, "x")]
    )
    assert verdict.state == "degraded" and verdict.target is None
    assert verdict.allowed == frozenset({Tier.LOCAL, Tier.CLOUD})


async def test_a_failed_probe_of_an_endpoint_that_just_answered_a_call_is_not_down() -> None:
    """A probe can miss its deadline while real calls get through (a saturated event loop, a
    provider slow to accept while it serves): a call answered during the round (or just before
    it) is proof the endpoint is reachable, so the tier is not vetoed as unreachable; an answer
    from before that is not, so a network lost is still seen within one round."""
    url = refused_url()
    answered: dict[str, float] = {}
    ctx = replace(context(spec("c", Tier.CLOUD, url)), answered_at=answered.get)
    agent = ConnectivityAgent(http_every=0)
    await agent.start(ctx)
    try:
        assert (await agent.check(None)).state == "offline"  # no call: the probe decides
        answered["c"] = time.monotonic()
        verdict = await agent.check(None)
        assert verdict.state != "offline" and Tier.CLOUD in verdict.allowed
        endpoint = next(iter(verdict.metrics["endpoints"].values()))
        assert endpoint["passive"] is True and endpoint["last_ms"] is None
        answered["c"] = time.monotonic() - 2 * agent.probe_timeout_s  # before this round
        assert (await agent.check(None)).state == "offline", "an older answer proves nothing now"
    finally:
        await agent.stop()


async def test_the_runtime_tells_agents_when_a_model_last_answered(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    async with Orchestra(config=write_config(model_toml("cloud-1", stub.url))) as orc:
        ctx = orc._agent_context()
        assert ctx.answered_at("cloud-1") is None
        before = time.monotonic()
        await orc.complete("hello", model="cloud-1")
        at = ctx.answered_at("cloud-1")
        assert at is not None and at >= before


async def test_a_deadline_missed_on_a_saturated_event_loop_proves_nothing() -> None:
    """Under load (here a callback that blocks the loop 150 ms at a time) a probe misses its
    deadline while the endpoint is fine: that round is inconclusive, the endpoint keeps its
    state. A refusal under the same load is the network's answer: offline at once."""

    async def hog() -> None:
        while True:
            time.sleep(0.15)  # noqa: ASYNC251 - blocking the loop is the point
            await asyncio.sleep(0)

    async with http_server(answer()) as up:
        for url, before, under_load in ((up, "connected", "connected"),
                                        (refused_url(), "offline", "offline")):  # fmt: skip
            agent = await started(
                ConnectivityAgent(probe_timeout_s=0.3, dns_timeout_s=0.1, http_every=1),
                cloud=(Tier.CLOUD, url),
            )
            assert (await agent.check(None)).state == before
            load = asyncio.create_task(hog())
            try:
                verdict = await agent.check(None)
            finally:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
            assert verdict.state == under_load, verdict.reason
            await agent.stop()
