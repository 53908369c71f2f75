"""`orchestra serve`: check what can be checked before binding, then hand over to uvicorn.

The app is named by an import string (`orchestra.server.app:app_from_env`), which uvicorn needs
to start several workers, and which keeps the CLI from importing the server (they are the same
layer): the CLI passes the config path and the token to the workers in their environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import ipaddress
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestra.config import Config
from orchestra.core.errors import ConfigError
from orchestra.core.paths import CONFIG_ENV

APP = "orchestra.server.app:app_from_env"
TOKEN_ENV = "ORCHESTRA_TOKEN"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(args: argparse.Namespace, config: Config) -> int:
    """Serve until interrupted; 2 for a bind the CLI refuses or a store that cannot open."""
    host = args.host or config.server.host
    port = args.port or config.server.port
    token = (args.token if args.token is not None else os.environ.get(TOKEN_ENV)) or None
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without a token (anyone who reaches it could spend "
            f"your budget): set --token or {TOKEN_ENV}, or listen on 127.0.0.1"
        )
    asyncio.run(_check_store(config))  # a store that cannot open is the user's to fix: exit 2
    # The workers read these: they load the same file and ask for the same token.
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    if token is not None:
        os.environ[TOKEN_ENV] = token
    import uvicorn

    from orchestra.cli.nodelay import NoDelayHttpToolsProtocol

    auth = "a bearer token required" if token else "no token: loopback only, admin routes off"
    print(
        f"orchestra: serving the OpenAI API at http://{host}:{port}/v1 with {args.workers} "
        f"worker(s), {auth}",
        file=sys.stderr,
    )
    with _metrics_dir(args.workers):
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            log_config=log_config(args.verbose),
            access_log=args.verbose >= 1,  # every request is in the store's history anyway
            loop="asyncio",  # what Orchestra is tested on (uvloop measured no faster here)
            http=NoDelayHttpToolsProtocol,  # Nagle off with several workers too
            proxy_headers=False,
            server_header=False,
        )
    return 0


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only: `localhost` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


async def _check_store(config: Config) -> None:
    """Open and close the configured store (SQLite or PostgreSQL) before any worker starts."""
    from orchestra.runtime import build_store

    async with build_store(config):
        pass


@contextlib.contextmanager
def _metrics_dir(workers: int) -> Iterator[None]:
    """With several workers, Prometheus counters are shared through files in a fresh directory
    (removed at the end); one worker keeps them in memory."""
    if workers < 2 or os.environ.get(METRICS_ENV):
        yield
        return
    path = tempfile.mkdtemp(prefix="orchestra-metrics-")
    os.environ[METRICS_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(METRICS_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def log_config(verbose: int) -> dict[str, Any]:
    """uvicorn's logging, with every handler masking secrets, in every worker process;
    Orchestra's own loggers at WARNING (-v: INFO, -vv: DEBUG)."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["filters"] = {"redact": {"()": "orchestra.core.redact.RedactingFilter"}}
    for handler in cfg["handlers"].values():
        handler["filters"] = ["redact"]
    level = ["WARNING", "INFO", "DEBUG"][min(verbose, 2)]
    cfg["loggers"]["orchestra"] = {"handlers": ["default"], "level": level, "propagate": False}
    cfg["root"] = {"handlers": ["default"], "level": "WARNING"}
    return cfg
