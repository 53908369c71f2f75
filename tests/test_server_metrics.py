"""`GET /metrics`: Prometheus's text format, counting what happened."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from conftest import model_toml
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import serve

from orchestra.testing import Behaviour, StubProvider

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
# One exposition line: a comment, or `name{labels} value` (text format 0.0.4).
LINE = re.compile(
    r"# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+"
    r'|[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"(-?[0-9.e+-]+|[+-]Inf|NaN)"
)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_parse_and_count_what_happened(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    extra = "[budget]\ndaily_usd = 5.0\nmonthly_usd = 50.0\n"
    with StubProvider(Behaviour(kind="status", status=500)) as broken:
        config = write_config(
            model_toml("stub-cloud", stub.url), model_toml("broken", broken.url), extra=extra
        )
        with serve(config) as server:
            client = server.client()
            for _ in range(2):
                client.chat.completions.create(model="stub-cloud", messages=FRANCE)
            for _ in client.chat.completions.create(
                model="stub-cloud", messages=FRANCE, stream=True
            ):
                pass
            with pytest.raises(openai.NotFoundError):
                client.chat.completions.create(model="nope", messages=FRANCE)
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="broken", messages=FRANCE)
            with server.http() as http:
                response = http.get("/metrics")
                spend = http.get("/status").json()["spend"]
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.text
    assert text.endswith("\n")
    for line in text.splitlines():
        assert LINE.fullmatch(line), f"not an exposition line: {line!r}"
    found = samples(text)
    cloud = {"tier": "cloud", "model": "stub-cloud"}
    assert value(found, "orchestra_requests_total", **cloud, status="ok", stream="false") == 2
    assert value(found, "orchestra_requests_total", **cloud, status="ok", stream="true") == 1
    none = {"tier": "none", "model": "none", "stream": "false"}
    assert value(found, "orchestra_requests_total", **none, status="model_not_found") == 1
    assert value(found, "orchestra_requests_total", **none, status="all_candidates_failed") == 1
    assert value(found, "orchestra_request_duration_seconds_count", **cloud) == 3
    assert value(found, "orchestra_request_duration_seconds_bucket", **cloud, le="+Inf") == 3
    assert value(found, "orchestra_time_to_first_token_seconds_count", **cloud) == 1
    assert value(found, "orchestra_tokens_total", **cloud, kind="completion") == 3
    cost = value(found, "orchestra_cost_usd_total", **cloud)
    assert cost == pytest.approx(spend["today_usd"]) and cost > 0
    assert value(found, "orchestra_spend_usd", period="today") == pytest.approx(cost)
    assert value(found, "orchestra_budget_usd", period="day") == 5.0
    assert value(found, "orchestra_budget_usd", period="month") == 50.0
    assert value(found, "orchestra_requests_in_flight") == 0
    broken_open = {"model": "broken", "tier": "cloud"}
    assert value(found, "orchestra_breaker_state", **broken_open, state="closed") == 1
    assert value(found, "orchestra_breaker_state", **cloud, state="open") == 0
    agents = {dict(labels)["agent"] for (name, labels) in found if name == "orchestra_agent_state"}
    assert {"resource", "connectivity", "cost", "complexity", "privacy"} <= agents
