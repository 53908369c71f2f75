"""An optional exact-match response cache: a memory LRU in front of the store, with a TTL.

A key covers the tier, the messages and the call parameters, but not the model: any model of the
tier may serve a cached answer. LiteLLM's own cache is not used (it imports fastapi).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from orchestra.core.errors import StoreError
from orchestra.core.request import Message
from orchestra.core.tier import Tier

log = logging.getLogger("orchestra.response_cache")

# Bump when the canonical form changes, so old rows can never match new keys.
_KEY_VERSION = 1


class CacheConfig(BaseModel):
    """`[cache]`: the optional exact-match response cache (SQLite, with a TTL)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    ttl_s: float = Field(default=3600.0, gt=0.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class CachedAnswer:
    """An answer served from the cache, with the model and tier that first produced it."""

    model: str
    tier: Tier
    text: str
    prompt_tokens: int
    completion_tokens: int
    created_at: float


def cache_key(
    tier: Tier | str,
    messages: Sequence[Message],
    max_tokens: int | None,
    temperature: float | None,
) -> str:
    """The sha256 (hex) of a canonical JSON of tier, messages and parameters."""
    canonical = {
        "v": _KEY_VERSION,
        "tier": str(Tier(tier)),
        "messages": [[m.role, m.content] for m in messages],
        "max_tokens": max_tokens,
        # float() so that 1 and 1.0 give the same key.
        "temperature": None if temperature is None else float(temperature),
    }
    blob = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CacheStore(Protocol):
    """Where cached answers persist (the store implements it)."""

    async def cached_answer(self, key: str, now: float) -> tuple[CachedAnswer, float] | None: ...

    def cache_answer(self, key: str, answer: CachedAnswer, expires_at: float) -> None: ...

    def purge_cache(self, now: float) -> None: ...


class ResponseCache:
    """Exact-match answers by key, expiring `ttl_s` seconds after they were put.

    `get` looks in a memory LRU (at most `max_memory_entries`; 0 disables it), then reads the
    store once. `put` updates memory and queues a write on the store's writer, so it never waits
    on disk; expired entries are purged from the store at most once per TTL, on a `put`. A store
    failure on read is logged and counts as a miss: the cache never breaks a call. `clock` gives
    the time in seconds (injected in tests).
    """

    def __init__(
        self,
        store: CacheStore,
        ttl_s: float = 3600,
        max_memory_entries: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        if max_memory_entries < 0:
            raise ValueError("max_memory_entries must be >= 0")
        self._store = store
        self._ttl_s = ttl_s
        self._max_memory = max_memory_entries
        self._clock = clock
        self._memory: OrderedDict[str, tuple[CachedAnswer, float]] = OrderedDict()
        self._purged_at = clock()

    @property
    def memory_size(self) -> int:
        return len(self._memory)

    async def get(self, key: str) -> CachedAnswer | None:
        now = self._clock()
        held = self._memory.get(key)
        if held is not None:
            answer, expires_at = held
            if now < expires_at:
                self._memory.move_to_end(key)
                return answer
            del self._memory[key]
        try:
            found = await self._store.cached_answer(key, now)
        except StoreError as exc:
            log.warning("response cache: read failed, treated as a miss: %s", exc)
            return None
        if found is None:
            return None
        answer, expires_at = found
        self._remember(key, answer, expires_at)
        return answer

    def put(
        self,
        key: str,
        model: str,
        tier: Tier | str,
        text: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> None:
        now = self._clock()
        expires_at = now + self._ttl_s
        answer = CachedAnswer(
            model=model,
            tier=Tier(tier),
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            created_at=now,
        )
        self._remember(key, answer, expires_at)
        self._store.cache_answer(key, answer, expires_at)
        if now - self._purged_at >= self._ttl_s:
            self.purge_expired()

    def purge_expired(self) -> None:
        """Drop expired entries from memory, and queue their removal from the store."""
        now = self._purged_at = self._clock()
        for key in [k for k, (_, expires_at) in self._memory.items() if expires_at <= now]:
            del self._memory[key]
        self._store.purge_cache(now)

    def _remember(self, key: str, answer: CachedAnswer, expires_at: float) -> None:
        if self._max_memory == 0:
            return
        self._memory[key] = (answer, expires_at)
        self._memory.move_to_end(key)
        while len(self._memory) > self._max_memory:
            self._memory.popitem(last=False)
