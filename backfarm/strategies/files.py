"""Strategy files: the ``.py`` files of ``--strategy-path`` (files, or folders of them) imported as strategies.

A file defines one or more public (not ``_``-prefixed), concrete :class:`Strategy` subclasses, or functions made
strategies by :func:`backfarm.strategies.base.strategy`. In a folder, every ``*.py`` file not starting with ``_`` is
loaded and a file without strategies is a helper; a file named on its own must define at least one. Each file's
folder is put on ``sys.path``, so a file may import helper modules beside it.

A file's **code hash** covers its source and the source of every local module it imports (a module found in the
folders of the strategy path), followed through their own imports: editing a helper changes the hash of every
strategy that uses it. The hash enters the strategy's identity in job ids, so an edit never reuses stale results and
reverting it finds the old ones again.

Every problem is one :class:`ConfigError` line that starts with ``path:line``: a syntax error, an exception while
importing, a class missing ``name``, a parameter declaration that breaks its own bounds, defaults that break the
strategy's rules.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from backfarm.errors import ConfigError
from backfarm.strategies.base import Strategy

__all__ = ["ENV", "StrategyFile", "code_hash", "load_file", "python_files", "split_paths"]

ENV = "BACKFARM_STRATEGY_PATH"
"""The environment variable of ``--strategy-path`` (``:``-separated, like ``PATH``)."""
HASH_LENGTH = 12
"""Hex characters of a code hash shown and kept in identities (48 bits: collisions between edits of one file are
not a concern at that length)."""


@dataclass(frozen=True)
class StrategyFile:
    """A loaded strategy file: its path, code hash and the strategy classes it defines (with their lines)."""

    path: Path
    code_hash: str
    classes: tuple[tuple[type[Strategy], int], ...]


def split_paths(values: Iterable[str]) -> list[Path]:
    """Paths from repeated options and ``:``-separated lists (the environment variable), in order, once each."""
    seen: dict[Path, None] = {}
    for value in values:
        for part in value.split(os.pathsep):
            if part.strip():
                seen.setdefault(Path(part.strip()).expanduser().resolve(), None)
    return list(seen)


def python_files(path: Path) -> tuple[list[Path], bool]:
    """The strategy files at ``path`` and whether it was a folder (whose files may be mere helpers)."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.py") if not p.name.startswith(("_", "."))), True
    if path.is_file():
        if path.suffix != ".py":
            raise ConfigError(f"{path}: a strategy file must be a .py file")
        return [path], False
    raise ConfigError(f"{path}: no such strategy file or folder")


def code_hash(path: Path, roots: Sequence[Path]) -> str:
    """Hash of ``path``'s source and of every local module it imports (found in ``roots``), transitively."""
    digest = hashlib.blake2b(digest_size=16)
    for module in sorted(_local_closure(path, roots)):
        digest.update(str(module.relative_to(_root_of(module, roots))).encode() + b"\0")
        digest.update(module.read_bytes() + b"\0")
    return digest.hexdigest()[:HASH_LENGTH]


def load_file(path: Path, roots: Sequence[Path], required: bool) -> StrategyFile:
    """Import ``path`` as a fresh module and collect its strategies; ``required``: it must define one."""
    source_hash = code_hash(path, roots)
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # helper modules beside the file import by their plain name
    module = _import(path, source_hash)
    classes = tuple(_strategies_of(module, path))
    if required and not classes:
        raise ConfigError(f"{path}:1: defines no strategy (a Strategy subclass or a function under @strategy)")
    return StrategyFile(path, source_hash, classes)


def _import(path: Path, source_hash: str) -> ModuleType:
    """Execute the file as module ``backfarm_strategy_files.<stem>_<hash>`` (unique per file and version)."""
    name = f"backfarm_strategy_files.{_identifier(path.stem)}_{source_hash}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}:1: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up while it executes
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        where = f"{exc.filename or path}:{exc.lineno or 1}"
        raise ConfigError(f"{where}: syntax error: {exc.msg}") from None
    except Exception as exc:  # anything user code raises while importing is a problem of that file
        del sys.modules[name]
        raise ConfigError(f"{_where(exc, path)}: {_one_line(exc)}") from exc
    return module


def _strategies_of(module: ModuleType, path: Path) -> Iterable[tuple[type[Strategy], int]]:
    """The public concrete strategy classes defined in ``module`` (not imported into it), each checked."""
    for attr, value in vars(module).items():
        if attr.startswith("_") or not isinstance(value, type) or not issubclass(value, Strategy):
            continue
        if value.__module__ != module.__name__ or inspect.isabstract(value):
            continue
        line = _line_of(value)
        if not isinstance(getattr(value, "name", None), str) or not value.name:
            raise ConfigError(f"{path}:{line}: strategy class {value.__qualname__} does not define a name")
        if not isinstance(value.version, str):
            raise ConfigError(f"{path}:{line}: strategy {value.name}: version must be a string")
        try:
            value.resolve()
            value()
        except Exception as exc:  # defaults breaking their own rules, a failing __init__
            raise ConfigError(f"{path}:{line}: strategy {value.name} is not usable: {_one_line(exc)}") from exc
        yield value, line


def _line_of(cls: type) -> int:
    """The line a strategy class (or the function under ``@strategy``) starts on."""
    target = getattr(cls, "__backfarm_function__", cls)
    try:
        return inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return 1


def _where(exc: BaseException, path: Path) -> str:
    """``file:line`` of the innermost traceback frame in ``path`` or beside it (else the file's first line)."""
    folder = path.parent
    found = f"{path}:1"
    for frame in traceback.extract_tb(exc.__traceback__):
        frame_path = Path(frame.filename)
        if frame_path == path or frame_path.parent == folder:
            found = f"{frame_path}:{frame.lineno}"
    return found


def _local_closure(path: Path, roots: Sequence[Path]) -> set[Path]:
    """``path`` and the local modules it imports, followed through theirs."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_local_imports(current, roots))
    return seen


def _local_imports(path: Path, roots: Sequence[Path]) -> list[Path]:
    """Files in ``roots`` (or beside ``path``) that ``path`` imports by absolute or relative name."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return []  # importing reports it, with its line
    folders = [path.parent, *(r if r.is_dir() else r.parent for r in roots)]
    found: list[Path] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names = [node.module or ""] + [f"{node.module}.{a.name}" if node.module else a.name for a in node.names]
            elif node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for dotted in names:
            found.extend(_module_files(dotted, folders))
    return found


def _module_files(dotted: str, folders: Sequence[Path]) -> list[Path]:
    """The source files a dotted module name resolves to in ``folders`` (its packages' ``__init__`` included)."""
    if not dotted:
        return []
    parts = dotted.split(".")
    for folder in folders:
        files: list[Path] = []
        base = folder
        for i, part in enumerate(parts):
            package, module = base / part / "__init__.py", base / f"{part}.py"
            if package.is_file():
                files.append(package)
                base = base / part
            elif module.is_file() and i == len(parts) - 1:
                files.append(module)
            else:
                break
        if files:
            return files
    return []


def _root_of(module: Path, roots: Sequence[Path]) -> Path:
    """The folder a module's name is relative to in the hash (so moving the whole folder keeps the hash)."""
    for root in roots:
        folder = root if root.is_dir() else root.parent
        if module.is_relative_to(folder):
            return folder
    return module.parent


def _identifier(stem: str) -> str:
    """``stem`` made a valid module name."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"m_{cleaned}"


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
