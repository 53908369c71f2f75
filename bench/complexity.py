#!/usr/bin/env python3
"""Benchmark the prompt-complexity scorer: APGR and speed.

For GSM8K and MMLU-Pro (as ``../shared/tools/apgr.py`` loads them) prints the APGR of random
routing, prompt length, the shipped scorer, and the cross-data-set scores (train on one data set,
measure on the other), then the microseconds per prompt of ``score`` (p50/p99) and the time
``retrain`` takes for 200 feedback rows.

    python bench/complexity.py [--data DIR] [--no-cross]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from agents.complexity_retrain import retrain  # noqa: E402
from agents.complexity_scorer import load_scorer, signals  # noqa: E402
from agents.complexity_training import MODEL_FEATURES  # noqa: E402
from tools.train_complexity import (  # noqa: E402
    DEFAULT_DATA,
    Eval,
    load_apgr,
    load_gsm8k,
    load_mmlu_pro,
    transfer,
)

DATASETS = ("gsm8k", "mmlu_pro")


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


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="routing data directory")
    ap.add_argument("--no-cross", action="store_true", help="skip the cross-data-set training")
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


if __name__ == "__main__":
    main()
