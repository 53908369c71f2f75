"""A real PostgreSQL server for the test session, and a fresh database per test.

`$ORCHESTRA_PG_URL` (a URL to a database the tests may create databases from, as `.ci/run`
sets it) is used when set; otherwise a server is started for the session with initdb + pg_ctl
in a temporary folder, on a Unix socket (as the `postgres` user when the tests run as root:
PostgreSQL refuses to run as root). Without PostgreSQL's binaries the tests that need it skip,
except under CI (`ORCHESTRA_CI=1`), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

URL_ENV = "ORCHESTRA_PG_URL"
TEMPLATE = "orchestra_template"
_names = itertools.count()


def find_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    return found[-1].parent if found else None


@dataclass
class LocalServer:
    """A throwaway cluster: data directory and Unix socket in one temporary folder."""

    bindir: Path
    base: Path
    port: int = 5432

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.base}&port={self.port}"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.base / "data"), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        opts = (f"-k {self.base} -c listen_addresses='' -p {self.port} -c fsync=off"
                " -c max_connections=200")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.base / "data"), "-o", opts, "-l",
                  str(self.base / "log"), "-w", "start")  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.base / "data"), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop and start again, as an outage would (the tests' "database went away")."""
        self.stop()
        opts = (f"-k {self.base} -c listen_addresses='' -p {self.port} -c fsync=off"
                " -c max_connections=200")  # fmt: skip
        self._run("pg_ctl", "-D", str(self.base / "data"), "-o", opts, "-l",
                  str(self.base / "log"), "-w", "start")  # fmt: skip


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _make_template(url: str) -> None:
    """A database at the current schema, copied for each test (faster than migrating each)."""
    import asyncpg

    from orchestra.store.postgres_db import migrate

    await _admin(url, f"DROP DATABASE IF EXISTS {TEMPLATE}", f"CREATE DATABASE {TEMPLATE}")
    conn = await asyncpg.connect(with_database(url, TEMPLATE))
    try:
        await migrate(conn)
    finally:
        await conn.close()


@dataclass
class Postgres:
    """The session's server: `url` to its maintenance database, `local` when we started it."""

    url: str
    local: LocalServer | None

    def new_database(self) -> str:
        name = f"t_{os.getpid()}_{next(_names)}"
        asyncio.run(_admin(self.url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}"))
        return with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with contextlib.suppress(Exception):
            asyncio.run(_admin(self.url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's PostgreSQL server (see the module's docstring)."""
    url = os.environ.get(URL_ENV)
    local = None
    if not url:
        bindir = find_bindir()
        if bindir is None:
            reason = "PostgreSQL is not installed (no initdb): `apt-get install postgresql`"
            if os.environ.get("ORCHESTRA_CI") == "1":
                pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
            pytest.skip(reason)
        local = LocalServer(bindir, Path(tempfile.mkdtemp(prefix="orchestra-pg-")))
        local.start()
        url = local.url
    try:
        asyncio.run(_make_template(url))
        yield Postgres(url, local)
    finally:
        if local is not None:
            local.stop()
            shutil.rmtree(local.base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """A fresh database at the current schema, dropped after the test."""
    url = postgres.new_database()
    yield url
    postgres.drop_database(url)
