"""Tiers: where a model runs, ordered by cost and capability."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    """Where a model runs: LOCAL (this device) < EDGE (the LAN) < CLOUD (paid APIs).

    Values are the lower-case names used in config and JSON. Comparison follows the tier order,
    not the alphabet.
    """

    LOCAL = "local"
    EDGE = "edge"
    CLOUD = "cloud"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def distance(self, other: Tier) -> int:
        return abs(self.rank - other.rank)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Tier):
            return NotImplemented
        return self.rank >= other.rank

    __hash__ = StrEnum.__hash__


_RANK = {Tier.LOCAL: 0, Tier.EDGE: 1, Tier.CLOUD: 2}

# Iterating an Enum class is slow (a generator over its members); hot paths use this tuple.
TIERS: tuple[Tier, ...] = (Tier.LOCAL, Tier.EDGE, Tier.CLOUD)
ALL_TIERS: frozenset[Tier] = frozenset(TIERS)
