"""A stdlib-only, OpenAI-compatible HTTP stub that plays an LLM provider (healthy or faulty).

    with StubProvider(Behaviour(kind="status", status=429, retry_after_s=1)) as stub:
        ...  # point a client at stub.url; stub.requests records what it was sent

The server binds 127.0.0.1 only and runs in a daemon thread (one thread per connection), so it
serves sync and async tests alike without touching the test's event loop. HTTP/1.1 keep-alive is
supported; streaming uses chunked transfer encoding. `stop()` returns promptly even while a
"hang", "slow" or "trickle" request is open: it shuts down every open client socket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args

BehaviourKind = Literal[
    "healthy", "slow", "status", "hang", "drop_stream", "malformed", "trickle", "empty_stream"
]

_MALFORMED_JSON = b'{"id": "chatcmpl-stub", "object": "chat.completion", "choices": [{"index'
_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("request_forbidden", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What the stub does with a chat request.

    kind:
        healthy      answer `reply` (after `delay_s`, if set).
        slow         same as healthy; `delay_s` is the point of it.
        status       answer HTTP `status` with an OpenAI-style error body (and Retry-After).
                     With `echo_request`, the error message also carries the request's raw JSON
                     body and its Authorization header, as badly behaved providers echo your
                     prompt and key back in an error.
        hang         read the request, never answer (until the server stops).
        drop_stream  send `chunks_before_drop` content chunks, then close the socket (no [DONE]);
                     a non-streaming request gets half of its Content-Length, then the close.
        malformed    200 with a body that is not valid JSON (streaming: an SSE event that is not).
        trickle      streaming: `chunks_before_drop` content chunks, then only SSE comments
                     (": keep-alive") every `trickle_every_s`, forever; non-streaming: 200 with
                     the real body's Content-Length, then the body one byte every
                     `trickle_every_s`. Either way, a per-read timeout never fires while the
                     whole answer never (or only very slowly) arrives. Ends when the client
                     disconnects or the server stops.
        empty_stream 200 with no content: streaming, `data: [DONE]` and no chunk at all;
                     non-streaming, {"id", "object": "chat.completion", "choices": []} (no usage).
    `delay_s` is waited before the first byte for every kind except "hang".

    The reply is `reply`, or "word " * `reply_words` when that is set (N words: N tokens), cut to
    the request's `max_tokens` words when it asks for fewer (an honest provider stops there).

    Usage (answering kinds): the stub counts tokens as whitespace-separated words: prompt_tokens
    is the number of words in every message's text content (string contents, and the "text" of
    list-of-parts contents; roles and other fields do not count), completion_tokens the number of
    words in the reply, total_tokens their sum. "What is the capital of France?" + "Paris" is
    6 + 1. A non-streaming reply carries it as `usage`; a stream sends it in a last chunk with
    empty `choices` when the request asks for `stream_options.include_usage`.
    `usage=False` omits it everywhere (a provider that reports no usage); `usage_scale`
    multiplies the reported completion_tokens (floored; 0.5 under-reports by half).
    `ignore_cap=True` answers the whole reply whatever `max_tokens` asks (a provider that runs
    past its cap), and reports it. `usage_report`, when set, is sent as the usage object as it
    is, instead of the counts (a dishonest provider: zeros, negatives, absurd numbers, a field
    missing). `finish_reason` is the reason the answer says it stopped.

    `chunk_delay_s` paces a stream: the stub waits that long before each content chunk after
    the first, as a provider generating the answer does, and stops generating as soon as a write
    fails (the client left): what it bills (`StubProvider.served`) is what it generated.
    """

    kind: BehaviourKind = "healthy"
    reply: str = "Paris"
    delay_s: float = 0.0
    status: int = 500
    error_message: str = "stub error"
    retry_after_s: float | None = None
    chunks_before_drop: int = 2
    usage: bool = True
    usage_scale: float = 1.0
    trickle_every_s: float = 0.5
    echo_request: bool = False
    reply_words: int | None = None
    ignore_cap: bool = False
    finish_reason: str = "stop"
    usage_report: Mapping[str, Any] | None = None
    chunk_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(BehaviourKind):
            raise ValueError(f"unknown behaviour kind {self.kind!r}")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")
        if self.chunks_before_drop < 0:
            raise ValueError("chunks_before_drop must be >= 0")
        if not 0 <= self.usage_scale < float("inf"):
            raise ValueError("usage_scale must be a finite number >= 0")
        if not 0 < self.trickle_every_s < float("inf"):
            raise ValueError("trickle_every_s must be a finite number > 0")
        if self.echo_request and self.kind != "status":
            raise ValueError('echo_request applies to kind "status" only')
        if self.reply_words is not None and self.reply_words < 0:
            raise ValueError("reply_words must be >= 0")
        if not 0 <= self.chunk_delay_s < float("inf"):
            raise ValueError("chunk_delay_s must be a finite number >= 0")

    @property
    def text(self) -> str:
        """The reply the stub sends: `reply`, or "word " * `reply_words` when that is set."""
        return self.reply if self.reply_words is None else "word " * self.reply_words


@dataclass(frozen=True, slots=True)
class Served:
    """What a stub served, as a provider would bill it (its own word counts, whatever usage it
    reported): `calls` chat requests received; `prompt_tokens` of the requests it answered with
    a 200 (an error status or a hang bills nothing); `completion_tokens` it generated: a whole
    answer's words, or a stream's words up to the chunk it was writing when the client left."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost_usd(self, input_cost_per_mtok: float, output_cost_per_mtok: float) -> float:
        """The bill at these prices (USD per million tokens)."""
        return (
            self.prompt_tokens * input_cost_per_mtok + self.completion_tokens * output_cost_per_mtok
        ) / 1e6


class StubProvider:
    """An OpenAI-compatible provider on 127.0.0.1 whose behaviour tests control.

    Serves POST /v1/chat/completions (plain and SSE streaming), GET /v1/models and GET /health.
    `behaviour` applies to every later chat request; `enqueue()` scripts one-shot behaviours that
    are used first, in order. `requests` logs each chat request as
    {"path", "headers" (lower-case names), "body" (parsed JSON)}. The stub can be stopped and
    started again; it keeps its port, so a test can take a provider down and bring it back.
    `served` is what it would bill, counted by the stub itself (thread-safe): the ground truth a
    test holds a ledger to.
    """

    def __init__(
        self, behaviour: Behaviour | None = None, *, model: str = "stub", port: int = 0
    ) -> None:
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._port = port
        self._lock = threading.Lock()
        self._behaviour = behaviour or Behaviour()
        self._queue: deque[Behaviour] = deque()
        self._served = Served()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (0 until first started, unless one was given)."""
        return self._port

    @property
    def url(self) -> str:
        """The OpenAI base URL, e.g. http://127.0.0.1:54321/v1."""
        if not self._port:
            raise RuntimeError("StubProvider has no port until start() is called")
        return f"http://127.0.0.1:{self._port}/v1"

    @property
    def behaviour(self) -> Behaviour:
        with self._lock:
            return self._behaviour

    @behaviour.setter
    def behaviour(self, value: Behaviour) -> None:
        with self._lock:
            self._behaviour = value

    @property
    def running(self) -> bool:
        return self._server is not None

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Use these for the next chat requests, one each, before falling back to `behaviour`."""
        with self._lock:
            self._queue.extend(behaviours)

    def next_behaviour(self) -> Behaviour:
        """Consume the behaviour for one chat request (a queued one first)."""
        with self._lock:
            return self._queue.popleft() if self._queue else self._behaviour

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            self._served = dataclasses.replace(self._served, calls=self._served.calls + 1)

    @property
    def served(self) -> Served:
        """What the stub has served so far (see `Served`)."""
        with self._lock:
            return self._served

    def bill(self, *, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Add to `served` (the handler calls this as it answers)."""
        with self._lock:
            s = self._served
            self._served = dataclasses.replace(
                s,
                prompt_tokens=s.prompt_tokens + prompt_tokens,
                completion_tokens=s.completion_tokens + completion_tokens,
            )

    def start(self) -> StubProvider:
        """Bind and serve in a daemon thread; returns self. A no-op if already running."""
        if self._server is not None:
            return self
        server = _Server(("127.0.0.1", self._port), _Handler)
        server.stub = self
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stub-provider-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection (hanging ones included)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.stopping.set()
        server.shutdown()
        server.close_clients()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2)

    def __enter__(self) -> StubProvider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> StubProvider:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"port={self._port}" if self.running else "stopped"
        return f"StubProvider({self.behaviour.kind!r}, {state})"


def refused_url() -> str:
    """An http://127.0.0.1:<port>/v1 URL where nothing listens (a port bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks client sockets so stop() can cut them."""

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: hundreds of clients connecting at once (a load test)
    # would see their SYNs dropped and retried seconds later, which no real provider does.
    request_queue_size = 1024
    stub: StubProvider

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._clients_lock:
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def close_clients(self) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients timing out or vanishing is the point of this server."""


class _Handler(BaseHTTPRequestHandler):
    """One connection; serves requests on it until the client or the server closes it."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def version_string(self) -> str:
        return "OrchestraStub/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line."""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate small writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            super().handle()

    # --- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            model = {
                "id": self.server.stub.model,
                "object": "model",
                "created": 0,
                "owned_by": "orchestra-stub",
            }
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_error(404, f"no route for GET {path}")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path != "/v1/chat/completions":
            self._send_error(404, f"no route for POST {path}")
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._send_error(400, "request body must be a JSON object")
            return
        stub = self.server.stub
        stub.record(
            {
                "path": path,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body": body,
            }
        )
        self._chat(stub.next_behaviour(), body, raw)

    # --- behaviours ------------------------------------------------------------------------

    def _chat(self, behaviour: Behaviour, body: dict[str, Any], raw: bytes) -> None:
        stopping = self.server.stopping
        if behaviour.kind == "hang":
            stopping.wait()
            self.close_connection = True
            return
        if behaviour.delay_s and stopping.wait(behaviour.delay_s):
            self.close_connection = True
            return
        stream = bool(body.get("stream"))
        if behaviour.kind == "status":
            message = behaviour.error_message
            if behaviour.echo_request:
                auth = self.headers.get("Authorization")
                message += f" (request: {raw.decode('utf-8', 'replace')}; Authorization: {auth})"
            self._send_error(behaviour.status, message, behaviour.retry_after_s)
            return
        self.server.stub.bill(prompt_tokens=_prompt_words(body))
        if behaviour.kind == "malformed":
            self._send_malformed(stream)
        elif behaviour.kind == "empty_stream":
            self._send_empty(stream)
        elif stream:
            self._stream(_capped(behaviour, body), body)
        else:
            self._complete(_capped(behaviour, body), body)

    def _complete(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        payload: dict[str, Any] = {
            "id": _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.server.stub.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": behaviour.text},
                    "logprobs": None,
                    "finish_reason": behaviour.finish_reason,
                }
            ],
        }
        if behaviour.usage:
            payload["usage"] = _usage(body, behaviour)
        self.server.stub.bill(completion_tokens=_words(behaviour.text))
        if behaviour.kind not in ("drop_stream", "trickle"):
            self._send_json(200, payload)
            return
        data = json.dumps(payload).encode()
        self._start(200, "application/json", {"Content-Length": str(len(data))})
        if behaviour.kind == "drop_stream":
            self.wfile.write(data[: len(data) // 2])
            self._drop()
            return
        for i in range(len(data)):
            if self._stopped_after(behaviour.trickle_every_s):
                return
            self.wfile.write(data[i : i + 1])

    def _stream(self, behaviour: Behaviour, body: dict[str, Any]) -> None:
        base = {
            "id": _new_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or self.server.stub.model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice]}

        dropping = behaviour.kind in ("drop_stream", "trickle")
        wanted = behaviour.chunks_before_drop + 1 if dropping else 2
        pieces = _split(behaviour.text, wanted)
        if dropping:
            pieces = (pieces + [""] * wanted)[: behaviour.chunks_before_drop]
        self._start(
            200,
            "text/event-stream; charset=utf-8",
            {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"},
        )
        for i, piece in enumerate(pieces):
            if i and behaviour.chunk_delay_s and self._stopped_after(behaviour.chunk_delay_s):
                return
            # Billed once generated, before it is written: a write to a client that left may
            # still succeed (into the socket's buffer), and the next one fails.
            self.server.stub.bill(completion_tokens=_words(piece))
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            self._event(chunk(delta))
        if behaviour.kind == "trickle":
            while not self._stopped_after(behaviour.trickle_every_s):
                self._write_chunk(b": keep-alive\n\n")
            return
        if dropping:
            self._drop()
            return
        self._event(chunk({}, behaviour.finish_reason))
        if behaviour.usage and (body.get("stream_options") or {}).get("include_usage"):
            self._event({**base, "choices": [], "usage": _usage(body, behaviour)})
        self._event("[DONE]")
        self._write_chunk(b"")

    def _send_empty(self, stream: bool) -> None:
        if not stream:
            self._send_json(200, {"id": _new_id(), "object": "chat.completion", "choices": []})
            return
        self._start(
            200,
            "text/event-stream; charset=utf-8",
            {"Transfer-Encoding": "chunked", "Cache-Control": "no-cache"},
        )
        self._event("[DONE]")
        self._write_chunk(b"")

    def _send_malformed(self, stream: bool) -> None:
        if not stream:
            self._start(200, "application/json", {"Content-Length": str(len(_MALFORMED_JSON))})
            self.wfile.write(_MALFORMED_JSON)
            return
        self._start(200, "text/event-stream; charset=utf-8", {"Transfer-Encoding": "chunked"})
        self._write_chunk(b"data: " + _MALFORMED_JSON + b"\n\n")
        self._event("[DONE]")
        self._write_chunk(b"")

    # --- wire helpers ----------------------------------------------------------------------

    def _start(self, status: int, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._start(
            status, "application/json", {"Content-Length": str(len(data)), **(headers or {})}
        )
        self.wfile.write(data)

    def _send_error(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        err_type, code = _ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        headers = {}
        if retry_after_s is not None:
            headers["Retry-After"] = f"{retry_after_s:g}"
            headers["retry-after-ms"] = str(round(retry_after_s * 1000))
        payload = {"error": {"message": message, "type": err_type, "param": None, "code": code}}
        self._send_json(status, payload, headers)

    def _event(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self._write_chunk(f"data: {data}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk; empty data writes the terminating chunk."""
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _stopped_after(self, seconds: float) -> bool:
        """Wait; True (and the connection is to close) if the server stopped meanwhile."""
        if self.server.stopping.wait(seconds):
            self.close_connection = True
            return True
        return False

    def _drop(self) -> None:
        """Close the connection mid-body, as a crashed upstream would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _new_id() -> str:
    return f"chatcmpl-stub-{uuid.uuid4().hex[:24]}"


def _capped(behaviour: Behaviour, body: dict[str, Any]) -> Behaviour:
    """The behaviour with its reply cut to the request's `max_tokens` words, as an honest
    provider stops at the cap it is given (unless it `ignore_cap`)."""
    if behaviour.ignore_cap:
        return behaviour
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if not isinstance(cap, int) or isinstance(cap, bool) or _words(behaviour.text) <= cap:
        return behaviour
    kept = "".join(re.findall(r"\s*\S+\s*", behaviour.text)[:cap])
    return dataclasses.replace(behaviour, reply=kept, reply_words=None)


def _words(text: str) -> int:
    return len(text.split())


def _usage(body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
    """Word counts of the prompt (every message's text) and the reply (times `usage_scale`), or
    the `usage_report` to send instead."""
    if behaviour.usage_report is not None:
        return dict(behaviour.usage_report)
    prompt = _prompt_words(body)
    # Floored; the epsilon keeps e.g. 100 * 0.57 (56.99999999999999) at 57.
    completion = math.floor(_words(behaviour.text) * behaviour.usage_scale + 1e-9)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _prompt_words(body: dict[str, Any]) -> int:
    """The words of every message's text content (string contents, and list parts' "text")."""
    prompt = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            prompt += _words(content)
        elif isinstance(content, list):
            prompt += sum(
                _words(str(part.get("text", ""))) for part in content if isinstance(part, dict)
            )
    return prompt


def _split(text: str, at_least: int) -> list[str]:
    """Split into word pieces (spacing kept); halve the longest until there are `at_least`."""
    pieces = re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
    while len(pieces) < at_least:
        i = max(range(len(pieces)), key=lambda j: len(pieces[j]), default=None)
        if i is None or len(pieces[i]) < 2:
            break
        half = len(pieces[i]) // 2
        pieces[i : i + 1] = [pieces[i][:half], pieces[i][half:]]
    return pieces
