"""One calendar per store: processes sharing a store count the budget's days in the store's zone,
whatever their machines' zones.

Etc/GMT+12 (UTC-12) and Pacific/Kiritimati (UTC+14) are 26 hours apart, so at every moment
their dates differ: a process in one and a process in the other, each counting in its own
calendar, would never see the other's spend as today's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import model_toml
from ledger_child import call_cost
from test_cli import orchestra
from test_cli_errors import user_error
from test_store import make_record

from orchestra.core.errors import ConfigError
from orchestra.spend.calendar import calendar
from orchestra.spend.machine_zone import iana_name, machine_zone
from orchestra.store import Store, open_store
from orchestra.store.budget_zone import agreed
from orchestra.testing import StubProvider

WEST, EAST = "Etc/GMT+12", "Pacific/Kiritimati"  # UTC-12 and UTC+14
AT = datetime(2026, 3, 15, 20, 0, tzinfo=UTC).timestamp()  # the 15th in WEST, the 16th in EAST
CHILD = Path(__file__).with_name("ledger_child.py")


@pytest.fixture
def machine_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set this process's machine zone (`$TZ`, and the C library's local time with it)."""

    def set_zone(zone: str) -> None:
        monkeypatch.setenv("TZ", zone)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


def opened(location: str | Path, tmp_path: Path, zone: str | None = None) -> Store:
    return open_store(location, zone, home=tmp_path / "spill")


def test_the_two_zones_dates_always_differ() -> None:
    for hour in range(0, 48):
        at = AT + hour * 1800
        assert calendar(WEST).day(at) != calendar(EAST).day(at)


# -- the store layer, at a fixed moment ----------------------------------------------------------


async def test_two_machine_zones_sharing_a_store_count_the_same_day(
    store_location: str | Path, tmp_path: Path, machine_tz: Callable[[str], None]
) -> None:
    machine_tz(WEST)  # the first host: its spend is recorded on the 15th
    async with opened(store_location, tmp_path) as first:
        first.record(make_record(created_at=AT, cost=1.0))
        await first.flush()
        assert (await first.spend_totals(AT)).today_usd == pytest.approx(1.0)
    machine_tz(EAST)  # the second host: on its own calendar, it is already the 16th
    async with opened(store_location, tmp_path) as second:
        assert (await second.spend_totals(AT)).today_usd == pytest.approx(1.0)
        assert second.calendar.timezone == WEST, "the store's calendar, not the machine's"
        second.record(make_record(created_at=AT + 60, cost=2.0))
        await second.flush()
        summary = await second.spend_summary(AT + 60)
        assert summary["today_usd"] == pytest.approx(3.0), "both hosts' spend, one day"
        series = await second.spend_series(days=2, now=AT + 60)
        assert series["days"][-1] == {"day": "2026-03-15", "cost_usd": 3.0, "answers": 2}


async def test_a_config_naming_another_zone_is_refused_and_loses_nothing(
    store_location: str | Path, tmp_path: Path
) -> None:
    async with opened(store_location, tmp_path, "Asia/Tokyo") as store:
        store.record(make_record(created_at=AT, cost=1.0))
    other = opened(store_location, tmp_path, "Europe/Paris")
    with pytest.raises(ConfigError) as refused:
        await other.open()
    message = str(refused.value)
    for words in ("'Europe/Paris'", "'Asia/Tokyo'", "orchestra store timezone Europe/Paris"):
        assert words in message, message
    async with opened(store_location, tmp_path, "Asia/Tokyo") as same:  # the same zone: fine
        assert (await same.spend_totals(AT)).today_usd == pytest.approx(1.0)
        assert await same.count_requests() == 1


async def test_a_config_naming_no_zone_adopts_the_stores(
    store_location: str | Path, tmp_path: Path, machine_tz: Callable[[str], None]
) -> None:
    async with opened(store_location, tmp_path, "Asia/Tokyo"):
        pass
    machine_tz(EAST)
    async with opened(store_location, tmp_path) as store:
        assert store.calendar.timezone == "Asia/Tokyo"
        assert store.spend.calendar.timezone == "Asia/Tokyo", "the agents' view too"
        opener = store.opener()()
        assert isinstance(opener, type(store))
        async with opener as again:  # a replay worker, a server worker: the same
            assert again.calendar.timezone == "Asia/Tokyo"


async def test_the_first_opener_records_its_machine_zone(
    store_location: str | Path, tmp_path: Path, machine_tz: Callable[[str], None]
) -> None:
    machine_tz(EAST)
    async with opened(store_location, tmp_path) as store:
        assert store.calendar.timezone == EAST
        assert await store.fetch("SELECT key, value FROM settings") == [  # type: ignore[attr-defined]
            ("budget_timezone", EAST)
        ]


async def test_set_timezone_changes_the_stores_calendar(
    store_location: str | Path, tmp_path: Path
) -> None:
    async with opened(store_location, tmp_path, "Asia/Tokyo") as store:
        await store.set_timezone("Europe/Paris")
        assert store.calendar.timezone == "Europe/Paris"
    async with opened(store_location, tmp_path, "Europe/Paris") as store:
        assert store.calendar.timezone == "Europe/Paris"
    with pytest.raises(ConfigError):
        await opened(store_location, tmp_path, "Asia/Tokyo").open()


async def test_a_host_cut_off_at_open_counts_in_the_zone_it_last_saw(
    pg_url: str, tmp_path: Path, machine_tz: Callable[[str], None]
) -> None:
    """PostgreSQL unreachable at open: the store's zone as last read here (in the spill file)."""
    machine_tz(WEST)
    async with opened(pg_url, tmp_path):  # reads the totals: the spill file keeps them
        pass
    machine_tz(EAST)
    dead = f"postgresql://postgres@/orchestra?host={tmp_path / 'nowhere'}"
    store = await opened(dead, tmp_path).open()
    try:
        assert store.degraded and store.calendar.timezone == WEST
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="Europe/Paris"):
        await opened(dead, tmp_path, "Europe/Paris").open()


def test_machine_zone_is_an_iana_name(tmp_path: Path) -> None:
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert machine_zone({"TZ": "Asia/Tokyo"}, link) == "Asia/Tokyo"
    assert machine_zone({"TZ": ":Asia/Tokyo"}, link) == "Asia/Tokyo"
    assert machine_zone({"TZ": "JST-9"}, link) == "Europe/Paris", "a POSIX rule names no zone"
    assert machine_zone({}, link) == "Europe/Paris"
    assert machine_zone({}, tmp_path / "missing") == "UTC"
    assert iana_name("/usr/share/zoneinfo/posix/Asia/Tokyo") == "Asia/Tokyo"
    assert iana_name("../../etc/passwd") is None and iana_name("Nowhere/Else") is None


# -- real processes ------------------------------------------------------------------------------


def spawn(zone: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TZ": zone},
    )


def test_processes_in_two_zones_pay_what_one_days_budget_covers(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """One process on each side of the date line, one after the other, each wanting 8 paid
    calls: the daily budget covers 6 in all, not 6 on each one's own day."""
    url = [request.getfixturevalue("pg_url")] if store_backend == "postgres" else []
    covered = 6
    budget = (covered + 0.5) * call_cost()
    summaries = []
    for zone in (WEST, EAST):
        child = spawn(zone, "budget", tmp_path, 8, budget, *url)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        summaries.append(json.loads(out))
    assert sum(s["paid"] for s in summaries) == covered, summaries


def test_processes_opening_a_new_store_together_agree_on_one_zone(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = [request.getfixturevalue("pg_url")] if store_backend == "postgres" else []
    start_at = time.time() + 3.0  # all of them open the new store in the same instant
    zones = [WEST, EAST] * 6
    children = [spawn(zone, "open", tmp_path, start_at, *url) for zone in zones]
    seen = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        seen.append(out.strip())
    assert len(set(seen)) == 1 and seen[0] in zones, seen


def test_the_cli_refuses_another_zone_in_one_line_and_can_change_the_stores(
    stub: StubProvider, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", EAST)
    plain = str(write_config(model_toml("stub-cloud", stub.url)))
    done = orchestra("--config", plain, "run", "hello")
    assert done.returncode == 0, done.stderr
    paris = str(write_config(model_toml("stub-cloud", stub.url), extra=_zone("Europe/Paris")))
    user_error(orchestra("--config", paris, "spend"), f"'{EAST}'", "'Europe/Paris'")
    user_error(orchestra("--config", paris, "run", "hello"), "orchestra store timezone")
    done = orchestra("--config", paris, "store", "timezone")
    assert done.returncode == 0 and done.stdout.strip() == EAST, done.stderr
    done = orchestra("--config", paris, "store", "timezone", "Europe/Paris", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"timezone": "Europe/Paris", "was": EAST}
    done = orchestra("--config", paris, "store", "timezone", "--json")
    assert json.loads(done.stdout) == {"timezone": "Europe/Paris", "was": None}, done.stderr
    # An alias counts the same days: nothing to change, nothing restarted.
    done = orchestra("--config", paris, "store", "timezone", "Europe/Monaco", "--json")
    assert json.loads(done.stdout) == {"timezone": "Europe/Paris", "was": None}, done.stderr
    done = orchestra("--config", paris, "spend", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["timezone"] == "Europe/Paris" and summary["answered_requests"] == 1
    user_error(orchestra("--config", plain, "store", "timezone", "Mars/Base"), "Mars/Base")


def _zone(zone: str) -> str:
    return f'[budget]\ntimezone = "{zone}"\n'


async def test_an_existing_home_without_a_zone_gets_the_first_openers(
    db_path: Path, tmp_path: Path, machine_tz: Callable[[str], None]
) -> None:
    """A home from before the zone was kept: the first process to open it records its own."""
    from orchestra.store.schema import MIGRATIONS, statements

    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path, isolation_level=None)
    for step in MIGRATIONS[:-1]:
        if callable(step):
            step(conn)
        else:
            for statement in statements(step):
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.close()
    machine_tz(WEST)
    async with opened(db_path, tmp_path) as store:
        assert store.calendar.timezone == WEST


def test_an_alias_of_the_stores_zone_is_the_same_calendar() -> None:
    """ "UTC" in a config and "Etc/UTC" read from a machine's /etc/localtime are one calendar:
    not refused. A zone that cuts other days still is."""
    assert agreed("Etc/UTC", "UTC", "here") == "Etc/UTC"
    assert agreed("Asia/Kolkata", "Asia/Calcutta", "here") == "Asia/Kolkata"
    with pytest.raises(ConfigError, match="Europe/London"):
        agreed("Europe/Paris", "Europe/London", "here")
