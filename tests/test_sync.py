"""The synchronous wrapper, for scripts without an event loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import model_toml

from orchestra import SyncOrchestra, complete_sync
from orchestra.testing import Behaviour, StubProvider


def test_sync_complete_stream_and_history(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    stub.behaviour = Behaviour(reply="one two three")
    config = write_config(model_toml("stub-cloud", stub.url))
    with SyncOrchestra(config) as orc:
        assert orc.complete("hello").text == "one two three"
        assert "".join(orc.stream("hello")) == "one two three"
        history = orc.history()
        spend = orc.spend_summary()
    assert len(history) == 2 and spend["answered_requests"] == 2


def test_complete_sync_one_shot(stub: StubProvider, write_config: Callable[..., Path]) -> None:
    config = write_config(model_toml("stub-cloud", stub.url))
    assert complete_sync("hello", config=config).text == "Paris"
