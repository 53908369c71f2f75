"""The runtime: agents -> policy -> executor, with every request recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestra.agent import Agent
from orchestra.agent_context import AgentContext
from orchestra.agent_panel import AgentPanel
from orchestra.backend import Backend
from orchestra.balancing import LatencyTracker
from orchestra.catalog import Catalog
from orchestra.config import Config, load_config
from orchestra.decision import Decision
from orchestra.embedded import EmbeddedModel
from orchestra.endpoints import Endpoints
from orchestra.errors import AllCandidatesFailed, OrchestraError, RequestError
from orchestra.executor import Answer, Executor, StreamBroken
from orchestra.feedback import Feedback, record_feedback
from orchestra.health import HealthChecker
from orchestra.paths import default_db_path
from orchestra.policy import Policy, decide_checked
from orchestra.redact import Redactor
from orchestra.request import Message, Request
from orchestra.result import Attempt, Result
from orchestra.safeguards import Safeguards, build_safeguards
from orchestra.sample_filter import SampleFilter
from orchestra.spend import SpendTracker
from orchestra.store import RequestRecord, Store
from orchestra.verdict import Verdict

log = logging.getLogger("orchestra")

Prompt = str | Sequence[Message] | Sequence[dict[str, str]] | Request


class Orchestra:
    """Routes each request to a model and tier, calls it, and records what happened.

    Use it as an async context manager::

        async with Orchestra(config="orchestra.toml") as orc:
            result = await orc.complete("What is the capital of France?")

    `config` is a `Config`, a path to a TOML file, or None (then `$ORCHESTRA_CONFIG`,
    `./orchestra.toml`, or the defaults). `agents` replaces the built-in agents, `policy` the
    configured policy, `backend` the LiteLLM backend (e.g. with a test double), `db_path` the
    store's file (default `$ORCHESTRA_HOME/orchestra.db`). With `preload_backend=False` the
    backend (LiteLLM, seconds to import) loads at the first call instead of at start;
    `warm_embedded=True` starts the embedded model at start, alongside that import (the CLI does
    this: one short-lived process, most likely answered locally).
    """

    def __init__(
        self,
        config: Config | str | Path | None = None,
        *,
        agents: Iterable[Agent] | None = None,
        policy: Policy | None = None,
        backend: Backend | None = None,
        db_path: str | Path | None = None,
        preload_backend: bool = True,
        warm_embedded: bool = False,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self._given_agents = list(agents) if agents is not None else None
        self._given_policy = policy
        self._given_backend = backend
        self._db_path = Path(db_path) if db_path else (self.config.store.path or default_db_path())
        self._embedded = (
            EmbeddedModel(self.config.embedded) if self.config.embedded.enabled else None
        )
        self._endpoints = Endpoints(self._embedded)
        self._sample_filter = SampleFilter(self.config.store.sample_every_s)
        self._panel = AgentPanel(on_sample=self._on_sample)
        self._hooked: list[Agent] = []
        self._store: Store | None = None
        self._executor: Executor | None = None
        self._executor_task: asyncio.Task[Executor] | None = None
        self._backend_task: asyncio.Task[Backend] | None = None
        self._preload_backend = preload_backend
        self._warm_embedded = warm_embedded
        self._warming: asyncio.Task[object] | None = None
        self._policy: Policy | None = None
        self._catalog = Catalog(())
        self.spend = SpendTracker.seeded(0.0, 0.0)
        self._started = False
        self.safeguards: Safeguards | None = None
        self.latency = LatencyTracker()  # real calls only: a health probe is far faster
        self._health: HealthChecker | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Orchestra:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Build the catalog, open the store, start the agents, begin loading the backend."""
        if self._started:
            return
        from orchestra import defaults
        from orchestra.discovery import discover_catalog

        self._policy = self._given_policy or defaults.resolve_policy(self.config.policy)
        agents = self._given_agents
        if agents is None:
            agents = defaults.builtin_agents(self.config)
        self._catalog = Catalog(await discover_catalog(self.config, self._embedded))
        self._redact = Redactor.from_env(m.api_key_env for m in self._catalog if m.api_key_env)
        if self._preload_backend:
            # LiteLLM takes seconds to import: do it in a thread while the agents start.
            self._backend_task = asyncio.create_task(self._load_backend())
        if self._warm_embedded and self._embedded is not None:
            self._warming = asyncio.create_task(self._embedded.endpoint())
        self._store = await Store(self._db_path).open()
        try:
            day, month = await self._store.spend_totals()
            self.spend = SpendTracker.seeded(day, month)
            for agent in [*agents, *self._hooked]:
                self._panel.hook(agent)
            context = AgentContext(
                catalog=self._catalog, budget=self.config.budget, spend=self.spend
            )
            await self._panel.start(context)
            if self.config.health.enabled:
                self._health = HealthChecker(
                    list(self._catalog),
                    interval_s=self.config.health.interval_s,
                    timeout_s=self.config.health.timeout_s,
                )
                await self._health.start()
        except BaseException:
            await self.close()
            raise
        self._started = True

    async def close(self) -> None:
        """Stop agents and the embedded model, and flush every record to disk."""
        await self._panel.stop()
        if self._health is not None:
            await self._health.stop()
            self._health = None
        for task in (self._backend_task, self._warming):
            if task is not None and not task.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        if self._warming is not None and self._warming.done() and not self._warming.cancelled():
            self._warming.exception()  # a failed warm-up surfaces at the call; mark it seen
        await self._endpoints.stop()
        if self._store is not None:
            await self._store.close()
            self._store = None
        self._started = False

    async def _executor_ready(self) -> Executor:
        if not self._started:
            raise OrchestraError("Orchestra is not started: use `async with Orchestra(...) as orc`")
        if self._executor is None:
            # One shared build: concurrent first requests must share one executor (and so one
            # set of breakers, limiters and reservations), not race to build several.
            if self._executor_task is None:
                self._executor_task = asyncio.create_task(self._build_executor())
            self._executor = await self._executor_task
        return self._executor

    async def _build_executor(self) -> Executor:
        if self._backend_task is None:
            self._backend_task = asyncio.create_task(self._load_backend())
        backend = await self._backend_task
        safeguards = await build_safeguards(
            self.config, self._catalog, self._require_store(), self.spend, self.latency
        )
        safeguards.health = self._health
        self.safeguards = safeguards
        return Executor(backend, self._catalog, self._endpoints, self._redact, safeguards)

    async def _load_backend(self) -> Backend:
        backend = self._given_backend
        if backend is None:
            from orchestra.litellm_backend import LiteLLMBackend

            backend = await asyncio.to_thread(LiteLLMBackend)
        await backend.prepare(list(self._catalog))
        return backend

    # -- public API ------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def agents(self) -> tuple[Agent, ...]:
        return self._panel.agents

    def hook_agent(self, agent: Agent) -> None:
        """Add an agent; it takes part from the next request on."""
        if self._started:
            self._panel.hook(agent)
        else:
            self._hooked.append(agent)

    async def verdicts(self, prompt: Prompt = "hello", **hints: Any) -> tuple[Verdict, ...]:
        """Every agent's verdict for a prompt, without calling a model."""
        return await self._panel.verdicts(self._request(prompt, hints))

    async def decide(self, prompt: Prompt, **hints: Any) -> tuple[Decision, tuple[Verdict, ...]]:
        """The decision the policy would take for a prompt, without calling a model."""
        self._require_store()
        request = self._request(prompt, hints)
        verdicts = await self._panel.verdicts(request)
        assert self._policy is not None
        return decide_checked(self._policy, request, verdicts, self._catalog), verdicts

    async def complete(self, prompt: Prompt, **hints: Any) -> Result:
        """Answer a prompt (a string, messages, or a `Request`); hints: model, tier, max_tokens,
        temperature, timeout_s."""
        executor = await self._executor_ready()
        flight = _Flight(self._request(prompt, hints))
        decision = await self._route(flight)
        try:
            answer = await executor.complete(flight.request, decision)
        except AllCandidatesFailed as exc:
            self._fail(flight, exc, exc.attempts)
            raise
        return self._finish(flight, answer)

    def stream(self, prompt: Prompt, **hints: Any) -> ResponseStream:
        """Stream an answer: `async for text in orc.stream(...)`; `.result` is set at the end."""
        self._require_store()
        return ResponseStream(self, self._request(prompt, hints))

    async def history(self, limit: int = 20, since: float | None = None) -> list[dict[str, Any]]:
        await self._require_store().flush()
        return await self._require_store().history(limit=limit, since=since)

    async def spend_summary(self) -> dict[str, Any]:
        store = self._require_store()
        await store.flush()
        summary = await store.spend_summary()
        budget = self.config.budget
        return {
            **summary,
            "daily_budget_usd": budget.daily_usd,
            "monthly_budget_usd": budget.monthly_usd,
        }

    async def feedback(self, request_id: str, good: bool, note: str | None = None) -> Feedback:
        """Say whether the answer to `request_id` (its id, or a unique prefix of 6+ characters)
        was good. Kept in the store, append only; `orchestra train-complexity` learns from it."""
        return await record_feedback(
            self._require_store(), request_id, good, note, redact=self._redact
        )

    async def flush(self) -> None:
        await self._require_store().flush()

    # -- internals -------------------------------------------------------------------------------

    def _request(self, prompt: Prompt, hints: dict[str, Any]) -> Request:
        if isinstance(prompt, Request):
            return prompt.model_copy(update=hints) if hints else prompt
        try:
            request = Request.of(prompt, **hints)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                for e in exc.errors()
            )
            raise RequestError(f"malformed request: {problems}") from None
        if request.model is not None and self._started:
            self._catalog.get(request.model)  # raises UnknownModelError naming the catalog
        return request

    async def _route(self, flight: _Flight) -> Decision:
        flight.verdicts = await self._panel.verdicts(flight.request)
        assert self._policy is not None
        try:
            flight.decision = decide_checked(
                self._policy, flight.request, flight.verdicts, self._catalog
            )
        except OrchestraError as exc:
            self._fail(flight, exc)
            raise
        return flight.decision

    def _finish(self, flight: _Flight, answer: Answer) -> Result:
        assert flight.decision is not None, "a request is answered only after a decision"
        usage = answer.completion.usage
        result = Result(
            request_id=flight.request.id,
            text=answer.completion.text,
            model=answer.spec.name,
            tier=answer.spec.tier,
            cost_usd=usage.cost_usd,
            latency_ms=flight.elapsed_ms(),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            decision=flight.decision,
            verdicts=flight.verdicts,
            attempts=answer.attempts,
            created_at=flight.created,
        )
        self.spend.add(result.cost_usd, flight.created)
        self._record(flight, result=result, attempts=answer.attempts)
        return result

    def _fail(
        self,
        flight: _Flight,
        exc: BaseException,
        attempts: Sequence[Attempt] = (),
        kind: str | None = None,
    ) -> None:
        kind = kind or getattr(exc, "kind", None) or type(exc).__name__
        error = self._redact(str(exc))[:1000]
        self._record(flight, result=None, attempts=attempts, error_kind=kind, error=error)

    def _record(
        self,
        flight: _Flight,
        *,
        result: Result | None,
        attempts: Sequence[Attempt],
        error_kind: str | None = None,
        error: str | None = None,
    ) -> None:
        """The one place a request becomes a record (queued; the store writes it later)."""
        self._require_store().record(
            RequestRecord(
                request=flight.request,
                verdicts=flight.verdicts,
                decision=flight.decision,
                result=result,
                attempts=attempts,
                created_at=flight.created,
                latency_ms=result.latency_ms if result else flight.elapsed_ms(),
                stream=flight.stream,
                error_kind=error_kind,
                error=error,
                keep_text=self.config.store.keep_prompts,
            )
        )

    def _on_sample(self, verdict: Verdict) -> None:
        if self._store is not None and self._sample_filter.keep(verdict):
            self._store.record_sample(verdict)

    def _require_store(self) -> Store:
        if self._store is None:
            raise OrchestraError("Orchestra is not started: use `async with Orchestra(...) as orc`")
        return self._store

    _redact = Redactor()


class ResponseStream:
    """An answer arriving in pieces: iterate it for text; `result` is set once it completes.

    Failover to the next candidate is invisible until the first piece arrives; a failure after
    that raises `StreamBroken`, and the partial answer is recorded.
    """

    def __init__(self, orc: Orchestra, request: Request) -> None:
        self._orc = orc
        self.request = request
        self.result: Result | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        orc = self._orc
        executor = await orc._executor_ready()
        flight = _Flight(self.request, stream=True)
        decision = await orc._route(flight)
        finished = False
        try:
            async for item in executor.stream(self.request, decision):
                if isinstance(item, Answer):
                    self.result = orc._finish(flight, item)
                    finished = True
                else:
                    yield item.text
        except (AllCandidatesFailed, StreamBroken) as exc:
            finished = True
            orc._fail(flight, exc, exc.attempts)
            raise
        finally:
            if not finished:
                closed = OrchestraError("the caller stopped reading the stream before its end")
                orc._fail(flight, closed, kind="cancelled")


@dataclass
class _Flight:
    """A request on its way through the runtime: what has been decided so far, and since when."""

    request: Request
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)
    created: float = field(default_factory=time.time)
    verdicts: tuple[Verdict, ...] = ()
    decision: Decision | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
