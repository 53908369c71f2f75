"""The CLI commands: each builds only what it needs (history and spend open just the store)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from orchestra.cli import render
from orchestra.config import Config, load_config
from orchestra.core.errors import (
    ConfigError,
    NotRecorded,
    OrchestraError,
    PolicyError,
    RequestError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from orchestra.cli.client import Server
    from orchestra.execution.embedded import EmbeddedModel
    from orchestra.execution.embedded_child import EmbeddedChild

log = logging.getLogger("orchestra.cli")

EXIT_FAILED = 1  # no model could answer, or the store failed once open
EXIT_USAGE = 2  # bad config, bad input, or a store that cannot be opened
EXIT_INTERNAL = 70  # a bug: EX_SOFTWARE
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 120  # what Python itself exits with when stdout is gone at the end
# The user's (or their machine's) to fix, not Orchestra's and not a provider's.
USER_ERRORS = (ConfigError, RequestError, PolicyError, StoreUnavailable)


def dispatch(args: argparse.Namespace) -> int:
    """Run the command; every failure becomes a message on stderr and an exit code."""
    _logging(args.verbose)
    if args.home:
        os.environ["ORCHESTRA_HOME"] = args.home
    handler = COMMANDS[args.command]
    try:
        config = load_config(args.config)
        done = handler(args, config)  # `serve` runs its own loops (one per worker)
        return asyncio.run(done) if asyncio.iscoroutine(done) else done
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader left (`| head`): nothing more to say, and nowhere to
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the final flush fails no more
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        return _report(args, exc)


def _logging(verbose: int) -> None:
    """-v and -vv make Orchestra's own loggers talk; other libraries stay at WARNING (their debug
    output holds requests whole: keys, prompts). Every line goes through the redactor."""
    from orchestra.core.redact import RedactingFilter

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.getLogger("orchestra").setLevel(level)


def exit_code(exc: Exception) -> int:
    """2 for the user's errors, 1 for Orchestra's other errors, 70 for anything unexpected."""
    if isinstance(exc, USER_ERRORS):
        return EXIT_USAGE
    return EXIT_FAILED if isinstance(exc, OrchestraError) else EXIT_INTERNAL


def _report(args: argparse.Namespace, exc: Exception) -> int:
    """Say what failed (one JSON object on stdout too, for `run --json`); return the code."""
    code = exit_code(exc)
    if args.command == "run" and args.json:
        print(json.dumps(error_json(exc), ensure_ascii=False))
    if code == EXIT_USAGE:
        print(f"orchestra: error: {exc}", file=sys.stderr)
    elif code == EXIT_FAILED:
        name = getattr(exc, "shown_as", None) or type(exc).__name__  # a server's: as in-process
        print(f"orchestra: {name}: {exc}", file=sys.stderr)
    else:
        if args.verbose >= 2:
            traceback.print_exception(exc)
        hint = "" if args.verbose >= 2 else " (run with -vv for the traceback)"
        print(f"orchestra: internal error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
    return code


def error_json(exc: Exception) -> dict[str, Any]:
    """`{"error": {...}}`: a failure as `run --json` prints it, attempts as a result has them."""
    from orchestra.core.result import Attempt

    attempts = [a for a in getattr(exc, "attempts", ()) if isinstance(a, Attempt)]
    return {
        "error": {
            "kind": getattr(exc, "kind", None) or type(exc).__name__,
            "message": str(exc),
            "attempts": [a.model_dump(mode="json") for a in attempts],
            "request_id": getattr(exc, "request_id", None) or None,
        }
    }


def _hints(args: argparse.Namespace) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    if args.model:
        hints["model"] = args.model
    if args.tier:
        hints["tier"] = args.tier
    if args.max_tokens is not None:
        hints["max_tokens"] = args.max_tokens
    return hints


def _prompt(given: str) -> str:
    """The prompt argument, or standard input for `-`; either must be UTF-8 text."""
    if given != "-":
        try:
            given.encode("utf-8")  # argv undecodable as UTF-8 arrives as lone surrogates
        except UnicodeEncodeError:
            raise RequestError("the prompt is not UTF-8 text") from None
        return given
    text = _read_stdin()
    if not text.strip():
        raise RequestError("no prompt on standard input")
    return text


def _read_stdin() -> str:
    """All of standard input, decoded strictly as UTF-8 ("" when it is closed)."""
    if sys.stdin is None:  # started with file descriptor 0 closed
        return ""
    try:
        data = sys.stdin.buffer.read()
    except OSError as exc:
        raise RequestError(f"cannot read standard input: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte {data[exc.start]:#04x} at offset {exc.start}"
        raise RequestError(f"standard input is not UTF-8 text ({where})") from None


def _server(args: argparse.Namespace, config: Config) -> Server | None:
    """The running server to answer this command, if one answers at once (see `--server`);
    with `--config` or `--home` (these files, not the server's) only one named by `--server`."""
    if args.server is None and (args.config or args.home):
        return None
    from orchestra.cli.client import find_server

    server = find_server(args.server, config.server.port)
    if server is not None:
        log.info("answering through the server at %s", server.url)
    else:
        log.info("no server answers: running in-process")
    return server


async def run(args: argparse.Namespace, config: Config) -> int:
    child: EmbeddedChild | None = getattr(args, "embedded_child", None)
    prompt = _prompt(args.prompt)
    if (server := _server(args, config)) is not None:
        from orchestra.cli import remote

        if child is not None:
            child.stop()  # the server's model answers
        return remote.run(args, server, prompt)
    elsewhere = _remote_hinted(args, config)
    # The embedded model is loading in a child process since `main` began (in-process, loading
    # holds the GIL ~0.3 s); here it is told the config and reads the prompt ahead while the rest
    # of Orchestra imports and starts. LiteLLM (seconds to import) loads while Orchestra starts
    # only when the hints rule out the embedded model; otherwise only if the decision reaches
    # another model (most runs: never).
    embedded = None if elsewhere else _warm_embedded(config, prompt, child)
    if embedded is None and child is not None:
        child.stop()
    await asyncio.sleep(0)  # the warm-up task hands the wait for the child to its thread
    from orchestra.runtime import Orchestra

    async with Orchestra(config, embedded=embedded, preload_backend=elsewhere) as orc:
        if args.stream and not args.json:
            # Closed however the reading ends (a reader gone: a broken pipe): the call stops now,
            # and is recorded while the runtime is still open.
            async with orc.stream(prompt, **_hints(args)) as stream:
                async for text in stream:
                    print(text, end="", flush=True)
            print()
            assert stream.result is not None
            render.result_footer(stream.result)
            return 0
        try:
            result = await orc.complete(prompt, **_hints(args))
        except NotRecorded as exc:  # answered (and maybe paid for): show it, then fail loudly
            if not args.json:
                print(exc.result.text.strip())
            raise
    render.answer(result, as_json=args.json, explained=args.explain)
    return 0


def _warm_embedded(
    config: Config, prompt: str, child: EmbeddedChild | None
) -> EmbeddedModel | None:
    """The embedded model (in `child` when there is one), starting in the background and then
    reading `prompt` ahead."""
    if not config.embedded.enabled:
        return None
    from orchestra.core.request import Message
    from orchestra.execution.embedded import EmbeddedModel

    model = EmbeddedModel(config.embedded, child=child)
    model.warm_soon((Message(role="user", content=prompt),))
    return model


def _remote_hinted(args: argparse.Namespace, config: Config) -> bool:
    """Whether `--model` or `--tier` rules out the embedded model."""
    if args.model is not None:
        return not (config.embedded.enabled and args.model == config.embedded.name)
    return args.tier in ("edge", "cloud")


async def chat(args: argparse.Namespace, config: Config) -> int:
    from orchestra.core.request import Message

    if sys.stdin is None:  # started with standard input closed: the conversation is over
        return 0
    if (server := _server(args, config)) is not None:
        from orchestra.cli import remote

        return remote.chat(args, server)
    from orchestra.runtime import Orchestra

    history: list[Message] = []
    print("orchestra chat: an empty line or Ctrl-D ends it.", file=sys.stderr)
    async with Orchestra(config, warm_embedded=True) as orc:
        while True:
            try:
                line = await asyncio.to_thread(input, "you> ")
            except EOFError:
                break
            if not line.strip():
                break
            history.append(Message(role="user", content=line))
            print("ai> ", end="", flush=True)
            try:
                async with orc.stream(tuple(history), **_hints(args)) as stream:
                    async for text in stream:
                        print(text, end="", flush=True)
            except OrchestraError as exc:
                print(f"\n[error: {exc}]")
                history.pop()
                continue
            print()
            assert stream.result is not None
            history.append(Message(role="assistant", content=stream.result.text))
            render.chat_footer(stream.result)
    return 0


async def agents(args: argparse.Namespace, config: Config) -> int:
    if (server := _server(args, config)) is not None:
        from orchestra.cli import remote

        return remote.agents(args, server)
    from orchestra.runtime import Orchestra

    if args.watch:
        return await _watch_agents(args, config)
    async with Orchestra(config, preload_backend=False) as orc:
        verdicts = await orc.verdicts(args.prompt)
    if args.json:
        for v in verdicts:
            print(v.model_dump_json())
    else:
        render.verdict_table(verdicts, title="Agents")
    return 0


async def _watch_agents(args: argparse.Namespace, config: Config) -> int:
    """A live table: ambient agents as sampled in the background, per-request ones re-checked."""
    from rich.live import Live

    from orchestra.runtime import Orchestra

    async with Orchestra(config, preload_backend=False) as orc:
        with Live(
            render.verdict_grid(await orc.verdicts(args.prompt)), console=render.out()
        ) as live:
            shown = 1
            while args.count is None or shown < args.count:
                await asyncio.sleep(args.every)
                live.update(render.verdict_grid(await orc.verdicts(args.prompt)))
                shown += 1
    return 0


async def models(args: argparse.Namespace, config: Config) -> int:
    if (server := _server(args, config)) is not None:
        from orchestra.cli import remote
        from orchestra.cli.client import TOKEN_ENV

        if os.environ.get(TOKEN_ENV):  # the full catalog is an admin route
            return remote.models(args, server, _key_present)
        log.info("the server's catalog needs %s: listing this config's models", TOKEN_ENV)
        server.close()
    from orchestra.discovery import discover_catalog
    from orchestra.execution.embedded import EmbeddedModel

    embedded = EmbeddedModel(config.embedded) if config.embedded.enabled else None
    specs = await discover_catalog(config, embedded)
    async with _store(config) as store:  # breakers remember dead providers across restarts
        records = await store.breaker_records()
    breakers = {model: record.state for model, record in records.items()}
    render.models(specs, _key_present, breakers, as_json=args.json)
    return 0


async def history(args: argparse.Namespace, config: Config) -> int:
    # More than the server gives at once (1,000) is read from the store here.
    if args.limit <= 1000 and (server := _server(args, config)) is not None:
        from orchestra.cli import remote

        return remote.history(args, server)
    async with _store(config) as store:
        entries = await store.history(limit=args.limit)
    render.history(entries, as_json=args.json)
    return 0


async def spend(args: argparse.Namespace, config: Config) -> int:
    if (server := _server(args, config)) is not None:
        from orchestra.cli import remote

        return remote.spend(args, server)
    async with _store(config) as store:
        summary = await store.spend_summary()
    summary.setdefault("degraded", False)
    summary["daily_budget_usd"] = config.budget.daily_usd
    summary["monthly_budget_usd"] = config.budget.monthly_usd
    render.spend(summary, as_json=args.json)
    return 0


async def feedback(args: argparse.Namespace, config: Config) -> int:
    from orchestra.core.redact import Redactor
    from orchestra.runtime import record_feedback

    redact = Redactor.from_env(m.api_key_env for m in config.models if m.api_key_env)
    async with _store(config) as store:
        given = await record_feedback(store, args.request, args.good, args.note, redact)
    if args.json:
        print(given.model_dump_json())
        return 0
    answered = f" ({given.model}, {given.tier})" if given.model else ""
    print(
        f"recorded: request {given.request_id}{answered} marked {'good' if given.good else 'bad'}"
    )
    return 0


async def train_complexity(args: argparse.Namespace, config: Config) -> int:
    from orchestra.agents.complexity import feedback as training

    if args.weight < 0:
        raise ConfigError(f"--weight must be >= 0, got {args.weight}")
    out = _model_out(args.out, training)
    async with _store(config) as store:
        judged = await store.judged_requests()
    try:
        trained = await asyncio.to_thread(training.train, judged, weight=args.weight)
    except ValueError as exc:
        print(f"orchestra: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not args.dry_run:
        await asyncio.to_thread(_save_model, trained.scorer, out)
    found = trained.feedback
    if args.json:
        print(
            json.dumps(
                {
                    "written": None if args.dry_run else str(out),
                    "judged": found.judged,
                    "used": len(found.rows),
                    "positives": found.positives,
                    "skipped": dict(found.skipped),
                    "report": trained.report,
                }
            )
        )
        return 0
    render.training_report(trained, None if args.dry_run else out)
    return 0


async def replay(args: argparse.Namespace, config: Config) -> int:
    from datetime import datetime

    from orchestra.core.catalog import Catalog
    from orchestra.discovery import discover_catalog
    from orchestra.execution.embedded import EmbeddedModel
    from orchestra.lab.replay import render as render_replay
    from orchestra.lab.replay import replay as run_replay
    from orchestra.policies.registry import PolicyConfig, resolve_policy

    try:
        since = datetime.strptime(args.since, "%Y-%m-%d").timestamp() if args.since else None
    except ValueError:
        raise ConfigError(f"--since {args.since!r}: expected YYYY-MM-DD") from None
    names = args.policy or [config.policy.name]
    # The configured policy keeps its parameters (weights...); other names get their defaults.
    policies = [
        resolve_policy(config.policy if n == config.policy.name else PolicyConfig(name=n))
        for n in names
    ]
    embedded = EmbeddedModel(config.embedded) if config.embedded.enabled else None
    catalog = Catalog(await discover_catalog(config, embedded))
    async with _store(config) as store:
        if args.json:
            reports = await run_replay(
                store, catalog, policies, since, args.limit, workers=args.workers
            )
        else:
            from rich.progress import Progress

            with Progress(console=render.err(), transient=True) as bar:
                task = bar.add_task("replaying", total=None)
                reports = await run_replay(
                    store,
                    catalog,
                    policies,
                    since,
                    args.limit,
                    lambda done, total: bar.update(task, completed=done, total=total),
                    workers=args.workers,
                )
    if args.json:
        print(
            json.dumps(
                {
                    "requests": reports[0].requests if reports else 0,
                    "policies": [r.to_dict() for r in reports],
                }
            )
        )
    else:
        render_replay(reports, render.out())
    return 0


async def experiment(args: argparse.Namespace, config: Config) -> int:
    from pathlib import Path

    from orchestra.lab.experiment import (
        render_summary,
        run_experiment,
        scenario_catalog,
        write_outputs,
    )
    from orchestra.lab.scenario import load_scenario
    from orchestra.policies.registry import PolicyConfig, resolve_policy

    scenario = load_scenario(args.scenario)
    names = args.policy or [config.policy.name]
    policies = [
        resolve_policy(config.policy if n == config.policy.name else PolicyConfig(name=n))
        for n in names
    ]
    fallback: list[Any] = []
    if not scenario.models:  # no scripted catalog: the current config's models
        from orchestra.discovery import discover_catalog
        from orchestra.execution.embedded import EmbeddedModel

        embedded = EmbeddedModel(config.embedded) if config.embedded.enabled else None
        fallback = await discover_catalog(config, embedded)
    result = run_experiment(scenario, policies, scenario_catalog(scenario, fallback))
    files, skipped = write_outputs(result, Path(args.out), plots=not args.no_plots)
    if args.json:
        print(json.dumps(experiment_json(result, files, skipped)))
        return 0
    render_summary(result, render.out())
    for path in files:
        print(f"wrote {path}")
    if skipped:
        print(f"orchestra: {skipped}", file=sys.stderr)
    return 0


def experiment_json(result: Any, files: list[Any], skipped: str | None) -> dict[str, Any]:
    """`experiment --json`: the comparison table's figures per policy, and the files written."""
    scenario = result.scenario
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "daily_budget_usd": scenario.budget.daily_usd,
        "policies": [run.summary() for run in result.runs],
        "files": [str(path) for path in files],
        "plots_skipped": skipped,
    }


async def store(args: argparse.Namespace, config: Config) -> int:
    """`orchestra store migrate --to URL`: copy the SQLite history into PostgreSQL;
    `orchestra store timezone [ZONE]`: show or change the store's budget time zone."""
    if args.store_command == "timezone":
        return await _store_timezone(args.zone, config, as_json=args.json)
    from pathlib import Path

    from orchestra.core.paths import default_db_path
    from orchestra.store import is_url, masked
    from orchestra.store.transfer import copy_sqlite

    if not is_url(args.to):
        raise ConfigError(f"--to {masked(args.to)!r}: expected a postgresql:// URL")
    source = Path(args.source) if args.source else (config.store.path or default_db_path())
    report = await copy_sqlite(source, args.to)
    if args.json:
        print(json.dumps({**report, "from": str(source)}))
        return 0
    render.migrate_report(source, report)
    return 0


async def _store_timezone(zone: str | None, config: Config, *, as_json: bool) -> int:
    from orchestra.spend.budget import Budget
    from orchestra.spend.calendar import same_days

    if zone is not None:
        try:
            Budget(timezone=zone)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise ConfigError(f"unknown time zone {zone!r} (want e.g. 'Europe/Paris')") from exc
    # Opened as a config naming no zone would be (the store's is taken, whatever the file says).
    adopting = config.model_copy(
        update={"budget": config.budget.model_copy(update={"timezone": None})}
    )
    async with _store(adopting) as store:
        before = store.calendar.timezone
        # An alias of the store's zone ("UTC" for "Etc/UTC") counts the same days: no change.
        if zone is not None and same_days(zone, before):
            zone = None
        if zone is not None:
            await store.set_timezone(zone)
    now = before if zone is None else zone
    if as_json:  # `was`: the zone before a change, null when nothing changed
        print(json.dumps({"timezone": now, "was": None if now == before else before}))
    elif now == before:
        print(before)
    else:
        print(f"the store's budget time zone is now {zone} (was {before}); restart the"
              " processes that share the store")  # fmt: skip
    return 0


def _model_out(given: str | None, training: Any) -> Any:
    from pathlib import Path

    return Path(given).expanduser() if given else training.user_model_path()


def _save_model(scorer: Any, path: Any) -> None:
    """Write next to the target, then rename: a running agent never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    scorer.save(partial)
    partial.replace(path)


def _store(config: Config) -> Any:
    from orchestra.runtime import build_store

    return build_store(config)


def _key_present(spec: Any) -> bool | None:
    return bool(os.environ.get(spec.api_key_env)) if spec.api_key_env else None


def serve(args: argparse.Namespace, config: Config) -> int:
    from orchestra.cli.serve import serve as run_server

    return run_server(args, config)


Command = Callable[[argparse.Namespace, Config], int | Coroutine[Any, Any, int]]
COMMANDS: dict[str, Command] = {
    "run": run,
    "chat": chat,
    "agents": agents,
    "models": models,
    "history": history,
    "spend": spend,
    "feedback": feedback,
    "train-complexity": train_complexity,
    "replay": replay,
    "experiment": experiment,
    "serve": serve,
    "store": store,
}
