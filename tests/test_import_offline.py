"""Importing Orchestra (and LiteLLM through it) connects nowhere and resolves no name.

(urllib3 binds a socket to ::1 at import to learn whether IPv6 exists: loopback, no traffic.)
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
seen = []
OUTBOUND = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
            "socket.sendto", "socket.sendmsg", "urllib.Request", "http.client.connect")
def hook(event, args):
    if event.startswith(OUTBOUND):
        seen.append((event, repr(args)[:200]))
    elif event == "socket.bind" and args[1][0] not in ("127.0.0.1", "::1"):
        seen.append((event, repr(args)[:200]))
sys.addaudithook(hook)
import orchestra
import orchestra.cli.main
assert "litellm" not in sys.modules, "importing orchestra imported litellm"
from orchestra.execution.litellm_backend import import_litellm
litellm = import_litellm()
assert litellm.model_cost, "LiteLLM's bundled cost map is empty"
print("events:", seen)
sys.exit(1 if seen else 0)
"""


def test_import_touches_no_network() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
