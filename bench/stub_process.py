"""An OpenAI-compatible stub provider in its own process, for benchmarks.

In the measuring process the stub's server thread would share the GIL with what is measured (the
store's writer thread, LiteLLM's pools); a real provider is another machine, so a bench puts it in
another process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_STUB = (
    "import time, sys; from orchestra.testing import StubProvider, Behaviour;"
    "s = StubProvider(Behaviour(reply=sys.argv[2]), port=int(sys.argv[1])).start();"
    "print('ready', flush=True); time.sleep(3600)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def stub_process(reply: str = "Paris") -> Iterator[str]:
    """Start a `StubProvider` answering `reply` in a child process; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    stub = subprocess.Popen(
        [sys.executable, "-c", _STUB, str(port), reply], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert stub.stdout is not None and stub.stdout.readline().startswith("ready")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stub.terminate()
        stub.wait(10)
