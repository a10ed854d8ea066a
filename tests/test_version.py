"""The package root: its version, and the names strategy authors import from it."""

import backfarm


def test_version_is_semver() -> None:
    parts = backfarm.__version__.split(".")
    assert len(parts) == 3 and all(p.isdigit() for p in parts)


def test_strategy_authors_import_from_the_package_root() -> None:
    """What a strategy file or plugin needs comes from ``backfarm``; the paths the README shows keep working."""
    from backfarm import Indicators, Param, Params, Rule, Strategy
    from backfarm.strategies.base import Param as BaseParam
    from backfarm.strategies.base import Rule as BaseRule
    from backfarm.strategies.base import Strategy as BaseStrategy
    from backfarm.strategies.indicators import Indicators as BaseIndicators

    assert (Strategy, Param, Rule, Indicators) == (BaseStrategy, BaseParam, BaseRule, BaseIndicators)
    assert Params == dict[str, int | float]
    assert set(backfarm.__all__) >= {"Strategy", "Param", "Rule", "Params", "Indicators"}
    try:
        backfarm.NotAThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NotAThing" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
