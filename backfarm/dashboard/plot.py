"""``backfarm plot``: one result's equity curve, trade markers and drawdown as a PNG, drawn with numpy alone.

No plotting library is needed (matplotlib is not a dependency, and a 40 MB install for one picture is not worth
it): a small rasterizer draws on a canvas twice the output size and averages each 2×2 block, which antialiases lines
and text; :mod:`backfarm.dashboard.font` supplies the letters and :func:`encode_png` writes the file with zlib.
The output is deterministic: the same result gives the same bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from backfarm.core.formatting import fmt_metric, fmt_params, short_window, strategy_label
from backfarm.core.results import ResultRecord
from backfarm.dashboard import font
from backfarm.engine.artifacts import EquityCurve, TradeList, decode_equity, decode_trades
from backfarm.errors import DataError, ValidationError

SS = 2
"""Supersampling factor: the canvas is SS× the output in each direction."""
Color = tuple[int, int, int]
TEXT: Color = (31, 41, 51)
MUTED: Color = (107, 119, 133)
GRID: Color = (229, 231, 235)
AXIS: Color = (156, 163, 175)
BLUE: Color = (37, 99, 235)
RED: Color = (185, 28, 28)
GREEN: Color = (21, 128, 61)
AMBER: Color = (146, 64, 14)
TIME_STEPS = (60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400)


class Canvas:
    """An RGB canvas addressed in output pixels (floats); drawing happens at SS× resolution."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.px = np.full((height * SS, width * SS, 3), 255, dtype=np.uint8)

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
        """Fill the axis-aligned rectangle [x0, x1) × [y0, y1)."""
        c0, c1 = max(0, round(x0 * SS)), min(self.px.shape[1], round(x1 * SS))
        r0, r1 = max(0, round(y0 * SS)), min(self.px.shape[0], round(y1 * SS))
        if c1 > c0 and r1 > r0:
            self.px[r0:r1, c0:c1] = color

    def polyline(
        self, xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray, color: Color, width: float
    ) -> None:
        """A line through the points, ``width`` output pixels thick (a round brush stamped every half pixel)."""
        x, y = np.asarray(xs, dtype=np.float64) * SS, np.asarray(ys, dtype=np.float64) * SS
        if len(x) > 1:
            steps = np.maximum(1, np.ceil(np.hypot(np.diff(x), np.diff(y)) * 2)).astype(np.int64)
            seg = np.repeat(np.arange(len(steps)), steps)
            t = (np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps, steps)
            x = np.append(x[seg] + (x[seg + 1] - x[seg]) * t, x[-1])
            y = np.append(y[seg] + (y[seg + 1] - y[seg]) * t, y[-1])
        radius = max(width * SS / 2, 0.5)
        span = np.arange(-math.ceil(radius), math.ceil(radius) + 1)
        dy, dx = np.meshgrid(span, span, indexing="ij")
        inside = dx**2 + dy**2 <= radius**2 + 0.25
        cols = np.rint(x).astype(np.int64)[:, None] + dx[inside][None, :]
        rows = np.rint(y).astype(np.int64)[:, None] + dy[inside][None, :]
        ok = (cols >= 0) & (cols < self.px.shape[1]) & (rows >= 0) & (rows < self.px.shape[0])
        self.px[rows[ok], cols[ok]] = color

    def fill_to(self, xs: np.ndarray, ys: np.ndarray, base: float, color: Color, alpha: float) -> None:
        """Blend ``color`` between the curve (x increasing) and the horizontal line ``y = base``."""
        x, y = np.asarray(xs, dtype=np.float64) * SS, np.asarray(ys, dtype=np.float64) * SS
        cols = np.arange(max(0, math.ceil(x[0])), min(self.px.shape[1], math.floor(x[-1]) + 1))
        if len(cols) == 0:
            return
        curve = np.interp(cols, x, y)
        lo, hi = np.minimum(curve, base * SS), np.maximum(curve, base * SS)
        r0, r1 = max(0, math.floor(lo.min())), min(self.px.shape[0], math.ceil(hi.max()) + 1)
        rows = np.arange(r0, r1)[:, None]
        mask = (rows >= lo[None, :]) & (rows <= hi[None, :])
        region = self.px[r0:r1, cols[0] : cols[-1] + 1]
        blended = region * (1 - alpha) + np.asarray(color, dtype=np.float64) * alpha
        region[mask] = np.rint(blended[mask]).astype(np.uint8)

    def triangle(self, x: float, y: float, size: float, up: bool, color: Color) -> None:
        """A filled triangle centred on (x, y), ``size`` output pixels from centre to tip, pointing up or down."""
        cx, cy, s = x * SS, y * SS, size * SS
        r0, r1 = max(0, math.floor(cy - s)), min(self.px.shape[0], math.ceil(cy + s) + 1)
        c0, c1 = max(0, math.floor(cx - s)), min(self.px.shape[1], math.ceil(cx + s) + 1)
        if r1 <= r0 or c1 <= c0:
            return
        rows, cols = np.mgrid[r0:r1, c0:c1]
        depth = (rows - (cy - s)) if up else ((cy + s) - rows)  # distance from the tip along the axis
        mask = (depth >= 0) & (depth <= 2 * s) & (np.abs(cols - cx) <= depth / 2)
        self.px[r0:r1, c0:c1][mask] = color

    def text(self, x: float, y: float, text: str, color: Color, scale: float = 1.5, anchor: str = "left") -> float:
        """Draw ``text`` with its top at ``y``; ``anchor`` left/centre/right at ``x``. Returns its width."""
        cell = max(1, round(scale * SS))
        mask = np.kron(font.text_mask(text), np.ones((cell, cell), dtype=bool))
        width = mask.shape[1] / SS
        left = x - {"left": 0.0, "center": width / 2, "right": width}[anchor]
        c0, r0 = round(left * SS), round(y * SS)
        rs, cs = (
            slice(max(0, r0), min(self.px.shape[0], r0 + mask.shape[0])),
            slice(max(0, c0), min(self.px.shape[1], c0 + mask.shape[1])),
        )
        if rs.stop > rs.start and cs.stop > cs.start:
            sub = mask[rs.start - r0 : rs.stop - r0, cs.start - c0 : cs.stop - c0]
            self.px[rs, cs][sub] = color
        return width

    def image(self) -> np.ndarray:
        """The output image: each SS×SS block averaged (antialiasing), shape (height, width, 3) uint8."""
        blocks = self.px.reshape(self.height, SS, self.width, SS, 3).astype(np.uint16)
        return (blocks.sum(axis=(1, 3)) // (SS * SS)).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (shape (h, w, 3), uint8), filter 0 on every row."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, w * 3 + 1), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(h, w * 3)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round tick values (1, 2, 2.5 or 5 × 10^k apart) covering [lo, hi] with at most about ``count`` ticks."""
    if not hi > lo:
        return np.array([lo])
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return np.arange(first, hi + step * 1e-9, step)


def time_ticks(lo: int, hi: int, count: int = 6) -> tuple[np.ndarray, str]:
    """Tick times (epoch s, multiples of a round step) in [lo, hi] and the strftime format for their labels."""
    step = next((s for s in TIME_STEPS if (hi - lo) / s <= count), TIME_STEPS[-1])
    ticks = np.arange(math.ceil(lo / step) * step, hi + 1, step)
    return ticks, ("%Y-%m-%d" if step >= 86400 else "%m-%d %H:%M")


def _money(value: float, step: float) -> str:
    return f"{value:,.0f}" if step >= 1 else f"{value:,.2f}"


@dataclass(frozen=True)
class _Panel:
    """A plotting rectangle and the data ranges it maps."""

    left: float
    top: float
    right: float
    bottom: float
    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, value: np.ndarray | float) -> np.ndarray:
        return self.left + (np.asarray(value, dtype=np.float64) - self.x0) / (self.x1 - self.x0) * (
            self.right - self.left
        )

    def y(self, value: np.ndarray | float) -> np.ndarray:
        return self.bottom - (np.asarray(value, dtype=np.float64) - self.y0) / (self.y1 - self.y0) * (
            self.bottom - self.top
        )


def _y_axis(canvas: Canvas, panel: _Panel, ticks: np.ndarray, label: Callable[[float], str]) -> None:
    for value in ticks:
        y = float(panel.y(value))
        canvas.rect(panel.left, y - 0.5, panel.right, y + 0.5, GRID)
        canvas.text(panel.left - 8, y - 6, label(value), MUTED, anchor="right")
    canvas.rect(panel.left - 1, panel.top, panel.left, panel.bottom, AXIS)


def _x_axis(canvas: Canvas, panel: _Panel, top: float, bottom: float, y_labels: float) -> None:
    ticks, fmt = time_ticks(int(panel.x0), int(panel.x1))
    for value in ticks:
        x = float(panel.x(value))
        canvas.rect(x - 0.5, top, x + 0.5, bottom, GRID)
        label = datetime.fromtimestamp(int(value), UTC).strftime(fmt)
        half = len(label) * font.ADVANCE * 1.5 / 2
        canvas.text(min(max(x, half + 2), canvas.width - half - 2), y_labels, label, MUTED, anchor="center")


def _markers(canvas: Canvas, panel: _Panel, curve: EquityCurve, trades: TradeList | None) -> None:
    if trades is None:
        return
    for i in range(len(trades)):
        for bar, up in ((trades.entry_bar[i], True), (trades.exit_bar[i], False)):
            t = curve.t0 + int(bar) * curve.dt
            y = float(panel.y(np.interp(t, curve.ts, curve.equity)))
            color = BLUE if up else (GREEN if trades.pnl[i] > 0 else RED)
            canvas.triangle(float(panel.x(t)), y + 9 if up else y - 9, 5, up, color)


def _titles(canvas: Canvas, record: ResultRecord, trades: TradeList | None) -> None:
    m = record.metrics
    name = strategy_label(record.strategy, record.strategy_version)
    title = f"{name} {fmt_params(record.params)} · {record.symbol} {record.granularity}"
    canvas.text(20, 12, f"{title} · {short_window(record.start, record.end)} UTC", TEXT, scale=2)
    parts = [
        f"return {fmt_metric('total_return', m.get('total_return'))}",
        f"sharpe {fmt_metric('sharpe', m.get('sharpe'))}",
        f"max dd {fmt_metric('max_drawdown', m.get('max_drawdown'))}",
        f"trades {fmt_metric('trades', m.get('trades'))}",
        f"win rate {fmt_metric('win_rate', m.get('win_rate'))}",
        f"job {record.job_id[:12]}",
    ]
    if record.kind == "paper":
        parts.append("paper")
    canvas.text(20, 38, " · ".join(parts), MUTED)
    if record.source == "synthetic":
        canvas.text(canvas.width - 20, 14, "synthetic candles, not market data", AMBER, anchor="right")


def render(record: ResultRecord, width: int = 1200, height: int = 700) -> np.ndarray:
    """The picture of ``record`` as an RGB array: equity with trade markers on top, drawdown below."""
    if not (400 <= width <= 4000 and 300 <= height <= 3000):
        raise ValidationError(f"the picture must be 400–4000 × 300–3000 pixels, got {width} × {height}")
    curve = decode_equity(record.extra)
    if curve is None:
        raise DataError(f"result {record.job_id} has no stored equity curve")
    trades = decode_trades(record.extra)
    canvas = Canvas(width, height)
    _titles(canvas, record, trades)
    left, right, top, bottom = 96.0, width - 24.0, 70.0, height - 40.0
    split = top + (bottom - top) * 0.68
    x0, x1 = float(curve.t0), float(max(curve.ts[-1], curve.t0 + curve.dt))
    lo, hi = float(min(curve.equity.min(), record.capital)), float(max(curve.equity.max(), record.capital))
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.01, 1.0)
    eq = _Panel(left, top, right, split, x0, x1, lo - pad, hi + pad)
    dd_values = curve.drawdown(record.capital) * 100
    dd_lo = min(float(dd_values.min()) * 1.1, -0.5)
    dd = _Panel(left, split + 24, right, bottom, x0, x1, dd_lo, 0.0)
    eq_ticks = nice_ticks(eq.y0, eq.y1)
    step = float(eq_ticks[1] - eq_ticks[0]) if len(eq_ticks) > 1 else 1.0
    _y_axis(canvas, eq, eq_ticks, lambda v: _money(v, step))
    _y_axis(canvas, dd, nice_ticks(dd_lo, 0.0, 3), lambda v: f"{v:.1f}%" if abs(v) < 10 else f"{v:.0f}%")
    _x_axis(canvas, eq, eq.top, dd.bottom, dd.bottom + 8)
    xs = eq.x(curve.ts)
    cap = float(eq.y(record.capital))
    for start in np.arange(left, right, 12.0):
        canvas.rect(start, cap - 0.5, min(start + 6.0, right), cap + 0.5, AXIS)  # capital, dashed
    canvas.polyline(xs, eq.y(curve.equity), BLUE, 1.6)
    _markers(canvas, eq, curve, trades)
    canvas.fill_to(xs, dd.y(dd_values), float(dd.y(0.0)), RED, 0.25)
    canvas.polyline(xs, dd.y(dd_values), RED, 1.0)
    canvas.text(left + 6, eq.top + 4, "equity", MUTED)
    if trades is not None and trades.total > len(trades):
        note = f"markers: the {len(trades)} largest of {trades.total} trades"
        canvas.text(right - 6, eq.top + 4, note, MUTED, anchor="right")
    canvas.text(left + 6, dd.top + 4, "drawdown", MUTED)
    return canvas.image()


def plot_png(record: ResultRecord, width: int = 1200, height: int = 700) -> bytes:
    """The PNG bytes of :func:`render`."""
    return encode_png(render(record, width, height))
