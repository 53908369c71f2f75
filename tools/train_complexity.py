#!/usr/bin/env python3
"""Train the prompt-complexity scorer and write ``orchestra/agents/complexity/model.json``.

Data: ``../shared/data/routing`` beside the repo (``--data`` overrides). Three sources, each its
own group: GSM8K word problems (Mixtral vs GPT-4), and MMLU-Pro split into questions taken from
the original MMLU and the STEM questions MMLU-Pro added (local-class vs cloud-class models).

Model and fitting: ``orchestra/agents/complexity/training.py`` (per-group sign-constrained logistic
regressions, averaged, then calibrated). This script loads the data, evaluates (APGR with k-fold
CV and cross-data-set transfer, fixed seed) and writes the artefacts: the model and, for
retraining from user feedback, the derived training rows ``orchestra/agents/complexity/data.csv.gz``
(group, labels and signal values, no prompt text).

    python tools/train_complexity.py [--data DIR] [--out PATH] [--data-out PATH] [--no-cv]
    # ~2 min, 15 s with --no-cv
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import hashlib
import importlib.util
import json
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra.agents.complexity.data import SHIPPED_DATA, write_shipped_data  # noqa: E402
from orchestra.agents.complexity.scorer import DEFAULT_MODEL, Scorer, signals  # noqa: E402
from orchestra.agents.complexity.training import (  # noqa: E402
    EXCLUDED,
    L2,
    MODEL_FEATURES,
    SEED,
    SIGN_PRIOR,
    Example,
    fit_scorer,
)
from orchestra.agents.complexity.training import train as train  # noqa: E402  (re-exported: it lived here)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "routing"
GSM8K_FILE = "gsm8k_mixtral_gpt4.csv.gz"
MMLU_FILE = "mmlu_pro_correctness.csv.gz"
LOCAL_MODELS = ("phi3_mini", "llama31_8b", "mistral_7b")
CLOUD_MODELS = ("gemini15_flash", "gemini15_pro")


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
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL, help="model to write")
    ap.add_argument(
        "--data-out", type=Path, default=SHIPPED_DATA, help="derived training rows to write"
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-cv", action="store_true", help="skip the (slower) APGR evaluation")
    a = ap.parse_args(argv)
    examples = load_gsm8k(a.data) + load_mmlu_pro(a.data)
    rows = [[s[f] for f in MODEL_FEATURES] for s in map(signals, (e.prompt for e in examples))]
    model = fit_scorer(rows, examples, MODEL_FEATURES)
    meta = {
        "about": "Orchestra prompt-complexity scorer: score ~ P(a local-class model fails); "
        "higher = route to a stronger tier. Logistic model over "
        "orchestra.agents.complexity.scorer.signals().",
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
        # Per-group weights (standardised, before calibration): what retrain() builds on.
        "group_weights": model.meta["group_weights"],
    }
    meta["score_quantiles"] = score_quantiles(model, examples)
    if not a.no_cv:
        meta["apgr"] = evaluate(load_apgr(a.data), a.data, a.folds)
        print(json.dumps(meta["apgr"], indent=1))
    model.meta = meta
    model.save(a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size} bytes)")
    write_shipped_data(a.data_out, rows, examples, MODEL_FEATURES)
    print(f"wrote {a.data_out} ({a.data_out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
