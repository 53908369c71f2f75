"""The shipped model's training data, derived: per example its group, labels and signal values.

``tools/train_complexity.py`` writes ``data.csv.gz`` (beside this module) from the labelled data
sets (no prompt text, ~330 KB); ``retrain`` reads it, so a user's feedback can be added to the
shipped data on any machine, offline.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from orchestra.agents.complexity.training import Example

SHIPPED_DATA = Path(__file__).with_name("data.csv.gz")


class ShippedData(NamedTuple):
    """The shipped model's training rows: signal values (in ``features`` order), each row's
    group, label (1 = stronger model needed) and calibration target (share of weak models
    that failed)."""

    features: tuple[str, ...]
    rows: list[list[float]]
    groups: list[str]
    labels: list[float]
    targets: list[float]


_HEADER = ("group", "label", "weak_fail")


def _fmt(v: float) -> str:
    s = f"{v:.3g}"
    return "0" if s in ("0", "-0") else s


def write_shipped_data(
    path: str | Path,
    rows: Sequence[Sequence[float]],
    examples: Sequence[Example],
    features: Sequence[str],
) -> None:
    """Write the derived training data as gzip CSV: ``group,label,weak_fail,<features...>``,
    values at 3 significant digits. Same input, same bytes (no timestamp or name in the header).
    """
    if len(rows) != len(examples):
        raise ValueError(f"{len(rows)} signal rows for {len(examples)} examples")
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow((*_HEADER, *features))
    for r, e in zip(rows, examples, strict=True):
        if len(r) != len(features):
            raise ValueError(f"a row has {len(r)} values for {len(features)} features")
        target = e.label if e.weak_fail is None else e.weak_fail
        out.writerow((e.group, _fmt(e.label), _fmt(target), *map(_fmt, r)))
    with open(path, "wb") as f, gzip.GzipFile("", "wb", 9, f, mtime=0) as gz:
        gz.write(buf.getvalue().encode("utf-8"))


def load_shipped_data(path: str | Path = SHIPPED_DATA) -> ShippedData:
    """Read what ``write_shipped_data`` wrote."""
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:3]) != _HEADER:
            raise ValueError(f"{path}: not complexity training data (header {header!r})")
        data = ShippedData(tuple(header[3:]), [], [], [], [])
        for r in reader:
            data.groups.append(r[0])
            data.labels.append(float(r[1]))
            data.targets.append(float(r[2]))
            data.rows.append(list(map(float, r[3:])))
    return data
