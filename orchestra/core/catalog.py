"""The catalog: the models Orchestra may call, in priority order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from orchestra.core.errors import ConfigError, UnknownModelError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import TIERS, Tier


class Catalog:
    """An ordered, immutable set of models, looked up by name or tier.

    Order matters: within a tier, earlier models are tried first.
    """

    __slots__ = ("_by_name", "_by_tier", "_models")

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._models = tuple(models)
        self._by_name: dict[str, ModelSpec] = {}
        for spec in self._models:
            if spec.name in self._by_name:
                raise ConfigError(f"model name {spec.name!r} appears twice in the catalog")
            self._by_name[spec.name] = spec
        self._by_tier = {t: tuple(m for m in self._models if m.tier is t) for t in TIERS}

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def get(self, name: str) -> ModelSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownModelError(name, self.names) from None

    def in_tier(self, tier: Tier) -> tuple[ModelSpec, ...]:
        return self._by_tier[tier]

    @property
    def tiers(self) -> frozenset[Tier]:
        """Tiers that hold at least one model."""
        return frozenset(t for t, models in self._by_tier.items() if models)
