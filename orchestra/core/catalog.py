"""The catalog: the models Orchestra may call, in priority order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from orchestra.core.errors import ConfigError, UnknownModelError
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import TIERS, Tier


class Catalog:
    """An ordered, immutable set of models, looked up by name or tier.

    Order matters: within a tier, earlier models are tried first. A change makes a new catalog
    (`adding`, `replacing`, `removing`), so whoever holds the old one keeps a consistent view.
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

    def adding(self, spec: ModelSpec) -> Catalog:
        """A new catalog with `spec` last (`ConfigError` if its name is taken)."""
        if spec.name in self._by_name:
            raise ConfigError(f"model {spec.name!r} is already in the catalog")
        return Catalog((*self._models, spec))

    def replacing(self, spec: ModelSpec) -> Catalog:
        """A new catalog with the model of `spec`'s name replaced by `spec`, in its place."""
        self.get(spec.name)
        return Catalog(spec if m.name == spec.name else m for m in self._models)

    def removing(self, name: str) -> Catalog:
        """A new catalog without model `name` (`UnknownModelError` if it has none)."""
        self.get(name)
        return Catalog(m for m in self._models if m.name != name)

    @property
    def tiers(self) -> frozenset[Tier]:
        """Tiers that hold at least one model."""
        return frozenset(t for t, models in self._by_tier.items() if models)
