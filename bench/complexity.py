#!/usr/bin/env python3
"""Benchmark the prompt-complexity scorer: APGR and speed.

For GSM8K and MMLU-Pro (as ``../shared/tools/apgr.py`` loads them) prints the APGR of random
routing, prompt length, the shipped scorer, and the cross-data-set scores (train on one data set,
measure on the other), then the microseconds per prompt of ``score`` (p50/p99) and the time
``retrain`` takes for 200 feedback rows.

Then the feedback simulation: does ``retrain`` on a user's feedback route that user's own traffic
better? Each simulated user (GSM8K, MMLU-Pro, single MMLU-Pro categories) gives n feedback rows
drawn by a seeded shuffle, label = 1 - (the weak model apgr.py uses was correct); the shipped and
the retrained scorer are compared by APGR on the user's remaining rows.

    python bench/complexity.py [--data DIR] [--no-cross] [--no-feedback] [--jobs N]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from orchestra.agents.complexity.data import ShippedData, load_shipped_data  # noqa: E402
from orchestra.agents.complexity.retrain import retrain  # noqa: E402
from orchestra.agents.complexity.scorer import Scorer, load_scorer, signals  # noqa: E402
from orchestra.agents.complexity.training import MODEL_FEATURES, Example, fit_scorer  # noqa: E402
from tools.train_complexity import (  # noqa: E402
    DEFAULT_DATA,
    MMLU_FILE,
    Eval,
    load_apgr,
    load_gsm8k,
    load_mmlu_pro,
    transfer,
)

DATASETS = ("gsm8k", "mmlu_pro")
FEEDBACK_SIZES = (50, 200, 800)
FEEDBACK_SEEDS = 5
FEEDBACK_CATEGORIES = ("law", "math")  # MMLU-Pro ``category`` values: one narrow user each
WEIGHT_CASE = ("mmlu_pro:law", 200, 3.0)  # (user, n, weight) of the weight-sensitivity row
# Traffic the base model never saw: a GSM8K user against a base trained on MMLU-Pro only.
UNSEEN_USER, UNSEEN_BASE_GROUPS = "gsm8k", ("mmlu_pro_orig", "mmlu_pro_stem")


def random_apgr(apgr_mod: ModuleType, strong: list[float], weak: list[float]) -> float:
    """Mean APGR of 10 seeded random scorers, as apgr.py prints it."""
    rng = random.Random(0)
    runs = [apgr_mod.apgr([rng.random() for _ in strong], strong, weak)[0] for _ in range(10)]
    return sum(runs) / len(runs)


def cross_apgr(apgr_mod: ModuleType, data: Path) -> dict[str, float]:
    """APGR on each data set of a model trained only on the other one."""
    examples = load_gsm8k(data) + load_mmlu_pro(data)
    rows = [[s[f] for f in MODEL_FEATURES] for s in map(signals, (e.prompt for e in examples))]
    out = {}
    for name in DATASETS:
        on_target = [(e.group == "gsm8k") == (name == "gsm8k") for e in examples]
        _, strong, weak = apgr_mod.load(name, None, None)
        target = Eval([r for r, t in zip(rows, on_target, strict=True) if t], strong, weak)
        train_mask = [not t for t in on_target]
        out[name] = transfer(apgr_mod.apgr, rows, examples, train_mask, target)
    return out


def timing(fn: Callable[[str], float], prompts: Sequence[str]) -> tuple[float, float]:
    """(p50, p99) microseconds per call of ``fn`` over ``prompts``."""
    fn(prompts[0])  # first call compiles the patterns and loads the model
    times = []
    for p in prompts:
        t0 = time.perf_counter_ns()
        fn(p)
        times.append((time.perf_counter_ns() - t0) / 1e3)
    q = statistics.quantiles(times, n=100)
    return q[49], q[98]


def retrain_seconds(prompts: Sequence[str], weak: Sequence[float], n: int = 200) -> float:
    """Seconds ``retrain`` takes (shipped data loading included) for ``n`` feedback rows: seeded
    sample of ``prompts``, label 1 where the weak model failed."""
    pick = random.Random(0).sample(range(len(prompts)), n)
    feedback = [(signals(prompts[i]), 1.0 - weak[i]) for i in pick]
    t0 = time.perf_counter()
    retrain(feedback)
    return time.perf_counter() - t0


def partial_base(groups: Sequence[str]) -> tuple[Scorer, ShippedData]:
    """A base model fitted as the shipped one but only on the shipped rows of ``groups``."""
    data = load_shipped_data()
    idx = [i for i, g in enumerate(data.groups) if g in groups]
    part = ShippedData(
        data.features,
        *([col[i] for i in idx] for col in (data.rows, data.groups, data.labels, data.targets)),
    )
    examples = [
        Example("", label, group, target)
        for label, group, target in zip(part.labels, part.groups, part.targets, strict=True)
    ]
    return fit_scorer(part.rows, examples, part.features), part


class User(NamedTuple):
    """A simulated user's traffic: signals per prompt and the weak and strong models' results."""

    name: str
    sigs: list[dict[str, float]]
    strong: list[float]
    weak: list[float]


def feedback_users(apgr_mod: ModuleType, data: Path) -> list[User]:
    """GSM8K, MMLU-Pro and one user per ``FEEDBACK_CATEGORIES`` entry (weak and strong columns
    as apgr.py loads them), signals extracted once per prompt."""
    users = []
    for name in DATASETS:
        prompts, strong, weak = apgr_mod.load(name, None, None)
        users.append(User(name, [signals(p) for p in prompts], strong, weak))
    with gzip.open(data / MMLU_FILE, "rt", newline="", encoding="utf-8") as f:
        category = [r["category"] for r in csv.DictReader(f)]
    mmlu = users[1]
    if len(category) != len(mmlu.sigs):
        raise ValueError(f"{MMLU_FILE}: {len(category)} rows, apgr.py loaded {len(mmlu.sigs)}")
    for cat in FEEDBACK_CATEGORIES:
        idx = [i for i, c in enumerate(category) if c == cat]
        sigs, strong, weak = ([col[i] for i in idx] for col in (mmlu.sigs, mmlu.strong, mmlu.weak))
        users.append(User(f"mmlu_pro:{cat}", sigs, strong, weak))
    return users


_WORKER: dict[str, Any] = {}


def _bases() -> dict[bool, tuple[Scorer, ShippedData]]:
    """Per process: the shipped model and data (False), the MMLU-Pro-only base (True)."""
    if not _WORKER:
        _WORKER[False] = (load_scorer(), load_shipped_data())
        _WORKER[True] = partial_base(UNSEEN_BASE_GROUPS)
    return _WORKER


def _retrain_job(
    job: tuple[list[tuple[dict[str, float], float]], float, bool],
) -> tuple[Scorer, Any]:
    """``retrain(feedback, weight=weight)`` in a worker, from the shipped model or (``unseen``)
    the MMLU-Pro-only base: the scorer and the report's cross-validation (None if skipped)."""
    feedback, weight, unseen = job
    base, shipped = _bases()[unseen]
    out = retrain(feedback, base, shipped, weight)
    return out.scorer, out.report.get("cv")


def _mean_sd(xs: Sequence[float]) -> str:
    return f"{statistics.mean(xs):+.3f} ± {statistics.stdev(xs):.3f}"


def feedback_table(apgr_mod: ModuleType, users: Sequence[User], jobs: int) -> None:
    """Per user and n: shipped and retrained APGR on the held-out rows (means over
    ``FEEDBACK_SEEDS`` seeded splits), the difference (mean ± sd), on how many seeds it was
    positive, and the AUC change retrain's own k-fold report estimated on the feedback."""
    by_name = {u.name: u for u in users}
    cases = [(u, n, 1.0, False) for u in users for n in FEEDBACK_SIZES if n < len(u.sigs)]
    w_user, w_n, w_weight = WEIGHT_CASE
    if w_user in by_name:
        cases.append((by_name[w_user], w_n, w_weight, False))
    if UNSEEN_USER in by_name:
        cases += [(by_name[UNSEEN_USER], n, 1.0, True) for n in FEEDBACK_SIZES]
    jobs_in, held = [], []
    for user, n, weight, unseen in cases:
        for seed in range(FEEDBACK_SEEDS):
            order = list(range(len(user.sigs)))
            random.Random(seed).shuffle(order)  # same order for every n: nested feedback sets
            feedback = [(user.sigs[i], 1.0 - user.weak[i]) for i in order[:n]]
            jobs_in.append((feedback, weight, unseen))
            held.append(order[n:])
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max(1, jobs)) as pool:
        results = list(pool.map(_retrain_job, jobs_in))
    seconds = time.perf_counter() - t0
    bases = {unseen: model for unseen, (model, _) in _bases().items()}
    print(
        "Feedback: retrain on n rows of a user's traffic (label = weak model failed), APGR on "
        f"the user's other rows; mean of {FEEDBACK_SEEDS} seeded splits, diff = retrained - "
        "shipped."
    )
    print(
        f"{'user':16} {'n':>4} {'w':>3} {'held':>6} {'shipped':>8} {'retrained':>9} "
        f"{'diff mean ± sd':>16} {'>0':>4} {'cv dAUC':>8}"
    )
    k = 0
    for user, n, weight, unseen in cases:
        base_v, new_v, cv_d = [], [], []
        for _ in range(FEEDBACK_SEEDS):
            idx = held[k]
            strong = [user.strong[i] for i in idx]
            weak = [user.weak[i] for i in idx]
            scorer, cv = results[k]
            for model, out in ((bases[unseen], base_v), (scorer, new_v)):
                out.append(
                    apgr_mod.apgr([model.linear(user.sigs[i]) for i in idx], strong, weak)[0]
                )
            if cv:
                cv_d.append(cv["auc_retrained"] - cv["auc_base"])
            k += 1
        diff = [b - a for a, b in zip(base_v, new_v, strict=True)]
        cv_s = f"{statistics.mean(cv_d):+8.3f}" if cv_d else f"{'-':>8}"
        label = user.name + (" (unseen)" if unseen else "")
        print(
            f"{label:16} {n:4d} {weight:3g} {len(held[k - 1]):6d} "
            f"{statistics.mean(base_v):8.3f} {statistics.mean(new_v):9.3f} "
            f"{_mean_sd(diff):>16} {sum(d > 0 for d in diff):2d}/{FEEDBACK_SEEDS} {cv_s}"
        )
    print(
        "The shipped model was trained on all GSM8K and MMLU-Pro rows, the held-out ones "
        "included:\nthis measures in-distribution adaptation. '(unseen)': the base is fitted on "
        "MMLU-Pro only\n(as shipped, minus GSM8K), so GSM8K is traffic it never saw. "
        "cv dAUC = retrain's\nown report (k-fold AUC on the feedback, retrained - base). "
        f"{len(jobs_in)} retrains in {seconds:.0f} s ({max(1, jobs)} processes)."
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="routing data directory")
    ap.add_argument("--no-cross", action="store_true", help="skip the cross-data-set training")
    ap.add_argument("--no-feedback", action="store_true", help="skip the feedback simulation")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="retraining processes")
    a = ap.parse_args(argv)
    apgr_mod = load_apgr(a.data)
    apgr_mod.DATA = a.data
    scorer = load_scorer()
    cross = {} if a.no_cross else cross_apgr(apgr_mod, a.data)
    print(
        f"{'data set':10} {'random':>7} {'length':>7} {'shipped':>8} {'cross':>7}  cross = "
        "trained on the other data set only"
    )
    all_prompts: list[str] = []
    all_weak: list[float] = []
    for name in DATASETS:
        prompts, strong, weak = apgr_mod.load(name, None, None)
        all_prompts += prompts
        all_weak += weak
        length = apgr_mod.apgr([float(len(p)) for p in prompts], strong, weak)[0]
        shipped = apgr_mod.apgr([scorer.score(p) for p in prompts], strong, weak)[0]
        x = f"{cross[name]:7.3f}" if name in cross else f"{'-':>7}"
        print(
            f"{name:10} {random_apgr(apgr_mod, strong, weak):7.3f} {length:7.3f} {shipped:8.3f} {x}"
        )
    p50, p99 = timing(scorer.score, all_prompts)
    print(
        f"score(): p50 {p50:.0f} us, p99 {p99:.0f} us per prompt "
        f"({len(all_prompts)} prompts, one core)"
    )
    print(f"retrain(): {retrain_seconds(all_prompts, all_weak):.2f} s for 200 feedback rows")
    if not a.no_feedback:
        print()
        feedback_table(apgr_mod, feedback_users(apgr_mod, a.data), a.jobs)


if __name__ == "__main__":
    main()
