"""An answer arriving in pieces, recorded like any other once it ends (or breaks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

from orchestra.core.decision import Decision
from orchestra.core.errors import (
    AllCandidatesFailed,
    OrchestraError,
    RejectedRequest,
    StreamBroken,
    is_cancellation,
)
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Request
from orchestra.core.result import Result
from orchestra.core.verdict import Verdict
from orchestra.execution.flight import Flight

if TYPE_CHECKING:
    from orchestra.runtime import Orchestra


class ResponseStream:
    """An answer arriving in pieces: iterate it for text; `result` is set once it completes.

    Failover to the next candidate is invisible until the first piece arrives; a failure after
    that raises `StreamBroken`. The stream ends only once its record is on disk; a stream broken,
    or left by its reader before its end, is recorded too, with what was received and billed.
    `decision` and `verdicts` are known once the request is routed (by the first piece), `model`
    once a model's text arrives.
    """

    def __init__(self, orc: Orchestra, request: Request) -> None:
        self._orc = orc
        self.request = request
        self.result: Result | None = None
        self._pieces_gen: AsyncGenerator[str, None] | None = None
        self._flight: Flight | None = None

    @property
    def decision(self) -> Decision | None:
        return self._flight.decision if self._flight is not None else None

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return self._flight.verdicts if self._flight is not None else ()

    @property
    def model(self) -> ModelSpec | None:
        """The model whose text is arriving (None before the first piece)."""
        return self._flight.streaming if self._flight is not None else None

    def __aiter__(self) -> AsyncIterator[str]:
        if self._pieces_gen is None:
            self._pieces_gen = self._pieces()
        return self._pieces_gen

    async def aclose(self) -> None:
        """Stop reading: the call is abandoned, and recorded with what it cost so far."""
        if self._pieces_gen is not None:
            await self._pieces_gen.aclose()

    async def __aenter__(self) -> ResponseStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _pieces(self) -> AsyncGenerator[str, None]:
        orc = self._orc
        executor = await orc._executor_ready()
        flight = self._flight = Flight(self.request, stream=True)
        await orc._route(flight)
        answer: Result | None = None
        finished = False
        failure: BaseException | None = None
        try:
            # aclosing: a reader that stops early closes the executor's walk first, so the call
            # is settled (billed for what it sent) before the record below is written.
            async with aclosing(executor.stream(flight)) as items:
                async for item in items:
                    if isinstance(item, Result):
                        answer = item
                    else:
                        yield item.text
            finished = True
        except (AllCandidatesFailed, StreamBroken, RejectedRequest) as exc:
            finished = True
            await orc._fail(flight, exc)
            raise
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if not finished and (failure is None or is_cancellation(failure)):
                # abandoned: whatever it cost is recorded before the stream closes
                closed = OrchestraError("the caller stopped reading the stream before its end")
                await asyncio.shield(orc._fail(flight, closed, kind="cancelled"))
            elif not finished and failure is not None:  # a bug (a backend's, say): said as such
                await asyncio.shield(orc._fail(flight, failure))
        if answer is not None:
            self.result = await orc._finish(flight, answer)
