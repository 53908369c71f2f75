"""The runtime: agents -> policy -> executor, with every request recorded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestra.agents.base import Agent
from orchestra.agents.context import AgentContext
from orchestra.agents.panel import AgentPanel
from orchestra.agents.registry import build_agents
from orchestra.agents.sample_filter import SampleFilter
from orchestra.config import Config, load_config
from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.errors import (
    AllCandidatesFailed,
    ConfigError,
    NotRecorded,
    OrchestraError,
    RejectedRequest,
    RequestError,
    StoreError,
    is_cancellation,
)
from orchestra.core.feedback import MAX_NOTE_CHARS, MIN_PREFIX, Feedback
from orchestra.core.model_spec import ModelSpec
from orchestra.core.paths import STORE_URL_ENV, data_dir, default_db_path
from orchestra.core.redact import Redactor, strip_prompt
from orchestra.core.request import Message, Request, new_request_id
from orchestra.core.result import Result
from orchestra.core.verdict import Verdict
from orchestra.execution.backend import Backend
from orchestra.execution.balancing import LatencyTracker
from orchestra.execution.embedded import EmbeddedModel
from orchestra.execution.endpoints import Endpoints
from orchestra.execution.executor import Executor
from orchestra.execution.flight import Flight
from orchestra.execution.health import HealthChecker
from orchestra.execution.safeguards import build_safeguards
from orchestra.policies.base import Policy, decide_checked
from orchestra.policies.registry import resolve_policy
from orchestra.response_stream import ResponseStream
from orchestra.spend.guard import BudgetGuard
from orchestra.spend.tracker import SpendTracker
from orchestra.store import (
    PostgresOptions,
    RequestRecord,
    Store,
    Timeouts,
    is_url,
    masked,
    open_store,
)
from orchestra.store.breaker_storage import StoreBreakerStorage

log = logging.getLogger("orchestra")

Prompt = str | Sequence[Message] | Sequence[dict[str, str]] | Request

BREAKER_SYNC_S = 1.0  # how often breakers take the states other processes saved
CALL_IDS_KEPT = 10_000  # request ids remembered, to give a reused one a new id (~1.5 MB)


class Orchestra:
    """Routes each request to a model and tier, calls it, and records what happened.

    Use it as an async context manager::

        async with Orchestra(config="orchestra.toml") as orc:
            result = await orc.complete("What is the capital of France?")

    `config` is a `Config`, a path to a TOML file, or None (then `$ORCHESTRA_CONFIG`,
    `./orchestra.toml`, or the defaults). `agents` replaces the built-in agents, `policy` the
    configured policy, `backend` every model's backend (e.g. a test double), `db_path` the
    store's file (default `$ORCHESTRA_HOME/orchestra.db`). By default the embedded model is
    called over plain HTTP and every other model through LiteLLM (seconds to import): imported
    in the background at start when the catalog has such a model, or with
    `preload_backend=False` only when one is first tried. `warm_embedded=True` starts the
    embedded model at start (`orchestra chat` does); `embedded` is one already starting (`orchestra
    run` starts it, reading its prompt ahead, before it imports the rest). A runtime dropped
    without `close()` warns with `ResourceWarning`.
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
        embedded: EmbeddedModel | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self._given_agents = list(agents) if agents is not None else None
        self._given_policy = policy
        self._given_backend = backend
        self._db_path = Path(db_path) if db_path else (self.config.store.path or default_db_path())
        self._store_location: str | Path = self._db_path if db_path else store_location(self.config)
        if embedded is None and self.config.embedded.enabled:
            embedded = EmbeddedModel(self.config.embedded)
        self._embedded = embedded
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
        self._catalog_changing = asyncio.Lock()
        self._redact = Redactor()
        self._idle_spend = SpendTracker()
        self._started = False
        self.latency = LatencyTracker()  # real calls only: a health probe is far faster
        self._health: HealthChecker | None = None
        self._breaker_storage: StoreBreakerStorage | None = None
        self._sharing: asyncio.Task[None] | None = None
        self._call_ids: dict[str, None] = {}  # the latest calls' request ids, oldest first

    def __del__(self) -> None:
        if getattr(self, "_started", False):
            warnings.warn(f"{self!r} was never closed", ResourceWarning, stacklevel=1)

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
        from orchestra.discovery import discover_catalog

        self._policy = self._given_policy or resolve_policy(self.config.policy)
        agents = self._given_agents
        if agents is None:
            agents = build_agents(self.config.agents)
        self._catalog = Catalog(await discover_catalog(self.config, self._embedded))
        self._redact = Redactor.from_env(m.api_key_env for m in self._catalog if m.api_key_env)
        if self._preload_backend:
            # LiteLLM takes seconds to import: do it in a thread while the agents start.
            self._backend_task = asyncio.create_task(self._load_backend())
        if self._warm_embedded and self._embedded is not None:
            self._warming = asyncio.create_task(self._embedded.endpoint())
        self._store = await build_store(self.config, self._store_location).open()
        try:
            for agent in [*agents, *self._hooked]:
                self._panel.hook(agent)
            await self._panel.start(self._agent_context())
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
        self._started = False
        if self._sharing is not None:
            self._sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sharing
            self._sharing = None
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
        if self._given_backend is None and (built := self._built_backend()) is not None:
            await built.close()  # its clients' connections
        await self._endpoints.stop()
        if self._store is not None:
            await self._store.close()
            self._store = None

    def _built_backend(self) -> Backend | None:
        task = self._backend_task
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    async def ready(self) -> None:
        """Wait until the first call can go at once: the backend loaded (LiteLLM takes seconds
        to import) and the executor built. A server calls it before it takes requests."""
        executor = await self._executor_ready()
        for spec in self._catalog:
            await executor.backend.ready(spec)

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
        breakers = StoreBreakerStorage(self._require_store())
        await breakers.preload()
        self._breaker_storage = breakers
        c = self.config
        safeguards = build_safeguards(
            models=list(self._catalog),
            guard=BudgetGuard(c.budget, self._require_store()),
            retry=c.retry,
            breaker=c.breaker,
            breaker_storage=breakers,
            balancing=c.balancing,
            cache=c.cache,
            cache_store=self._require_store(),
            latency=self.latency,
            health=self._health,
            deadline_s=c.request_timeout_s,
        )
        executor = Executor(backend, self._catalog, self._endpoints, self._mask, safeguards)
        self._sharing = asyncio.create_task(
            self._share_breakers(executor), name="orchestra-breakers"
        )
        return executor

    async def _share_breakers(self, executor: Executor) -> None:
        """Every second, take the breaker states other processes sharing the store saved."""
        board, storage = executor.safeguards.breakers, self._breaker_storage
        if board is None or storage is None:
            return
        while True:
            await asyncio.sleep(BREAKER_SYNC_S)
            try:
                board.adopt(await storage.refresh())
            except OrchestraError as exc:  # the store is busy or closing; try again next round
                log.debug("breakers: refresh failed: %s", exc)

    async def _load_backend(self) -> Backend:
        backend = self._given_backend
        if backend is None:
            from orchestra.execution.routing_backend import RoutingBackend

            backend = RoutingBackend(preload=self._preload_backend)
        await backend.prepare(list(self._catalog))
        return backend

    # -- public API ------------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def store(self) -> Store:
        """The open store: history, spend, feedback, stored models."""
        return self._require_store()

    @property
    def spend(self) -> SpendTracker:
        """Live spend (today, this month, in flight), as the ledger last had it."""
        return self._store.spend if self._store is not None else self._idle_spend

    @property
    def agents(self) -> tuple[Agent, ...]:
        return self._panel.agents

    @property
    def executor(self) -> Executor | None:
        """The executor once built (at the first call): its safeguards, breakers, limiters."""
        return self._executor

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
        flight = Flight(self._new_call(self._request(prompt, hints)))
        await self._route(flight)
        try:
            result = await executor.complete(flight)
        except (AllCandidatesFailed, RejectedRequest) as exc:
            await self._fail(flight, exc)
            raise
        except BaseException as exc:  # cancelled, or a bug: what it cost is still recorded
            kind = "cancelled" if is_cancellation(exc) else None
            await asyncio.shield(self._fail(flight, exc, kind=kind))
            raise
        return await self._finish(flight, result)

    def stream(self, prompt: Prompt, **hints: Any) -> ResponseStream:
        """Stream an answer: `async for text in orc.stream(...)`; `.result` is set at the end."""
        self._require_store()
        return ResponseStream(self, self._new_call(self._request(prompt, hints)))

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
            "degraded": summary.get("degraded", False),  # where `orchestra spend` puts it
            "daily_budget_usd": budget.daily_usd,
            "monthly_budget_usd": budget.monthly_usd,
        }

    async def feedback(self, request_id: str, good: bool, note: str | None = None) -> Feedback:
        """Say whether the answer to `request_id` (its id, or a unique prefix of 6+ characters)
        was good. Kept in the store, append only; `orchestra train-complexity` learns from it."""
        return await record_feedback(self._require_store(), request_id, good, note, self._redact)

    async def flush(self) -> None:
        await self._require_store().flush()

    # -- the catalog while running ---------------------------------------------------------------

    async def add_model(self, spec: ModelSpec) -> None:
        """Add a model to the catalog (last in its tier; `ConfigError` if its name is taken);
        the next requests may use it. Prices it does not name come from LiteLLM's table."""
        priced = await _priced(spec)
        await self._change_catalog(lambda c: c.adding(priced), priced)

    async def update_model(self, spec: ModelSpec) -> None:
        """Replace the catalog's model named `spec.name` (`UnknownModelError` if none); prices it
        does not name come from LiteLLM's table."""
        priced = await _priced(spec)
        await self._change_catalog(lambda c: c.replacing(priced), priced)

    async def remove_model(self, name: str) -> None:
        """Remove a model from the catalog (`UnknownModelError` if none)."""
        await self._change_catalog(lambda c: c.removing(name), None)

    async def _change_catalog(
        self, change: Callable[[Catalog], Catalog], spec: ModelSpec | None
    ) -> None:
        """Swap in the changed catalog everywhere it is used; requests in flight keep theirs.

        One change at a time; the backend learns a new model before any request can pick it.
        """
        self._require_store()
        async with self._catalog_changing:
            catalog = change(self._catalog)
            if spec is not None and self._backend_task is not None:
                await (await self._backend_task).prepare([spec])
            if self._executor_task is not None:
                (await self._executor_task).use_catalog(catalog)
            self._catalog = catalog  # from here on, requests are decided against it
            for m in catalog:  # keys of removed models stay masked: a call may still be out
                if m.api_key_env:
                    self._redact.add(os.environ.get(m.api_key_env, ""))
            if self._health is not None:
                self._health.watch(catalog)
            await self._panel.catalog_changed(self._agent_context())

    # -- internals -------------------------------------------------------------------------------

    def _request(self, prompt: Prompt, hints: dict[str, Any]) -> Request:
        if isinstance(prompt, Request) and not hints:
            return prompt
        try:
            if isinstance(prompt, Request):  # hints are checked (and typed) like any others
                request = Request.model_validate({**dict(prompt), **hints})
            else:
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

    def _new_call(self, request: Request) -> Request:
        """`request` under an id no call of this runtime has had (among the last
        `CALL_IDS_KEPT`): a request id names one call. A `Request` answered again (a caller's
        retry loop), or a reused `id` hint, is answered as a new request, under a new id. (An id
        that another runtime, process or an earlier run used is found taken by the store, which
        records the call under a new id: see `Store.record`.)"""
        if request.id in self._call_ids:
            request = request.model_copy(update={"id": new_request_id()})
        self._call_ids[request.id] = None
        if len(self._call_ids) > CALL_IDS_KEPT:
            del self._call_ids[next(iter(self._call_ids))]
        return request

    async def _route(self, flight: Flight) -> Decision:
        flight.verdicts = await self._panel.verdicts(flight.request)
        assert self._policy is not None
        flight.catalog = self._catalog
        try:
            flight.decision = decide_checked(
                self._policy, flight.request, flight.verdicts, flight.catalog
            )
        except OrchestraError as exc:
            await self._fail(flight, exc)
            raise
        return flight.decision

    async def _finish(self, flight: Flight, result: Result) -> Result:
        """Record an answer; it is returned only once its record (and ledger rows) are on disk,
        under the id its record got (a fresh one if another call's record has the request's)."""
        try:
            rid = await self._record(flight, result=result)
        except StoreError as exc:
            raise NotRecorded(
                f"request {result.request_id} was answered by {result.model} but its record "
                f"could not be written: {exc}",
                result,
            ) from exc
        if rid != result.request_id:
            result = result.model_copy(update={"request_id": rid})
        return result

    async def _fail(self, flight: Flight, exc: BaseException, kind: str | None = None) -> None:
        """Record a request that ended without an answer (its attempts and charges too)."""
        kind = kind or getattr(exc, "kind", None) or type(exc).__name__
        error = self._mask(str(exc), flight.request)[:1000]
        try:
            rid = await self._record(flight, result=None, error_kind=kind, error=error)
            if isinstance(exc, OrchestraError):  # the id its caller can look the failure up by
                exc.request_id = rid
        except StoreError as store_exc:
            log.error("request %s: its failure could not be recorded: %s", flight.request.id,
                      store_exc)  # fmt: skip

    def _record(
        self,
        flight: Flight,
        *,
        result: Result | None,
        error_kind: str | None = None,
        error: str | None = None,
    ) -> asyncio.Future[str]:
        """The one place a request becomes a record; the future resolves, to the id the record
        got, once it is on disk."""
        return self._require_store().record(
            RequestRecord(
                request=flight.request,
                verdicts=flight.verdicts,
                decision=flight.decision,
                result=result,
                attempts=tuple(flight.attempts),
                created_at=flight.created,
                latency_ms=result.latency_ms if result else flight.elapsed_ms(),
                stream=flight.stream,
                error_kind=error_kind,
                error=error,
                keep_text=self.config.store.keep_prompts,
                ambient=self._panel.ambient,
                charges=tuple(flight.charges),
            )
        )

    def _mask(self, text: str, request: Request) -> str:
        """A provider's words made safe to keep: secrets masked, and the prompt cut out unless
        prompts are kept."""
        if not self.config.store.keep_prompts:
            text = strip_prompt(text, request.messages)
        return self._redact(text)

    def _agent_context(self) -> AgentContext:
        return AgentContext(
            catalog=self._catalog,
            budget=self.config.budget,
            spend=self.spend,
            answered_at=self.latency.answered_at,
        )

    def _on_sample(self, verdict: Verdict) -> None:
        if self._store is not None and self._sample_filter.keep(verdict):
            self._store.record_sample(verdict)

    def _require_store(self) -> Store:
        if self._store is None:
            raise OrchestraError("Orchestra is not started: use `async with Orchestra(...) as orc`")
        return self._store


async def _priced(spec: ModelSpec) -> ModelSpec:
    """`spec` priced as a configured model is (`discover_catalog`): what it leaves unset, from
    LiteLLM's table; otherwise a model added while running under a budget would be refused as
    unpriced though the table knows its price."""
    if spec.input_cost_per_mtok is not None and spec.output_cost_per_mtok is not None:
        return spec
    from orchestra.spend.prices import with_prices

    return await asyncio.to_thread(with_prices, spec)  # the table's first read parses a big file


def store_location(config: Config) -> str | Path:
    """Where the store lives: `$ORCHESTRA_STORE_URL`, else `[store] url`, else the SQLite file
    (`[store] path`, else `$ORCHESTRA_HOME/orchestra.db`)."""
    url = os.environ.get(STORE_URL_ENV)
    if url and not is_url(url):  # as `[store] url` is checked: never a file named after it
        raise ConfigError(f"${STORE_URL_ENV} {masked(url)!r}: expected a postgresql:// URL")
    return url or config.store.url or config.store.path or default_db_path()


def build_store(config: Config, location: str | Path | None = None) -> Store:
    """The store (not yet opened) for `location` (default: `store_location(config)`), with the
    `[store]` settings a PostgreSQL store takes."""
    where = store_location(config) if location is None else location
    s = config.store
    options = None
    if is_url(where):
        options = PostgresOptions(
            spill_path=data_dir() / "spill.db",
            spill_max_bytes=int(s.spill_max_mb * 1024 * 1024),
            spill_sync=s.sync,
            pool_size=s.pool_size,
            timeouts=Timeouts(connect_s=s.connect_timeout_s, statement_s=s.statement_timeout_s),
        )
    return open_store(where, config.budget.timezone, postgres=options, sync=s.sync)


async def record_feedback(
    store: Store,
    ref: str,
    good: bool,
    note: str | None = None,
    redact: Redactor | None = None,
    now: float | None = None,
) -> Feedback:
    """Record that the answer to request `ref` (an id or unique prefix) was good or bad.

    The note is stored after `redact` (secrets never reach the database) and is cut to
    MAX_NOTE_CHARS. Returns once the row is committed; raises `StoreError` if it was not.
    """
    if not isinstance(good, bool):
        raise RequestError(f"good must be True or False, got {good!r}")
    ref = ref.strip()
    if not ref:
        raise RequestError("a request id is required (see `orchestra history`)")
    await store.flush()  # a request answered a moment ago must be findable
    found = await store.find_request(ref, MIN_PREFIX)
    if not found:
        short = len(ref) < MIN_PREFIX
        hint = f" (a prefix needs at least {MIN_PREFIX} characters)" if short else ""
        raise RequestError(f"no recorded request {ref!r}{hint}; see `orchestra history`")
    if len(found) > 1:
        raise RequestError(f"{ref!r} matches several requests; give more of the id")
    rid, model, tier = found[0]
    if note is not None:
        note = (redact(note) if redact else note).strip()[:MAX_NOTE_CHARS] or None
    at = time.time() if now is None else now
    await store.add_feedback(rid, good, note, at)
    return Feedback(request_id=rid, good=good, at=at, note=note, model=model, tier=tier)
