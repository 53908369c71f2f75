"""What every route of one server process shares."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from orchestra.config import Config
from orchestra.core.errors import OrchestraError
from orchestra.runtime import Orchestra
from orchestra.server.metrics import Metrics

if TYPE_CHECKING:
    from orchestra.server.model_sync import ModelSync


@dataclass
class ServerState:
    """The process's runtime (set while the app runs), its settings and its metrics."""

    config: Config
    token: str | None
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    runtime: Orchestra | None = None
    models: ModelSync | None = None

    @property
    def orc(self) -> Orchestra:
        if self.runtime is None:
            raise OrchestraError("the server is not started")
        return self.runtime

    @property
    def sync(self) -> ModelSync:
        if self.models is None:
            raise OrchestraError("the server is not started")
        return self.models


def state_of(connection: HTTPConnection) -> ServerState:
    state: ServerState = connection.app.state.orchestra
    return state
