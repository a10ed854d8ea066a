"""The registry: built-ins by name, "did you mean", plugins from real entry points, programmatic registration."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from backfarm.core.jobs import Params
from backfarm.errors import ConfigError, ValidationError
from backfarm.strategies import registry
from backfarm.strategies.base import Param, Rule, Strategy
from backfarm.strategies.builtins import BUILTINS, Momentum

BUILTIN_NAMES = ["breakout", "ma_crossover", "mean_reversion", "momentum", "volatility"]

PLUGIN_SOURCE = '''
import numpy as np
from backfarm.strategies.base import Param, Strategy

class Trend(Strategy):
    """Long while the close is above the close `lag` bars ago."""
    name = "{name}"
    version = "1"
    params = (Param("lag", int, 5, 1, 100, (5, 10)),)

    def exposure(self, ind, p):
        return (ind.roc(p["lag"]) > 0).astype(np.float64)

def not_a_strategy():
    return 42
'''


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unloaded registry for the test (restored afterwards)."""
    monkeypatch.setattr(registry, "_table", None)


@pytest.fixture
def no_plugins(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "entry_points", lambda group: [])


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, entry: str, source: str) -> None:
    """A real (unpacked) distribution on sys.path whose entry_points.txt declares one strategy plugin."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[backfarm.strategies]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtins_by_name(no_plugins: None) -> None:
    assert registry.strategy_names() == BUILTIN_NAMES
    strategies = registry.all_strategies()
    assert list(strategies) == BUILTIN_NAMES
    assert {type(s) for s in strategies.values()} == set(BUILTINS)
    momentum = registry.get_strategy("momentum")
    assert isinstance(momentum, Momentum) and registry.get_strategy("momentum") is momentum


def test_unknown_name_suggests_the_closest(no_plugins: None) -> None:
    with pytest.raises(ValidationError) as err:
        registry.get_strategy("momentumm")
    assert str(err.value) == "unknown strategy 'momentumm' (did you mean 'momentum'?)"
    with pytest.raises(ValidationError, match=r"unknown strategy 'zzz' \(choose from: breakout, ma_crossover"):
        registry.get_strategy("zzz")


def test_plugins_load_once_and_lazily(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting(group: str) -> list:
        calls.append(group)
        return []

    monkeypatch.setattr(registry, "entry_points", counting)
    assert calls == []
    registry.strategy_names()
    registry.get_strategy("breakout")
    registry.all_strategies()
    assert calls == ["backfarm.strategies"]


def test_plugin_from_an_installed_distribution(fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(
        tmp_path, monkeypatch, "bf_plugin_ok", "trend = bf_plugin_ok:Trend", PLUGIN_SOURCE.format(name="trend")
    )
    assert registry.strategy_names() == sorted([*BUILTIN_NAMES, "trend"])
    trend = registry.get_strategy("trend")
    assert trend.resolve() == {"lag": 5}
    assert trend.describe() == "Long while the close is above the close `lag` bars ago."


@pytest.mark.parametrize(
    ("module", "entry", "source", "message"),
    [
        (
            "bf_plugin_boom",
            "boom = bf_plugin_boom:Trend",
            "raise RuntimeError('no numpy here')",
            "strategy plugin 'boom' (bf_plugin_boom:Trend) failed to load: RuntimeError: no numpy here",
        ),
        (
            "bf_plugin_missing",
            "gone = bf_plugin_missing:Nope",
            PLUGIN_SOURCE.format(name="gone"),
            "strategy plugin 'gone' (bf_plugin_missing:Nope) failed to load: AttributeError",
        ),
        (
            "bf_plugin_func",
            "func = bf_plugin_func:not_a_strategy",
            PLUGIN_SOURCE.format(name="func"),
            "strategy plugin 'func' (bf_plugin_func:not_a_strategy) is not a Strategy subclass",
        ),
        (
            "bf_plugin_clash",
            "momentum = bf_plugin_clash:Trend",
            PLUGIN_SOURCE.format(name="momentum"),
            "strategy plugin 'momentum' (bf_plugin_clash:Trend) clashes with the built-in strategy 'momentum'",
        ),
        (
            "bf_plugin_renamed",
            "alias = bf_plugin_renamed:Trend",
            PLUGIN_SOURCE.format(name="trend2"),
            "strategy plugin 'alias' (bf_plugin_renamed:Trend) is named 'trend2' by its class",
        ),
    ],
)
def test_broken_plugins_are_config_errors(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, entry: str, source: str, message: str
) -> None:
    install_plugin(tmp_path, monkeypatch, module, entry, source)
    with pytest.raises(ConfigError) as err:
        registry.strategy_names()
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


class AlwaysLong(Strategy):
    """Always fully invested."""

    name = "always_long"
    version = "1"
    params = (Param("unused", int, 1, 1, 10, (1,)),)

    def exposure(self, ind, p: Params) -> np.ndarray:
        return np.ones(ind.n)


def test_register_adds_a_strategy(no_plugins: None) -> None:
    assert registry.register(AlwaysLong) is AlwaysLong
    assert isinstance(registry.get_strategy("always_long"), AlwaysLong)
    assert "always_long" in registry.strategy_names()
    found = registry.origin("always_long")
    assert found.kind == "registered" and found.identity == f"1+code.{found.code}" and len(found.code) == 12

    class AlwaysLongAgain(AlwaysLong):  # a notebook cell run again, edited: the new class replaces the old one
        """Always fully invested (edited)."""

    registry.register(AlwaysLongAgain)
    assert isinstance(registry.get_strategy("always_long"), AlwaysLongAgain)


def test_register_refuses_builtin_names_and_non_strategies(no_plugins: None) -> None:
    class Fake(AlwaysLong):
        name = "breakout"

    with pytest.raises(ConfigError, match="clashes with the built-in strategy 'breakout'"):
        registry.register(Fake)
    with pytest.raises(ConfigError, match="is not a Strategy subclass"):
        registry.register(dict)  # type: ignore[arg-type]

    class Abstract(Strategy):
        name = "abstract"
        version = "1"
        params = ()

    with pytest.raises(ConfigError, match="is not usable: TypeError"):
        registry.register(Abstract)

    class BrokenDefaults(AlwaysLong):
        name = "broken_defaults"
        params = (Param("a", int, 5, 1, 10, (5,)), Param("b", int, 3, 1, 10, (3,)))
        rules = (Rule("a < b", lambda p: p["a"] < p["b"]),)

    with pytest.raises(ConfigError, match="is not usable: ValidationError: broken_defaults: parameters break the rule"):
        registry.register(BrokenDefaults)
