"""Metric definitions (one each) and two ways to compute them: from the kernel's accumulators, and a slow reference.

Notation: ``E_t`` is equity marked at bar t's close for t = 0 … n−1 (``E_{n−1}`` after the final close-out, so it
includes the close-out costs), ``E_{−1} = capital``, bar returns ``r_t = E_t / E_{t−1} − 1`` over the n bars, and
``bpy`` = bars per year (365 × 86400 / bar seconds: crypto trades every day). A round trip (trade) runs from flat to
flat; its ``pnl`` is all sell proceeds net of fees minus all buy costs including fees, its ``ret`` is pnl / buy costs.

- ``total_return`` = E_final / capital − 1.
- ``cagr`` = (E_final / capital) ^ (bpy / n) − 1; null if E_final <= 0.
- ``volatility`` = std(r, ddof=1) · √bpy.
- ``sharpe`` = mean(r) / std(r, ddof=1) · √bpy; null if std = 0.
- ``sortino`` = mean(r) / sqrt(mean(min(r, 0)²)) · √bpy (the mean is over all n bars); null if no r is negative.
- ``max_drawdown`` = min over t of E_t / max(capital, max_{s<=t} E_s) − 1; always <= 0.
- ``calmar`` = cagr / |max_drawdown|; null if max_drawdown = 0 or cagr is null.
- ``trades`` = closed round trips (every result is flat at the end, so every round trip is closed).
- ``wins`` = round trips with pnl > 0 (break-even is not a win).
- ``win_rate`` = wins / trades; null with no trades.
- ``profit_factor`` = sum of positive pnl / |sum of negative pnl|; null if no trade lost.
- ``avg_trade`` = mean of the round trips' ret; null with no trades.
- ``exposure`` = share of the n bars whose close finds a position held (the last bar counts when it closes one out).
- ``turnover`` = total traded notional, buys plus sells (quantity × fill price, fees excluded) / capital.
- ``fees_paid`` = total fees in quote currency.

A value that is undefined, or that overflows float64 (a cagr annualised from a few bars can), is ``None``.
"""

from __future__ import annotations

import math

import numpy as np

from backfarm.engine import kernel as k

Metrics = dict[str, float | int | None]


def _finite(value: float | None) -> float | None:
    """``value`` as a Python float, or ``None`` if undefined or not finite."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _cagr(final_equity: float, capital: float, n: int, bars_per_year: float) -> float | None:
    """Compound annual growth; ``None`` for a non-positive final equity or a float overflow."""
    if final_equity <= 0.0:
        return None
    try:
        growth: float = (final_equity / capital) ** (bars_per_year / n)  # a positive base: a real power
        return growth - 1.0
    except OverflowError:
        return None


def _assemble(
    final_equity: float,
    capital: float,
    cagr: float | None,
    volatility: float,
    sharpe: float | None,
    sortino: float | None,
    max_drawdown: float,
    trade_stats: tuple[int, int, float | None, float | None, float | None],
    exposure: float,
    turnover: float,
    fees_paid: float,
) -> Metrics:
    """Build the metrics dict in ``METRICS`` order, mapping undefined and non-finite values to ``None``."""
    trades, wins, win_rate, profit_factor, avg_trade = trade_stats
    cagr = _finite(cagr)
    calmar = cagr / abs(max_drawdown) if cagr is not None and max_drawdown < 0.0 else None
    return {
        "total_return": _finite(final_equity / capital - 1.0),
        "cagr": cagr,
        "volatility": _finite(volatility),
        "sharpe": _finite(sharpe),
        "sortino": _finite(sortino),
        "max_drawdown": _finite(max_drawdown),
        "calmar": _finite(calmar),
        "trades": trades,
        "wins": wins,
        "win_rate": _finite(win_rate),
        "profit_factor": _finite(profit_factor),
        "avg_trade": _finite(avg_trade),
        "exposure": _finite(exposure),
        "turnover": _finite(turnover),
        "fees_paid": _finite(fees_paid),
    }


def metrics_from_accumulators(
    accumulators: np.ndarray | list[float], n: int, capital: float, bars_per_year: float
) -> Metrics:
    """Finish every metric from the kernel's accumulator vector (see :mod:`backfarm.engine.kernel`; as a list, it
    is read as plain floats: a few µs less per result than numpy scalars)."""
    acc = accumulators.tolist() if isinstance(accumulators, np.ndarray) else accumulators
    root = math.sqrt(bars_per_year)
    mean = acc[k.SUM_R] / n
    variance = max((acc[k.SUM_R2] - acc[k.SUM_R] * acc[k.SUM_R] / n) / (n - 1), 0.0)
    std = math.sqrt(variance)
    downside = math.sqrt(acc[k.SUM_NEG_R2] / n)  # 0 when no r is negative (or all are too small to square)
    trades = int(acc[k.TRADES])
    wins = int(acc[k.WINS])
    losses = int(acc[k.LOSSES])
    final_equity = float(acc[k.FINAL_EQUITY])
    trade_stats = (
        trades,
        wins,
        wins / trades if trades else None,
        acc[k.GROSS_WIN] / -acc[k.GROSS_LOSS] if losses else None,
        acc[k.SUM_TRADE_RET] / trades if trades else None,
    )
    return _assemble(
        final_equity,
        capital,
        _cagr(final_equity, capital, n, bars_per_year),
        std * root,
        mean / std * root if std > 0.0 else None,
        mean / downside * root if downside > 0.0 else None,
        float(acc[k.MAX_DRAWDOWN]),
        trade_stats,
        acc[k.HELD_BARS] / n,
        acc[k.NOTIONAL] / capital,
        float(acc[k.FEES]),
    )


def reference_metrics(
    equity: np.ndarray,
    capital: float,
    bars_per_year: float,
    trade_pnl: np.ndarray,
    trade_ret: np.ndarray,
    held_bars: int,
    traded_notional: float,
    fees_paid: float,
) -> Metrics:
    """The same metrics computed the slow, obvious way from a full equity curve and the closed round trips.

    ``equity`` is E_0 … E_{n−1} (the last value after the close-out). Used to check the kernel, and usable by
    anything that has an equity curve instead of accumulators (e.g. a paper-trading account).
    """
    equity = np.asarray(equity, dtype=np.float64)
    pnl = np.asarray(trade_pnl, dtype=np.float64)
    n = len(equity)
    r = equity / np.concatenate(([capital], equity[:-1])) - 1.0
    std = float(np.std(r, ddof=1))
    downside = np.minimum(r, 0.0)
    root = math.sqrt(bars_per_year)
    peaks = np.maximum(np.maximum.accumulate(equity), capital)
    trades = len(pnl)
    wins = int(np.sum(pnl > 0.0))
    trade_stats = (
        trades,
        wins,
        wins / trades if trades else None,
        float(pnl[pnl > 0.0].sum() / abs(pnl[pnl < 0.0].sum())) if np.any(pnl < 0.0) else None,
        float(np.mean(trade_ret)) if trades else None,
    )
    return _assemble(
        float(equity[-1]),
        capital,
        _cagr(float(equity[-1]), capital, n, bars_per_year),
        std * root,
        float(np.mean(r)) / std * root if std > 0.0 else None,
        float(np.mean(r) / np.sqrt(np.mean(downside**2))) * root if np.any(r < 0.0) else None,
        float(np.min(equity / peaks - 1.0)),
        trade_stats,
        held_bars / n,
        traded_notional / capital,
        fees_paid,
    )
