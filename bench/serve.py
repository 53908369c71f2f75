"""What `orchestra serve` adds over an in-process `complete()`, and how it compares with LiteLLM's
own proxy and Portkey's AI gateway, measured side by side in one run.

    python bench/serve.py [--calls 500] [--turns 8] [--concurrency 50] [--workers 1]
                          [--litellm PATH] [--portkey DIR]

Four paths to one OpenAI-compatible stub on 127.0.0.1 (in its own process, so it shares no GIL
with what is measured):

    in-process  `Orchestra.complete()` in this process (agents, policy, LiteLLM, SQLite record)
    serve       `orchestra serve` (`--workers` of them, one by default) in a subprocess: the
                same, behind HTTP, called with aiohttp (a lean client: the server's cost, not
                the OpenAI SDK's; httpx's pool alone adds a tail of a second at 50 connections)
    proxy       LiteLLM's proxy (`litellm --config ...`, from `litellm[proxy]`) in a subprocess,
                called the same way; skipped, saying why, when it cannot run here
    portkey     Portkey's AI gateway (npm `@portkey-ai/gateway`, on node) in a subprocess,
                pointed at the stub with its `x-portkey-provider` / `x-portkey-custom-host`
                headers; it routes only (no agents, no record), and checks no token of its own

Concurrency C: C callers, each starting its next call when its last one ends (a closed loop),
in turns of 5 x C calls (10 at concurrency 1), the paths taking turns. Prints requests per
second, p50/p99 latency, what the server adds over in-process, and the ratios.

`--portkey` names a folder where `npm install @portkey-ai/gateway` was run (default:
`$PORTKEY_DIR`); without one, that path is skipped, saying so.

`--litellm` names the `litellm` command of an environment with `litellm[proxy]` installed
(default: `litellm` on PATH). It pins `rich<14` while Orchestra needs `rich>=14`, so it is best
kept in its own virtualenv: `python -m venv /tmp/proxy && /tmp/proxy/bin/pip install
'litellm[proxy]==1.106.2'`, then `--litellm /tmp/proxy/bin/litellm`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from orchestra import Orchestra
from orchestra.config import load_config

PROMPT = "What is the capital of France?"
KEY = "sk-bench-0123456789abcdef"
TOKEN = "sk-bench-token-0123456789abcdef"  # both servers check a bearer token, as deployed
# The stub: one asyncio process answering every POST with the same completion (and every GET,
# the agents' probes, with {}), keep-alive on. Orchestra's `StubProvider` (a thread per
# connection) saturates near 350 req/s at 50 connections, with a tail of over a second: it
# would measure itself, not the paths.
STUB = r"""
import asyncio, json
def reply(body):
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % len(body) + body)
ANSWER = reply(json.dumps({
    "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}).encode())
PROBE = reply(b"{}")
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            size = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    size = int(line[15:])
            await reader.readexactly(size)
            writer.write(ANSWER if head.startswith(b"POST") else PROBE)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""
ORCHESTRA_TOML = """
[[models]]
name = "stub"
tier = "cloud"
litellm_model = "openai/stub"
api_base = "{url}"
api_key_env = "BENCH_KEY"
input_cost_per_mtok = 0.15
output_cost_per_mtok = 0.6

[embedded]
enabled = false
"""
PROXY_YAML = """
model_list:
  - model_name: stub
    litellm_params:
      model: openai/stub
      api_base: {url}
      api_key: os.environ/BENCH_KEY
litellm_settings:
  telemetry: false
general_settings:
  master_key: {key}
"""

Call = Callable[[], Awaitable[None]]


@dataclass
class Path_:
    """One way to the stub, and what it measured."""

    name: str
    call: Call
    latencies_ms: dict[int, list[float]] = field(default_factory=dict)
    busy_s: dict[int, float] = field(default_factory=dict)

    async def timed(self, concurrency: int, calls: int) -> None:
        """`calls` calls, `concurrency` at a time (a closed loop: each caller starts its next
        call when its last one ends), timed one by one and as a whole."""
        lat = self.latencies_ms.setdefault(concurrency, [])

        async def caller(n: int) -> None:
            for _ in range(n):
                t = time.perf_counter()
                await self.call()
                lat.append((time.perf_counter() - t) * 1000)

        share, extra = divmod(calls, concurrency)
        t = time.perf_counter()
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))
        self.busy_s[concurrency] = self.busy_s.get(concurrency, 0.0) + time.perf_counter() - t

    def rps(self, concurrency: int) -> float:
        return len(self.latencies_ms[concurrency]) / self.busy_s[concurrency]

    def pct(self, concurrency: int, q: float) -> float:
        xs = sorted(self.latencies_ms[concurrency])
        return xs[min(len(xs) - 1, int(q * len(xs)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Servers:
    """The processes a run measures against (started before, stopped after, the event loop)."""

    work: Path
    stub_url: str = ""
    serve_url: str = ""
    proxy_url: str = ""
    why_no_proxy: str = ""
    portkey_url: str = ""
    why_no_portkey: str = ""
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, litellm: str | None, portkey: str | None, workers: int = 1) -> None:
        env = {**os.environ, "BENCH_KEY": KEY, "ORCHESTRA_HOME": str(self.work / "serve-home")}
        stub = self._spawn([sys.executable, "-c", STUB], None, env, stdin=subprocess.PIPE)
        assert stub.stdout is not None
        self.stub_url = f"http://127.0.0.1:{int(stub.stdout.readline())}/v1"
        (self.work / "orchestra.toml").write_text(ORCHESTRA_TOML.format(url=self.stub_url))
        port = free_port()
        server = self._spawn(
            [sys.executable, "-m", "orchestra.cli.main", "--config",
             str(self.work / "orchestra.toml"), "serve", "--port", str(port), "--token", TOKEN,
             "--workers", str(workers)],
            self.work / "serve.log", env,
        )  # fmt: skip
        self.serve_url = f"http://127.0.0.1:{port}"
        self._start_proxy(litellm, env)
        self._start_portkey(portkey, env)
        wait_up(f"{self.serve_url}/health", server, 120, self.work / "serve.log")

    def _start_portkey(self, folder: str | None, env: dict[str, str]) -> None:
        folder = folder or os.environ.get("PORTKEY_DIR")
        script = Path(folder or ".") / "node_modules/@portkey-ai/gateway/build/start-server.js"
        node = shutil.which("node")
        if folder is None or not script.exists() or node is None:
            self.why_no_portkey = (
                "no gateway (run `npm install @portkey-ai/gateway` in a folder and pass "
                "--portkey FOLDER)"
                if node
                else "no `node` command"
            )
            return
        port, log = free_port(), self.work / "portkey.log"
        gateway = self._spawn([node, str(script), f"--port={port}", "--headless"], log, env)
        try:
            wait_up(f"http://127.0.0.1:{port}/", gateway, 60, log)
        except RuntimeError as exc:
            self.why_no_portkey = f"Portkey's gateway did not start: {exc}"
            return
        self.portkey_url = f"http://127.0.0.1:{port}"

    def _start_proxy(self, litellm: str | None, env: dict[str, str]) -> None:
        exe = litellm or shutil.which("litellm")
        if exe is None:
            self.why_no_proxy = "no `litellm` command (install litellm[proxy]; see --help)"
            return
        config = self.work / "proxy.yaml"
        config.write_text(PROXY_YAML.format(url=self.stub_url, key=TOKEN))
        port, log = free_port(), self.work / "proxy.log"
        proxy = self._spawn(
            [exe, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
             "--num_workers", "1"],
            log, {**env, "LITELLM_LOG": "ERROR"},
        )  # fmt: skip
        try:
            wait_up(f"http://127.0.0.1:{port}/health/liveliness", proxy, 120, log)
        except RuntimeError as exc:
            self.why_no_proxy = f"LiteLLM's proxy did not start: {exc}"
            return
        self.proxy_url = f"http://127.0.0.1:{port}"

    def _spawn(
        self, argv: list[str], log: Path | None, env: dict[str, str], **kw: object
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb") if log is not None else subprocess.PIPE
        err = subprocess.STDOUT if log is not None else None
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, **kw)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.stdin is not None:
                proc.stdin.close()
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.work, ignore_errors=True)


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            last = log.read_text(errors="replace").strip().splitlines()[-1:]
            proc.wait()
            raise RuntimeError(f"it exited with code {proc.returncode}: {' '.join(last)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"it was not up within {timeout_s:.0f} s (see {log})")
        time.sleep(0.2)


def http_path(
    name: str,
    client: aiohttp.ClientSession,
    url: str,
    model: str,
    headers: dict[str, str] | None = None,
) -> Path_:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}

    async def call() -> None:
        async with client.post(url, json=body, headers=headers) as response:
            response.raise_for_status()
            answer = await response.json()
        assert answer["choices"][0]["message"]["content"] == "Paris"

    return Path_(name, call)


async def measure(args: argparse.Namespace, servers: Servers) -> list[Path_]:
    os.environ["BENCH_KEY"] = KEY
    config = load_config(servers.work / "orchestra.toml")
    async with (
        Orchestra(config, db_path=servers.work / "inproc.db") as orc,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=500),
            timeout=aiohttp.ClientTimeout(total=120),
            headers={"authorization": f"Bearer {TOKEN}"},
        ) as client,
    ):
        await orc.ready()

        async def in_process() -> None:
            assert (await orc.complete(PROMPT)).text == "Paris"

        chat = "/v1/chat/completions"
        paths = [
            Path_("in-process", in_process),
            http_path("serve", client, servers.serve_url + chat, "auto"),
        ]
        if servers.proxy_url:
            paths.append(http_path("litellm proxy", client, servers.proxy_url + chat, "stub"))
        if servers.portkey_url:
            to_stub = {"x-portkey-provider": "openai", "x-portkey-custom-host": servers.stub_url,
                       "authorization": f"Bearer {KEY}"}  # fmt: skip
            paths.append(
                http_path("portkey gateway", client, servers.portkey_url + chat, "stub", to_stub)
            )
        for _ in range(30):  # warm every path: pools, caches, lazy imports
            for p in paths:
                await p.call()
        for _ in range(args.calls // 10):
            for p in paths:
                await p.timed(1, 10)
        for _ in range(args.turns):
            for p in paths:
                await p.timed(args.concurrency, args.concurrency * 5)
    return paths


def report(
    paths: list[Path_], levels: list[int], args: argparse.Namespace, why: dict[str, str]
) -> None:
    print(f"per path: {args.calls} calls at concurrency 1, in turns of 10; "
          f"{args.turns * args.concurrency * 5} at concurrency {args.concurrency}, in turns of "
          f"{args.concurrency * 5}; the paths take turns; one loopback stub")  # fmt: skip
    print(f"(machine: {os.cpu_count()} cores; stub, server and peers each in its own process)")
    base, serve = paths[0], paths[1]
    for c in levels:
        print(f"\nconcurrency {c}")
        print(f"{'':16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
        for p in paths:
            xs = p.latencies_ms[c]
            print(f"{p.name:16}{p.rps(c):10.1f}{p.pct(c, 0.5):10.2f}{p.pct(c, 0.99):10.2f}"
                  f"{statistics.fmean(xs):10.2f}")  # fmt: skip
        print(f"serve adds over in-process: p50 {serve.pct(c, 0.5) - base.pct(c, 0.5):+.2f} ms, "
              f"p99 {serve.pct(c, 0.99) - base.pct(c, 0.99):+.2f} ms; ratios serve/in-process: "
              f"p50 {serve.pct(c, 0.5) / base.pct(c, 0.5):.2f}, "
              f"p99 {serve.pct(c, 0.99) / base.pct(c, 0.99):.2f}, "
              f"req/s {serve.rps(c) / base.rps(c):.2f}")  # fmt: skip
        for peer in paths[2:]:
            print(f"ratios serve/{peer.name}: p50 {serve.pct(c, 0.5) / peer.pct(c, 0.5):.2f}, "
                  f"p99 {serve.pct(c, 0.99) / peer.pct(c, 0.99):.2f}, "
                  f"req/s {serve.rps(c) / peer.rps(c):.2f}")  # fmt: skip
    for name, reason in why.items():
        if reason:
            print(f"\n{name}: not measured: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls per path at concurrency 1")
    parser.add_argument(
        "--turns", type=int, default=8, help="turns of 5 x --concurrency calls per path"
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="`orchestra serve --workers`")
    parser.add_argument("--litellm", help="the `litellm` command of a litellm[proxy] install")
    parser.add_argument("--portkey", help="a folder with @portkey-ai/gateway installed by npm")
    args = parser.parse_args()
    servers = Servers(Path(tempfile.mkdtemp(prefix="orchestra-bench-serve-")))
    try:
        servers.start(args.litellm, args.portkey, args.workers)
        paths = asyncio.run(measure(args, servers))
    finally:
        servers.stop()
    why = {"litellm proxy": servers.why_no_proxy, "portkey gateway": servers.why_no_portkey}
    report(paths, [1, args.concurrency], args, why)


if __name__ == "__main__":
    main()
