"""Which models Orchestra calls through the OpenAI SDK itself rather than through LiteLLM.

A model that names an OpenAI-compatible server (`openai/...` with an `api_base`: vLLM,
llama.cpp, LM Studio, Ollama's `/v1`, a box on the LAN, a gateway) is called with the official
`openai` SDK directly. LiteLLM would make the same request through the same SDK, adding ~2 ms of
CPU a call (building it, then pricing and logging the answer: `bench/overhead.py`), which is
more than everything else Orchestra does for a request. Every other model goes through LiteLLM,
and so do these when a model sets `via_litellm`, or when LiteLLM callbacks are configured (a
user's Langfuse, say, expects to see every call).
"""

from __future__ import annotations

import os
import sys

from orchestra.core.model_spec import ModelSpec
from orchestra.execution.backend import Endpoint

KEYLESS = "no-key"  # sent to self-hosted servers that want none (any value works for them)

_CALLBACK_LISTS = ("callbacks", "success_callback", "_async_success_callback", "input_callback")


def called_directly(spec: ModelSpec) -> bool:
    """`spec` is called through the OpenAI SDK, not LiteLLM (see the module's docstring)."""
    return (
        not spec.via_litellm
        and not spec.embedded
        and bool(spec.api_base)
        and spec.litellm_model.startswith("openai/")
        and not litellm_listened()
    )


def litellm_listened() -> bool:
    """LiteLLM is imported and has callbacks configured (LiteLLM is never imported to tell)."""
    litellm = sys.modules.get("litellm")
    return litellm is not None and any(getattr(litellm, n, None) for n in _CALLBACK_LISTS)


def keyless_openai_server(spec: ModelSpec, endpoint: Endpoint) -> bool:
    """A self-hosted OpenAI-compatible server (llama.cpp, vLLM, LM Studio...) configured without
    a key: the OpenAI client refuses to call without one, unless OPENAI_API_KEY is set."""
    return (
        bool(endpoint.api_base)
        and spec.litellm_model.startswith("openai/")
        and not os.environ.get("OPENAI_API_KEY")
    )
