"""What later analyses need of a result's returns, kept with it so that none of them recomputes a backtest: the
moments of the bar returns and the returns per block of whole UTC days.

Definitions (``r_t`` the n bar returns of :mod:`backfarm.engine.metrics`, μ = mean(r), m_k = Σ (r_t − μ)^k / n):

- ``mean`` = μ, per bar (not annualised).
- ``std`` = √(Σ (r_t − μ)² / (n − 1)), per bar (``volatility`` is it × √bars-per-year).
- ``skew`` = m3 / m2^(3/2): γ3 of the overfitting literature (population moments); null when the returns do not
  vary (m2 ≤ 1e-12 × mean(r²): all equal up to rounding, where the ratio would be noise).
- ``kurt`` = m4 / m2²: γ4, *not* excess (3 for a normal distribution); null as ``skew``.
- ``daily``: the returns of consecutive blocks of k whole UTC days, R_b = E_b / E_{b−1} − 1, where E_b is the equity
  at the close of the last bar whose open time falls in block b and E_{−1} = capital. Block b covers
  [t0 + b·k days, t0 + (b+1)·k days) with t0 the UTC midnight that starts the first bar's day; k = 1 (daily returns)
  unless the window touches more than :data:`MAX_BLOCKS` days, then the least k that keeps at most that many
  blocks. The first and last blocks may be part-days (a window need not start or end at midnight); compounding all
  blocks gives ``total_return``.

The moments come from the kernel's power sums Σr, Σr², Σr³, Σr⁴ (central moments by the binomial expansion); the
block ends are recorded by the kernel as it passes them, and turned into returns when it is done
(:func:`backfarm.engine.kernel.simulate`).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backfarm.engine import kernel as k

DAY_SECONDS = 86_400
MAX_BLOCKS = 1024
"""At most this many block returns per result (8 KB): daily for windows up to 1,024 days, coarser beyond."""
FORMAT = 1
"""Version of the ``daily`` artifact's layout: ``{v, t0, k, data}``, ``data`` the block returns as little-endian
float64, in order."""
_FLAT_SPREAD = 1e-12

Moments = dict[str, float | None]


@dataclass(frozen=True)
class Blocks:
    """Where a window's blocks end, in bars: block b < count − 1 ends with bar ``first_end + b × bars``, the last
    block with the window's last bar."""

    t0: int
    """UTC midnight starting the first bar's day, epoch seconds."""
    days: int
    """Whole days per block (k)."""
    first_end: int
    bars: int
    count: int


def blocks_for(first_open_s: int, bar_seconds: int, n: int) -> Blocks:
    """The blocks of a window of ``n`` bars of ``bar_seconds`` (which divides a day) whose first bar opens at
    ``first_open_s`` (epoch seconds), bars evenly spaced (gaps are filled when candles load)."""
    t0 = first_open_s - first_open_s % DAY_SECONDS
    last_open = first_open_s + (n - 1) * bar_seconds
    days = (last_open - t0) // DAY_SECONDS + 1
    per_block = -(-days // MAX_BLOCKS)
    span = per_block * DAY_SECONDS
    count = (last_open - t0) // span + 1
    first_end = -(-(t0 + span - first_open_s) // bar_seconds) - 1  # the last bar opening before the block's end
    return Blocks(t0, per_block, first_end, span // bar_seconds, count)


def moments_from_accumulators(accumulators: np.ndarray | list[float], n: int) -> Moments:
    """The moments (see the module docstring) from the kernel's power sums over ``n`` bars (the accumulator
    vector, or it as a list)."""
    acc = accumulators.tolist() if isinstance(accumulators, np.ndarray) else accumulators
    mean = acc[k.SUM_R] / n
    s2, s3, s4 = acc[k.SUM_R2] / n, acc[k.SUM_R3] / n, acc[k.SUM_R4] / n
    m2 = s2 - mean * mean
    m3 = s3 - 3.0 * mean * s2 + 2.0 * mean**3
    m4 = s4 - 4.0 * mean * s3 + 6.0 * mean * mean * s2 - 3.0 * mean**4
    return _assemble(mean, m2, m3, m4, s2, n)


def reference_moments(returns: np.ndarray) -> Moments:
    """The same moments computed the obvious way (two passes) from the bar returns: the check of the kernel's, and
    usable by anything that has a full return series."""
    r = np.asarray(returns, dtype=np.float64)
    mean = float(np.mean(r))
    d = r - mean
    return _assemble(
        mean, float(np.mean(d**2)), float(np.mean(d**3)), float(np.mean(d**4)), float(np.mean(r * r)), len(r)
    )


def _assemble(mean: float, m2: float, m3: float, m4: float, s2: float, n: int) -> Moments:
    """The moments dict; undefined or non-finite values are ``None``."""
    m2 = max(m2, 0.0)
    cube, square = m2**1.5, m2 * m2
    varies = m2 > _FLAT_SPREAD * s2 and cube > 0.0 and square > 0.0  # (a tiny m2's powers can underflow to 0)
    values: dict[str, float | None] = {
        "mean": mean,
        "std": math.sqrt(m2 * n / (n - 1)) if n > 1 else None,
        "skew": m3 / cube if varies else None,
        "kurt": m4 / square if varies else None,
    }
    return {name: float(v) if v is not None and math.isfinite(v) else None for name, v in values.items()}


def block_returns(block_equity: np.ndarray, capital: float) -> np.ndarray:
    """The block returns from the equity at each block's end (the first block starts from ``capital``): what the
    kernel computes in place, written out for anything that has the block ends (and for its check)."""
    previous = np.concatenate(([capital], block_equity[:-1]))
    returns: np.ndarray = block_equity / previous - 1.0
    return returns


def daily_artifact(returns: np.ndarray, blocks: Blocks, raw: bool = False) -> dict[str, Any]:
    """The ``daily`` artifact of a result: ``{v, t0, k, data}`` (``data`` base64 text, or bytes when ``raw``)."""
    data = np.ascontiguousarray(returns, dtype="<f8").tobytes()
    return {"v": FORMAT, "t0": blocks.t0, "k": blocks.days, "data": data if raw else base64.b64encode(data).decode()}


def decode_daily(artifact: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A ``daily`` artifact as (each block's start, epoch seconds; its return)."""
    data = artifact["data"]
    raw = base64.b64decode(data) if isinstance(data, str) else bytes(data)
    returns = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    starts = int(artifact["t0"]) + np.arange(len(returns), dtype=np.int64) * int(artifact["k"]) * DAY_SECONDS
    return starts, returns
