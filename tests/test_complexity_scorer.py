"""Contract tests for the offline prompt-complexity scorer (speed lives in bench/complexity.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.agents.complexity.scorer import (
    DEFAULT_MODEL,
    SIGNAL_NAMES,
    Scorer,
    load_scorer,
    score,
    signals,
)

REPO = Path(__file__).resolve().parents[1]
HARD = (
    "A tank holds 1,250 litres. Pipe A fills it at 12.5 L/min and pipe B drains it at 4 L/min. "
    "If both are opened when the tank is 40% full, then after 15 minutes pipe B is closed, how "
    "many more minutes until the tank is full? Then write a Python function `solve(v, a, b)` "
    "that returns the time, and prove that it is O(1):\n```python\ndef solve(v, a, b):\n"
    "    return (v * 0.6 - 15 * (a - b)) / a\n```"
)


def test_shipped_artefact_has_provenance() -> None:
    data = json.loads(DEFAULT_MODEL.read_text(encoding="utf-8"))
    assert data["features"] and len(data["weights"]) == len(data["features"])
    assert set(data["features"]) <= set(SIGNAL_NAMES)
    for key in ("data", "trained", "labels", "method", "seed"):
        assert key in data
    assert DEFAULT_MODEL.stat().st_size < 64_000


def test_signals_are_named_finite_floats() -> None:
    sig = signals(HARD)
    assert tuple(sig) == SIGNAL_NAMES
    assert all(isinstance(v, float) and math.isfinite(v) for v in sig.values())
    assert sig["log_numbers"] > 0 and sig["math_ops"] > 0 and sig["code_marks"] > 0


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_score_in_unit_interval_for_any_text(prompt: str) -> None:
    value = score(prompt)
    assert isinstance(value, float)
    assert 0.0 <= value <= 1.0


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
@settings(max_examples=100, deadline=None)
def test_signals_total_for_any_text(prompt: str) -> None:
    assert all(math.isfinite(v) for v in signals(prompt).values())


@pytest.mark.parametrize("prompt", ["", " ", "\n\n\t", "?", "0", "\x00\ud7ff", "é" * 3])
def test_edge_case_strings(prompt: str) -> None:
    assert 0.0 <= score(prompt) <= 1.0


def test_very_long_prompt() -> None:
    long = (HARD + " ") * 2_000  # ~1 MB
    value = score(long)
    assert 0.0 <= value <= 1.0


def test_deterministic_across_calls_and_instances() -> None:
    first = [score(p) for p in ("hi", HARD, "")]
    again = [Scorer.load(DEFAULT_MODEL).score(p) for p in ("hi", HARD, "")]
    assert first == again == [score(p) for p in ("hi", HARD, "")]


def test_save_load_round_trip(tmp_path: Path) -> None:
    original = load_scorer()
    path = tmp_path / "model.json"
    original.save(path)
    copy = Scorer.load(path)
    assert copy.features == original.features
    assert copy.meta == original.meta
    for p in ("hi", HARD, "", "Which of the following is a mammal?"):
        assert copy.score(p) == original.score(p)


def test_load_scorer_is_cached() -> None:
    assert load_scorer() is load_scorer()
    assert load_scorer(DEFAULT_MODEL) is load_scorer(str(DEFAULT_MODEL))


def test_hard_prompt_beats_greeting() -> None:
    assert score(HARD) > score("hi")
    multi_step = (
        "Janet is 3 times as old as her son. In 12 years she will be twice as old as he will "
        "be then. How old was Janet when her son was born?"
    )
    assert score(multi_step) > score("hi")
    assert score(multi_step) > score("Write a short poem about the sea.")


def test_hand_built_scorer() -> None:
    s = Scorer(["log_words"], [2.0], -1.0, mean=[1.0], scale=[0.5], meta={"note": "x"})
    z = -1.0 + 2.0 * (signals("a b c")["log_words"] - 1.0) / 0.5
    assert s.score("a b c") == pytest.approx(1 / (1 + math.exp(-z)))
    assert Scorer.from_dict(s.to_dict()).score("a b c") == s.score("a b c")
    with pytest.raises(ValueError):
        Scorer(["a", "b"], [1.0], 0.0)


def test_train_entry_point_learns_direction() -> None:
    sys.path.insert(0, str(REPO))
    from tools.train_complexity import train

    easy = [(f"Say hello to {name}.", 0.0) for name in ("Ann", "Bo", "Cy", "Di", "Ed", "Flo")]
    hard = [
        (f"Solve {a}x^2 + {b}x - {a + b} = 0, then compute the sum of the roots times {b}.", 1.0)
        for a, b in ((2, 3), (5, 7), (11, 13), (4, 9), (6, 1), (8, 15))
    ]
    model = train(easy + hard)
    assert model.score(hard[0][0]) > model.score(easy[0][0])
    assert all(0.0 <= model.score(p) <= 1.0 for p, _ in easy + hard)
