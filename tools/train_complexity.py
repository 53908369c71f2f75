#!/usr/bin/env python3
"""Train the prompt-complexity scorer and write ``agents/complexity_model.json``.

Data: ``../shared/data/routing`` beside the repo (``--data`` overrides). Three sources, each its
own group: GSM8K word problems (Mixtral vs GPT-4), and MMLU-Pro split into questions taken from
the original MMLU and the STEM questions MMLU-Pro added (local-class vs cloud-class models).

Model: per group, a logistic regression on standardised ``signals`` whose weights are held to a
prior sign where one is plausible (more numbers or steps never make a prompt *easier*); the group
models are averaged, so each source has an equal say and one source's quirks are diluted (this
transferred better across sources than one pooled fit); then one slope and intercept are fitted
so the score reads as P(weak model fails). Pure Python, deterministic (fixed CV seed).

    python tools/train_complexity.py [--data DIR] [--out PATH] [--no-cv]   # ~2 min, 15 s no CV
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import hashlib
import importlib.util
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from agents.complexity_scorer import DEFAULT_MODEL, SIGNAL_NAMES, Scorer, signals  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "routing"
GSM8K_FILE = "gsm8k_mixtral_gpt4.csv.gz"
MMLU_FILE = "mmlu_pro_correctness.csv.gz"
LOCAL_MODELS = ("phi3_mini", "llama31_8b", "mistral_7b")
CLOUD_MODELS = ("gemini15_flash", "gemini15_pro")
SEED = 0
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


def _read_gz_csv(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_gsm8k(data: Path) -> list[Example]:
    """GSM8K rows; label = (1 + strong - weak) / 2, the gain from routing up."""
    out = []
    for r in _read_gz_csv(data / GSM8K_FILE):
        weak, strong = float(r["weak_correct"]), float(r["strong_correct"])
        out.append(Example(r["prompt"], (1 + strong - weak) / 2, "gsm8k", 1 - weak))
    return out


def load_mmlu_pro(data: Path) -> list[Example]:
    """MMLU-Pro rows as apgr.py builds the prompt; label = (1 + cloud - local) / 2 over the
    means of the local- and cloud-class models, so no single model pair is fitted."""
    out = []
    for r in _read_gz_csv(data / MMLU_FILE):
        local = sum(float(r[m]) for m in LOCAL_MODELS) / len(LOCAL_MODELS)
        cloud = sum(float(r[m]) for m in CLOUD_MODELS) / len(CLOUD_MODELS)
        group = "mmlu_pro_orig" if r["src"].startswith("ori_mmlu") else "mmlu_pro_stem"
        out.append(
            Example(r["question"] + "\n" + r["options"], (1 + cloud - local) / 2, group, 1 - local)
        )
    return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


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
) -> tuple[list[float], float]:
    """L2 logistic regression on soft labels by cyclic coordinate Newton steps.

    ``cols`` holds one list per feature (column-major, standardised); ``signs[j]`` = +1/-1 keeps
    weight j non-negative/non-positive (projected steps). Returns (weights, intercept).
    """
    n, d = len(y), len(cols)
    signs = signs or [0] * d
    mean_y = min(max(sum(y) / n, 1e-6), 1 - 1e-6)
    b = math.log(mean_y / (1 - mean_y))
    w = [0.0] * d
    z = [b] * n
    p = _sigmoids(z)
    for _ in range(max_sweeps):
        biggest = 0.0
        for j in range(-1, d):  # -1: the intercept, unpenalised and free
            x = cols[j] if j >= 0 else None
            resid = [pi - yi for pi, yi in zip(p, y, strict=True)]
            curv = [pi * (1 - pi) for pi in p]
            if x is None:
                step = -sum(resid) / max(sum(curv), 1e-12)
                b += step
                z = [zi + step for zi in z]
            else:
                g = sum(r * xi for r, xi in zip(resid, x, strict=True)) / n + l2 * w[j]
                h = sum(c * xi * xi for c, xi in zip(curv, x, strict=True)) / n + l2
                new = w[j] - g / h
                if signs[j] > 0:
                    new = max(new, 0.0)
                elif signs[j] < 0:
                    new = min(new, 0.0)
                step, w[j] = new - w[j], new
                if step:
                    z = [zi + step * xi for zi, xi in zip(z, x, strict=True)]
            if step:
                p = _sigmoids(z)
            biggest = max(biggest, abs(step))
        if biggest < tol:
            break
    return w, b


def _standardise(rows: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    n = len(rows)
    mean = [sum(col) / n for col in zip(*rows, strict=True)]
    scale = [
        math.sqrt(sum((v - m) ** 2 for v in col) / n) or 1.0
        for col, m in zip(zip(*rows, strict=True), mean, strict=True)
    ]
    return mean, scale


def _calibrate(lin: Sequence[float], target: Sequence[float]) -> tuple[float, float]:
    """Slope and intercept so sigmoid(a * lin + c) fits ``target`` (Newton, 2 parameters).

    The slope is kept positive: calibration must never reverse the learned ranking.
    """
    a, c = 1.0, 0.0
    for _ in range(50):
        p = _sigmoids([a * v + c for v in lin])
        ga = sum((pi - t) * v for pi, t, v in zip(p, target, lin, strict=True))
        gc = sum(pi - t for pi, t in zip(p, target, strict=True))
        q = [pi * (1 - pi) for pi in p]
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
    """Fit on precomputed signal rows (one per example, in ``features`` order); see module doc."""
    signs = SIGN_PRIOR if signs is None else signs
    mean, scale = _standardise(rows)
    std = [[(v - m) / s for v, m, s in zip(r, mean, scale, strict=True)] for r in rows]
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(e.group, []).append(i)
    sign_list = [signs.get(f, 0) for f in features]
    per_group = []
    for idx in groups.values():
        cols = [list(col) for col in zip(*(std[i] for i in idx), strict=True)]
        w, _ = fit_logistic(cols, [examples[i].label for i in idx], l2, sign_list)
        per_group.append(w)
    avg = [sum(ws) / len(per_group) for ws in zip(*per_group, strict=True)]
    lin = [sum(w * v for w, v in zip(avg, r, strict=True)) for r in std]
    target = [e.label if e.weak_fail is None else e.weak_fail for e in examples]
    a, c = _calibrate(lin, target)
    meta = {"groups": {g: len(idx) for g, idx in groups.items()}, "l2": l2}
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


def load_apgr(data: Path) -> ModuleType:
    """The shared metric module ``<data>/../../tools/apgr.py`` (imported, never copied)."""
    path = data.resolve().parent.parent / "tools" / "apgr.py"
    spec = importlib.util.spec_from_file_location("routing_apgr", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Eval(NamedTuple):
    """What APGR needs for one data set: prompts' signal rows and both models' 0/1 results."""

    rows: list[list[float]]
    strong: list[float]
    weak: list[float]


def cross_validate(
    apgr: Callable[..., tuple[float, dict]],
    rows: Sequence[Sequence[float]],
    examples: Sequence[Example],
    target: Eval,
    in_target: Sequence[bool],
    folds: int = 5,
) -> float:
    """APGR on ``target`` (the rows flagged ``in_target``) with k-fold CV: each fold is scored
    by a model fitted on the other folds plus every row outside the target."""
    idx = [i for i, t in enumerate(in_target) if t]
    random.Random(SEED).shuffle(idx)
    pos = {i: k for k, i in enumerate(i for i, t in enumerate(in_target) if t)}
    scores = [0.0] * len(idx)
    for f in range(folds):
        test = set(idx[f::folds])
        keep = [i for i in range(len(rows)) if i not in test]
        model = fit_scorer([rows[i] for i in keep], [examples[i] for i in keep])
        for i in test:
            scores[pos[i]] = model.linear(dict(zip(model.features, rows[i], strict=True)))
    return apgr(scores, target.strong, target.weak)[0]


def transfer(
    apgr: Callable[..., tuple[float, dict]],
    rows: Sequence[Sequence[float]],
    examples: Sequence[Example],
    train_mask: Sequence[bool],
    target: Eval,
) -> float:
    """APGR on ``target`` of a model fitted only on the rows in ``train_mask``."""
    keep = [i for i, t in enumerate(train_mask) if t]
    model = fit_scorer([rows[i] for i in keep], [examples[i] for i in keep])
    scores = [model.linear(dict(zip(model.features, r, strict=True))) for r in target.rows]
    return apgr(scores, target.strong, target.weak)[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate(apgr_mod: ModuleType, data: Path, folds: int = 5) -> dict[str, dict[str, float]]:
    """APGR table: length baseline, k-fold CV and cross-data-set transfer, on both data sets
    (prompts and weak/strong columns exactly as ``apgr.py`` loads them)."""
    apgr_mod.DATA = data
    examples = load_gsm8k(data) + load_mmlu_pro(data)
    rows = [[s[f] for f in MODEL_FEATURES] for s in map(signals, (e.prompt for e in examples))]
    is_gsm = [e.group == "gsm8k" for e in examples]
    is_mmlu = [not g for g in is_gsm]
    out: dict[str, dict[str, float]] = {}
    for name, mask in (("gsm8k", is_gsm), ("mmlu_pro", is_mmlu)):
        prompts, strong, weak = apgr_mod.load(name, None, None)
        mine = [e.prompt for e, m in zip(examples, mask, strict=True) if m]
        if prompts != mine:
            raise ValueError(f"{name}: prompts differ from apgr.py's")
        target = Eval([r for r, m in zip(rows, mask, strict=True) if m], strong, weak)
        other = [not m for m in mask]
        out[name] = {
            "length": apgr_mod.apgr([float(len(p)) for p in prompts], strong, weak)[0],
            f"cv{folds}": cross_validate(apgr_mod.apgr, rows, examples, target, mask, folds),
            "trained_on_other_only": transfer(apgr_mod.apgr, rows, examples, other, target),
        }
    return out


def score_quantiles(model: Scorer, examples: Sequence[Example]) -> dict[str, list[float]]:
    """Deciles (0%, 10%, ..., 100%) of the model's scores per data set, to place tier thresholds."""
    by_set: dict[str, list[float]] = {}
    for e in examples:
        name = "mmlu_pro" if e.group.startswith("mmlu_pro") else e.group
        by_set.setdefault(name, []).append(model.score(e.prompt))
    out = {}
    for name, scores in by_set.items():
        scores.sort()
        out[name] = [
            round(scores[min(len(scores) - 1, len(scores) * k // 10)], 3) for k in range(11)
        ]
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="routing data directory")
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="artefact to write")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-cv", action="store_true", help="skip the (slower) APGR evaluation")
    a = ap.parse_args(argv)
    examples = load_gsm8k(a.data) + load_mmlu_pro(a.data)
    model = train(examples)
    meta = {
        "about": "Orchestra prompt-complexity scorer: score ~ P(a local-class model fails); "
        "higher = route to a stronger tier. Logistic model over "
        "agents.complexity_scorer.signals().",
        "trained": dt.date.today().isoformat(),
        "trainer": "tools/train_complexity.py",
        "data": {
            "dir": "../shared/data/routing",
            "files": {
                f: {"rows": n, "sha256": _sha256(a.data / f)}
                for f, n in (
                    (GSM8K_FILE, sum(e.group == "gsm8k" for e in examples)),
                    (MMLU_FILE, sum(e.group != "gsm8k" for e in examples)),
                )
            },
            "groups": model.meta["groups"],
        },
        "labels": "train: (1 + strong - weak) / 2 (GSM8K: GPT-4 vs Mixtral; MMLU-Pro: mean of "
        f"{'/'.join(CLOUD_MODELS)} vs mean of {'/'.join(LOCAL_MODELS)}); calibration: "
        "share of weak/local models wrong",
        "method": "per-group sign-constrained L2 logistic regressions on standardised signals, "
        "weights averaged over groups, then a 1-D logistic calibration",
        "seed": SEED,
        "l2": L2,
        "sign_prior": SIGN_PRIOR,
        "excluded_signals": EXCLUDED,
    }
    meta["score_quantiles"] = score_quantiles(model, examples)
    if not a.no_cv:
        meta["apgr"] = evaluate(load_apgr(a.data), a.data, a.folds)
        print(json.dumps(meta["apgr"], indent=1))
    model.meta = meta
    model.save(a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
