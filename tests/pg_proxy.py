"""A PostgreSQL connection that breaks on cue: a proxy between the store and a real server.

It listens on a Unix socket of its own (so the client asks for no TLS and the wire stays
readable) and forwards each connection to the server's socket, reading the client's messages
(simple `Q`uery, and `P`arse/`B`ind of the extended protocol: a statement prepared once is
named by its `B`inds after that) to know which SQL each transaction ran. Faults, armed for the
next transaction that ran SQL containing a pattern:

- `lose_commit_answer`: its COMMIT reaches the server and is done there, then the client's
  connection is closed before the answer reaches it: the commit happened, unheard (the
  "ambiguous commit" every client of a remote database must expect).
- `cut_before`: the connection is closed as the statement is sent: a transaction that never
  commits.
- `vanish_after`: the statement is sent, then the client is cut off and the server's side is
  left open, silent, as when the client's host loses power or the network between them goes:
  the server keeps that session (and the locks of its open transaction) until it gives up on it.

`cut_all()` closes every connection at once (the database restarting, the network dropping).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

_ANSWERED = b"Z\x00\x00\x00\x05"  # ReadyForQuery (then its status byte): the query is done


@dataclass
class _Fault:
    kind: str  # "lose_commit_answer", "cut_before" or "vanish_after"
    pattern: bytes
    times: int


@dataclass
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    statements: dict[bytes, bytes] = field(default_factory=dict)  # prepared name -> SQL
    ran: list[bytes] = field(default_factory=list)  # SQL of the open transaction
    swallow: bool = False  # the server's answers are dropped (its commit goes unheard)
    vanished: bool = False


class PgProxy:
    """Forwards the connections made to its own socket (in `base`) to the server at `upstream`,
    breaking them as armed (see the module)."""

    def __init__(self, upstream: str | tuple[str, int]) -> None:
        self.upstream = upstream  # the server's Unix socket, or its (host, port)
        self.base = Path(tempfile.mkdtemp(prefix="orchestra-pgproxy-"))
        self.links: list[_Link] = []
        self.faults: list[_Fault] = []
        self.fired: list[str] = []
        self._fired = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def before(cls, url: str) -> tuple[PgProxy, str]:
        """A proxy started in front of the server `url` names, and the URL through it."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        host = query.get("host") or parts.hostname or "localhost"
        port = int(query.get("port") or parts.port or 5432)
        upstream = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        proxy = await cls(upstream).start()
        login = parts.netloc.rpartition("@")[0] or "postgres"  # user[:password]
        return proxy, f"postgresql://{login}@{parts.path}?host={proxy.base}&port=5432"

    async def start(self) -> PgProxy:
        path = str(self.base / ".s.PGSQL.5432")
        self._server = await asyncio.start_unix_server(self._serve, path=path)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut_all(vanished_too=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def arm(self, kind: str, pattern: str, times: int = 1) -> None:
        self.faults.append(_Fault(kind, pattern.encode(), times))

    def cut_all(self, *, vanished_too: bool = False) -> None:
        for link in self.links:
            if not link.vanished or vanished_too:
                _close(link.server)
            _close(link.client)
        self.links = [link for link in self.links if link.vanished and not vanished_too]

    async def say_goodbye(self, linger_s: float = 0.5) -> None:
        """Tell every client the server is going (FATAL 57P01, as a fast shutdown or
        `pg_terminate_backend` tells an idle session), and close the connections `linger_s` later:
        a client that uses one in between finds it half gone."""
        body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection due to administrator command\0\0"
        for link in self.links:
            link.client.write(b"E" + struct.pack("!I", len(body) + 4) + body)
        asyncio.get_running_loop().call_later(linger_s, self.cut_all)
        await asyncio.sleep(0.05)  # the clients have read it

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if isinstance(self.upstream, str):
            up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        else:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        link = _Link(writer, up_writer)
        self.links.append(link)
        back = asyncio.create_task(self._answers(link, up_reader))
        self._tasks.add(back)
        back.add_done_callback(self._tasks.discard)
        try:
            await self._requests(link, reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            _close(writer)
            if not link.vanished:
                _close(up_writer)

    async def _requests(self, link: _Link, reader: asyncio.StreamReader) -> None:
        while True:  # the untyped start: SSL/GSS requests, then the startup message
            (size,) = struct.unpack("!I", await reader.readexactly(4))
            body = await reader.readexactly(size - 4)
            link.server.write(struct.pack("!I", size) + body)
            if struct.unpack("!I", body[:4])[0] not in (80877103, 80877104):
                break
        while True:
            head = await reader.readexactly(5)
            body = await reader.readexactly(struct.unpack("!I", head[1:])[0] - 4)
            if not await self._forward(link, head[:1], head + body, body):
                return

    async def _forward(self, link: _Link, kind: bytes, message: bytes, body: bytes) -> bool:
        """Send one client message on (or break the link instead); False once it is broken."""
        sql = _sql_of(link, kind, body)
        if kind == b"Q" and sql.strip().upper().startswith((b"BEGIN", b"ROLLBACK")):
            link.ran = []
        link.ran.append(sql)
        commit = kind == b"Q" and sql.strip().upper().startswith(b"COMMIT")
        fault = self._due(link, kind, commit)
        if commit:
            link.ran = []
        if fault is not None and fault.kind == "cut_before":
            self._fire(fault)
            _close(link.client)
            _close(link.server)
            return False
        if fault is not None and fault.kind == "lose_commit_answer":
            self._fire(fault)
            link.swallow = True  # before the server can answer
        link.server.write(message)
        await link.server.drain()
        if fault is not None and fault.kind == "vanish_after":
            self._fire(fault)
            link.vanished = True
            _close(link.client)
            return False
        return True

    def _due(self, link: _Link, kind: bytes, commit: bool) -> _Fault | None:
        """The armed fault this message triggers, if any: its transaction ran the pattern."""
        ran = b"\n".join(link.ran)
        for fault in self.faults:
            if fault.times <= 0 or fault.pattern not in ran:
                continue
            if fault.kind == "lose_commit_answer" and commit:
                return fault
            if fault.kind == "cut_before" and kind in (b"B", b"Q") and not commit:
                return fault
            if fault.kind == "vanish_after" and kind in (b"S", b"Q") and not commit:
                return fault
        return None

    def _fire(self, fault: _Fault) -> None:
        fault.times -= 1
        self.fired.append(fault.kind)
        self._fired.set()

    async def fault_fired(self) -> None:
        """Wait until an armed fault has fired."""
        await self._fired.wait()

    async def _answers(self, link: _Link, reader: asyncio.StreamReader) -> None:
        swallowed = b""
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                if link.vanished:
                    continue  # a client that is gone hears nothing
                if not link.swallow:
                    link.client.write(chunk)
                    continue
                swallowed += chunk
                if swallowed[-6:-1] == _ANSWERED:  # the COMMIT is done on the server
                    _close(link.client)
                    _close(link.server)
                    return
        _close(link.client)


def _sql_of(link: _Link, kind: bytes, body: bytes) -> bytes:
    """The SQL a client message runs: a Query's text, or a Bind's prepared statement's (a
    Parse is only remembered: its statement runs at its Binds)."""
    if kind == b"Q":
        return body.split(b"\0", 1)[0]
    if kind == b"P":
        name, rest = body.split(b"\0", 1)
        link.statements[name] = rest.split(b"\0", 1)[0]
        return b""
    if kind == b"B":
        _portal, name, _ = body.split(b"\0", 2)
        return link.statements.get(name, b"")
    return b""


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.transport.abort()
