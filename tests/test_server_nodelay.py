"""`orchestra serve` turns Nagle's algorithm off on every connection, with several workers too
(where uvicorn binds the listening socket as protocol 0 and asyncio leaves Nagle on: ~40 ms
added to every keep-alive request, uvicorn issue #3149)."""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from orchestra.cli.nodelay import NoDelayHttpToolsProtocol
from orchestra.cli.serve import serve
from orchestra.config import Config


async def _accepted_nodelay(protocol: type[asyncio.Protocol]) -> int:
    """TCP_NODELAY on the server's side of one connection, its listener bound as uvicorn binds
    it for several workers (`Config.bind_socket`)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError

    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=protocol, lifespan="off")
    config.load()
    listener = config.bind_socket()
    state = ServerState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: config.http_protocol_class(config=config, server_state=state, app_state={}),
        sock=listener,
    )
    try:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(200):
            if state.connections:
                break
            await asyncio.sleep(0.01)
        (conn,) = state.connections
        sock = conn.transport.get_extra_info("socket")  # type: ignore[attr-defined]
        writer.close()
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        server.close()
        await server.wait_closed()


def test_connections_on_a_socket_bound_for_several_workers_have_nagle_off() -> None:
    assert asyncio.run(_accepted_nodelay(NoDelayHttpToolsProtocol)) != 0


def test_orchestra_serve_runs_uvicorn_with_that_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    given: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: given.update(kw, app=app))
    args = argparse.Namespace(host=None, port=None, token=None, config=None, workers=2, verbose=0)
    assert serve(args, Config()) == 0
    assert given["http"] is NoDelayHttpToolsProtocol and given["workers"] == 2
