"""The CLI's commands answered by a running server: the same output as in-process (the same
render functions and `--json` shapes), rebuilt from the server's answers.

Nothing here imports the runtime, LiteLLM or the embedded model; pydantic (for the results the
render functions take) is imported after a streamed answer's text is printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from orchestra.cli import render
from orchestra.cli.client import Server, ServerError

if TYPE_CHECKING:
    from orchestra.core.result import Result

CHAT = "/v1/chat/completions"
# The commands a server can answer; `models` only with a token (the full catalog, endpoints and
# key names, is an admin route).
COMMANDS = frozenset({"run", "chat", "agents", "history", "spend", "models"})

log = logging.getLogger("orchestra.cli")


def run(args: argparse.Namespace, server: Server, prompt: str) -> int:
    streamed = args.stream and not args.json
    body = chat_body(args, [{"role": "user", "content": prompt}], stream=streamed)
    if streamed:
        result = stream_answer(server, body)
        print()
        render.result_footer(result)
        return 0  # as in-process: --explain goes with a whole answer
    answer = server.post(CHAT, body)
    result = result_of(answer["choices"][0]["message"]["content"] or "", answer["orchestra"],
                       answer["usage"])  # fmt: skip
    render.answer(result, as_json=args.json, explained=args.explain)
    return 0


def chat(args: argparse.Namespace, server: Server) -> int:
    if sys.stdin is None:
        return 0
    history: list[dict[str, str]] = []
    print("orchestra chat: an empty line or Ctrl-D ends it.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if not line.strip():
            break
        history.append({"role": "user", "content": line})
        print("ai> ", end="", flush=True)
        try:
            result = stream_answer(server, chat_body(args, history, stream=True))
        except ServerError as exc:
            print(f"\n[error: {exc}]")
            history.pop()
            continue
        print()
        history.append({"role": "assistant", "content": result.text})
        render.chat_footer(result)
    return 0


def agents(args: argparse.Namespace, server: Server) -> int:
    from orchestra.core.verdict import Verdict

    def verdicts() -> list[Verdict]:
        found = server.post("/v1/verdicts", {"prompt": args.prompt})["data"]
        return [Verdict.model_validate(v) for v in found]

    if args.watch:
        from rich.live import Live

        with Live(render.verdict_grid(verdicts()), console=render.out()) as live:
            shown = 1
            while args.count is None or shown < args.count:
                time.sleep(args.every)
                live.update(render.verdict_grid(verdicts()))
                shown += 1
        return 0
    if args.json:
        for v in verdicts():
            print(v.model_dump_json())
    else:
        render.verdict_table(verdicts(), title="Agents")
    return 0


def history(args: argparse.Namespace, server: Server) -> int:
    entries = server.get(f"/v1/history?limit={args.limit}")["data"]
    render.history(entries, as_json=args.json)
    return 0


def spend(args: argparse.Namespace, server: Server) -> int:
    summary = server.get("/v1/spend")
    render.spend(summary, as_json=args.json)
    return 0


def models(args: argparse.Namespace, server: Server, key_present: Any) -> int:
    from orchestra.core.model_spec import ModelSpec

    listed = server.get("/admin/models")["data"]
    specs = [ModelSpec.model_validate({k: v for k, v in m.items() if k not in ("id", "object")})
             for m in listed]  # fmt: skip
    breakers = {m["name"]: m["breaker"] for m in server.get("/status")["models"]}
    render.models(specs, key_present, breakers, as_json=args.json)
    return 0


def chat_body(
    args: argparse.Namespace, messages: list[dict[str, str]], *, stream: bool
) -> dict[str, Any]:
    """A chat completion body carrying the command's hints."""
    body: dict[str, Any] = {"model": args.model or "auto", "messages": messages, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}  # tokens for the footer
    if args.max_tokens is not None:
        body["max_tokens"] = args.max_tokens
    if args.tier:
        body["orchestra"] = {"tier": args.tier}
    return body


def stream_answer(server: Server, body: dict[str, Any]) -> Result:
    """Print the answer's text as it arrives; its result once it has ended."""
    parts: list[str] = []
    info: dict[str, Any] | None = None
    usage: dict[str, Any] = {}
    for name, event in server.events(CHAT, body):
        if name == "error":  # after the first text: the failure, as the runtime raised it
            error = event.get("error") or {}
            extra = error.get("orchestra") or {}
            raise ServerError(
                str(error.get("message")),
                code=str(error.get("code")),
                request_id=extra.get("request_id"),
                attempts=extra.get("attempts") or [],
            )
        for choice in event.get("choices") or ():
            if text := (choice.get("delta") or {}).get("content"):
                parts.append(text)
                print(text, end="", flush=True)
        usage = event.get("usage") or usage
        info = event.get("orchestra") or info
    if info is None:
        raise ServerError("the server's stream ended without its result", code="stream_broken",
                          request_id=None, attempts=[])  # fmt: skip
    return result_of("".join(parts), info, usage)


def result_of(text: str, info: dict[str, Any], usage: dict[str, Any]) -> Result:
    """The `Result` the server's `orchestra` object and usage describe."""
    from orchestra.core.result import Result

    return Result.model_validate(
        {
            "request_id": info["request_id"],
            "text": text,
            "model": info["model"],
            "tier": info["tier"],
            "cost_usd": info["cost_usd"],
            "latency_ms": info["latency_ms"],
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "decision": info["decision"],
            "verdicts": info["verdicts"],
            "attempts": info["attempts"],
            "order": info["order"],
            "created_at": info.get("created_at", time.time()),
            "max_tokens": info.get("max_tokens"),
            "finish_reason": info.get("finish_reason"),
        }
    )
