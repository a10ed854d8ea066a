"""The strategy registry: the built-ins, plugins from installed packages and strategy files, looked up by name.

Plugins are classes exposed under the entry-point group ``backfarm.strategies``, for example in a plugin's
``pyproject.toml``::

    [project.entry-points."backfarm.strategies"]
    my_trend = "my_package.strategies:MyTrend"

The entry point's name must equal the class's ``name``. Plugins load once, lazily, on the first lookup; a plugin
that fails to import, is not a :class:`Strategy` subclass, or reuses a taken name is a ``ConfigError`` naming the
entry point, never a silently missing strategy. Strategy files (:mod:`backfarm.strategies.files`) load when a
command is given ``--strategy-path`` (:func:`load_paths`).

Each strategy has an **identity**, the version string its job ids hold (:attr:`Origin.identity`): a built-in's
``version``; a plugin's ``version`` plus its distribution's name and version (``1+my-plugin-0.3``); a file's
``version`` plus its code hash (``1+code.3fa9c2e81b07``). A worker runs a job only when its own copy of the strategy
has the identity the job names.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from backfarm.core.jobs import LOOKAHEAD_LABEL
from backfarm.errors import ConfigError, ValidationError, did_you_mean
from backfarm.strategies.base import Strategy
from backfarm.strategies.builtins import BUILTINS
from backfarm.strategies.files import load_file, python_files

__all__ = [
    "ENTRY_POINT_GROUP",
    "LOOKAHEAD_LABEL",
    "Origin",
    "all_strategies",
    "base_identity",
    "copy_differs",
    "get_strategy",
    "identity",
    "label_lookahead",
    "load_paths",
    "origin",
    "register",
    "strategy_names",
]

ENTRY_POINT_GROUP = "backfarm.strategies"


@dataclass(frozen=True)
class Origin:
    """Where a strategy came from: ``kind`` (built-in, plugin, file, registered), ``where`` (``path:line``, the
    distribution, the module), ``code`` (a hash of its code, when it can be seen) and its ``identity`` in job ids."""

    kind: str
    where: str
    code: str
    identity: str


_lock = threading.RLock()


class _Table(dict[str, Strategy]):
    """Name → instance (strategies are stateless, so one instance serves every caller), and where each came from."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, Origin] = {}


_table: _Table | None = None
"""The registry, built on first use."""


def strategy_names() -> list[str]:
    """Every registered strategy name, sorted."""
    return sorted(_strategies())


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name``; an unknown name is a ``ValidationError`` suggesting the closest one."""
    table = _strategies()
    try:
        return table[name]
    except KeyError:
        raise ValidationError(did_you_mean("strategy", name, table)) from None


def all_strategies() -> dict[str, Strategy]:
    """Name → strategy for every registered strategy, in name order."""
    table = _strategies()
    return {name: table[name] for name in sorted(table)}


def origin(name: str) -> Origin:
    """Where the strategy called ``name`` came from, and its identity."""
    get_strategy(name)
    return _strategies().origins[name]


def identity(name: str) -> str:
    """The version string of strategy ``name`` that job ids hold (see the module docstring)."""
    return origin(name).identity


def base_identity(version: str) -> str:
    """A job's strategy version without the lookahead label: what a worker's copy must have."""
    return version.removesuffix(LOOKAHEAD_LABEL)


def label_lookahead(name: str) -> None:
    """Mark strategy ``name`` as failing the lookahead check: its identity, and so its jobs, carry the label."""
    found = origin(name)
    if not found.identity.endswith(LOOKAHEAD_LABEL):
        with _lock:
            _strategies().origins[name] = replace(found, identity=found.identity + LOOKAHEAD_LABEL)


def copy_differs(name: str, wanted: str) -> str | None:
    """Why this process cannot run strategy ``name`` at identity ``wanted`` (a job's strategy version; its lookahead
    label aside): it lacks the strategy, or holds other code for it. ``None`` when it can."""
    table = _strategies()
    if name not in table:
        return f"strategy {name} is not here"
    have = base_identity(table.origins[name].identity)
    if have == base_identity(wanted):
        return None
    return f"strategy {name} is version {have} here but the job wants {wanted}"


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class programmatically (tests, notebooks); usable as a class decorator.

    Its identity includes a hash of its module's source where Python can see it. Registering the same name again
    replaces an earlier registration (a notebook cell run twice); the name of a built-in, plugin or file strategy,
    or a class that is not a usable ``Strategy``, is a ``ConfigError``.
    """
    table = _strategies()
    where = f"strategy class {getattr(cls, '__qualname__', repr(cls))}"
    instance = _instantiate(cls, where)
    with _lock:
        taken = table.origins.get(instance.name)
        if taken is not None and taken.kind != "registered":
            _claim(table, instance, where)
        code = _source_hash(cls)
        _add(table, instance, Origin("registered", cls.__module__, code, _with_code(instance.version, code)))
    return cls


def load_paths(paths: Sequence[Path]) -> list[str]:
    """Load the strategy files at ``paths`` (files or folders) and return the names they define, in order.

    Loading an unchanged file again changes nothing; a file whose code changed replaces its own strategies (a
    notebook, a long-lived process). A name that another file, a plugin or a built-in already uses is a
    ``ConfigError`` naming both places.
    """
    table = _strategies()
    names: list[str] = []
    for root in paths:
        files, folder = python_files(root)
        for path in files:
            loaded = load_file(path, paths, required=not folder)
            for cls, line in loaded.classes:
                where = f"{path}:{line}"
                instance = _instantiate(cls, where)
                with _lock:
                    taken = table.origins.get(instance.name)
                    if taken is not None and not (taken.kind == "file" and taken.where.startswith(f"{path}:")):
                        place = "" if taken.kind == "built-in" else f" at {taken.where}"
                        raise ConfigError(
                            f"{where}: strategy '{instance.name}' is already a {taken.kind} strategy{place}"
                        )
                    code = loaded.code_hash
                    _add(table, instance, Origin("file", where, code, _with_code(instance.version, code)))
                names.append(instance.name)
    return names


def _strategies() -> _Table:
    """The registry, loading built-ins and plugins on first use."""
    global _table
    if _table is None:
        with _lock:
            if _table is None:
                table = _Table()
                for cls in BUILTINS:
                    _add(table, cls(), Origin("built-in", "backfarm", "", cls.version))
                for ep in _plugin_entry_points():
                    _add_plugin(table, ep)
                _table = table
    return _table


def _plugin_entry_points() -> list[EntryPoint]:
    """The installed entry points of the plugin group, in a stable order."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value))


def _add_plugin(table: _Table, ep: EntryPoint) -> None:
    """Load one plugin entry point into ``table`` or raise a ``ConfigError`` that names it."""
    where = f"strategy plugin '{ep.name}' ({ep.value})"
    try:
        cls = ep.load()
    except Exception as exc:  # any import-time failure of third-party code is a configuration problem
        raise ConfigError(f"{where} failed to load: {_one_line(exc)}") from exc
    existing = table.get(ep.name)
    if existing is not None and type(existing) is cls:
        return  # the same distribution seen twice on sys.path
    instance = _instantiate(cls, where)
    if instance.name != ep.name:
        raise ConfigError(f"{where} is named '{instance.name}' by its class; the entry point must use the same name")
    _claim(table, instance, where)
    dist = ep.dist
    package = f"{dist.name}-{dist.version}" if dist is not None else ep.value.partition(":")[0]
    _add(table, instance, Origin("plugin", package, _source_hash(cls), f"{instance.version}+{package}"))


def _add(table: _Table, instance: Strategy, found: Origin) -> None:
    """Put ``instance`` in the table with its origin."""
    table[instance.name] = instance
    table.origins[instance.name] = found


def _with_code(version: str, code: str) -> str:
    """A version with a code hash (``1+code.3fa9c2e81b07``), or the version alone when the code cannot be seen."""
    return f"{version}+code.{code}" if code else version


def _source_hash(cls: type) -> str:
    """Hash of the source of the module defining ``cls`` (or of the class alone), "" when Python cannot see it."""
    for target in (inspect.getmodule(cls), cls):
        if target is None:
            continue
        try:
            source = inspect.getsource(target)
        except (OSError, TypeError):
            continue
        return hashlib.blake2b(source.encode(), digest_size=16).hexdigest()[:12]
    return ""


def _instantiate(cls: object, where: str) -> Strategy:
    """Check that ``cls`` is a complete ``Strategy`` subclass whose defaults resolve, and instantiate it."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"{where} is not a Strategy subclass (got {cls!r})")
    if not isinstance(getattr(cls, "name", None), str):
        raise ConfigError(f"{where} does not define name")
    try:
        cls.resolve()
        return cls()
    except Exception as exc:  # abstract methods left, defaults that break their own rules, a failing __init__
        raise ConfigError(f"{where} is not usable: {_one_line(exc)}") from exc


def _claim(table: _Table, instance: Strategy, where: str) -> None:
    """Refuse a name that is already taken (built-ins can never be shadowed)."""
    if instance.name not in table:
        return
    found = table.origins.get(instance.name)
    kind = found.kind if found is not None else "registered"
    raise ConfigError(f"{where} clashes with the {kind} strategy '{instance.name}'")


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (user errors are shown on one line; tracebacks hang off ``__cause__``)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
