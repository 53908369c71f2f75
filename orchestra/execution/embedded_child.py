"""The embedded model in a child process, loading while its parent starts.

xllamacpp holds the GIL while it loads the model (~0.3 s), so in-process nothing else of a cold
`orchestra run` can go on meanwhile. A child (`python -m orchestra.execution.embedded_child`),
spawned before the parent imports the rest of Orchestra, loads it on another core: it starts at
once with `EmbeddedConfig`'s defaults, before the parent has read its config.

The protocol is one JSON line each way. The parent writes `{"settings": ..., "read_ahead": ...}`
(the config's settings, and a chat request whose prompt to read ahead, or null); the child starts
again if the settings differ from the defaults, reads the prompt ahead, and answers
`{"address": URL, "key": KEY}` (a random API key, as in-process) or `{"error": MESSAGE}`. It
then lives until its standard input closes: the parent's exit closes it however the parent ends
(Ctrl-C, kill -9 too), and the child ignores Ctrl-C, which reaches the whole foreground group.

Starting again is a fresh process image (`exec`, the same pid and pipes, the order in a file):
tearing the first server down in place can wait for ever (xllamacpp's `~Server` joins a listener
thread that may never stop), and a parent waiting for the reply would wait with it. The parent
waits `REPLY_TIMEOUT_S` at most anyway, then ends the child and starts the model itself.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from orchestra.execution.embedded_server import (
    DEFAULT_SETTINGS,
    ServerError,
    ServerSettings,
    read_prompt,
    start_server,
)

if TYPE_CHECKING:
    import subprocess

# How long the parent waits for the child's reply: a load takes ~0.4 s, a start again ~1 s; far
# past that the child is stuck, and the model is better started in the parent.
REPLY_TIMEOUT_S = 60.0
MODULE = "orchestra.execution.embedded_child"  # run as `-m`, its `__name__` is "__main__"


class EmbeddedChild:
    """The parent's handle on the child: `spawn()` it early, `serve()` once, `stop()` at the end."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def spawn(cls, *, quiet: bool = True) -> EmbeddedChild:
        """Start the child; `quiet` sends its stderr (llama.cpp's own messages) to /dev/null."""
        import subprocess

        process = subprocess.Popen(
            [sys.executable, "-m", MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL if quiet else None,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self._process.pid

    def serve(self, settings: ServerSettings, ahead: dict[str, Any] | None) -> tuple[str, str]:
        """Send the settings; the server's address and key once it serves (blocks: ~0.4 s from
        the spawn). Raises `ServerError`, with the child's message when it has one."""
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        try:
            line = json.dumps({"settings": settings, "read_ahead": ahead})
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], REPLY_TIMEOUT_S)
            if not ready:
                self.stop()
                raise ServerError(
                    f"the embedded model's process did not answer in {REPLY_TIMEOUT_S:g} s"
                )
            reply = json.loads(process.stdout.readline() or b"null")
        except (OSError, ValueError):
            reply = None
        if not isinstance(reply, dict):
            code = process.poll()
            raise ServerError(f"the embedded model's process ended early (exit code {code})")
        if "error" in reply:
            raise ServerError(str(reply["error"]))
        return str(reply["address"]), str(reply["key"])

    def stop(self) -> None:
        """End the child (at once: it holds nothing to save); safe to call again."""
        process = self._process
        if process.returncode is None:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def main() -> None:
    """The child: load, serve, and exit when standard input closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    key = os.urandom(24).hex()
    if len(sys.argv) > 1:  # started again with the parent's order (see `_start_again`)
        with open(sys.argv[1], "rb") as f:
            order = json.load(f)
        os.unlink(sys.argv[1])
        server, error = _started(order["settings"], key)
    else:
        server, error = _started(DEFAULT_SETTINGS, key)
        line = sys.stdin.buffer.readline()
        if not line:
            os._exit(0)
        order = json.loads(line)
        if order["settings"] != DEFAULT_SETTINGS:
            _start_again(order)
    if server is not None and order["read_ahead"] is not None:
        read_prompt(server, order["read_ahead"])
    reply = (
        {"error": error} if server is None else {"address": server.listening_address, "key": key}
    )
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    sys.stdin.buffer.read()  # until the parent is done, or gone
    os._exit(0)  # no teardown: llama.cpp's threads and port go with the process


def _started(settings: ServerSettings, key: str) -> tuple[Any, str | None]:
    try:
        return start_server(settings, key), None
    except ServerError as exc:
        return None, str(exc)


def _start_again(order: dict[str, Any]) -> None:
    """Become a new child with `order` (see the module's docstring). The order goes in a file:
    a prompt to read ahead may be longer than one argument may be (128 KB). The first server's
    port and threads end with the old image (its descriptors are closed; stdin and stdout,
    the parent's pipes, stay)."""
    fd, path = tempfile.mkstemp(prefix="orchestra-embedded-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(order, f)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    try:
        os.execv(sys.executable, [sys.executable, "-m", MODULE, path])
    except OSError:  # no new image to read it: the parent sees this one end, and starts it
        os.unlink(path)
        raise


if __name__ == "__main__":
    main()
