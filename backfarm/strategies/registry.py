"""The strategy registry: the built-ins plus plugins from installed packages, looked up by name.

Plugins are classes exposed under the entry-point group ``backfarm.strategies``, for example in a plugin's
``pyproject.toml``::

    [project.entry-points."backfarm.strategies"]
    my_trend = "my_package.strategies:MyTrend"

The entry point's name must equal the class's ``name``. Plugins load once, lazily, on the first lookup; a plugin
that fails to import, is not a :class:`Strategy` subclass, or reuses a taken name is a ``ConfigError`` naming the
entry point, never a silently missing strategy. Workers need the same plugin packages installed as the CLI.
"""

from __future__ import annotations

import threading
from importlib.metadata import EntryPoint, entry_points

from backfarm.errors import ConfigError, ValidationError, did_you_mean
from backfarm.strategies.base import Strategy
from backfarm.strategies.builtins import BUILTINS

__all__ = ["ENTRY_POINT_GROUP", "all_strategies", "get_strategy", "register", "strategy_names"]

ENTRY_POINT_GROUP = "backfarm.strategies"

_lock = threading.Lock()
_table: dict[str, Strategy] | None = None
"""Name → instance, built on first use (strategies are stateless, so one instance serves every caller)."""


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


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class programmatically (tests, notebooks); usable as a class decorator.

    A name that is already taken, or a class that is not a usable ``Strategy``, is a ``ConfigError``.
    """
    table = _strategies()
    where = f"strategy class {getattr(cls, '__qualname__', repr(cls))}"
    instance = _instantiate(cls, where)
    with _lock:
        _claim(table, instance, where)
        table[instance.name] = instance
    return cls


def _strategies() -> dict[str, Strategy]:
    """The registry, loading built-ins and plugins on first use."""
    global _table
    if _table is None:
        with _lock:
            if _table is None:
                table: dict[str, Strategy] = {cls.name: cls() for cls in BUILTINS}
                for ep in _plugin_entry_points():
                    _add_plugin(table, ep)
                _table = table
    return _table


def _plugin_entry_points() -> list[EntryPoint]:
    """The installed entry points of the plugin group, in a stable order."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value))


def _add_plugin(table: dict[str, Strategy], ep: EntryPoint) -> None:
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
    table[instance.name] = instance


def _instantiate(cls: object, where: str) -> Strategy:
    """Check that ``cls`` is a complete ``Strategy`` subclass whose defaults resolve, and instantiate it."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ConfigError(f"{where} is not a Strategy subclass (got {cls!r})")
    missing = [attr for attr in ("name", "version", "params") if not hasattr(cls, attr)]
    if missing:
        raise ConfigError(f"{where} does not define {', '.join(missing)}")
    try:
        cls.resolve()
        return cls()
    except Exception as exc:  # abstract methods left, defaults that break their own rules, a failing __init__
        raise ConfigError(f"{where} is not usable: {_one_line(exc)}") from exc


def _claim(table: dict[str, Strategy], instance: Strategy, where: str) -> None:
    """Refuse a name that is already taken (built-ins can never be shadowed)."""
    taken = table.get(instance.name)
    if taken is None:
        return
    kind = "built-in" if type(taken) in BUILTINS else "registered"
    raise ConfigError(f"{where} clashes with the {kind} strategy '{instance.name}'")


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (user errors are shown on one line; tracebacks hang off ``__cause__``)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
