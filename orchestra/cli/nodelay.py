"""uvicorn's HTTP protocol (httptools), with Nagle's algorithm off on every connection.

With `--workers` above 1, uvicorn binds the listening socket itself as `socket.socket(family)`,
whose protocol number is 0; accepted connections inherit it, and asyncio turns Nagle off only
on sockets that say `IPPROTO_TCP`. A response is written in two parts (head, then body), so the
body waited for the client's delayed ACK: ~40 ms on every keep-alive request on Linux (uvicorn
issue #3149). With one worker asyncio binds the socket (protocol 6) and this changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class NoDelayHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that sets TCP_NODELAY on its connection first."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # the peer already gone: nothing to speed up
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
