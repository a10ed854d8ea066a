"""The lookahead check: planted cheaters and broken outputs are caught, the built-ins pass."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from backfarm.core.candles import Candles
from backfarm.core.jobs import Params
from backfarm.errors import DataError, ValidationError
from backfarm.strategies.base import Param, Strategy
from backfarm.strategies.builtins import BUILTINS
from backfarm.strategies.check import CheckReport, check_strategy, cut_points, exhaustive_bars
from backfarm.strategies.indicators import Indicators
from tests.strategies.candles import make_candles as candles_of

N = 400
RISE_FROM = 100  # flat until this bar, rising afterwards


def make_candles(close) -> Candles:
    close = np.asarray(close, dtype=np.float64)
    return candles_of(close, high=close * 1.001, low=close * 0.999)


def flat_then_rising() -> Candles:
    return make_candles(np.r_[np.full(RISE_FROM, 100.0), 100.0 + np.arange(1, N - RISE_FROM + 1)])


def random_walk(n: int = 3000, seed: int = 5) -> Candles:
    rng = np.random.default_rng(seed)
    return make_candles(20_000.0 * np.exp(np.cumsum(rng.normal(0.0, 2e-3, n))))


class Toy(Strategy):
    """A test strategy; subclasses override :meth:`exposure`."""

    name: ClassVar[str] = "toy"
    version: ClassVar[str] = "1"
    params: ClassVar[tuple[Param, ...]] = (Param("lookahead", int, 1, 1, 10, (1, 2)),)

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        return np.zeros(ind.n)


class Cheater(Toy):
    """Long at bar t when close[t + lookahead] > close[t]: it peeks at the future."""

    name = "cheater"

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        k, c = int(p["lookahead"]), ind.close
        out = np.zeros(ind.n)
        out[:-k] = c[k:] > c[:-k]
        return out


def test_cheater_is_caught_at_the_first_cut_that_sees_it() -> None:
    candles = flat_then_rising()
    # Sampled cuts only (every=0): with no random cuts they are 0, 1, 2 (start and warm-up 2) and N-3, N-2 (end). On
    # the flat part the cheater is 0 whatever it sees; from bar RISE_FROM - 1 on its last value flips from 1 (full)
    # to 0 (truncated): bar N-3.
    report = check_strategy(Cheater(), candles, params=[{"lookahead": 1}], cuts=0, every=0)
    assert report == CheckReport(
        name="cheater",
        ok=False,
        checked=5,
        first_bad_bar=N - 3,
        params={"lookahead": 1},
        message=f"cheater: exposure at bar {N - 3} changes when later bars are removed (params lookahead=1)",
    )


def test_cheater_first_bad_bar_is_the_smallest_over_random_cuts() -> None:
    candles = flat_then_rising()
    cuts = cut_points(N, 25, seed=3, warmup=2)
    expected = min(t for t in cuts if t >= RISE_FROM - 1)
    assert expected < N - 3 and any(t < RISE_FROM - 1 for t in cuts)  # both sides of the rise are sampled
    report = check_strategy(Cheater(), candles, params=[{"lookahead": 1}], cuts=25, seed=3, every=0)
    assert not report.ok and report.first_bad_bar == expected and report.checked == len(cuts)


def test_wider_lookahead_is_reported_earlier_than_the_cut() -> None:
    # Peeking 2 bars ahead, a cut at t changes bars t - 1 and t: the report names t - 1.
    report = check_strategy(Cheater(), flat_then_rising(), params=[{"lookahead": 2}], cuts=0, every=0)
    assert report.first_bad_bar == N - 4 and report.params == {"lookahead": 2}


def test_every_bar_of_the_first_thousand_is_a_cut() -> None:
    """The cheater is caught at the very bar where it first sees the rise (RISE_FROM - 1), whatever the seed."""
    for seed in range(5):
        report = check_strategy(Cheater(), flat_then_rising(), params=[{"lookahead": 1}], cuts=0, seed=seed)
        assert not report.ok and report.first_bad_bar == RISE_FROM - 1


class RarePeek(Toy):
    """Peeks one bar ahead on 1% of bars (those with t % 100 == 37), and is causal everywhere else."""

    name = "rare_peek"

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        c = ind.close
        out = (c > np.r_[c[0], c[:-1]]).astype(np.float64)  # up bar: causal
        rare = np.arange(ind.n - 1)
        rare = rare[rare % 100 == 37]
        out[rare] = (c[rare + 1] > c[rare]).astype(np.float64)  # the future, on 1% of bars
        return out


def test_a_strategy_that_peeks_on_one_percent_of_bars_fails_every_time() -> None:
    """Sampled cuts alone let it pass most of the time; cutting at every bar of the window never does."""
    walk = random_walk()
    caught = [check_strategy(RarePeek(), walk, params=[{"lookahead": 1}], seed=seed) for seed in range(10)]
    assert all(not r.ok for r in caught)
    first = {r.first_bad_bar for r in caught}
    assert len(first) == 1 and first.pop() % 100 == 37  # deterministic: the first peeking bar that changes
    sampled = [check_strategy(RarePeek(), walk, params=[{"lookahead": 1}], seed=s, every=0).ok for s in range(10)]
    assert any(sampled)  # what the check missed before


def test_exhaustive_bars() -> None:
    assert exhaustive_bars(5000, 10) == 1000
    assert exhaustive_bars(5000, 600) == 1800  # three warm-ups
    assert exhaustive_bars(300, 10) == 299  # every bar of a short series but the last (the full series)
    assert exhaustive_bars(5000, 10, at_least=0) == 30


def test_a_global_statistic_is_lookahead_too() -> None:
    class AboveAverage(Toy):
        name = "above_average"

        def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
            return (ind.close > ind.close.mean()).astype(np.float64)  # the mean of the whole window

    report = check_strategy(AboveAverage(), random_walk(), cuts=5)
    assert not report.ok and report.message.startswith("cheater: exposure at bar ")


@pytest.mark.parametrize("cls", BUILTINS, ids=lambda c: c.name)
def test_builtins_pass(cls: type[Strategy]) -> None:
    report = check_strategy(cls(), random_walk(), cuts=10)
    assert report.ok, report.message
    assert report.first_bad_bar is None and report.params is None and report.name == cls.name
    assert report.checked > 5 * 10  # defaults plus four grid points, each with random and fixed cuts


def test_builtins_pass_on_flat_stretches() -> None:
    # Gap-filled flat bars are where running sums are most fragile; the check must still be bit-exact.
    close = random_walk(1500).close.copy()
    close[400:700] = close[399]
    for cls in BUILTINS:
        report = check_strategy(cls(), make_candles(close), cuts=10, seed=1)
        assert report.ok, report.message


class Broken(Toy):
    name = "broken"
    output: ClassVar[str] = ""

    def exposure(self, ind: Indicators, p: Params) -> np.ndarray:
        out = np.zeros(ind.n)
        if self.output == "nan" and ind.n > 50:
            out[50] = np.nan
        elif self.output == "range" and ind.n > 60:
            out[60] = 1.5
        elif self.output == "dtype":
            return out.astype(np.float32)
        elif self.output == "short":
            return out[:-1]
        elif self.output == "list":
            return list(out)  # type: ignore[return-value]
        elif self.output == "crash" and ind.n < 10:
            raise IndexError("index 10 is out of bounds")
        elif self.output == "random":
            return np.random.default_rng().integers(0, 2, ind.n).astype(np.float64)
        return out


@pytest.mark.parametrize(
    ("output", "bar", "message"),
    [
        ("nan", 50, "bad output: exposure is nan at bar 50 on the first 400 bars (params lookahead=1)"),
        ("range", 60, "bad output: exposure 1.5 at bar 60 is outside [0, 1] (params lookahead=1)"),
        ("dtype", None, "bad output: exposure has dtype float32, expected float64 (params lookahead=1)"),
        ("short", None, "bad output: exposure has shape (399,) for 400 bars, expected (400,) (params lookahead=1)"),
        ("list", None, "bad output: exposure returned list, expected a numpy array (params lookahead=1)"),
        (
            "crash",
            None,
            "error: exposure raised IndexError: index 10 is out of bounds on the first 1 bars (params lookahead=1)",
        ),
    ],
)
def test_broken_outputs_are_reported(output: str, bar: int | None, message: str) -> None:
    strategy = type("B", (Broken,), {"output": output})()
    report = check_strategy(strategy, flat_then_rising(), params=[{"lookahead": 1}], cuts=3)
    assert not report.ok and report.first_bad_bar == bar and report.message == message


def test_nondeterminism_is_not_called_lookahead() -> None:
    strategy = type("B", (Broken,), {"output": "random"})()
    report = check_strategy(strategy, flat_then_rising(), params=[{"lookahead": 1}])
    assert not report.ok and report.message.startswith("nondeterministic: exposure at bar ")


def test_default_params_are_defaults_plus_grid_points() -> None:
    report = check_strategy(Toy(), flat_then_rising(), cuts=0, every=0)  # grid (1, 2): lookahead=1 is the default
    assert report.ok and report.checked == 2 * 5 + 1  # warm-up 3 adds cut 3 for lookahead=2
    assert report.message == f"ok: {report.checked} truncations of {N} bars agree, 2 parameter sets"


def test_given_params_are_validated() -> None:
    with pytest.raises(ValidationError, match=r"toy:lookahead=11 is outside \[1, 10\]"):
        check_strategy(Toy(), flat_then_rising(), params=[{"lookahead": 11}])
    with pytest.raises(ValidationError, match="the number of cuts must be 0 or more, got -1"):
        check_strategy(Toy(), flat_then_rising(), cuts=-1)
    with pytest.raises(DataError, match="at least 2 bars"):
        check_strategy(Toy(), make_candles([100.0]))


def test_cut_points() -> None:
    cuts = cut_points(1000, 25, seed=0, warmup=61)
    assert cuts == sorted(set(cuts)) and all(0 <= t <= 998 for t in cuts)
    assert {0, 1, 2, 59, 60, 61, 997, 998} <= set(cuts) and 8 < len(cuts) <= 33
    assert cut_points(1000, 25, seed=0, warmup=61) == cuts != cut_points(1000, 25, seed=1, warmup=61)
    assert cut_points(2, 25, seed=0) == [0]
    assert cut_points(5, 0, seed=0, warmup=100) == [0, 1, 2, 3]
