"""The response cache on a real SQLite store: hits, misses, TTL, restarts, keys, the LRU bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.core.request import Message
from orchestra.core.tier import Tier
from orchestra.execution.cache import CachedAnswer, ResponseCache, cache_key
from orchestra.store import SqliteStore

HELLO = (Message(role="user", content="What is the capital of France?"),)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(content: str = "What is the capital of France?", **params: object) -> str:
    messages = (Message(role="user", content=content),)
    return cache_key(
        params.get("tier", Tier.CLOUD),  # type: ignore[arg-type]
        messages,
        params.get("max_tokens"),  # type: ignore[arg-type]
        params.get("temperature"),  # type: ignore[arg-type]
    )


async def test_miss_then_hit(store: SqliteStore) -> None:
    clock = Clock()
    cache = ResponseCache(store, clock=clock)
    k = key()
    assert await cache.get(k) is None
    cache.put(k, "gpt-mini", Tier.CLOUD, "Paris", 7, 1)
    hit = await cache.get(k)
    assert hit == CachedAnswer(
        model="gpt-mini",
        tier=Tier.CLOUD,
        text="Paris",
        prompt_tokens=7,
        completion_tokens=1,
        created_at=clock.now,
    )


async def test_hit_from_sqlite_when_memory_is_off(store: SqliteStore) -> None:
    cache = ResponseCache(store, max_memory_entries=0, clock=Clock())
    cache.put(key(), "m", "edge", "Paris", 3, 1)
    assert cache.memory_size == 0
    await store.flush()
    hit = await cache.get(key())
    assert hit is not None
    assert (hit.text, hit.tier) == ("Paris", Tier.EDGE)


async def test_put_overwrites(store: SqliteStore) -> None:
    cache = ResponseCache(store, max_memory_entries=0, clock=Clock())
    cache.put(key(), "a", "cloud", "first", 1, 1)
    cache.put(key(), "b", "cloud", "second", 2, 2)
    await store.flush()
    hit = await cache.get(key())
    assert hit is not None
    assert (hit.model, hit.text) == ("b", "second")
    assert await store.fetch("SELECT COUNT(*) FROM response_cache") == [(1,)]


@pytest.mark.parametrize("memory", [0, 16])
async def test_ttl_expiry(store: SqliteStore, memory: int) -> None:
    clock = Clock()
    cache = ResponseCache(store, ttl_s=60, max_memory_entries=memory, clock=clock)
    cache.put(key(), "m", "cloud", "Paris", 1, 1)
    await store.flush()
    clock.now += 59.9
    assert await cache.get(key()) is not None
    clock.now += 0.1
    assert await cache.get(key()) is None
    # A fresh put after expiry serves again.
    cache.put(key(), "m", "cloud", "Paris again", 1, 1)
    await store.flush()
    hit = await cache.get(key())
    assert hit is not None
    assert hit.text == "Paris again"


async def test_purge_expired(store: SqliteStore) -> None:
    clock = Clock()
    cache = ResponseCache(store, ttl_s=10, clock=clock)
    cache.put(key("old"), "m", "cloud", "old", 1, 1)
    clock.now += 5
    cache.put(key("young"), "m", "cloud", "young", 1, 1)
    clock.now += 6  # "old" is 11 s old, "young" 6 s
    cache.purge_expired()
    await store.flush()
    rows = await store.fetch("SELECT text FROM response_cache")
    assert rows == [("young",)]
    assert cache.memory_size == 1
    assert await cache.get(key("old")) is None
    assert await cache.get(key("young")) is not None


async def test_expired_rows_are_purged_once_per_ttl(store: SqliteStore) -> None:
    clock = Clock()
    cache = ResponseCache(store, ttl_s=10, max_memory_entries=0, clock=clock)
    cache.put(key("old"), "m", "cloud", "old", 1, 1)
    clock.now += 11
    cache.put(key("new"), "m", "cloud", "new", 1, 1)  # a TTL has passed: this put purges
    await store.flush()
    assert await store.fetch("SELECT text FROM response_cache") == [("new",)]


async def test_survives_a_restart(db_path: Path) -> None:
    clock = Clock()
    async with SqliteStore(db_path) as store:
        ResponseCache(store, clock=clock).put(key(), "local-llama", "local", "Paris", 5, 1)
    async with SqliteStore(db_path) as store:
        cache = ResponseCache(store, clock=clock)
        assert cache.memory_size == 0
        hit = await cache.get(key())
        assert hit is not None
        assert (hit.model, hit.tier, hit.text, hit.created_at) == (
            "local-llama",
            Tier.LOCAL,
            "Paris",
            clock.now,
        )
        assert cache.memory_size == 1  # a SQLite hit is remembered


async def test_restart_respects_ttl(db_path: Path) -> None:
    clock = Clock()
    async with SqliteStore(db_path) as store:
        ResponseCache(store, ttl_s=30, clock=clock).put(key(), "m", "cloud", "Paris", 1, 1)
    clock.now += 31
    async with SqliteStore(db_path) as store:
        assert await ResponseCache(store, ttl_s=30, clock=clock).get(key()) is None


async def test_read_failure_is_a_miss(db_path: Path) -> None:
    store = SqliteStore(db_path)  # never opened: every read raises StoreError
    assert await ResponseCache(store, max_memory_entries=0).get(key()) is None


def test_key_is_stable_and_hex() -> None:
    k = key(max_tokens=100, temperature=0.2)
    assert k == key(max_tokens=100, temperature=0.2)
    assert len(k) == 64
    int(k, 16)


def test_key_is_sensitive_to_every_input() -> None:
    base = key()
    variants = {
        key(content="What is the capital of Italy?"),
        key(tier=Tier.LOCAL),
        key(max_tokens=10),
        key(max_tokens=11),
        key(temperature=0.0),
        key(temperature=0.7),
        cache_key(Tier.CLOUD, (Message(role="system", content=HELLO[0].content),), None, None),
        cache_key(Tier.CLOUD, (Message(role="system", content="Be brief."), *HELLO), None, None),
    }
    assert base not in variants
    assert len(variants) == 8


def test_key_does_not_confuse_message_boundaries() -> None:
    one = (Message(role="user", content="ab"), Message(role="user", content="c"))
    two = (Message(role="user", content="a"), Message(role="user", content="bc"))
    assert cache_key("cloud", one, None, None) != cache_key("cloud", two, None, None)


def test_key_ignores_representation_only_differences() -> None:
    assert cache_key("cloud", HELLO, None, 1) == cache_key(Tier.CLOUD, list(HELLO), None, 1.0)


def test_key_rejects_an_unknown_tier() -> None:
    with pytest.raises(ValueError):
        cache_key("moon", HELLO, None, None)


async def test_memory_lru_bound(store: SqliteStore) -> None:
    cache = ResponseCache(store, max_memory_entries=3, clock=Clock())
    keys = [key(f"question {i}") for i in range(5)]
    for i, k in enumerate(keys[:3]):
        cache.put(k, "m", "cloud", f"answer {i}", 1, 1)
    assert await cache.get(keys[0]) is not None  # 0 is now the most recent
    cache.put(keys[3], "m", "cloud", "answer 3", 1, 1)  # evicts 1, the least recent
    cache.put(keys[4], "m", "cloud", "answer 4", 1, 1)  # evicts 2
    assert cache.memory_size == 3
    assert set(cache._memory) == {keys[0], keys[3], keys[4]}
    # Evicted entries still come back from SQLite.
    await store.flush()
    hit = await cache.get(keys[1])
    assert hit is not None
    assert hit.text == "answer 1"
    assert cache.memory_size == 3


def test_rejects_bad_settings(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "x.db")
    with pytest.raises(ValueError):
        ResponseCache(store, ttl_s=0)
    with pytest.raises(ValueError):
        ResponseCache(store, max_memory_entries=-1)
