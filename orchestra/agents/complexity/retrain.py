"""Retraining the complexity scorer from your feedback plus the shipped data (see `retrain`)."""

from __future__ import annotations

import datetime as dt
import math
import operator
import random
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from orchestra.agents.complexity.data import ShippedData, load_shipped_data
from orchestra.agents.complexity.scorer import Scorer, load_scorer
from orchestra.agents.complexity.training import (
    L2,
    SEED,
    SIGN_PRIOR,
    _calibrate,
    _sigmoids,
    fit_logistic,
)


class Retrained(NamedTuple):
    """A retrained scorer and what happened (see ``retrain``)."""

    scorer: Scorer
    report: dict[str, Any]


def auc(scores: Sequence[float], labels: Sequence[float]) -> float:
    """Area under the ROC curve: the chance that a random positive (label >= 0.5) scores above a
    random negative, ties counting half. Raises ValueError without both kinds of label."""
    pos = sum(y >= 0.5 for y in labels)
    neg = len(labels) - pos
    if not pos or not neg:
        raise ValueError("AUC needs at least one positive and one negative label")
    pairs = sorted(zip(scores, labels, strict=True), key=lambda t: t[0])
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        hits = sum(pairs[k][1] >= 0.5 for k in range(i, j))
        rank_sum += hits * (i + 1 + j) / 2  # tied rows share the mean of ranks i+1 .. j
        i = j
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def _dot(w: Sequence[float], x: Sequence[float]) -> float:
    return float(sum(map(operator.mul, w, x)))


def _logits(
    weights: Sequence[float],
    bias: float,
    mean: Sequence[float],
    scale: Sequence[float],
    rows: Sequence[Sequence[float]],
) -> list[float]:
    """bias + weights·(row - mean)/scale for each raw row, with the standardisation folded in."""
    raw = [w / s for w, s in zip(weights, scale, strict=True)]
    offset = bias - sum(r * m for r, m in zip(raw, mean, strict=True))
    return [offset + sum(map(operator.mul, raw, row)) for row in rows]


def _check_feedback(
    feedback: Sequence[tuple[Mapping[str, float], float]], features: Sequence[str]
) -> tuple[list[list[float]], list[float]]:
    """Feedback as raw rows in ``features`` order (missing names count as 0) and labels."""
    rows, labels = [], []
    for i, item in enumerate(feedback):
        try:
            sig, label = item
        except (TypeError, ValueError):
            raise ValueError(f"feedback row {i}: expected (signals, label), got {item!r}") from None
        if not isinstance(sig, Mapping) or not sig:
            raise ValueError(f"feedback row {i}: empty or missing signals")
        try:
            label = float(label)
        except (TypeError, ValueError):
            raise ValueError(f"feedback row {i}: label {label!r} is not a number") from None
        if not 0.0 <= label <= 1.0:
            raise ValueError(f"feedback row {i}: label {label} outside [0, 1]")
        try:
            row = [float(sig.get(f, 0.0)) for f in features]
        except (TypeError, ValueError):
            raise ValueError(f"feedback row {i}: a signal value is not a number") from None
        if not all(map(math.isfinite, row)):
            raise ValueError(f"feedback row {i}: non-finite signal value")
        rows.append(row)
        labels.append(label)
    return rows, labels


def _shipped_rows(shipped: ShippedData, features: Sequence[str]) -> list[list[float]]:
    """The shipped rows in ``features`` order."""
    if tuple(features) == shipped.features:
        return shipped.rows
    missing = [f for f in features if f not in shipped.features]
    if missing:
        raise ValueError(f"shipped data lacks the model's features {missing}")
    idx = [shipped.features.index(f) for f in features]
    return [[r[k] for k in idx] for r in shipped.rows]


def _blend(total: Sequence[float], n_groups: int, fb: Sequence[float], share: float) -> list[float]:
    return [(t + share * f) / (n_groups + share) for t, f in zip(total, fb, strict=True)]


def _fit_feedback(
    std: Sequence[Sequence[float]], y: Sequence[float], prior: Sequence[float], signs: list[int]
) -> list[float]:
    cols = [list(col) for col in zip(*std, strict=True)]
    w = fit_logistic(cols, y, L2 + 1 / len(y), signs, prior=prior)[0]
    # Hard 0/1 feedback labels fit weights several times longer than the shipped sources' soft
    # labels do; unscaled, 50 rows outweighed the shipped data 2:1 and lost APGR. The feedback
    # gives a direction; its share (not its labels' hardness) sets how far it pulls.
    length, cap = math.hypot(*w), math.hypot(*prior)
    return [v * cap / length for v in w] if length > cap > 0 else w


def _cv_report(
    std: Sequence[Sequence[float]],
    y: Sequence[float],
    base_lin: Sequence[float],
    total: Sequence[float],
    n_groups: int,
    signs: list[int],
    weight: float,
    pseudo_count: float,
    folds: int,
) -> dict[str, Any]:
    """Stratified k-fold AUC on held-out feedback, of the base and of the retrained weights
    (calibration is skipped: it never changes the ranking)."""
    rng = random.Random(SEED)
    pos = [i for i, v in enumerate(y) if v >= 0.5]
    neg = [i for i, v in enumerate(y) if v < 0.5]
    rng.shuffle(pos)
    rng.shuffle(neg)
    fold_of = {i: k % folds for k, i in enumerate(pos)}
    fold_of.update({i: k % folds for k, i in enumerate(neg)})
    prior = [t / n_groups for t in total]
    base_aucs, new_aucs = [], []
    for f in range(folds):
        tr = [i for i in range(len(y)) if fold_of[i] != f]
        te = [i for i in range(len(y)) if fold_of[i] == f]
        fb = _fit_feedback([std[i] for i in tr], [y[i] for i in tr], prior, signs)
        w = _blend(total, n_groups, fb, weight * len(tr) / (len(tr) + pseudo_count))
        held = [y[i] for i in te]
        base_aucs.append(auc([base_lin[i] for i in te], held))
        new_aucs.append(auc([_dot(w, std[i]) for i in te], held))
    return {
        "folds": folds,
        "seed": SEED,
        "auc_base": sum(base_aucs) / folds,
        "auc_retrained": sum(new_aucs) / folds,
    }


def retrain(
    feedback: Sequence[tuple[Mapping[str, float], float]],
    base: Scorer | None = None,
    shipped: ShippedData | None = None,
    weight: float = 1.0,
    pseudo_count: float = 50.0,
) -> Retrained:
    """Retrain the complexity scorer from your feedback plus the shipped training data.

    ``feedback``: (signals, label) pairs; signals as ``signals(prompt)`` returns them (missing
    names count as 0), label 1 = the local model failed and a stronger tier was needed, 0 = the
    local model was fine (values between are soft labels). ``base``: the model to start from,
    by default the shipped one; it must carry ``meta["group_weights"]``.

    How (n = feedback rows, G = shipped groups, N = shipped rows):

    1. Signals are standardised with the base model's mean and scale.
    2. The shipped model is an average of G per-source logistic models; their weights are kept
       as they are. Your feedback becomes one more source: a logistic model fitted on it alone,
       with the same sign constraints, and an L2 penalty of strength ``L2 + 1/n`` pulling it
       towards the shipped average, so a handful of rows only nudges it. Its weight vector is
       then shortened to the shipped average's length if it is longer: hard 0/1 labels fit
       longer vectors than the shipped sources' soft labels, which would let a little feedback
       outweigh the shipped data.
    3. Your source's say is ``s = weight * n / (n + pseudo_count)``: it grows with the amount of
       feedback and reaches ``weight`` (one shipped source's say, by default) for large n. The
       new weights are ``(sum of shipped group weights + s * feedback weights) / (G + s)``.
    4. The score is recalibrated (slope and intercept of the sigmoid) on the shipped rows (target:
       share of weak models that failed) and the feedback rows (target: label), the feedback rows
       together counting ``s * N / G`` rows. So feedback moves the level too: if most of it says
       "local failed", scores rise and more prompts route up even where the ranking is unchanged.

    With no feedback this reproduces the shipped model (up to the shipped data's rounding). A
    retrained base starts over from the shipped groups it carries: pass all your feedback each
    time, not only the new rows. Feedback teaches whatever separates its labels: if every "fine"
    prompt is short and every "failed" one long, the model mostly learns length. With at least 10
    rows and 3 of each label, ``report["cv"]`` compares the base and retrained models' AUC on
    held-out feedback (stratified k-fold, k = min(5, rows of the rarer label)).
    """
    _check_say(weight, pseudo_count)
    base = load_scorer() if base is None else base
    group_weights = _group_weights(base)
    fb_raw, y = _check_feedback(feedback, base.features)
    shipped = load_shipped_data() if shipped is None else shipped
    if set(shipped.groups) != set(group_weights):
        raise ValueError(
            f"shipped data groups {sorted(set(shipped.groups))} differ from the base model's "
            f"{sorted(group_weights)}"
        )
    rows = _shipped_rows(shipped, base.features)
    blend = _blend_feedback(base, group_weights, fb_raw, y, weight, pseudo_count)
    a, c, shipped_lin = _calibration(blend, base, rows, shipped.targets)
    meta = _retrained_meta(base, len(y), blend.positives, weight, blend.share, pseudo_count)
    scorer = Scorer(base.features, [a * w for w in blend.weights], c, base.mean, base.scale, meta)
    report = _report(base, scorer, blend, (a, c), fb_raw, rows, shipped_lin)
    return Retrained(scorer, report)


class _Blend(NamedTuple):
    """Steps 1-3 of ``retrain``: the new standardised weights (before calibration) and their
    inputs, which calibration and the report reuse."""

    weights: list[float]
    std: list[list[float]]  # the feedback rows, standardised with the base's mean and scale
    labels: list[float]
    signs: list[int]
    total: list[float]  # the shipped group weights, summed
    n_groups: int
    weight: float
    pseudo_count: float
    share: float  # the feedback's say, s

    @property
    def positives(self) -> int:
        """Feedback rows saying the local model failed."""
        return sum(v >= 0.5 for v in self.labels)


def _check_say(weight: float, pseudo_count: float) -> None:
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight}")
    if not (math.isfinite(pseudo_count) and pseudo_count >= 0):
        raise ValueError(f"pseudo_count must be a finite number >= 0, got {pseudo_count}")


def _group_weights(base: Scorer) -> Mapping[str, Sequence[float]]:
    """The base's per-group standardised weights, checked against its features."""
    group_weights = base.meta.get("group_weights")
    if not isinstance(group_weights, Mapping) or not group_weights:
        raise ValueError(
            "the base model has no 'group_weights' in its meta: retrain needs a model written "
            "by tools/train_complexity.py (this version or later) or by retrain()"
        )
    d = len(base.features)
    if any(len(ws) != d for ws in group_weights.values()):
        raise ValueError(f"base meta 'group_weights' do not have {d} weights each")
    return group_weights


def _blend_feedback(
    base: Scorer,
    group_weights: Mapping[str, Sequence[float]],
    fb_raw: Sequence[Sequence[float]],
    y: list[float],
    weight: float,
    pseudo_count: float,
) -> _Blend:
    """Steps 1-3: the feedback's own fit, blended into the shipped groups' weights."""
    n, n_groups = len(y), len(group_weights)
    total = [sum(ws) for ws in zip(*group_weights.values(), strict=True)]
    if n:
        std = [
            [(v - m) / s for v, m, s in zip(r, base.mean, base.scale, strict=True)] for r in fb_raw
        ]
        signs = [base.meta.get("sign_prior", SIGN_PRIOR).get(f, 0) for f in base.features]
        fb_w = _fit_feedback(std, y, [t / n_groups for t in total], signs)
        share = weight * n / (n + pseudo_count)
    else:
        std, signs, fb_w, share = [], [], [0.0] * len(base.features), 0.0
    new = _blend(total, n_groups, fb_w, share)
    return _Blend(new, std, y, signs, total, n_groups, weight, pseudo_count, share)


def _calibration(
    blend: _Blend, base: Scorer, rows: Sequence[Sequence[float]], targets: Sequence[float]
) -> tuple[float, float, list[float]]:
    """Step 4: slope and intercept, and the shipped rows' logits they apply to."""
    # Shipped rows count 1 each, the feedback rows s * N / G together.
    lin = _logits(blend.weights, 0.0, base.mean, base.scale, rows)
    n_shipped = len(rows)
    target = list(targets)
    cal_w = None
    if blend.share > 0:
        n = len(blend.labels)
        lin += [_dot(blend.weights, r) for r in blend.std]
        target += blend.labels
        cal_w = [1.0] * n_shipped + [blend.share * n_shipped / blend.n_groups / n] * n
    a, c = _calibrate(lin, target, cal_w)
    return a, c, lin[:n_shipped]


def _report(
    base: Scorer,
    scorer: Scorer,
    blend: _Blend,
    calibration: tuple[float, float],
    fb_raw: Sequence[Sequence[float]],
    rows: Sequence[Sequence[float]],
    shipped_lin: Sequence[float],
) -> dict[str, Any]:
    """What ``retrain`` reports: its inputs, the calibration, mean scores before and after,
    the largest weight changes and, given enough feedback, cross-validation."""
    a, c = calibration
    n = len(blend.labels)
    mean, scale = base.mean, base.scale
    base_fb = _logits(base.weights, base.bias, mean, scale, fb_raw)
    new_fb = _logits(scorer.weights, scorer.bias, mean, scale, fb_raw)
    base_sh = _logits(base.weights, base.bias, mean, scale, rows)
    new_sh = [a * v + c for v in shipped_lin]
    changes = sorted(
        zip(base.features, base.weights, scorer.weights, strict=True),
        key=lambda t: -abs(t[2] - t[1]),
    )
    report: dict[str, Any] = {
        "feedback": n,
        "positives": blend.positives,
        "weight": blend.weight,
        "pseudo_count": blend.pseudo_count,
        "share": blend.share,
        "l2": L2 + 1 / n if n else None,
        "calibration": {"slope": a, "intercept": c},
        "mean_score": {
            "shipped_rows": {"base": _mean_sigmoid(base_sh), "retrained": _mean_sigmoid(new_sh)},
            "feedback_rows": {"base": _mean_sigmoid(base_fb), "retrained": _mean_sigmoid(new_fb)},
        },
        # Standardised weights (per standard deviation of the signal), largest moves first.
        "weight_changes": {f: {"base": b, "retrained": r} for f, b, r in changes[:5]},
    }
    report.update(_cv_or_skipped(blend, base_fb))
    return report


def _cv_or_skipped(blend: _Blend, base_fb: Sequence[float]) -> dict[str, Any]:
    """``{"cv": ...}`` with at least 10 feedback rows and 3 of each label, else why not."""
    n, positives = len(blend.labels), blend.positives
    minority = min(positives, n - positives)
    if n >= 10 and minority >= 3:
        b = blend
        folds = min(5, minority)
        cv = _cv_report(
            b.std, b.labels, base_fb, b.total, b.n_groups, b.signs, b.weight, b.pseudo_count, folds
        )
        return {"cv": cv}
    why = (
        f"cross-validation needs 10 feedback rows with 3 of each label "
        f"(have {n}: {positives} local failed, {n - positives} local fine)"
    )
    return {"cv_skipped": why}


def _mean_sigmoid(z: Sequence[float]) -> float | None:
    return sum(_sigmoids(z)) / len(z) if z else None


def _retrained_meta(
    base: Scorer, n: int, positives: int, weight: float, share: float, pseudo_count: float
) -> dict[str, Any]:
    """The base's provenance, minus what described the base's own scores, plus the retraining."""
    stale = {"apgr", "score_quantiles", "retrained"}
    meta = {k: v for k, v in base.meta.items() if k not in stale}
    summary: dict[str, Any] = {
        k: base.meta[k] for k in ("trained", "trainer", "apgr") if k in base.meta
    }
    if "retrained" in base.meta:  # a retrained base: its own record, without its base
        summary["retrained"] = {k: v for k, v in base.meta["retrained"].items() if k != "base"}
    meta["retrained"] = {
        "date": dt.date.today().isoformat(),
        "by": "orchestra.agents.complexity.training.retrain",
        "base": summary,
        "feedback": n,
        "positives": positives,
        "weight": weight,
        "share": share,
        "pseudo_count": pseudo_count,
    }
    return meta
