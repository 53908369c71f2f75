"""The package's type hints hold: mypy --strict (configured in pyproject.toml) finds nothing.

`py.typed` ships, so users' type checkers read these hints; a wrong one is a bug they would see.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_strict_finds_nothing() -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_py_typed_ships_with_the_package() -> None:
    import orchestra

    assert (Path(orchestra.__file__).parent / "py.typed").is_file()
    text = (ROOT / "pyproject.toml").read_text()
    assert '"orchestra" = ["py.typed"]' in text
