"""Resolves where to call a model: its configured base and key, or the embedded server."""

from __future__ import annotations

import os

from orchestra.core.errors import EmbeddedModelError, ProviderError
from orchestra.core.model_spec import ModelSpec
from orchestra.execution.backend import Endpoint
from orchestra.execution.embedded import EmbeddedModel


class Endpoints:
    """Turns a `ModelSpec` into an `Endpoint` at call time.

    Keys are read from the environment when the call is made (never stored); the embedded model
    is started on first use.
    """

    def __init__(self, embedded: EmbeddedModel | None = None) -> None:
        self.embedded = embedded

    async def resolve(self, spec: ModelSpec) -> Endpoint:
        if spec.embedded:
            if self.embedded is None:
                raise ProviderError(
                    "the embedded model is disabled", kind="unavailable", model=spec.name
                )
            try:
                return await self.embedded.endpoint()
            except EmbeddedModelError as exc:
                raise ProviderError(str(exc), kind="unavailable", model=spec.name) from exc
        key = None
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                # "unavailable", not "auth": the key is missing in this process, which says
                # nothing of the provider; its breaker (shared through the store) must not trip.
                raise ProviderError(
                    f"environment variable {spec.api_key_env} ({spec.name}'s API key) is not set",
                    kind="unavailable",
                    model=spec.name,
                )
        return Endpoint(api_base=spec.api_base, api_key=key)

    async def stop(self) -> None:
        if self.embedded is not None:
            await self.embedded.stop()
