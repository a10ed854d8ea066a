"""The house rules, checked on the source: imports flow one way, no cycles, no imports hidden in functions, pure
layers stay pure, small files that say what they are for.

The layers, lowest first (DESIGN §2): ``_util, config, errors`` → ``core`` → ``engine, strategies`` → ``results,
candles, coinbase`` → ``execution`` → ``sweeps, farm, paper, simulator`` → ``dashboard, cli``. A module may import
from a lower layer; within a layer only along the few directions listed in :data:`SIDEWAYS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "backfarm"
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "config", "_util"),
    ("core",),
    ("engine", "strategies"),
    ("results", "candles", "coinbase"),
    ("execution",),
    ("sweeps", "farm", "paper", "simulator"),
    ("dashboard", "cli"),
    ("api",),
)
SIDEWAYS = frozenset(
    {
        ("config", "errors"),
        ("_util", "errors"),
        ("_util", "config"),
        ("candles", "coinbase"),  # the Coinbase candle source
        ("farm", "sweeps"),  # the farm executor rebuilds a recorded sweep's jobs
        ("farm", "paper"),  # farm tasks run paper sessions
        ("cli", "dashboard"),
    }
)
"""The only imports allowed within a layer: (importer, imported)."""
PURE = {"engine", "strategies", "core"}
"""Packages that must not touch Redis, Celery, HTTP, the file system or the embedded database."""
IMPURE = {"redis", "celery", "kombu", "requests", "aiohttp", "websockets", "sqlite3", "pyarrow", "socket", "shutil"}
MAX_LINES = 700
LAYER_OF = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def modules() -> Iterator[tuple[str, Path]]:
    """Every module of the package: (dotted name, path)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def part_of(module: str) -> str | None:
    """The package (layer part) a ``backfarm.*`` module belongs to; ``None`` for the package root."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


class Imports(ast.NodeVisitor):
    """The backfarm modules a file imports, and where: at module level, only for type checking, or in a function."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int, str]] = []  # (imported module, line, "module" | "typing" | "function")
        self.third_party: set[str] = set()
        self._where = "module"

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
            before, self._where = self._where, "typing"
            for child in node.body:
                self.visit(child)
            self._where = before
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        before, self._where = self._where, "function"
        self.generic_visit(node)
        self._where = before

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            anchor = self.module.split(".")
            anchor = anchor if self.is_package else anchor[:-1]
            base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
        if base == "backfarm" or base.startswith("backfarm."):
            for alias in node.names:  # `from backfarm.x import y` may name the module backfarm.x.y
                candidate = f"{base}.{alias.name}"
                known = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    PACKAGE.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists()
                self._add(candidate if known else base, node.lineno)
        else:
            self._add(base, node.lineno)

    def _add(self, name: str, line: int) -> None:
        if name == "backfarm" or name.startswith("backfarm."):
            self.found.append((name, line, self._where))
        else:
            self.third_party.add(name.split(".")[0])


def imports_of(module: str, path: Path) -> Imports:
    visitor = Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor


MODULES = dict(modules())
IMPORTS = {name: imports_of(name, path) for name, path in MODULES.items()}


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for module, found in IMPORTS.items():
        importer = part_of(module)
        if importer is None or importer == "__main__":
            continue
        for imported, line, _ in found.found:
            target = part_of(imported)
            if target is None or target == importer:
                continue
            lower = LAYER_OF[target] < LAYER_OF[importer]
            if not lower and (importer, target) not in SIDEWAYS:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {importer} -> {target}")
    assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_every_package_has_a_layer() -> None:
    parts = {part_of(m) for m in MODULES} - {None, "__main__"}
    assert parts <= set(LAYER_OF), sorted(parts - set(LAYER_OF))


def test_no_import_cycles() -> None:
    graph = {m: {i for i, _, _ in IMPORTS[m].found if i in MODULES and i != m} for m in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    # A package's __init__ that hands on names of its own submodules is not a cycle worth naming.
    real = [c for c in cycles if not all(c[0].startswith(m) or m.startswith(c[0]) for m in c)]
    assert real == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_no_imports_hidden_in_functions_outside_the_cli() -> None:
    hidden = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {imported}"
        for module, found in IMPORTS.items()
        if part_of(module) != "cli"
        for imported, line, where in found.found
        if where == "function"
    ]
    # The one exception: the package root hands out ``backfarm.Indicators`` on first use (it compiles numba kernels,
    # which ``import backfarm``, and so every command, must not pay for).
    assert hidden == ["backfarm/__init__.py:24: backfarm.strategies.indicators"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part_of(m) == "cli"))
def test_cli_imports_in_functions_say_why(module: str) -> None:
    """The CLI imports what a command runs inside the command, so ``backfarm --help`` stays fast: each module that
    does so says it."""
    if any(where == "function" for _, _, where in IMPORTS[module].found):
        assert "`backfarm --help`" in MODULES[module].read_text(), f"{module}: say why imports are in functions"


def test_the_pure_layers_touch_no_io() -> None:
    touched = {module: sorted(IMPORTS[module].third_party & IMPURE) for module in MODULES if part_of(module) in PURE}
    assert {m: t for m, t in touched.items() if t} == {}


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts))
def test_no_file_of_the_package_is_over_700_lines(path: Path) -> None:
    if path.suffix in (".png", ".woff", ".woff2", ".ttf", ".ico", ".nbi", ".nbc") or "vendor" in path.parts:
        return  # binary, or a vendored library kept as shipped
    lines = len(path.read_bytes().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_is_for(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text())
    doc = ast.get_docstring(tree)
    assert doc, f"{module} has no docstring"
    summary = doc.split("\n\n")[0]
    assert len(summary.splitlines()) <= 2, f"{module}: say what it is for in one or two lines first"
