"""Learning from your feedback: turn judged answers in the store into training rows.

The scorer predicts "a local-class model fails on this prompt". Feedback only says that about
an answer from a model no stronger than local-class, so each judged request becomes a row by
the tier that answered it:

| tier answered | bad             | good                                          |
|---------------|-----------------|-----------------------------------------------|
| local         | 1 (local failed)| 0 (local was enough)                          |
| edge          | 1 (a stronger model failed; local would too) | skipped: says nothing of local |
| cloud         | skipped: the strong tier failed; says nothing of local | skipped        |

A row's signals are recomputed from the prompt when the store kept it (`[store] keep_prompts`),
else taken from the complexity verdict recorded with the request (its signals are stored by
default, never the text). Requests with neither are skipped, and the reasons are counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestra.agents.complexity.scorer import Scorer, load_scorer, signals
from orchestra.core.feedback import Judged
from orchestra.core.paths import data_dir
from orchestra.core.request import Request
from orchestra.core.tier import Tier

USER_MODEL_NAME = "complexity_model.json"


def user_model_path() -> Path:
    """Where `orchestra train-complexity` writes, and the complexity agent looks, by default."""
    return data_dir() / USER_MODEL_NAME


def label_for(tier: str | None, good: bool) -> float | None:
    """The training label of one judged answer (see the module's table), or None to skip."""
    if tier == Tier.LOCAL:
        return 0.0 if good else 1.0
    if tier == Tier.EDGE and not good:
        return 1.0
    return None


def skip_reason(tier: str | None, good: bool) -> str:
    if tier == Tier.EDGE:
        return "edge answer judged good: says nothing of the local tier"
    return f"{tier} answer judged {'good' if good else 'bad'}: says nothing of the local tier"


@dataclass
class FeedbackRows:
    """Training rows built from the store's feedback, and why the rest was skipped."""

    rows: list[tuple[dict[str, float], float]] = field(default_factory=list)
    judged: int = 0
    from_prompt: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def positives(self) -> int:
        return sum(label >= 0.5 for _, label in self.rows)


def feedback_rows(judged: Iterable[Judged]) -> FeedbackRows:
    """Judged requests (the store's newest judgement of each) as (signals, label) rows."""
    out = FeedbackRows()
    for _rid, status, tier, transcript, good, metrics in judged:
        out.judged += 1
        if status != "ok":
            out.skipped["request failed: no answer was judged"] += 1
            continue
        label = label_for(tier, bool(good))
        if label is None:
            out.skipped[skip_reason(tier, bool(good))] += 1
            continue
        sig = _signals_of(transcript, metrics)
        if sig is None:
            out.skipped["no prompt kept and no complexity verdict recorded"] += 1
            continue
        out.from_prompt += transcript is not None
        out.rows.append((sig, label))
    return out


def _signals_of(transcript: str | None, metrics: str | None) -> dict[str, float] | None:
    if transcript is not None:
        return signals(Request.of(json.loads(transcript)).prompt)
    if metrics is None:
        return None
    recorded: Any = json.loads(metrics).get("signals")
    if not isinstance(recorded, Mapping) or not recorded:
        return None  # the agent ran with a custom scorer: no signals were reported
    return {str(k): float(v) for k, v in recorded.items()}


@dataclass
class Training:
    """What `train` produced: the model, its report and the rows it learned from."""

    scorer: Scorer
    report: dict[str, Any]
    feedback: FeedbackRows


def train(judged: Iterable[Judged], weight: float = 1.0, base: Scorer | None = None) -> Training:
    """Retrain the shipped scorer with judged requests (see `retrain.retrain`).

    Raises ValueError when no feedback is usable, saying why each judged request was skipped.
    """
    from orchestra.agents.complexity.retrain import retrain

    found = feedback_rows(judged)
    if not found.rows:
        why = "; ".join(f"{n}x {reason}" for reason, n in found.skipped.most_common())
        raise ValueError(
            f"nothing to learn from: {found.judged} judged request(s), none usable"
            + (f" ({why})" if why else "; give feedback with `orchestra feedback ID --bad`")
        )
    retrained = retrain(found.rows, base=base or load_scorer(), weight=weight)
    return Training(retrained.scorer, dict(retrained.report), found)
