"""Human-readable output for the CLI (rich tables on stdout, footers on stderr)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported at the first table, after a streamed answer's first token
    from rich.console import Console
    from rich.table import Table

    from orchestra.core.decision import Decision
    from orchestra.core.model_spec import ModelSpec
    from orchestra.core.result import Attempt, Result
    from orchestra.core.verdict import Verdict


def _tty(fd: int) -> bool:
    return os.isatty(fd)


@cache
def out() -> Console:
    """The console for stdout. Piped output is not wrapped at 80 columns: one line per row."""
    from rich.console import Console

    return Console(highlight=False, width=None if _tty(1) else 160)


@cache
def err() -> Console:
    """The console for stderr (footers, explanations, progress)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, width=None if _tty(2) else 160)


def _table(**options: Any) -> Table:
    from rich.table import Table

    return Table(show_edge=False, pad_edge=False, **options)


def answer(result: Result, *, as_json: bool, explained: bool) -> None:
    """A whole answer as `orchestra run` prints it: the JSON object, or the text on stdout and
    who answered on stderr; then, if asked, the decision explained."""
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), ensure_ascii=False))
    else:
        print(result.text.strip())
        result_footer(result)
    if explained:
        explain(result.decision, result.attempts, result.order)


def result_footer(result: Result) -> None:
    """Who answered, what it cost, the agents' verdicts and the policy's reason (on stderr)."""
    err().print(
        f"\n[bold]{result.model}[/] ({result.tier}) answered in {result.latency_ms:.0f} ms, "
        f"{result.prompt_tokens}+{result.completion_tokens} tokens, ${result.cost_usd:.6f}"
    )
    failed = [a for a in result.attempts if not a.ok]
    for attempt in failed:
        err().print(f"  failed over from {attempt.model}: {attempt.error_kind} ({attempt.error})")
    verdict_table(result.verdicts, title=None, console=err())
    err().print(f"[dim]policy {result.decision.policy}:[/] {result.decision.reason}")
    short = result.request_id[:12]
    err().print(f"[dim]request {short}; a bad answer? orchestra feedback {short} --bad[/]")


def explain(
    decision: Decision, attempts: Sequence[Attempt] = (), order: Sequence[str] = ()
) -> None:
    """The decision in full (on stderr): constraints, votes, winner, the chain as the policy
    ranked it, the order the executor really tried (after balancing and health), what happened."""
    err().print(f"\n[bold]Decision[/] by policy {decision.policy}")
    if decision.excluded:
        err().print("constraints:")
        for e in decision.excluded:
            what = f"tier {e.tier}" if e.tier else f"model {e.model}"
            err().print(f"  - {what} removed by {e.by}: {e.reason}")
    else:
        err().print("constraints: none")
    votes = ", ".join(f"{t} {w:.2f}" for t, w in sorted(decision.votes.items())) or "none"
    err().print(f"votes: {votes}")
    err().print(f"target tier: {decision.target or '-'}")
    err().print("candidates (as the policy ranked them):")
    for i, c in enumerate(decision.candidates, 1):
        err().print(f"  {i}. {c.model} ({c.tier}): {c.reason}")
    if order:
        err().print(f"tried in this order (balancing, health): {', '.join(order)}")
    if attempts:
        err().print("attempts:")
        for a in attempts:
            outcome = "cached" if a.cached else "ok" if a.ok else f"{a.error_kind}: {a.error}"
            err().print(f"  - {a.model}: {outcome} ({a.latency_ms:.0f} ms)")
    err().print(f"reason: {decision.reason}")


def chat_footer(result: Result) -> None:
    err().print(f"[dim]  {result.model} ({result.tier}), {result.latency_ms:.0f} ms[/]")


def verdict_table(
    verdicts: Sequence[Verdict], title: str | None, console: Console | None = None
) -> None:
    (console or out()).print(verdict_grid(verdicts, title=title, metrics=False))


def verdict_grid(
    verdicts: Sequence[Verdict], title: str | None = None, metrics: bool = True
) -> Table:
    """The agents' verdicts as a table; with `metrics`, each agent's key readings too."""
    table = _table(title=title)
    columns = ["agent", "state", "target", "allowed", "conf", "reason"]
    for column in [*columns, "metrics"] if metrics else columns:
        table.add_column(column)
    for v in verdicts:
        row = [
            v.agent,
            v.state + (" (stale)" if v.stale else ""),
            str(v.target) if v.target else "-",
            ",".join(str(t) for t in sorted(v.allowed)),
            f"{v.confidence:.2f}",
            v.reason,
        ]
        if metrics:
            row.append(_key_metrics(v.metrics))
        table.add_row(*row)
    return table


def _key_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    flat = [(k, v) for k, v in metrics.items() if isinstance(v, int | float | str)]
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in flat[:limit])


def models(
    specs: Sequence[ModelSpec],
    key_present: Callable[[ModelSpec], bool | None],
    breakers: dict[str, str],
    *,
    as_json: bool,
) -> None:
    """`orchestra models`: one JSON object per model, or the table."""
    if not as_json:
        model_table(specs, key_present, breakers)
        return
    for spec in specs:
        entry = spec.model_dump(mode="json")
        entry.update(
            key_present=key_present(spec),
            breaker=breakers.get(spec.name, "closed"),
            called_through=called_through(spec),
        )
        print(json.dumps(entry))


def called_through(spec: ModelSpec) -> str:
    """The client a model is called through: "embedded", "openai-sdk" or "litellm"."""
    from orchestra.execution.openai_compatible import called_directly

    if spec.embedded:
        return "embedded"
    return "openai-sdk" if called_directly(spec) else "litellm"


def model_table(
    specs: Iterable[ModelSpec],
    key_present: Callable[[Any], bool | None],
    breakers: dict[str, str],
) -> None:
    table = _table()
    for column in (
        "name", "tier", "litellm model", "endpoint", "via", "$/Mtok in/out", "key", "breaker"
    ):  # fmt: skip
        table.add_column(column)
    for s in specs:
        # The catalog's prices already hold LiteLLM's table's (`discover_catalog`): one still
        # missing is known nowhere, and such a cloud model is refused under a budget.
        price = (
            f"{s.input_cost_per_mtok:g}/{s.output_cost_per_mtok:g}"
            if s.input_cost_per_mtok is not None and s.output_cost_per_mtok is not None
            else "unknown"
        )
        key = {True: "set", False: f"missing ({s.api_key_env})", None: "-"}[key_present(s)]
        endpoint = "embedded (llama.cpp)" if s.embedded else (s.api_base or "provider default")
        breaker = breakers.get(s.name, "closed")
        via = called_through(s)
        table.add_row(s.name, str(s.tier), s.litellm_model, endpoint, via, price, key, breaker)
    out().print(table)


def history_table(entries: Sequence[dict[str, Any]]) -> None:
    table = _table()
    for column in ("when", "request", "status", "model", "tier", "ms", "cost $", "fb", "reason"):
        table.add_column(column)
    for e in entries:
        when = datetime.fromtimestamp(e["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        reason = (e["decision"] or {}).get("reason", "") if e["status"] == "ok" else e["error"]
        table.add_row(
            when,
            e["request_id"][:12],
            e["status"],
            e["model"] or "-",
            e["tier"] or "-",
            f"{e['latency_ms']:.0f}",
            f"{e['cost_usd']:.6f}",
            _feedback_mark(e.get("feedback")),
            (reason or "")[:80],
        )
    out().print(table)


def _feedback_mark(feedback: dict[str, Any] | None) -> str:
    if feedback is None:
        return ""
    return "good" if feedback["good"] else "bad"


def training_report(training: Any, written: Any) -> None:
    """What `orchestra train-complexity` learned from, how it measured, and where it wrote."""
    found, report = training.feedback, training.report
    out().print(
        f"feedback: {found.judged} judged request(s), {len(found.rows)} used "
        f"({found.positives} where the local tier failed, {len(found.rows) - found.positives} "
        f"where it was enough; {found.from_prompt} recomputed from kept prompts)"
    )
    for reason, n in found.skipped.most_common():
        out().print(f"  skipped {n}: {reason}")
    out().print(
        f"its say: {report['share']:.2f} of one shipped data source "
        f"(weight {report['weight']:g} x n / (n + {report['pseudo_count']:g}))"
    )
    means = report.get("mean_score", {})
    if "feedback_rows" in means:
        fb, shipped = means["feedback_rows"], means["shipped_rows"]
        out().print(
            f"mean score: your prompts {fb['base']:.3f} -> {fb['retrained']:.3f}, "
            f"shipped data {shipped['base']:.3f} -> {shipped['retrained']:.3f}"
        )
    if "cv" in report:
        cv = report["cv"]
        out().print(
            f"held-out check ({cv['folds']}-fold) AUC on your judged prompts: "
            f"base {cv['auc_base']:.3f} -> retrained {cv['auc_retrained']:.3f}"
        )
    elif "cv_skipped" in report:
        out().print(f"held-out check skipped: {report['cv_skipped']}")
    changes = report.get("weight_changes", {})
    if changes:
        moved = ", ".join(f"{k} {v['retrained'] - v['base']:+.3f}" for k, v in changes.items())
        out().print(f"biggest weight changes: {moved}")
    if written is None:
        out().print("dry run: nothing written")
    else:
        out().print(f"wrote {written}; the complexity agent uses it from its next start")


def migrate_report(source: Any, report: dict[str, Any]) -> None:
    """What `orchestra store migrate` copied, table by table."""
    if report["source"] is None:
        out().print(f"{source}: nothing to copy (the store is empty)")
        return
    if report["already_copied"]:
        out().print(f"{source}: already copied to this database; nothing copied again")
        return
    # A line of its own, not the table's title: a title wraps at the table's width, cutting
    # the path in two.
    out().print(f"copied from {source}", soft_wrap=True)
    table = _table()
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in report["copied"].items():
        table.add_row(name, str(count))
    out().print(table)


def history(entries: Sequence[dict[str, Any]], *, as_json: bool) -> None:
    """`orchestra history`: one JSON object per request, or the table."""
    if not as_json:
        history_table(entries)
        return
    for entry in entries:
        print(json.dumps(entry, ensure_ascii=False))


def spend(summary: dict[str, Any], *, as_json: bool) -> None:
    """`orchestra spend`: one JSON object, or the table."""
    if as_json:
        print(json.dumps(summary))
    else:
        spend_table(summary)


def spend_table(summary: dict[str, Any]) -> None:
    def budget(value: float | None) -> str:
        return "no limit" if value is None else f"${value:.2f}"

    out().print(f"today      ${summary['today_usd']:.6f} of {budget(summary['daily_budget_usd'])}")
    out().print(
        f"this month ${summary['month_usd']:.6f} of {budget(summary['monthly_budget_usd'])}"
    )
    out().print(
        f"all time   ${summary['total_usd']:.6f} over {summary['answered_requests']} answers"
    )
    if zone := summary.get("timezone"):
        out().print(f"calendar   days in {zone} (the store's)")
    if summary.get("degraded"):
        at = summary.get("known_at")
        known = (
            f"shared totals as read at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}"
            if at
            else "no shared totals read yet"
        )
        out().print(
            f"degraded   the database is unreachable: {known}, plus "
            f"{summary.get('spill_pending', 0)} writes waiting in the spill file"
        )
    if aside := summary.get("spill_kept_aside"):
        out().print(
            f"kept aside {aside} spilled writes the database refused are kept in the spill file"
            " (records and charges not in the shared totals): see the log"
        )
    if summary["month_by_model"]:
        table = _table(title="this month by model")
        for column in ("model", "tier", "requests", "tokens in/out", "cost $"):
            table.add_column(column)
        for row in summary["month_by_model"]:
            table.add_row(
                row["model"],
                row["tier"],
                str(row["requests"]),
                f"{row['prompt_tokens']}/{row['completion_tokens']}",
                f"{row['cost_usd']:.6f}",
            )
        out().print(table)
