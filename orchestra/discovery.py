"""Models found rather than configured: Ollama on this machine, providers with keys in the env."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from urllib.parse import urlparse

from orchestra.config import Config
from orchestra.core.dns import first_listening, resolve_in_thread
from orchestra.core.model_spec import ModelSpec
from orchestra.core.tier import Tier
from orchestra.execution.embedded import EmbeddedModel

log = logging.getLogger("orchestra.discovery")

# (environment variable, catalog name, LiteLLM model): one sensible, cheap model per provider.
ENV_PROVIDERS: tuple[tuple[str, str, str], ...] = (
    ("OPENAI_API_KEY", "gpt-4o-mini", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "claude-haiku-4-5", "anthropic/claude-haiku-4-5"),
    ("GEMINI_API_KEY", "gemini-2.5-flash", "gemini/gemini-2.5-flash"),
    ("GROQ_API_KEY", "groq-gpt-oss-20b", "groq/openai/gpt-oss-20b"),
)

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def env_provider_models(environ: Mapping[str, str] | None = None) -> list[ModelSpec]:
    """A cloud model for each provider whose API key is set (prices from LiteLLM's table)."""
    env = os.environ if environ is None else environ
    return [
        ModelSpec(name=name, tier=Tier.CLOUD, litellm_model=model, api_key_env=var)
        for var, name, model in ENV_PROVIDERS
        if env.get(var)
    ]


async def ollama_models(url: str, timeout_s: float = 0.5) -> list[ModelSpec]:
    """The models an Ollama server lists at `/api/tags`; none if it does not answer in time."""
    address = await _listening(url, timeout_s)
    if address is None:
        return []
    import httpx

    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"[{address}]" if ":" in address else address
    # At the address already resolved: httpx's own lookup could not be cut short.
    headers = {"Host": parts.netloc.rpartition("@")[2]}
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    base = parts.path.rstrip("/")
    try:
        # A CA bundle only for https: loading one costs 35 ms of a cold start for nothing.
        verify = not url.startswith("http://")
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False, verify=verify) as client:
            response = await client.get(
                f"{parts.scheme}://{shown}:{port}{base}/api/tags",
                headers=headers,
                extensions=extensions,
            )
            response.raise_for_status()
            listed = response.json().get("models", [])
    except (httpx.HTTPError, ValueError) as exc:
        log.debug("no Ollama at %s: %s", url, exc)
        return []
    host = parts.hostname or ""
    tier = Tier.LOCAL if host in _LOOPBACK else Tier.EDGE
    specs = []
    for entry in listed:
        name = entry.get("name") or entry.get("model")
        if not name:
            continue
        size = entry.get("size")
        specs.append(
            ModelSpec(
                name=f"ollama/{name}",
                tier=tier,
                litellm_model=f"ollama_chat/{name}",
                api_base=url,
                input_cost_per_mtok=0.0,
                output_cost_per_mtok=0.0,
                size_mb=round(size / 1e6, 1) if isinstance(size, int | float) else None,
            )
        )
    return specs


async def _listening(url: str, timeout_s: float) -> str | None:
    """The address at which something accepts connections for `url`'s host and port, or None.
    Most machines run no Ollama: a refused connect then answers in microseconds, where an HTTP
    client would cost a cold `orchestra run` ~40 ms of CPU to set up. The name is looked up in
    a thread of its own: a lookup stuck on a black-holed DNS server is abandoned at the
    deadline, not waited for when the loop ends."""
    parts = urlparse(url)
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        async with asyncio.timeout(timeout_s):
            return await first_listening(await resolve_in_thread(host, port), port, host)
    except (OSError, TimeoutError, ValueError) as exc:
        log.debug("no Ollama at %s: %s", url, exc)
        return None


async def discover_catalog(config: Config, embedded: EmbeddedModel | None) -> list[ModelSpec]:
    """The catalog in priority order: configured models, discovered ones, then the embedded model.

    A configured model wins over a discovered one of the same name. The embedded model comes last
    so that any other local model is tried before it: it is the last resort that always works.
    """
    specs = list(config.models)
    discovered: list[ModelSpec] = []
    if config.discover_ollama:
        discovered += await ollama_models(config.discovery.ollama_url)
    if config.discover_env_providers:
        discovered += env_provider_models()
    seen = {s.name for s in specs}
    for spec in discovered:
        if spec.name not in seen:
            specs.append(spec)
            seen.add(spec.name)
    if embedded is not None:
        specs.append(embedded.spec())
    if any(s.input_cost_per_mtok is None or s.output_cost_per_mtok is None for s in specs):
        from orchestra.spend.prices import with_prices

        specs = await asyncio.to_thread(lambda: [with_prices(s) for s in specs])
    return specs
