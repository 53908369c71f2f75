"""Response JSON: orjson's bytes parse to what the standard library would have written; what
orjson refuses falls back to the standard library; a verdict's JSON is reused only for the same
verdict object."""

from __future__ import annotations

import json
import math

from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict
from orchestra.server import shapes
from orchestra.server.json_text import JsonResponse, dumps


def test_the_same_json_as_the_standard_library() -> None:
    value = {"a": [1, 2.5, None, True], "é": "Ünïcode ✓", "n": {"x": 1e-5, "y": 10**18}}
    assert json.loads(dumps(value)) == value
    plain = {"a": [1, 2.5, None, True], "é": "Ünïcode ✓", "y": 10**18}  # the same bytes too
    assert dumps(plain) == json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode()


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    huge, keyed = {"big": 10**30}, {1: "one", None: "none"}
    assert json.loads(dumps(huge)) == huge
    assert json.loads(dumps(keyed)) == {"1": "one", "null": "none"}
    assert JsonResponse(huge).body == dumps(huge)


def test_a_nan_is_written_as_null_not_as_invalid_json() -> None:
    assert json.loads(dumps({"x": math.nan})) == {"x": None}


def test_a_verdict_is_dumped_once_per_object_and_right_for_each() -> None:
    a = Verdict(agent="resource", target=Tier.LOCAL, confidence=0.3, metrics={"cpu": 1.0})
    b = a.model_copy(update={"confidence": 0.4})
    first = shapes.decision_info("r1", None, (a, b))["verdicts"]
    again = shapes.decision_info("r2", None, (a, b))["verdicts"]
    assert first == [a.model_dump(mode="json"), b.model_dump(mode="json")]
    assert again[0] is first[0] and again[1] is first[1], "the same objects: dumped once"
    other = Verdict(agent="resource", target=Tier.LOCAL, confidence=0.5)
    assert shapes.decision_info("r3", None, (other,))["verdicts"] == [other.model_dump(mode="json")]
