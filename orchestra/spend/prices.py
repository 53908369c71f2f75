"""Model prices: the catalog's own, else LiteLLM's bundled table, read without importing LiteLLM."""

from __future__ import annotations

import importlib.util
import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from orchestra.core.model_spec import ModelSpec

log = logging.getLogger("orchestra.pricing")

_TABLE = "model_prices_and_context_window_backup.json"


@cache
def litellm_price_table() -> dict[str, Any]:
    """LiteLLM's bundled price table (3 MB of JSON, ~30 ms; importing LiteLLM takes seconds)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / _TABLE
    try:
        table: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return table
    except (OSError, ValueError) as exc:
        log.warning("cannot read LiteLLM's price table at %s: %s", path, exc)
        return {}


def table_price(litellm_model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens from the table, or None when it is not listed."""
    table = litellm_price_table()
    _, _, bare = litellm_model.partition("/")
    for key in (litellm_model, bare):
        entry = table.get(key) if key else None
        if entry and "input_cost_per_token" in entry and "output_cost_per_token" in entry:
            return entry["input_cost_per_token"] * 1e6, entry["output_cost_per_token"] * 1e6
    return None


def with_prices(spec: ModelSpec) -> ModelSpec:
    """The spec with both prices set when the table knows them (configured prices win)."""
    if spec.input_cost_per_mtok is not None and spec.output_cost_per_mtok is not None:
        return spec
    found = table_price(spec.litellm_model)
    if found is None:
        return spec
    return spec.model_copy(
        update={
            "input_cost_per_mtok": spec.input_cost_per_mtok
            if spec.input_cost_per_mtok is not None
            else found[0],
            "output_cost_per_mtok": spec.output_cost_per_mtok
            if spec.output_cost_per_mtok is not None
            else found[1],
        }
    )
