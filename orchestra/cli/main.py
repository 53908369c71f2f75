"""`orchestra`: the command-line entry point. Imports nothing heavy until a command runs.

`orchestra --help` imports argparse and nothing else of note; `run` first starts the embedded
model loading in a child process, then imports what answering needs (pydantic, asyncio, SQLite, the
agents) and LiteLLM only when a model other than the embedded one is tried; with `orchestra
serve` running, `run` and its kin are its clients (`http.client`).
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # typing's own would import typing, which `--help` does not need
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

    from orchestra.execution.embedded_child import EmbeddedChild

TIERS = ("local", "edge", "cloud")


class Parser(argparse.ArgumentParser):
    """A usage error is one line, like every other user error: `orchestra: error: ...`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"orchestra: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="orchestra",
        description="Route each LLM call to the right model and tier (local, edge, cloud).",
    )
    parser.add_argument(
        "--config", help="TOML config file (default: $ORCHESTRA_CONFIG, ./orchestra.toml)"
    )
    parser.add_argument(
        "--home", help="data directory holding orchestra.db (default: $ORCHESTRA_HOME)"
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        help="the `orchestra serve` that run, chat, agents, history, spend and models use "
        "(default: $ORCHESTRA_URL, else http://127.0.0.1:8787 when one answers; off: "
        "in-process)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging (-vv: debug, and the traceback of an internal error)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="answer one prompt")
    run.add_argument("prompt", help="the prompt (use - to read it from standard input)")
    _hints(run)
    run.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.add_argument("--explain", action="store_true", help="explain the decision in full")

    chat = sub.add_parser("chat", help="an interactive conversation (REPL)")
    _hints(chat)

    agents = sub.add_parser("agents", help="every agent's current verdict")
    agents.add_argument("--prompt", default="hello", help="prompt for per-request agents")
    agents.add_argument("--json", action="store_true", help="JSON lines, one per agent")
    agents.add_argument(
        "--watch", action="store_true", help="a live table, refreshed (Ctrl-C ends)"
    )
    agents.add_argument(
        "--every",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="--watch refresh, seconds (a positive number; default 1)",
    )
    agents.add_argument(
        "--count",
        type=positive_int,
        metavar="N",
        help="--watch: stop after N refreshes (a positive integer)",
    )

    models = sub.add_parser("models", help="the model catalog")
    models.add_argument("--json", action="store_true", help="JSON lines, one per model")

    history = sub.add_parser("history", help="recorded requests, newest first")
    history.add_argument(
        "--limit",
        type=positive_int,
        default=20,
        metavar="N",
        help="how many (a positive integer; default 20)",
    )
    history.add_argument("--json", action="store_true", help="JSON lines, one per request")

    spend = sub.add_parser("spend", help="spend against the budget")
    spend.add_argument("--json", action="store_true", help="one JSON object")

    feedback = sub.add_parser("feedback", help="say whether an answer was good or bad")
    feedback.add_argument("request", help="request id, or a unique prefix (see history)")
    verdict = feedback.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--good", action="store_true", help="the answer was good")
    verdict.add_argument("--bad", action="store_true", help="the answer was bad")
    feedback.add_argument("--note", help="why (kept with the feedback; secrets are masked)")
    feedback.add_argument("--json", action="store_true", help="one JSON object")

    train = sub.add_parser(
        "train-complexity",
        help="retrain the complexity agent's scorer from your feedback plus the shipped data",
    )
    train.add_argument(
        "--out", help="where to write the model (default: complexity_model.json in the data dir)"
    )
    train.add_argument(
        "--weight",
        type=float,
        default=1.0,
        help="your feedback's say beside each shipped data source (default 1: equal)",
    )
    train.add_argument("--dry-run", action="store_true", help="train and report, but write nothing")
    train.add_argument("--json", action="store_true", help="one JSON object")

    replay = sub.add_parser("replay", help="decide recorded requests again under other policies")
    replay.add_argument(
        "--policy", action="append", metavar="NAME", help="a policy to replay (repeatable)"
    )
    replay.add_argument("--since", metavar="YYYY-MM-DD", help="only requests from this day on")
    replay.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="only the newest N requests (a positive integer)",
    )
    replay.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="processes to share a long replay between (default: one per CPU, up to 4, from "
        "20,000 requests; 1: this process alone)",
    )
    replay.add_argument("--json", action="store_true", help="one JSON object")

    store = sub.add_parser(
        "store", help="manage the store (copy a SQLite history to PostgreSQL, its time zone)"
    )
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    migrate = store_sub.add_parser(
        "migrate", help="copy a SQLite history into a PostgreSQL database (idempotent)"
    )
    migrate.add_argument(
        "--to", required=True, metavar="URL", help="the PostgreSQL database (postgresql://...)"
    )
    migrate.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="the SQLite file (default: [store] path, else $ORCHESTRA_HOME/orchestra.db)",
    )
    migrate.add_argument("--json", action="store_true", help="one JSON object")
    zone = store_sub.add_parser(
        "timezone",
        help="show the store's budget time zone, or change it (every process sharing the store"
        " counts the budget's days in it)",
    )
    zone.add_argument(
        "zone", nargs="?", metavar="ZONE", help="the new zone, an IANA name (e.g. Europe/Paris)"
    )
    zone.add_argument("--json", action="store_true", help="one JSON object")

    experiment = sub.add_parser(
        "experiment", help="compare policies on a scripted scenario (simulated time)"
    )
    experiment.add_argument("scenario", help="scenario TOML file (see examples/scenarios/)")
    experiment.add_argument(
        "--policy", action="append", metavar="NAME", help="a policy to compare (repeatable)"
    )
    experiment.add_argument(
        "--out", default="experiment-out", help="output directory (default ./experiment-out)"
    )
    experiment.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    experiment.add_argument(
        "--json", action="store_true", help="one JSON object (each policy's summary, the files)"
    )

    serve = sub.add_parser(
        "serve", help="an OpenAI-compatible HTTP service (POST /v1/chat/completions, /metrics...)"
    )
    serve.add_argument(
        "--host",
        help="address to listen on (default 127.0.0.1, or [server] host); any other than "
        "loopback needs a token",
    )
    serve.add_argument(
        "--port", type=port_number, help="port to listen on (default 8787, or [server] port)"
    )
    serve.add_argument(
        "--token",
        help="bearer token every client must send (default: $ORCHESTRA_TOKEN; prefer it, "
        "as arguments are visible to other users)",
    )
    serve.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes (a positive integer; default 1); they share the budget",
    )
    return parser


def _hints(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="force this catalog model")
    p.add_argument("--tier", choices=TIERS, help="force this tier")
    p.add_argument(
        "--max-tokens",
        type=positive_int,
        metavar="N",
        help="cap the answer's length at N tokens (a positive integer)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in `argv` and return its exit code.

    With no `argv` this is the `orchestra` process itself (the console script, `python -m`): it
    then ends the process once the command is done (see `_exit`) and never returns.
    """
    if argv is None:
        # httpx imports its command-line client (rich, click, pygments: ~30 ms) when present;
        # this process never calls it, so httpx falls back to its stub.
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    args = build_parser().parse_args(argv)
    args.embedded_child = child = _embedded_child(args)
    try:
        from orchestra.cli.commands import dispatch

        code = dispatch(args)
    finally:
        if child is not None:
            child.stop()
    if argv is None:
        _exit(code)
    return code


def _embedded_child(args: argparse.Namespace) -> EmbeddedChild | None:
    """For `run`, the embedded model loading in a child process from now on, on another core
    than the imports that follow (see `embedded_child`); `run` ends it if another answers."""
    if args.command != "run" or args.tier in ("edge", "cloud"):
        return None
    from orchestra.execution.embedded_child import EmbeddedChild

    return EmbeddedChild.spawn(quiet=args.verbose < 2)


def _exit(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, which takes 0.5-1 s once LiteLLM is
    imported (its thousands of objects freed one by one) and ~75 ms without it.

    Safe here: the command has returned, so its store is closed (every record committed) and the
    embedded model stopped; output is flushed and atexit handlers (coverage, plugins) still run.
    Skipped are only the freeing of memory and the joining of daemon threads (an unneeded import).
    """
    import atexit
    import logging

    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):  # a closed or broken pipe: as Python reports it, 120
        code = code or 120
    logging.shutdown()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
