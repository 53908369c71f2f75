"""Builds Orchestra's wheel offline, from a copy of the source tree (for the structure tests).

The copy keeps the real tree clean (setuptools writes `build/` and `*.egg-info` beside the
sources) and keeps a stale `build/lib` from an earlier build out of the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Left out of the copy: at the top, what is not the project's source; anywhere, build litter.
_TOP_LEVEL_SKIPPED = {".git", ".ci", ".venv", "venv", "build", "dist", "bench"}
_SKIPPED_ANYWHERE = ("__pycache__", "*.egg-info", "*.pyc", ".*_cache", ".hypothesis")


def clean_env() -> dict[str, str]:
    """The environment for a pip or Python child: no PYTHONPATH, no pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,  # neither the machine's index nor its find-links
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def run(args: Iterable[str | Path], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs a command with `clean_env()`; fails the test, with its output, if it fails."""
    argv = [str(a) for a in args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env())
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(argv)} exited {done.returncode}\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return done


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(shutil.ignore_patterns(*_SKIPPED_ANYWHERE)(directory, names))
    if Path(directory) == ROOT:
        skipped |= _TOP_LEVEL_SKIPPED & set(names)
    return skipped


def build_wheel(dest: Path) -> Path:
    """Builds Orchestra's wheel into `dest` without the network and returns its path."""
    setuptools_major = int(version("setuptools").split(".")[0])
    if setuptools_major < 77:  # the SPDX `license = "..."` form in pyproject.toml needs 77
        pytest.fail(
            f"setuptools {version('setuptools')} cannot build the wheel; "
            "`pip install -e '.[test]'` brings setuptools>=77",
            pytrace=False,
        )
    source = dest / "source"
    shutil.copytree(ROOT, source, ignore=_ignore)
    out = dest / "wheel"
    run(
        [
            *(sys.executable, "-m", "pip", "wheel"),
            *("--no-deps", "--no-build-isolation", "--no-index"),
            *("-w", out, source),
        ]
    )
    (wheel,) = out.glob("orchestra_llm-*.whl")
    return wheel


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()
