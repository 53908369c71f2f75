"""The package's structure holds: where SQL lives, who imports whom, what `import orchestra` costs,
and what the distribution installs.

Each check reads the source with `ast` (nothing is imported but where a test says so), so a
break is reported as `module:line` wherever it is, even in code no other test runs.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

from wheel_helpers import build_wheel, wheel_names

import orchestra

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orchestra"
STORE = "orchestra.store"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def package_modules() -> dict[str, Path]:
    """Every module of the `orchestra` package (its subpackages included), by dotted name."""
    paths = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
    return {module_name(p): p for p in paths}


MODULES = package_modules()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def in_part(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


# -- (a) SQL lives in orchestra/store/ ---------------------------------------------------------

# Statement-shaped SQL, upper-case keywords as the store writes them. A lone keyword ("SELECT "
# in the complexity scorer's list of code markers) is not a statement and does not match.
SQL_STATEMENT = re.compile(
    r"""
      \bSELECT\s+\S[\s\S]*?\bFROM\s+[\w"({]
    | \bINSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\s+[\w"{]
    | \bREPLACE\s+INTO\s+[\w"{]
    | \bUPDATE\s+(?:OR\s+[A-Z]+\s+)?[\w"{]\S*\s+SET\s+\w
    | \bDELETE\s+FROM\s+[\w"{]
    | \bCREATE\s+(?:UNIQUE\s+|TEMP\s+|TEMPORARY\s+|VIRTUAL\s+)?(?:TABLE|INDEX|TRIGGER|VIEW)\b
    | \bDROP\s+(?:TABLE|INDEX|TRIGGER|VIEW)\b
    | \bALTER\s+TABLE\s+[\w"{]
    | \bPRAGMA\s+[\w{]
    | \bBEGIN\s+(?:IMMEDIATE|EXCLUSIVE|DEFERRED|TRANSACTION)\b
    """,
    re.VERBOSE,
)

DRIVERS = ("sqlite3", "aiosqlite", "asyncpg", "psycopg", "psycopg2")


@dataclass(frozen=True)
class Finding:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def _text(node: ast.expr) -> str | None:
    """The literal text of a string expression; `{}` stands for each interpolated part.

    f-strings and `+` chains are read whole, so SQL split across their parts is still seen.
    """
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) or "{}" for v in node.values)
    if isinstance(node, ast.FormattedValue):
        return "{}"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is None and right is None:
            return None
        return (left or "{}") + (right or "{}")
    return None


def sql_strings(module: str, tree: ast.Module) -> Iterator[Finding]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant | ast.JoinedStr | ast.BinOp):
            text = _text(node)
            if text is not None and (match := SQL_STATEMENT.search(text)):
                yield Finding(module, node.lineno, f"SQL {match.group(0)[:60]!r}")


def _imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module] if node.module and node.level == 0 else []


def driver_imports(module: str, tree: ast.Module) -> Iterator[Finding]:
    """Imports of a database driver, under TYPE_CHECKING too, and `import_module("driver")`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = _imported_names(node)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            names = []
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                names = [str(arg.value)]
        else:
            continue
        for name in names:
            if name.split(".")[0] in DRIVERS:
                yield Finding(module, node.lineno, f"imports the database driver {name}")


def test_sql_pattern_knows_statements_from_keywords() -> None:
    for statement in (
        "SELECT id FROM requests WHERE id = ?",
        "SELECT COALESCE(SUM(cost_usd), 0), COUNT(*) FROM ledger",
        "INSERT INTO ledger (at) VALUES (?)",
        "INSERT OR REPLACE INTO verdicts VALUES (?)",
        "UPDATE requests SET status = ?",
        "DELETE FROM response_cache WHERE expires_at <= ?",
        "CREATE TABLE t (a INTEGER)",
        "CREATE UNIQUE INDEX i ON t(a)",
        "CREATE TRIGGER x AFTER INSERT ON t BEGIN SELECT 1; END",
        "ALTER TABLE attempts ADD COLUMN cached INTEGER",
        "PRAGMA user_version",
        "BEGIN IMMEDIATE",
    ):
        assert SQL_STATEMENT.search(statement), statement
    for not_a_statement in ("SELECT ", "select id from t", "Select a model from the catalog"):
        assert not SQL_STATEMENT.search(not_a_statement), not_a_statement


def test_sql_scan_reads_fstrings_and_concatenations() -> None:
    tree = ast.parse(
        'a = f"SELECT * FROM {table} WHERE x = ?"\n'
        'b = "DELETE " + "FROM " + table\n'
        'c = ("PRAGMA " f"{name}")\n'
        'd = ("SELECT ", "print(")\n'
    )
    assert sorted(f.line for f in sql_strings("m", tree)) == [1, 2, 3]


def test_the_store_holds_sql_and_the_scan_sees_it() -> None:
    """Guards the scan itself: were it blind, the test below would pass on anything."""
    found = [f for m, p in MODULES.items() if in_part(m, STORE) for f in sql_strings(m, parse(p))]
    assert len({f.module for f in found}) >= 2, found
    drivers = [f for m, p in MODULES.items() for f in driver_imports(m, parse(p))]
    assert any(in_part(f.module, STORE) for f in drivers), drivers


def test_no_sql_and_no_database_driver_outside_the_store() -> None:
    found: list[Finding] = []
    for module, path in MODULES.items():
        if in_part(module, STORE):
            continue
        tree = parse(path)
        found += sql_strings(module, tree)
        found += driver_imports(module, tree)
    assert not found, "SQL and database drivers belong in orchestra/store/ only:\n" + "\n".join(
        map(str, found)
    )


# -- (b) layering ------------------------------------------------------------------------------

# Bottom to top. A module may import its own part and any part of a lower layer; parts of one
# layer may import each other only where the layer is in OPEN_LAYERS.
LAYERS: dict[str, int] = {
    "orchestra.core": 0,
    "orchestra.spend": 1,
    "orchestra.agents": 2,
    "orchestra.policies": 2,
    "orchestra.execution": 3,
    "orchestra.testing": 4,
    "orchestra.plugin": 4,
    "orchestra.store": 5,
    "orchestra.lab": 6,
    "orchestra.config": 7,
    "orchestra.runtime": 8,
    "orchestra.response_stream": 8,
    "orchestra.sync": 8,
    "orchestra.discovery": 8,
    "orchestra.cli": 9,
    "orchestra.server": 9,
}
OPEN_LAYERS = {8}  # the runtime layer
TOP = "orchestra"  # lazy exports through strings; its imports are all under TYPE_CHECKING


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if is_pkg else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def import_edges(
    module: str, path: Path, *, type_checking: bool = False, modules: set[str] | None = None
) -> list[Edge]:
    """`module`'s imports of `orchestra` modules, at module level and inside functions.

    `from a.b import c` is an edge to `a.b`, and to `a.b.c` too when that is a module. Imports
    under `if TYPE_CHECKING:` count only with `type_checking=True`.
    """
    known = set(MODULES) if modules is None else modules
    edges: list[Edge] = []

    def add(target: str, line: int) -> None:
        if target in known or target == TOP:
            edges.append(Edge(module, target, line))

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if _is_type_checking(node.test) and not type_checking:
                for child in node.orelse:
                    self.visit(child)
            else:
                self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            for alias in node.names:
                add(alias.name, node.lineno)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            base = _resolve(module, is_package(path), node)
            add(base, node.lineno)
            for alias in node.names:
                add(f"{base}.{alias.name}", node.lineno)

    Visitor().visit(parse(path))
    return edges


def import_graph() -> list[Edge]:
    return [e for m, p in MODULES.items() if m != TOP for e in import_edges(m, p)]


def part_of(module: str) -> str | None:
    parts = [part for part in LAYERS if in_part(module, part)]
    return max(parts, key=len) if parts else None


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_violations(edges: list[Edge]) -> list[str]:
    bad = []
    for e in edges:
        if e.target == TOP:
            bad.append(f"{e}: import from the defining module, not the top-level facade")
            continue
        source, target = part_of(e.source), part_of(e.target)
        if source is None or target is None or source == target:
            continue  # a module without a layer fails test_every_module_has_a_layer
        s, t = LAYERS[source], LAYERS[target]
        if t > s or (t == s and s not in OPEN_LAYERS):
            bad.append(f"{e}: {source} (layer {s}) may not import {target} (layer {t})")
    return bad


def test_import_collector_reads_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "orchestra" / "lab"
    pkg.mkdir(parents=True)
    source = pkg / "thing.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import orchestra.core.tier\n"
        "from orchestra.execution import backend, nothing\n"
        "from . import world\n"
        "from ..spend.budget import Budget\n"
        "if TYPE_CHECKING:\n"
        "    from orchestra.runtime import Orchestra\n"
        "else:\n"
        "    import orchestra.config\n"
        "def f():\n"
        "    from orchestra.store import sqlite\n"
    )
    known = {
        "orchestra.core.tier",
        "orchestra.execution",
        "orchestra.execution.backend",
        "orchestra.lab",
        "orchestra.lab.world",
        "orchestra.spend.budget",
        "orchestra.runtime",
        "orchestra.config",
        "orchestra.store",
        "orchestra.store.sqlite",
    }
    edges = import_edges("orchestra.lab.thing", source, modules=known)
    assert [(e.target, e.line) for e in edges] == [
        ("orchestra.core.tier", 2),
        ("orchestra.execution", 3),
        ("orchestra.execution.backend", 3),
        ("orchestra.lab", 4),
        ("orchestra.lab.world", 4),
        ("orchestra.spend.budget", 5),
        ("orchestra.config", 9),
        ("orchestra.store", 11),
        ("orchestra.store.sqlite", 11),
    ]
    with_types = import_edges("orchestra.lab.thing", source, type_checking=True, modules=known)
    assert ("orchestra.runtime", 7) in [(e.target, e.line) for e in with_types]


def test_cycle_and_layer_checks_catch_what_they_should() -> None:
    loop = [Edge("a", "b", 1), Edge("b", "c", 1), Edge("c", "a", 1), Edge("c", "d", 1)]
    assert cycles(loop) == [["a", "b", "c"]]
    assert layer_violations([Edge("orchestra.agents.cost", "orchestra.policies.base", 3)])
    assert layer_violations([Edge("orchestra.core.tier", "orchestra.spend.budget", 3)])
    assert layer_violations([Edge("orchestra.plugin", "orchestra.testing", 3)])
    assert layer_violations([Edge("orchestra.cli.main", TOP, 3)])
    assert not layer_violations([Edge("orchestra.sync", "orchestra.runtime", 3)])
    assert not layer_violations([Edge("orchestra.store.sqlite", "orchestra.execution.cache", 3)])


def test_the_graph_is_the_real_one() -> None:
    """Guards the graph itself: an empty one would pass every check below."""
    edges = {(e.source, e.target) for e in import_graph()}
    assert len(edges) > 100
    assert ("orchestra.plugin", "orchestra.agents.base") in edges
    assert ("orchestra.runtime", "orchestra.config") in edges


def test_every_module_has_a_layer() -> None:
    missing = [m for m in MODULES if m != TOP and part_of(m) is None]
    assert not missing, f"give it a layer (LAYERS in {Path(__file__).name}): {missing}"


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_imports_respect_the_layers() -> None:
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_core_imports_nothing_of_orchestra_outside_core() -> None:
    """Stricter than the layering: not even for type checking."""
    bad = [
        str(e)
        for m, p in MODULES.items()
        if in_part(m, "orchestra.core")
        for e in import_edges(m, p, type_checking=True)
        if not in_part(e.target, "orchestra.core")
    ]
    assert not bad, "orchestra.core is the bottom layer:\n" + "\n".join(bad)


# -- (c) `import orchestra` is cheap -------------------------------------------------------------

HEAVY = ("pydantic", "litellm", "httpx", "rich", "aiosqlite")


def test_import_orchestra_imports_nothing_heavy() -> None:
    code = "import json, sys; import orchestra; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout)
    heavy = sorted({m.split(".")[0] for m in loaded} & set(HEAVY))
    assert not heavy, f"`import orchestra` imported {heavy}"
    eager = [m for m in loaded if m.startswith("orchestra.")]
    assert not eager, f"`import orchestra` imported {eager}: its exports are lazy"


def test_help_imports_nothing_heavy() -> None:
    """`orchestra --help` stays within a few times `python -c pass` (bench/cold_start.py)."""
    code = (
        "import json, sys\nfrom orchestra.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    heavy = sorted({m.split(".")[0] for m in loaded} & {*HEAVY, "asyncio", "typing"})
    assert not heavy, f"`orchestra --help` imported {heavy}"


def test_all_is_the_lazy_export_table() -> None:
    exports: dict[str, str] = orchestra._EXPORTS
    assert len(set(orchestra.__all__)) == len(orchestra.__all__), "a name twice in __all__"
    assert set(orchestra.__all__) == {*exports, "__version__"}
    for name in orchestra.__all__:
        value = getattr(orchestra, name)
        if name in exports:
            assert value is getattr(import_module(exports[name]), name), name
    assert set(orchestra.__all__) <= set(dir(orchestra))


def test_every_error_of_the_tree_is_exported() -> None:
    """The README sends users to `orchestra.OrchestraError`'s tree (and names
    `orchestra.NotRecorded`): each of its errors can be caught as `orchestra.<Name>`."""
    from orchestra.core import errors

    tree = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.OrchestraError)
    }
    assert tree - set(orchestra.__all__) == set()


def test_type_checkers_see_the_same_exports() -> None:
    """The TYPE_CHECKING block imports each export from the module the table names."""
    seen: dict[str, str] = {}
    for node in parse(PACKAGE / "__init__.py").body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module, ast.dump(imp)
                seen.update({alias.asname or alias.name: imp.module for alias in imp.names})
    assert seen == orchestra._EXPORTS


# -- (d) the distribution installs `orchestra` and nothing else at the top --------------------


def test_package_discovery_finds_only_orchestra() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in setuptools or "find" in setuptools["packages"], setuptools
    assert "py-modules" not in setuptools, "a top-level module would install beside orchestra"
    includes = setuptools["packages"]["find"]["include"]
    others = [i for i in includes if not re.fullmatch(r"orchestra(\.[\w.*]*|\*)?", i)]
    assert includes and not others, f"packages.find includes more than orchestra: {others}"


def test_the_wheel_holds_orchestra_only(tmp_path: Path) -> None:
    names = wheel_names(build_wheel(tmp_path))
    top = {name.split("/")[0] for name in names}
    others = {t for t in top if t != "orchestra" and not t.endswith(".dist-info")}
    assert not others, f"the wheel installs more than orchestra at the top: {sorted(others)}"
    shipped = {n for n in names if n.startswith("orchestra/") and n.endswith(".py")}
    in_tree = {p.relative_to(ROOT).as_posix() for p in MODULES.values()}
    assert shipped == in_tree, f"not shipped: {sorted(in_tree - shipped)}"
    for data in (
        *("py.typed", "agents/complexity/model.json", "agents/complexity/data.csv.gz"),
        *("server/static/index.html", "server/static/dashboard.js", "server/static/dashboard.css"),
        *("server/static/vendor/uplot/uPlot.iife.min.js", "server/static/vendor/uplot/LICENSE"),
        "server/static/vendor/uplot/VERSION",
    ):
        assert f"orchestra/{data}" in names, data
