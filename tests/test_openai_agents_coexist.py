"""Orchestra installs beside the OpenAI Agents SDK, whose top-level package is `agents`.

Orchestra used to ship a top-level `agents/` too: installing one package then overwrote the
other's files, and uninstalling either broke the other. Here each install order gets a fresh
venv; both must import, no file may belong to both, and uninstalling either (in turn) must leave
the other whole and importable.

Nothing reaches the network: Orchestra's wheel is built from this tree, and openai-agents with
its dependencies comes from the directory named by ORCHESTRA_WHEELS, which `.ci/run` fills.
Orchestra goes in with --no-deps; its own dependencies (pydantic, litellm, ...) are seen from the
venv running the tests, appended to the fresh venv's path after its own site-packages.
"""

from __future__ import annotations

import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from wheel_helpers import build_wheel, run

ORCHESTRA, AGENTS = "orchestra-llm", "openai-agents"
PACKAGE = {ORCHESTRA: "orchestra", AGENTS: "agents"}  # each distribution's top-level package
OPENAI_AGENTS_PIN = "openai-agents==0.24.0"  # as .ci/run downloads it

# Run in the fresh venv's Python: imports the packages of the distributions named in argv[1:],
# and reports where each package is found and whether each distribution's files are all there.
PROBE = r"""
import importlib.metadata as md
import importlib.util
import json
import sys
import sysconfig
from pathlib import Path

SITE = Path(sysconfig.get_paths()["purelib"]).resolve()
PACKAGE = {"orchestra-llm": "orchestra", "openai-agents": "agents"}
report = {"site": str(SITE), "imports": {}, "found": {}, "dists": {}}


def use_orchestra():
    import orchestra
    from orchestra.agents.cost import CostAgent
    from orchestra.runtime import Orchestra

    assert Orchestra.__module__ == "orchestra.runtime", Orchestra.__module__
    assert CostAgent.__module__ == "orchestra.agents.cost", CostAgent.__module__
    return orchestra.__file__


def use_agents():
    import agents
    from agents import Agent, Runner

    assert callable(Runner.run), "agents.Runner has no run"
    assert Agent(name="probe", instructions="say hi").name == "probe"
    return agents.__file__


for dist in sys.argv[1:]:
    try:
        where = use_orchestra() if dist == "orchestra-llm" else use_agents()
        report["imports"][dist] = {"file": str(Path(where).resolve())}
    except Exception as e:
        report["imports"][dist] = {"error": f"{type(e).__name__}: {e}"}

for dist, package in PACKAGE.items():
    spec = importlib.util.find_spec(package)
    places = [] if spec is None else [spec.origin, *(spec.submodule_search_locations or [])]
    report["found"][dist] = [str(Path(p).resolve()) for p in places if p]

for d in md.distributions(path=[str(SITE)]):  # the fresh venv's own, not the appended path's
    name = d.metadata["Name"]
    if name in PACKAGE:
        files = [str(f) for f in d.files or []]
        missing = [f for f in files if not Path(d.locate_file(f)).exists()]
        report["dists"][name] = {"files": files, "missing": missing}

print(json.dumps(report))
"""


@pytest.fixture
def wheels() -> Path:
    """The directory holding openai-agents' wheel and its dependencies'."""
    value = os.environ.get("ORCHESTRA_WHEELS", "")
    path = Path(value) if value else None
    if path is None or not path.is_dir() or not any(path.iterdir()):
        reason = (
            f"ORCHESTRA_WHEELS is unset or names no wheels ({value!r}); to run this test: "
            f"python3 -m pip download --dest .ci/wheels {OPENAI_AGENTS_PIN} && "
            'export ORCHESTRA_WHEELS="$PWD/.ci/wheels" (.ci/run does both)'
        )
        if os.environ.get("ORCHESTRA_CI") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    if not any(path.glob("openai_agents-*.whl")):
        pytest.fail(f"ORCHESTRA_WHEELS={value} holds no openai-agents wheel", pytrace=False)
    return path


@pytest.fixture(scope="module")
def orchestra_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("orchestra-wheel"))


class FreshVenv:
    """A venv without pip, driven by the outer pip's --python; nothing from the index."""

    def __init__(self, root: Path, orchestra_wheel: Path, wheels: Path) -> None:
        run([sys.executable, "-m", "venv", "--without-pip", root])
        self.python = root / "bin" / "python"
        self.site = Path(self._python_says('sysconfig.get_paths()["purelib"]')).resolve()
        self.orchestra_wheel, self.wheels = orchestra_wheel, wheels

    def _python_says(self, expression: str) -> str:
        code = f"import sysconfig; print({expression})"
        return run([self.python, "-c", code]).stdout.strip()

    def pip(self, *args: str | Path) -> None:
        run([sys.executable, "-m", "pip", "--python", self.python, *args])

    def install(self, dist: str, *, deps: bool = True) -> None:
        if dist == ORCHESTRA:
            self.pip("install", "--no-index", "--no-deps", self.orchestra_wheel)
        else:
            no_deps = [] if deps else ["--no-deps"]
            self.pip("install", "--no-index", "--find-links", self.wheels, *no_deps, dist)

    def uninstall(self, dist: str) -> None:
        self.pip("uninstall", "-y", dist)

    @contextmanager
    def seeing_outer_packages(self) -> Iterator[None]:
        """Appends the test venv's site-packages to the fresh venv's path, after its own.

        A .pth line is appended to sys.path, and .pth files inside an appended directory are
        not read, so the test venv's editable Orchestra stays out. Pip runs without it: it
        would take the test venv's packages for installed ones.
        """
        pth = self.site / "zz_test_venv_packages.pth"
        pth.write_text(sysconfig.get_paths()["purelib"] + "\n")
        try:
            yield
        finally:
            pth.unlink()

    def probe(self, *importing: str) -> dict[str, Any]:
        with self.seeing_outer_packages():
            report: dict[str, Any] = json.loads(
                run([self.python, "-c", PROBE, *importing], timeout=120).stdout
            )
        return report

    def inside(self, path: str) -> bool:
        return Path(path).is_relative_to(self.site)


def assert_imports(venv: FreshVenv, report: dict[str, Any], dist: str, stage: str) -> None:
    outcome = report["imports"][dist]
    assert "error" not in outcome, f"{stage}: {dist} does not import: {outcome['error']}"
    assert venv.inside(outcome["file"]), f"{stage}: {dist} imported from {outcome['file']}"
    installed = report["dists"].get(dist)
    assert installed is not None, f"{stage}: {dist} is not installed in {venv.site}"
    assert not installed["missing"], f"{stage}: files of {dist} are gone: {installed['missing']}"


def assert_gone(venv: FreshVenv, report: dict[str, Any], dist: str, stage: str) -> None:
    assert dist not in report["dists"], f"{stage}: {dist} is still installed"
    left = [p for p in report["found"][dist] if venv.inside(p)]
    assert not left, f"{stage}: `{PACKAGE[dist]}` is still in the venv after uninstall: {left}"


def test_ci_fetches_the_pinned_wheels_before_the_test_command() -> None:
    root = Path(__file__).resolve().parents[1]
    lines = (root / ".ci" / "run").read_text().strip().splitlines()
    setup, last = lines[:-1], lines[-1]
    assert f"python3 -m pip download --dest .ci/wheels {OPENAI_AGENTS_PIN}" in setup
    assert 'export ORCHESTRA_WHEELS="$PWD/.ci/wheels"' in setup
    assert "export ORCHESTRA_CI=1" in setup
    assert last in (root / "README.md").read_text().splitlines(), "not the README's command"
    assert ".ci/wheels/" in (root / ".gitignore").read_text().splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("first", [ORCHESTRA, AGENTS], ids=["orchestra-first", "agents-first"])
def test_orchestra_and_openai_agents_coexist(
    first: str, orchestra_wheel: Path, wheels: Path, tmp_path: Path
) -> None:
    second = AGENTS if first == ORCHESTRA else ORCHESTRA
    venv = FreshVenv(tmp_path / "venv", orchestra_wheel, wheels)
    venv.install(first)
    venv.install(second)

    both = venv.probe(first, second)
    for dist in (first, second):
        assert_imports(venv, both, dist, "both installed")
    shared = set(both["dists"][first]["files"]) & set(both["dists"][second]["files"])
    assert not shared, f"files that both distributions install: {sorted(shared)}"

    # Uninstall the second (which would have overwritten the first's files), then the first.
    venv.uninstall(second)
    report = venv.probe(first)
    assert_imports(venv, report, first, f"{second} uninstalled")
    assert_gone(venv, report, second, f"{second} uninstalled")

    venv.install(second, deps=False)  # its dependencies are still there
    venv.uninstall(first)
    report = venv.probe(second)
    assert_imports(venv, report, second, f"{first} uninstalled")
    assert_gone(venv, report, first, f"{first} uninstalled")
