"""A paper session's specification: strategies × symbols, the feed, the window or duration, costs, and its id.

The spec is built and validated on the client (``backfarm paper start``) before anything is stored or enqueued:
unknown strategies get "did you mean", parameters are resolved and bound-checked, a duration or speed that is not
positive, an unknown granularity or feed are one-line ``ValidationError``\\ s. Symbols are checked against the
feed's source by :func:`validate_symbols` (it may need the network).

Times: ``duration_s`` is market time — wall-clock time on the live feed, candle time in replay (``--speed 100``
plays 300 s of candles in 3 s). A replay covers the bars whose open time lies in ``[start, start + duration)``;
without ``--from`` it is the window ending today 00:00 UTC, the same as ``backfarm backtest --days N``.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backfarm._util.time import NS_PER_SECOND, iso, parse_iso
from backfarm.candles.sources import get_source
from backfarm.coinbase.client import CoinbaseClient
from backfarm.config import Settings
from backfarm.core.candles import granularity_seconds
from backfarm.core.costs import Costs
from backfarm.core.jobs import Params
from backfarm.errors import ValidationError, did_you_mean
from backfarm.strategies.registry import get_strategy

FEEDS: tuple[str, ...] = ("coinbase", "replay")
"""``coinbase``: live quotes from the Coinbase WebSocket (REST fallback); ``replay``: cached candles."""
DEFAULT_STALE_AFTER_S = 30.0
"""A live quote this far behind the feed (or a feed silent this long) is stale: no trading on it."""
DEFAULT_LEASE_S = 10.0
"""How long a runner's claim on a session lasts without renewal; a dead worker's session resumes after this."""
DEFAULT_CAPITAL = 10_000.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def new_session_id() -> str:
    """A fresh random id: ``p`` and 10 hex digits."""
    return "p" + secrets.token_hex(5)


MAX_DURATION_S = 3650 * 86400.0
"""The longest session (ten years of market time: any replay of the available history fits)."""


def parse_duration_s(text: str | float) -> float:
    """``90s``, ``30m``, ``4h``, ``7d``, ``2w`` → seconds (a number, from Python, is seconds already); text needs its
    unit (``120`` could mean seconds or minutes); not positive → ``ValidationError``."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValidationError(f"--duration needs a unit, like 120s, 30m, 4h, 7d or 2w (got {text!r})")
        value = float(match.group(1)) * _UNITS[match.group(2)]
    if not value > 0.0 or not math.isfinite(value):
        raise ValidationError(f"--duration must be positive, got {text!r}")
    if value > MAX_DURATION_S:
        raise ValidationError(f"--duration must be at most {MAX_DURATION_S // 86400:,.0f}d, got {text!r}")
    return value


def parse_speed(text: str | float | None) -> float | None:
    """``max`` → ``None`` (as fast as possible); a number must be positive."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "max"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValidationError(f"--speed must be a positive number or 'max', got {text!r}") from None
    if not value > 0.0 or not math.isfinite(value):
        raise ValidationError(f"--speed must be positive (or 'max'), got {text!r}")
    return value


@dataclass(frozen=True)
class AccountSpec:
    """One strategy (with resolved parameters) on one symbol: one paper account, one leaderboard entry."""

    strategy: str
    params: Params
    symbol: str

    @property
    def key(self) -> str:
        """``strategy@SYMBOL``: unique within a session (one parameter set per strategy)."""
        return f"{self.strategy}@{self.symbol}"


@dataclass(frozen=True)
class SessionSpec:
    """Everything that determines a session. Stored once; every runner (and every resume) reads it back."""

    session_id: str
    strategies: tuple[tuple[str, Params], ...]
    symbols: tuple[str, ...]
    duration_s: float
    feed: str = "coinbase"
    granularity: str = "1m"
    speed: float | None = None
    """Replay speed (market seconds per wall second); ``None`` is ``max``. Live sessions run in real time."""
    start: str | None = None
    """Replay window start (ISO 8601 UTC); set for every replay."""
    source: str = "coinbase"
    """Candle source of the replay, and of the live warm-up."""
    costs: Costs = field(default_factory=Costs)
    capital: float = DEFAULT_CAPITAL
    warmup: int | None = 0
    """Bars of history before the window that the strategies see; ``None`` = each session's largest
    ``Strategy.warmup``. Replays default to 0 (the window alone, exactly like ``backfarm backtest``)."""
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    lease_s: float = DEFAULT_LEASE_S
    created_at: float = 0.0
    lookahead: tuple[str, ...] = ()
    """Strategies that fail the lookahead check and run anyway (``--allow-lookahead``): every runner labels them."""

    @property
    def replay(self) -> bool:
        """True for a replay of cached candles."""
        return self.feed == "replay"

    @property
    def bar_seconds(self) -> int:
        """Seconds per bar."""
        return granularity_seconds(self.granularity)

    @property
    def bar_ns(self) -> int:
        """Nanoseconds per bar."""
        return self.bar_seconds * NS_PER_SECOND

    @property
    def window_bars(self) -> int:
        """Bars the session covers: the duration in whole bars (rounded up live, down in replay)."""
        bars = self.duration_s / self.bar_seconds
        return max(1, int(bars) if self.replay else math.ceil(bars - 1e-9))

    def accounts(self) -> list[AccountSpec]:
        """The accounts, grouped by symbol (symbol-major, strategies in the order given)."""
        return [AccountSpec(name, dict(p), symbol) for symbol in self.symbols for name, p in self.strategies]

    def warmup_bars(self) -> int:
        """Bars of history to load before the first session bar."""
        if self.warmup is not None:
            return self.warmup
        return max(get_strategy(name).warmup(dict(p)) for name, p in self.strategies)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "session_id": self.session_id,
            "strategies": [[name, dict(p)] for name, p in self.strategies],
            "symbols": list(self.symbols),
            "duration_s": self.duration_s,
            "feed": self.feed,
            "granularity": self.granularity,
            "speed": self.speed,
            "start": self.start,
            "source": self.source,
            "costs": self.costs.to_dict(),
            "capital": self.capital,
            "warmup": self.warmup,
            "stale_after_s": self.stale_after_s,
            "lease_s": self.lease_s,
            "created_at": self.created_at,
            **({"lookahead": list(self.lookahead)} if self.lookahead else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionSpec:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        values["strategies"] = tuple((str(name), dict(p)) for name, p in values["strategies"])
        values["symbols"] = tuple(values["symbols"])
        values["costs"] = Costs(**values["costs"])
        values["lookahead"] = tuple(values.get("lookahead", ()))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in known})


def build_spec(
    strategies: Iterable[str],
    symbols: Iterable[str],
    duration: str | float,
    *,
    feed: str = "coinbase",
    granularity: str = "1m",
    speed: str | float | None = None,
    start: str | datetime | None = None,
    params: Mapping[str, Mapping[str, object]] | None = None,
    costs: Costs | None = None,
    capital: float = DEFAULT_CAPITAL,
    source: str = "coinbase",
    warmup: int | str | None = "default",
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    lease_s: float = DEFAULT_LEASE_S,
    now: datetime | None = None,
    session_id: str | None = None,
) -> SessionSpec:
    """Validate the inputs of ``paper start`` and build the spec (symbols are checked by :func:`validate_symbols`)."""
    if feed not in FEEDS:
        raise ValidationError(did_you_mean("feed", feed, FEEDS))
    names = _unique(strategies, "--strategies")
    chosen_symbols = _unique(symbols, "--symbols")
    given = {k: dict(v) for k, v in (params or {}).items()}
    for name in given:
        if name not in names:
            raise ValidationError(f"--params names '{name}', which is not in --strategies")
    resolved = tuple((name, get_strategy(name).resolve(given.get(name))) for name in names)
    granularity_seconds(granularity)
    duration_s = parse_duration_s(duration)
    replay = feed == "replay"
    if not replay and speed is not None:
        raise ValidationError("--speed applies to --feed replay; a live feed runs in real time")
    if not replay and start is not None:
        raise ValidationError("--from applies to --feed replay; a live session starts now")
    if stale_after_s <= 0 or lease_s <= 0:
        raise ValidationError("--stale-after and the lease must be positive")
    if not 0.0 < capital < math.inf:
        raise ValidationError(f"--capital must be a positive finite number, got {capital}")
    spec = SessionSpec(
        session_id=session_id or new_session_id(),
        strategies=resolved,
        symbols=chosen_symbols,
        duration_s=duration_s,
        feed=feed,
        granularity=granularity,
        speed=parse_speed(speed) if replay else None,
        start=_replay_start(start, duration_s, granularity, now) if replay else None,
        source=source,
        costs=costs or Costs(),
        capital=float(capital),
        warmup=_warmup(warmup, replay),
        stale_after_s=float(stale_after_s),
        lease_s=float(lease_s),
        created_at=time.time(),
    )
    if replay and spec.duration_s < 2 * spec.bar_seconds:
        raise ValidationError(f"a replay needs at least 2 bars: --duration must be >= {2 * spec.bar_seconds} s")
    return spec


def validate_symbols(spec: SessionSpec, settings: Settings) -> None:
    """Unknown symbols are a ``ValidationError`` (did you mean ...): replay asks its candle source, live asks
    Coinbase's product list (cached by the client)."""
    if spec.replay:
        source = get_source(spec.source, settings)
        for symbol in spec.symbols:
            source.validate_symbol(symbol)
        return
    with CoinbaseClient.from_settings(settings) as client:
        for symbol in spec.symbols:
            client.check_product(symbol)


def parse_time(text: str) -> datetime:
    """ISO date or date-time (naive = UTC) → aware datetime; anything else is a ``ValidationError``."""
    try:
        return parse_iso(text.strip())
    except ValueError:
        raise ValidationError(f"--from must be an ISO date or date-time (UTC), got {text!r}") from None


def _replay_start(start: str | datetime | None, duration_s: float, granularity: str, now: datetime | None) -> str:
    step = granularity_seconds(granularity)
    now = now or datetime.now(UTC)
    if start is None:
        today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        begin = today - timedelta(seconds=duration_s)
    else:
        begin = parse_time(start) if isinstance(start, str) else start.astimezone(UTC)
    aligned = int(begin.timestamp()) // step * step
    if aligned != begin.timestamp():
        raise ValidationError(f"--from must fall on a {granularity} bar boundary, got {iso(begin)}")
    if begin + timedelta(seconds=duration_s) > now:
        raise ValidationError(f"the replay window {iso(begin)} + {duration_s:g} s reaches into the future")
    return iso(begin)


def _warmup(value: int | str | None, replay: bool) -> int | None:
    if value == "default":
        return 0 if replay else None
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        bars = int(value)
    except ValueError:
        raise ValidationError(f"--warmup must be 'auto' or a number of bars, got {value!r}") from None
    if bars < 0:
        raise ValidationError(f"--warmup must be >= 0, got {bars}")
    return bars


def _unique(items: Iterable[str], flag: str) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not out:
        raise ValidationError(f"{flag} needs at least one name")
    return out
