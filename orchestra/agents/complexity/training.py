"""Fitting the prompt-complexity scorer from labelled prompts.

Model: per data source ("group"), a logistic regression on standardised ``signals`` whose weights
are held to a prior sign where one is plausible (more numbers or steps never make a prompt
*easier*); the group models are averaged, so each source has an equal say and one source's quirks
are diluted (this transferred better across sources than one pooled fit); then one slope and
intercept are fitted so the score reads as P(weak model fails). Pure standard library,
deterministic.

``tools/train_complexity.py`` fits the shipped model with this from the labelled data sets;
``complexity_retrain`` refits it with a user's feedback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from orchestra.agents.complexity.scorer import SIGNAL_NAMES, Scorer, _sigmoid, signals

SEED = 0  # for every shuffle (cross-validation folds)
L2 = 0.01  # per mean log-loss, on standardised signals; CV was flat from 0.001 to 0.03

# Signals left out of the model: they mark a data set's format rather than difficulty.
EXCLUDED = {"log_lines": "MMLU-Pro puts its options on a line of their own, GSM8K has none"}
MODEL_FEATURES = tuple(f for f in SIGNAL_NAMES if f not in EXCLUDED)

# Prior direction of each signal (+1: can only add difficulty, -1: can only remove it; absent:
# free). Constraining signs keeps a source-specific quirk from flipping a general signal.
SIGN_PRIOR: dict[str, int] = {
    **dict.fromkeys(
        (
            "log_chars",
            "log_words",
            "log_sentences",
            "capital_frac",
            "log_numbers",
            "number_density",
            "decimals",
            "big_numbers",
            "percent",
            "scientific",
            "math_ops",
            "latex",
            "units",
            "variables",
            "code_marks",
            "symbols",
            "symbol_density",
            "compute_words",
            "sequence_words",
            "relation_words",
            "condition_words",
            "constraint_words",
            "negation_words",
            "pronouns",
            "math_words",
            "science_words",
            "code_words",
        ),
        1,
    ),
    "explain_words": -1,
}


class Example(NamedTuple):
    """One training prompt. ``label``: 1 = the stronger model was needed, 0 = the weak one was
    fine (soft labels allowed); ``weak_fail``: share of weak models that failed (calibration)."""

    prompt: str
    label: float
    group: str = "default"
    weak_fail: float | None = None


def _sigmoids(z: Sequence[float]) -> list[float]:
    try:
        return [1.0 / (1.0 + math.exp(-v)) for v in z]
    except OverflowError:  # only for absurd logits; the safe form is slower
        return [_sigmoid(v) for v in z]


def fit_logistic(
    cols: Sequence[Sequence[float]],
    y: Sequence[float],
    l2: float = L2,
    signs: Sequence[int] | None = None,
    max_sweeps: int = 300,
    tol: float = 1e-6,
    prior: Sequence[float] | None = None,
) -> tuple[list[float], float]:
    """L2 logistic regression on soft labels by cyclic coordinate Newton steps.

    ``cols`` holds one list per feature (column-major, standardised); ``signs[j]`` = +1/-1 keeps
    weight j non-negative/non-positive (projected steps). The penalty ``l2/2 * |w - prior|^2`` is
    centred on ``prior`` (default zeros), and the fit starts there (projected onto the signs).
    Returns (weights, intercept).
    """
    n, d = len(y), len(cols)
    signs = signs or [0] * d
    mean_y = min(max(sum(y) / n, 1e-6), 1 - 1e-6)
    b = math.log(mean_y / (1 - mean_y))
    centre, w = _start_weights(prior, signs, d)
    z = _start_logits(b, w, cols, n)
    p = _sigmoids(z)
    for _ in range(max_sweeps):
        biggest = 0.0
        for j in range(-1, d):  # -1: the intercept, unpenalised and free
            resid = [pi - yi for pi, yi in zip(p, y, strict=True)]
            curv = [pi * (1 - pi) for pi in p]
            if j < 0:
                step = -sum(resid) / max(sum(curv), 1e-12)
                b += step
                z = [zi + step for zi in z]
            else:
                x = cols[j]
                new = _project(_newton(x, resid, curv, w[j], centre[j], l2), signs[j])
                step, w[j] = new - w[j], new
                if step:
                    z = [zi + step * xi for zi, xi in zip(z, x, strict=True)]
            if step:
                p = _sigmoids(z)
            biggest = max(biggest, abs(step))
        if biggest < tol:
            break
    return w, b


def _start_weights(
    prior: Sequence[float] | None, signs: Sequence[int], d: int
) -> tuple[list[float], list[float]]:
    """The penalty's centre (``prior``, default zeros) and the fit's start: it, held to `signs`."""
    if prior is None:
        return [0.0] * d, [0.0] * d
    if len(prior) != d:
        raise ValueError(f"prior has {len(prior)} weights for {d} features")
    centre = [float(v) for v in prior]
    return centre, [_project(v, sg) for v, sg in zip(centre, signs, strict=True)]


def _project(v: float, sign: int) -> float:
    """`v` held to `sign` (+1: not below 0, -1: not above 0, 0: free)."""
    return max(v, 0.0) if sign > 0 else min(v, 0.0) if sign < 0 else v


def _start_logits(
    b: float, w: Sequence[float], cols: Sequence[Sequence[float]], n: int
) -> list[float]:
    """``b + w·x`` for each of the `n` rows (column-major `cols`); zero weights add nothing."""
    z = [b] * n
    for wj, col in zip(w, cols, strict=True):
        if wj:
            z = [zi + wj * xi for zi, xi in zip(z, col, strict=True)]
    return z


def _newton(
    x: Sequence[float],
    resid: Sequence[float],
    curv: Sequence[float],
    wj: float,
    centre: float,
    l2: float,
) -> float:
    """Weight `wj` of column `x` after one Newton step on the mean log-loss plus
    ``l2/2 * (wj - centre)^2`` (not yet held to its sign)."""
    n = len(x)
    g = sum(r * xi for r, xi in zip(resid, x, strict=True)) / n + l2 * (wj - centre)
    h = sum(c * xi * xi for c, xi in zip(curv, x, strict=True)) / n + l2
    return wj - g / h


def _standardise(rows: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    n = len(rows)
    mean = [sum(col) / n for col in zip(*rows, strict=True)]
    scale = [
        math.sqrt(sum((v - m) ** 2 for v in col) / n) or 1.0
        for col, m in zip(zip(*rows, strict=True), mean, strict=True)
    ]
    return mean, scale


def _calibrate(
    lin: Sequence[float], target: Sequence[float], weights: Sequence[float] | None = None
) -> tuple[float, float]:
    """Slope and intercept so sigmoid(a * lin + c) fits ``target`` (Newton, 2 parameters),
    each row counting ``weights[i]`` times (default 1).

    The slope is kept positive: calibration must never reverse the learned ranking.
    """
    # Unit weights multiply exactly, so weights=None gives the unweighted fit bit for bit.
    wts = [1.0] * len(lin) if weights is None else weights
    a, c = 1.0, 0.0
    for _ in range(50):
        p = _sigmoids([a * v + c for v in lin])
        r = [wi * (pi - t) for wi, pi, t in zip(wts, p, target, strict=True)]
        ga = sum(ri * v for ri, v in zip(r, lin, strict=True))
        gc = sum(r)
        q = [wi * (pi * (1 - pi)) for wi, pi in zip(wts, p, strict=True)]
        haa = sum(qi * v * v for qi, v in zip(q, lin, strict=True)) + 1e-9
        hac = sum(qi * v for qi, v in zip(q, lin, strict=True))
        hcc = sum(q) + 1e-9
        det = haa * hcc - hac * hac
        da, dc = (hcc * ga - hac * gc) / det, (haa * gc - hac * ga) / det
        a, c = max(a - da, 1e-3), c - dc
        if abs(da) + abs(dc) < 1e-10:
            break
    return a, c


def fit_scorer(
    rows: Sequence[Sequence[float]],
    examples: Sequence[Example],
    features: Sequence[str] = MODEL_FEATURES,
    l2: float = L2,
    signs: dict[str, int] | None = None,
) -> Scorer:
    """Fit on precomputed signal rows (one per example, in ``features`` order); see module doc.

    ``meta["group_weights"]`` keeps each group's weights (standardised, before calibration), so
    ``retrain`` can reuse them.
    """
    signs = SIGN_PRIOR if signs is None else signs
    mean, scale = _standardise(rows)
    std = [[(v - m) / s for v, m, s in zip(r, mean, scale, strict=True)] for r in rows]
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.group, []).append(i)
    sign_list = [signs.get(f, 0) for f in features]
    per_group = {}
    for g, idx in groups.items():
        cols = [list(col) for col in zip(*(std[i] for i in idx), strict=True)]
        per_group[g], _ = fit_logistic(cols, [examples[i].label for i in idx], l2, sign_list)
    avg = [sum(ws) / len(per_group) for ws in zip(*per_group.values(), strict=True)]
    lin = [sum(w * v for w, v in zip(avg, r, strict=True)) for r in std]
    target = [e.label if e.weak_fail is None else e.weak_fail for e in examples]
    a, c = _calibrate(lin, target)
    meta = {"groups": {g: len(idx) for g, idx in groups.items()}, "l2": l2}
    meta["group_weights"] = per_group
    return Scorer(features, [a * w for w in avg], c, mean, scale, meta)


def train(
    examples: Sequence[Example | tuple[str, float]],
    features: Sequence[str] = MODEL_FEATURES,
    l2: float = L2,
) -> Scorer:
    """Train a scorer from (prompt, label) pairs or ``Example``s (label 1 = stronger model
    needed). Examples of one ``group`` (data source) form one sub-model; see module doc."""
    exs = [e if isinstance(e, Example) else Example(e[0], float(e[1])) for e in examples]
    if not exs:
        raise ValueError("no training examples")
    rows = [[s[f] for f in features] for s in map(signals, (e.prompt for e in exs))]
    return fit_scorer(rows, exs, features, l2)
