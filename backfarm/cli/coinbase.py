"""``backfarm coinbase``: live quotes (``watch``), a key check (``check``) and the local simulator (``sim``).

All three read ``BACKFARM_COINBASE_*`` (API/WS URLs, key name + private key, or a key file). User mistakes raise
``backfarm.errors`` exceptions, which the root app prints as one line with exit code 2. Private keys are never printed.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from backfarm.cli import state
from backfarm.errors import ConfigError, ValidationError

# Commands import what they run inside their bodies, so `backfarm --help` stays fast (no engine, store or Celery).

if TYPE_CHECKING:
    from backfarm.coinbase.feed import QuoteFeed
    from backfarm.coinbase.quotes import Quote
    from backfarm.config import Settings
    from backfarm.simulator import Simulator
    from backfarm.simulator.market import MarketData

app = typer.Typer(no_args_is_help=True, help="Coinbase Advanced Trade: live quotes, key check, local simulator.")

_PERMISSIONS = ("view", "trade", "transfer")
KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", help="Downloaded CDP key JSON \\[env: BACKFARM_COINBASE_KEY_FILE].")
]


def _settings(key_file: Path | None = None) -> Settings:
    return state.settings().with_(coinbase_key_file=key_file)


def _symbols(raw: str) -> list[str]:
    symbols = [s.strip().upper() for s in raw.replace(" ", ",").split(",") if s.strip()]
    if not symbols:
        raise ValidationError("no symbols given (e.g. BTC-USD,ETH-USD)")
    return list(dict.fromkeys(symbols))


# ------------------------------------------------------------------------------------------------------- watch


@app.command()
def watch(
    symbols: Annotated[str, typer.Argument(help="Comma-separated products, e.g. BTC-USD,ETH-USD.")],
    duration: Annotated[
        str | None, typer.Option(help="Stop after this long: 90s, 30m, 4h (default: until Ctrl-C).")
    ] = None,
    stale_after: Annotated[float, typer.Option(help="Reconnect when no message arrives for this long (s).")] = 10.0,
    key_file: KeyFileOption = None,
) -> None:
    """Show live bid/ask quotes in a table (WebSocket ticker; REST polling while the socket is down)."""
    from backfarm.coinbase.client import CoinbaseClient
    from backfarm.coinbase.feed import QuoteFeed
    from backfarm.paper.spec import parse_duration_s

    seconds = parse_duration_s(duration) if duration is not None else None
    settings = _settings(key_file)
    products = _symbols(symbols)
    client = CoinbaseClient.from_settings(settings)
    for product in products:
        client.check_product(product)  # did-you-mean before opening the socket
    feed = QuoteFeed.from_settings(settings, products, rest=client, stale_after=stale_after)
    latest: dict[str, Quote] = {}
    started = time.monotonic()

    def render() -> Group:
        return _render(feed, products, latest, time.monotonic() - started)

    with Live(get_renderable=render, console=state.console, refresh_per_second=4, transient=False):
        try:
            for quote in feed.quotes(seconds):
                latest[quote.product] = quote
        except KeyboardInterrupt:
            pass
        finally:
            client.close()


def _render(feed: QuoteFeed, products: list[str], latest: dict[str, Quote], elapsed: float) -> Group:
    table = Table(title="Coinbase quotes", title_justify="left", header_style="bold")
    for col in ("product", "bid", "ask", "spread bps", "bid size", "ask size", "last", "exchange time", "age"):
        table.add_column(col, justify="left" if col in ("product", "exchange time") else "right")
    now = datetime.now(UTC)
    for product in products:
        q = latest.get(product)
        if q is None:
            table.add_row(product, *["…"] * 7, "")
            continue
        when = q.exchange_time or q.receive_time
        table.add_row(
            product,
            _num(q.bid),
            _num(q.ask),
            _num(q.spread_bps, 2),
            _num(q.bid_size),
            _num(q.ask_size),
            _num(q.last),
            f"{when:%H:%M:%S.%f}"[:-3],
            f"{(now - q.receive_time).total_seconds():.1f}s",
        )
    s = feed.stats
    status = Text(
        f"{feed.mode} · {elapsed:.0f}s · quotes {s.quotes} · reconnects {max(s.connects - 1, 0)} · "
        f"stale {s.stale} · gaps {s.gaps} · REST polls {s.polls}",
        style="dim",
    )
    last_event = feed.events[-1] if feed.events else None
    lines: list[RenderableType] = [table, status]
    if last_event is not None and last_event.kind not in ("connected", "subscribed"):
        lines.append(Text(f"{last_event.at:%H:%M:%S} {last_event.kind}: {last_event.detail}", style="yellow"))
    return Group(*lines)


def _num(value: float, decimals: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if decimals is not None:
        return f"{value:,.{decimals}f}"
    return f"{value:,.8f}".rstrip("0").rstrip(".")


# ------------------------------------------------------------------------------------------------------- check


@app.command()
def check(key_file: KeyFileOption = None) -> None:
    """Prove the configured CDP key works: one authenticated call; prints the key name and its permissions."""
    from backfarm.coinbase.auth import CdpKey
    from backfarm.coinbase.client import CoinbaseClient
    from backfarm.errors import AuthError

    settings = _settings(key_file)
    key = CdpKey.from_settings(settings)
    if key is None:
        raise AuthError(
            "no Coinbase key configured: set BACKFARM_COINBASE_KEY_NAME and BACKFARM_COINBASE_PRIVATE_KEY, "
            "or BACKFARM_COINBASE_KEY_FILE / --key-file"
        )
    with CoinbaseClient(settings.coinbase_api_url, key) as client:
        perms = client.key_permissions()
    flags = ", ".join(
        f"{name}: {'yes' if perms.get(f'can_{name}') else 'no'}" for name in ("view", "trade", "transfer")
    )
    state.console.print(f"Coinbase key {key.name} ({key.algorithm}) works at {settings.coinbase_api_url}")
    state.console.print(f"permissions: {flags}")
    if perms.get("portfolio_uuid"):
        state.console.print(f"portfolio: {perms['portfolio_uuid']} ({perms.get('portfolio_type', 'unknown type')})")


# --------------------------------------------------------------------------------------------------------- sim


@app.command()
def sim(
    port: Annotated[int, typer.Option(help="REST (and WebSocket) port.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    ws_port: Annotated[int | None, typer.Option(help="Extra port for the WebSocket feed.")] = None,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 1.0,
    source: Annotated[str, typer.Option(help="Candles from: synthetic | formula | cache.")] = "synthetic",
    cache_source: Annotated[str, typer.Option(help="With --source cache: which cached source.")] = "coinbase",
    start: Annotated[
        datetime | None, typer.Option(help="Simulated start time, UTC (replay history; default: now).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated market.")] = 0,
    key_file: Annotated[
        list[Path] | None, typer.Option("--key-file", help="Accept this CDP key file's key (repeatable).")
    ] = None,
    public_rate: Annotated[float, typer.Option(help="Public requests/s per IP before 429 (0: no limit).")] = 10.0,
    error_rate: Annotated[float, typer.Option(help="Fault: share of REST requests answered 503.")] = 0.0,
    latency: Annotated[float, typer.Option(help="Fault: seconds added to every REST answer.")] = 0.0,
    drop_ws_after: Annotated[int | None, typer.Option(help="Fault: drop each WebSocket after N messages.")] = None,
) -> None:
    """Run the Coinbase-compatible simulator in the foreground (Ctrl-C stops it)."""
    from backfarm.coinbase.auth import CdpKey
    from backfarm.simulator import Faults, SimConfig, Simulator, serve_forever

    if not 0.0 <= error_rate <= 1.0:
        raise ValidationError(f"--error-rate must be between 0 and 1, got {error_rate}")
    if speed <= 0:
        raise ValidationError(f"--speed must be > 0, got {speed}")
    start_time = None if start is None else (start if start.tzinfo else start.replace(tzinfo=UTC)).timestamp()
    config = SimConfig(host=host, port=port, ws_port=ws_port, speed=speed, seed=seed, start_time=start_time)
    config.public_rate = public_rate if public_rate > 0 else None
    faults = Faults(error_rate=error_rate, latency=latency, ws_drop_after=drop_ws_after)
    simulator = Simulator(config, faults, _market(source, cache_source, seed))
    keys = [CdpKey.from_file(path) for path in key_file or []]
    configured = CdpKey.from_settings(state.settings())
    if configured is not None:
        keys.append(configured)
    for key in keys:
        simulator.register_key(key, can_view=True, can_trade=True)
    try:
        serve_forever(simulator, lambda s: _announce(s, keys, source))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def _market(source: str, cache_source: str, seed: int) -> MarketData:
    from backfarm.simulator.market import FormulaMarket, SourceMarket, default_market

    if source == "synthetic":
        return default_market(seed)
    if source == "formula":
        return FormulaMarket(seed)
    if source == "cache":
        return SourceMarket(_CacheReader(state.settings(), cache_source))
    from backfarm.errors import did_you_mean

    raise ValidationError(did_you_mean("simulator source", source, ("synthetic", "formula", "cache")))


class _CacheReader:
    """A fetch-only view of the local candle cache, so the simulator can serve what was cached."""

    def __init__(self, settings: Settings, source: str) -> None:
        from backfarm.candles.cache import CandleCache

        self.cache = CandleCache(settings.candles_dir)
        self.source = source
        if not any(e.source == source for e in self.cache.entries()):
            raise ConfigError(f"the candle cache at {settings.candles_dir} holds nothing from source '{source}'")

    def fetch(self, symbol: str, granularity: str, start: datetime, end: datetime) -> dict[str, np.ndarray]:
        from backfarm._util.time import to_ns
        from backfarm.candles.cache import empty_arrays, months_covering

        lo, hi = to_ns(start), to_ns(end)
        parts = []
        for month in months_covering(lo, hi):
            partition = self.cache.read(self.source, symbol, granularity, month)
            if partition is not None:
                parts.append(partition.arrays)
        if not parts:
            return empty_arrays()
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        keep = (cols["ts"] >= lo) & (cols["ts"] < hi)
        return {k: v[keep] for k, v in cols.items()}


def _announce(sim: Simulator, keys: list, source: str) -> None:
    out = state.console
    out.print(f"Coinbase simulator ({source} candles) on {sim.api_url}  ·  WebSocket {sim.ws_url}")
    out.print("point backfarm at it:")
    out.print(f"  export BACKFARM_COINBASE_API_URL={sim.api_url}")
    out.print(f"  export BACKFARM_COINBASE_WS_URL={sim.ws_url}")
    if keys:
        out.print("accepting keys: " + ", ".join(f"{k.name} ({k.algorithm})" for k in keys))
    else:
        out.print("no keys registered (--key-file): authenticated endpoints answer 401")
    out.print("Ctrl-C stops it.")
