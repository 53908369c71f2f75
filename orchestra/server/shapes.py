"""OpenAI's chat shapes: a request body in, `chat.completion` / `chat.completion.chunk` out.

Orchestra's hints ride in an `orchestra` object of the body (what the OpenAI SDK sends for
`extra_body={"orchestra": {...}}`); every answer carries its decision back in an `orchestra`
object (`decision_info`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestra.core.catalog import Catalog
from orchestra.core.decision import Decision
from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message, Request
from orchestra.core.result import Attempt, Result
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.server.errors import ApiError, bad_request
from orchestra.server.json_text import dumps

AUTO = "auto"  # the model name that lets the policy choose
# A "tool" message answers an assistant's tool call: refused with the tool calls themselves.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class Hints(BaseModel):
    """The body's `orchestra` object: Orchestra's own hints for the policy."""

    model_config = ConfigDict(extra="forbid")

    tier: Tier | None = None
    latency_ms: float | None = Field(default=None, gt=0)
    capabilities: list[str] = []
    priority: int = 0
    min_context: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class _TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]


class ChatBody(BaseModel):
    """A `POST /v1/chat/completions` body. Every parameter of OpenAI's chat API is known here,
    and accepted at its default, `null` included (the SDKs send a `None` argument as `null`).
    Those that would change the answer, in ways Orchestra cannot honour across the models it
    routes to (tools, n > 1, logprobs, stop, a JSON format, logit_bias, audio, reasoning
    effort...), are refused at any other value rather than silently dropped; those that only
    tune sampling or bookkeeping (`top_p`, `seed`, `user`...) are accepted and not passed on.
    Types are strict, as OpenAI's are: `"stream": "yes"` is refused, not read as true."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = AUTO
    messages: list[Any]  # converted by `_messages`, for errors that point at the bad part
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    orchestra: Hints = Field(default_factory=Hints)  # not a default copied for every body
    # Accepted, not passed on.
    top_p: float | None = None
    seed: int | None = None
    user: str | None = None
    safety_identifier: str | None = None  # OpenAI's successor to `user`
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    # Accepted at their defaults only.
    n: Literal[1] | None = None
    logprobs: Literal[False] | None = None
    top_logprobs: None = None
    stop: None = None
    tools: list[Any] | None = Field(default=None, max_length=0)
    tool_choice: Literal["none", "auto"] | None = None
    functions: list[Any] | None = Field(default=None, max_length=0)  # tools' older form
    function_call: Literal["none", "auto"] | None = None
    response_format: _TextFormat | None = None
    logit_bias: dict[str, Any] | None = Field(default=None, max_length=0)  # token ids: per model
    modalities: list[Literal["text"]] | None = None
    audio: None = None
    prediction: None = None
    reasoning_effort: None = None
    verbosity: None = None
    web_search_options: None = None
    moderation: None = None

    @field_validator("stream", mode="before")
    @classmethod
    def _null_stream(cls, value: Any) -> Any:
        """`"stream": null` is OpenAI's default, as if absent."""
        return False if value is None else value

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


_DEFAULTS_ONLY = frozenset(
    {
        "n", "logprobs", "top_logprobs", "stop", "tools", "tool_choice", "functions",
        "function_call", "response_format", "logit_bias", "modalities", "audio", "prediction",
        "reasoning_effort", "verbosity", "web_search_options", "moderation",
    }
)  # fmt: skip


def parse_chat(body: dict[str, Any], max_tokens: int) -> tuple[ChatBody, Request]:
    """The body, and the Orchestra request it asks for; `ApiError` 400 naming the bad part."""
    try:
        chat = ChatBody.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    cap = chat.max_completion_tokens or chat.max_tokens
    if chat.max_tokens and chat.max_completion_tokens and chat.max_tokens != cap:
        raise bad_request("give max_tokens or max_completion_tokens, not both", "max_tokens")
    if cap is not None and cap > max_tokens:
        raise bad_request(
            f"max_tokens is too large: {cap}; this server allows at most {max_tokens}",
            "max_tokens",
        )
    h = chat.orchestra
    try:
        request = Request(
            messages=_messages(chat.messages),
            model=None if chat.model == AUTO else chat.model,
            tier=h.tier,
            max_tokens=cap,
            temperature=chat.temperature,
            timeout_s=h.timeout_s,
            priority=h.priority,
            latency_ms=h.latency_ms,
            capabilities=frozenset(h.capabilities),
            min_context=h.min_context,
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    return chat, request


def _messages(raw: list[Any]) -> tuple[Message, ...]:
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object", where)
        role = _ROLES.get(m.get("role"))  # type: ignore[arg-type]
        if m.get("role") == "tool":
            raise bad_request(
                f"{where}: tool results are not supported (tool calls are not)", f"{where}.role"
            )
        if role is None:
            raise bad_request(f"{where}.role must be one of {', '.join(_ROLES)}", f"{where}.role")
        if m.get("tool_calls") or m.get("function_call"):
            raise bad_request("tool calls are not supported", f"{where}.tool_calls")
        out.append(Message(role=role, content=_text(m.get("content"), f"{where}.content")))  # type: ignore[arg-type]
    return tuple(out)


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or its text parts joined by newlines (OpenAI's list form)."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise bad_request(f"{where} must be a string or a list of parts", where)
    texts: list[str] = []
    for j, part in enumerate(content):
        if not (isinstance(part, dict) and part.get("type") == "text"):
            raise bad_request(f"{where}[{j}]: only text parts are supported", f"{where}[{j}]")
        text = part.get("text")
        if not isinstance(text, str):
            raise bad_request(f"{where}[{j}].text must be a string", f"{where}[{j}].text")
        texts.append(text)
    return "\n".join(texts)


def _invalid(exc: ValidationError) -> ApiError:
    first = exc.errors()[0]
    param = _param(first["loc"])
    if first["type"] == "extra_forbidden":
        return bad_request(f"unsupported parameter: {param}", param, code="unsupported_parameter")
    if first["loc"] and first["loc"][0] in _DEFAULTS_ONLY:
        name = str(first["loc"][0])
        return bad_request(
            f"{name} is not supported here (only its default)", name, "unsupported_parameter"
        )
    problems = "; ".join(f"{_param(e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
    return bad_request(problems, param or None)


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# -- answers -------------------------------------------------------------------------------------


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def usage(result: Result) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def finish_reason(result: Result, request: Request) -> str:
    """'content_filter' when the provider says so; 'length' when it says so or the answer used
    its whole cap (it was most likely cut: a stream Orchestra cut says nothing), else 'stop'.
    The cap is the one the call was sent with: a budget caps a call the request left uncapped."""
    said = result.finish_reason
    if said == "content_filter":
        return said
    cap = result.max_tokens if result.max_tokens is not None else request.max_tokens
    cut = said == "length" or (cap is not None and result.completion_tokens >= cap)
    return "length" if cut else "stop"


def decision_info(
    request_id: str,
    decision: Decision | None,
    verdicts: tuple[Verdict, ...],
    attempts: tuple[Attempt, ...] = (),
    result: Result | None = None,
) -> dict[str, Any]:
    """The `orchestra` object: who answered, at what cost, and the decision behind it."""
    info: dict[str, Any] = {"request_id": request_id}
    if result is not None:
        info |= {
            "model": result.model,
            "tier": result.tier.value,
            "cost_usd": result.cost_usd,
            "latency_ms": round(result.latency_ms, 3),
            "order": list(result.order),
            "created_at": result.created_at,
            "max_tokens": result.max_tokens,
            "finish_reason": result.finish_reason,
        }
    info["reason"] = decision.reason if decision is not None else None
    info["decision"] = decision.model_dump(mode="json") if decision is not None else None
    info["verdicts"] = [_verdict_json(v) for v in verdicts]
    info["attempts"] = [a.model_dump(mode="json") for a in attempts]
    return info


def _verdict_json(v: Verdict) -> dict[str, Any]:
    """`v.model_dump(mode="json")`, once per verdict object: an ambient agent's verdict is the
    same object in every request until its next sample (verdicts are frozen). The dict is
    shared: it is only encoded, never changed."""
    held = _DUMPED.get(id(v))
    if held is not None and held[0] is v:
        return held[1]
    dumped = v.model_dump(mode="json")
    if len(_DUMPED) >= 256:
        _DUMPED.clear()
    _DUMPED[id(v)] = (v, dumped)  # keeps `v` alive, so its id is not reused while held
    return dumped


_DUMPED: dict[int, tuple[Verdict, dict[str, Any]]] = {}


def result_info(result: Result) -> dict[str, Any]:
    return decision_info(
        result.request_id, result.decision, result.verdicts, result.attempts, result
    )


def completion(result: Result, request: Request) -> dict[str, Any]:
    """A `chat.completion` object, with Orchestra's `orchestra` object beside OpenAI's fields."""
    return {
        "id": completion_id(result.request_id),
        "object": "chat.completion",
        "created": int(result.created_at),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason(result, request),
            }
        ],
        "usage": usage(result),
        "system_fingerprint": None,
        "orchestra": result_info(result),
    }


def chunk(
    request_id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    *,
    finish: str | None = None,
    include_usage: bool = False,
    usage_of: Result | None = None,
    info: dict[str, Any] | None = None,
) -> str:
    """One `chat.completion.chunk` as a server-sent event. `delta=None` makes the usage chunk
    (no choices), as OpenAI sends last with `stream_options.include_usage`."""
    body: dict[str, Any] = {
        "id": completion_id(request_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if include_usage:  # OpenAI sends `usage: null` in every chunk but the last when asked
        body["usage"] = usage(usage_of) if usage_of is not None else None
    if info is not None:
        body["orchestra"] = info
    return event(body)


def event(body: dict[str, Any], name: str | None = None) -> str:
    data = dumps(body).decode()
    return f"event: {name}\ndata: {data}\n\n" if name else f"data: {data}\n\n"


DONE = "data: [DONE]\n\n"


# -- models --------------------------------------------------------------------------------------


def model_object(spec: ModelSpec | None) -> dict[str, Any]:
    """A catalog model as OpenAI's `model` object (None: `auto`), with what a client may want
    to choose by; endpoints and key names are for `GET /admin/models` only."""
    if spec is None:
        return {"id": AUTO, "object": "model", "created": 0, "owned_by": "orchestra"}
    return {
        "id": spec.name,
        "object": "model",
        "created": 0,
        "owned_by": "orchestra",
        "orchestra": {
            "tier": spec.tier.value,
            "context_window": spec.context_window,
            "input_cost_per_mtok": spec.input_cost_per_mtok,
            "output_cost_per_mtok": spec.output_cost_per_mtok,
            "capabilities": sorted(spec.capabilities),
        },
    }


def model_list(catalog: Catalog) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(None), *map(model_object, catalog)]}
