"""The complexity verdict as a stored detail (format 3) holds it: a list, not a dict of names.

`[at, confidence, score, state, target, signals]`, then `reason` if it is not the one the score
gives. `signals` holds the values in `SIGNALS` order: 0 (an integer) for a missing one, a float
for a present one (0.0 too), trailing zeros left out; null when the verdict has none. A verdict
this form cannot hold exactly (another agent's, extra fields or metrics) stays a dict: `pack`
checks by unpacking.
"""

from __future__ import annotations

from typing import Any

AGENT = "complexity"
# The complexity scorer's signal names when format 3 was made. Stored lists index into this:
# never reorder or remove a name; a new signal may be appended (older lists are shorter).
SIGNALS: tuple[str, ...] = (
    "log_chars", "log_words", "log_sentences", "words_per_sentence", "mean_word_len",
    "long_word_frac", "capital_frac", "log_lines", "question_marks", "log_numbers",
    "number_density", "decimals", "big_numbers", "percent", "scientific", "math_ops", "latex",
    "units", "variables", "code_marks", "symbols", "symbol_density", "compute_words",
    "explain_words", "sequence_words", "relation_words", "rate_words", "condition_words",
    "constraint_words", "negation_words", "pronouns", "math_words", "science_words", "code_words",
)  # fmt: skip
_INDEX = {name: i for i, name in enumerate(SIGNALS)}
# Positions in name order: a stored verdict's signals come back sorted, as format 2 kept them.
_BY_NAME = sorted(range(len(SIGNALS)), key=SIGNALS.__getitem__)


def reason_for(score: float) -> str:
    """The reason the complexity agent gives a score (with its shipped model)."""
    return f"complexity score {score:.2f}"


def pack(compact: dict[str, Any], at: float) -> list[Any] | None:
    """The list for a compact verdict (see `forms.compact_verdict`) and its time, or None."""
    if compact.get("agent") != AGENT:
        return None
    metrics = compact.get("metrics")
    if not isinstance(metrics, dict) or type(metrics.get("score")) is not float:
        return None
    score = metrics["score"]
    signals = metrics.get("signals")
    values = _pack_signals(signals) if signals is not None else None
    if signals is not None and values is None:
        return None
    out = [at, compact.get("confidence", 0.5), score, compact.get("state", "ok"),
           compact.get("target"), values]  # fmt: skip
    reason = compact.get("reason", "")
    if reason != reason_for(score):
        out.append(reason)
    return out if unpack(out) == {**compact, "at": at} else None


def _pack_signals(signals: Any) -> list[Any] | None:
    if not isinstance(signals, dict):
        return None
    values: list[Any] = [0] * len(SIGNALS)
    for name, value in signals.items():
        i = _INDEX.get(name)
        if i is None or type(value) is not float:
            return None
        values[i] = value
    while values and type(values[-1]) is int:
        values.pop()
    return values


def unpack(packed: list[Any]) -> dict[str, Any]:
    """The compact verdict with its `at`, keys in the order format 2 kept them (sorted)."""
    at, confidence, score, state, target, values = packed[:6]
    reason = packed[6] if len(packed) > 6 else reason_for(score)
    metrics: dict[str, Any] = {"score": score}
    if values is not None:
        n = len(values)
        metrics["signals"] = {
            SIGNALS[i]: values[i] for i in _BY_NAME if i < n and type(values[i]) is float
        }
    out: dict[str, Any] = {"agent": AGENT}
    if confidence != 0.5:
        out["confidence"] = confidence
    out["metrics"] = metrics
    if reason:
        out["reason"] = reason
    if state != "ok":
        out["state"] = state
    if target is not None:
        out["target"] = target
    out["at"] = at
    return out
