"""Name lookups that a black-holed DNS server cannot stall (each in a daemon thread of its own),
and the first of a host's addresses that accepts a connection."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


async def resolve_in_thread(host: str, port: int) -> list[str]:
    """The addresses of `host` (getaddrinfo in a daemon thread of its own), in its order.

    Not `loop.getaddrinfo`: that borrows the loop's default executor, where a lookup stuck on a
    black-holed DNS server would hold a shared worker (other `to_thread` calls starve) and make
    `asyncio.run` wait for it at exit, long after its caller gave up. A daemon thread is
    abandoned cleanly; cancel the await to give up on it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[list[str]] = loop.create_future()

    def settle(result: list[str] | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    def work() -> None:
        result: list[str] | None = None
        error: BaseException | None = None
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result = list(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while we were stuck
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"dns-{host}", daemon=True).start()
    return await future


async def first_listening(addresses: list[str], port: int, host: str = "") -> str:
    """The first of `addresses` that accepts a TCP connection on `port` (closed at once); the
    last connection error when none does."""
    error: OSError = OSError(f"{host or 'host'}: no address")
    for address in addresses:
        try:
            _, writer = await asyncio.open_connection(address, port)
        except OSError as exc:
            error = exc
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return address
    raise error
