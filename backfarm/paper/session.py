"""The session runner: N strategy accounts × M symbols on one feed, checkpointed after every bar and fill.

Per event of the feed (:mod:`backfarm.paper.feeds`):

- a **quote** fills every pending order of its symbol's accounts (buys at the ask, sells at the bid, fees on top —
  :mod:`backfarm.paper.broker`) unless the book is crossed or the quote stale, in which case the orders wait and
  the status says why; live, it also triggers stop-loss / take-profit exits at the bid;
- a **closed bar** is appended to the symbol's buffer; in replay the bar's low/high are checked against the stops
  and targets exactly as the engine does; held bars are counted, the last bar closes every position out, equity is
  marked, and each strategy's function is evaluated on the buffer (:mod:`backfarm.paper.signals`): a new target
  is an order pending for the next quote.

Every bar close (and, live, every fill) ends with one atomic, lease-fenced commit (:mod:`backfarm.paper.store`).
A runner that starts on a session with a checkpoint resumes from it: accounts, buffers and feed position are
restored and the feed continues after the last committed bar. When the window ends (or ``paper stop`` asks), the
accounts' metrics go to the leaderboard as ``kind="paper"`` results carrying the session id.

Nothing here, nor anywhere in :mod:`backfarm.paper`, places an order with an exchange.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from backfarm._util.outage import Outage
from backfarm._util.time import from_ns, iso, parse_iso, to_ns
from backfarm.candles.load import load_candles
from backfarm.coinbase.client import CoinbaseClient
from backfarm.coinbase.feed import QuoteFeed
from backfarm.config import Settings
from backfarm.core.candles import COLUMNS, bars_per_year, checksum_arrays
from backfarm.core.results import ResultRecord
from backfarm.errors import DataError, TemporaryError, ValidationError
from backfarm.paper.accounts import END, REBALANCE, Account, Fill, RoundTrip, SizeRules
from backfarm.paper.bars import Bar, BarBuffer
from backfarm.paper.broker import Broker, Tick, size_rules
from backfarm.paper.feeds import BarClosed, Feed, LiveFeed, QuoteSource, ReplayFeed
from backfarm.paper.history import window_candles
from backfarm.paper.lease import LeaseKeeper, acquire, new_token
from backfarm.paper.results import account_record, publish
from backfarm.paper.signals import DEFAULT_CHUNK, SymbolSignals
from backfarm.paper.spec import AccountSpec, SessionSpec
from backfarm.paper.store.base import DONE, Checkpoint, Commit, LeaseLost, SessionStore
from backfarm.strategies.registry import get_strategy, label_lookahead

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.5
HOLD_RETRY_S = 1.0
"""How often the last commit of a session is tried again while the store is unreachable."""
"""How often a running session looks for a stop request."""

QuoteFactory = Callable[[SessionSpec, Settings], QuoteSource]
ProductRules = Callable[[SessionSpec, Settings], dict[str, SizeRules]]


@dataclass
class SessionOutcome:
    """What a run did."""

    session_id: str
    status: str
    """``finished``, ``stopped`` or ``failed``."""
    metrics: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    final_equity: dict[str, float] = field(default_factory=dict)
    bars: int = 0
    fills: int = 0
    resumed: bool = False


@dataclass
class _Slot:
    """One account with its spec and its symbol's position in the equity rows."""

    spec: AccountSpec
    account: Account


# --- running a session under its lease ---------------------------------------------------------------------------


def run_session(
    store: SessionStore,
    session_id: str,
    settings: Settings,
    *,
    results: Any = None,
    quotes: QuoteFactory | None = None,
    rules: ProductRules | None = None,
    wait_for_lease: bool = True,
) -> SessionOutcome:
    """Run (or resume) a stored session to its end under its lease (see the module docstring).

    ``results`` is the leaderboard store (default: ``open_store(settings)``); ``quotes`` and ``rules`` replace the
    live Coinbase feed and product rules (tests). Raises :class:`~backfarm.paper.lease.LeaseBusy` when another
    runner holds the session.
    """
    info = store.get(session_id)
    if info is None:
        raise ValidationError(f"no paper session '{session_id}'")
    token = new_token()
    if info.status in DONE or not acquire(store, session_id, token, info.spec.lease_s, wait_for_lease):
        return SessionOutcome(session_id, info.status)
    keeper = LeaseKeeper(store, session_id, token, info.spec.lease_s)
    keeper.start()
    try:
        return _run_owned(store, session_id, settings, token, keeper, results, quotes, rules)
    except (LeaseLost, TemporaryError):
        raise  # another runner has it, or it may work later: the checkpoint stays for a resume
    except Exception as exc:
        store.update(session_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:500], finished_at=time.time())
        raise
    finally:
        keeper.release()


def _run_owned(
    store: SessionStore,
    session_id: str,
    settings: Settings,
    token: str,
    keeper: LeaseKeeper,
    results: Any,
    quotes: QuoteFactory | None,
    rules: ProductRules | None,
) -> SessionOutcome:
    """The run proper, once the lease is ours: mark it running (counting resumes), play it, publish its results."""
    current = store.get(session_id)
    assert current is not None
    if current.status in DONE:  # it ended while we waited for the lease
        return SessionOutcome(session_id, current.status)
    resumed = store.checkpoint(session_id) is not None or current.status == "running"
    if resumed:
        store.bump_resumes(session_id)
    fields: dict[str, Any] = {"status": "running", "worker": token.rsplit(":", 1)[0]}
    if not current.started_at:
        fields["started_at"] = time.time()
    store.update(session_id, **fields)
    for name in current.spec.lookahead:  # as the command that started it labelled them (whichever process runs it)
        label_lookahead(name)
    runner = SessionRunner(current.spec, settings, store, token, keeper.lost, quotes=quotes, rules=rules)
    outcome = runner.run()
    outcome.resumed = resumed
    outage = Outage(settings.redis_outage_s)
    while True:  # the results of a session that ran to its end are published once the store answers
        try:
            publish(
                store, session_id, runner.result_records(), outcome.status, dict(outcome.metrics), settings, results
            )
            return outcome
        except TemporaryError:
            if outage.failed() is None:
                raise
            time.sleep(HOLD_RETRY_S)


# --- the runner --------------------------------------------------------------------------------------------------


class SessionRunner:
    """Builds accounts, buffers and the feed for a session (fresh or from its checkpoint) and runs the events."""

    def __init__(
        self,
        spec: SessionSpec,
        settings: Settings,
        store: SessionStore,
        token: str,
        lost: threading.Event | None = None,
        *,
        quotes: QuoteFactory | None = None,
        rules: ProductRules | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.store = store
        self.token = token
        self.lost = lost or threading.Event()
        self._quotes = quotes
        self._rules = rules
        self.sid = spec.session_id
        self.step = spec.bar_ns
        self.broker = Broker(spec.costs, synthetic=spec.replay, stale_after_s=spec.stale_after_s)
        self.slots: dict[str, list[_Slot]] = {}
        self.buffers: dict[str, BarBuffer] = {}
        self.signals: dict[str, SymbolSignals] = {}
        self.offsets: dict[str, int] = {}
        self.bars_done: dict[str, int] = dict.fromkeys(spec.symbols, 0)
        self.last_close: dict[str, tuple[int, float]] = {}
        self.quotes: dict[str, Tick] = {}
        self.warnings: dict[str, str] = {}
        self.notes: list[str] = []
        self.lengths: dict[str, int] = {}
        costs = spec.costs
        self._live_exits = not spec.replay and bool(costs.stop_loss_bps or costs.take_profit_bps)
        self.start_ns = 0
        self.end_ns = 0
        self.feed: Feed | None = None
        self.rows = 0
        self.bar_rows = 0
        self.fill_count = 0
        self.trade_count = 0
        self.done = False
        self.stopped = False
        self._pending: Commit | None = None
        self._fills: list[Fill] = []
        self._trades: list[RoundTrip] = []
        self._equity: list[list[Any]] = []
        self._bars: list[dict[str, Any]] = []
        self._next_check = 0.0
        self._outage = Outage(settings.redis_outage_s)
        self._holding = False
        """The store could not take the last commit: what it lacks is held in memory."""

    # --- set-up --------------------------------------------------------------------------------------------------

    def _build_accounts(self, rules: dict[str, SizeRules]) -> None:
        costs = self.spec.costs
        stop = (costs.stop_loss_bps or 0.0) / 1e4
        target = (costs.take_profit_bps or 0.0) / 1e4
        for spec in self.spec.accounts():
            account = Account(
                spec.key, self.spec.capital, costs.fee, costs.sell_markdown, stop, target, rules.get(spec.symbol)
            )
            self.slots.setdefault(spec.symbol, []).append(_Slot(spec, account))

    def _build_signals(self, chunk: int) -> None:
        for symbol, slots in self.slots.items():
            strategies = [(get_strategy(s.spec.strategy), s.spec.params) for s in slots]
            self.signals[symbol] = SymbolSignals(self.buffers[symbol], strategies, chunk)

    def _restore(self, checkpoint: Checkpoint | None) -> None:
        if checkpoint is None:
            return
        cursor = checkpoint.cursor
        for slots in self.slots.values():
            for slot in slots:
                state = checkpoint.accounts.get(slot.account.key)
                if state is not None:
                    slot.account.restore(state)
        self.bars_done = {s: int(cursor["bars_done"].get(s, 0)) for s in self.spec.symbols}
        self.last_close = {s: (int(v[0]), float(v[1])) for s, v in cursor.get("last", {}).items()}
        for symbol, slots in self.slots.items():
            close = self.last_close.get(symbol, (0, math.nan))[1]
            for slot in slots:  # per-symbol values are checkpointed once, in the cursor
                slot.account.bars = float(self.bars_done[symbol])
                slot.account.last_price = close
        self.rows = int(cursor.get("equity_rows", 0))
        self.bar_rows = int(cursor.get("bar_rows", 0))
        self.fill_count = int(cursor.get("fills", 0))
        self.trade_count = int(cursor.get("trades", 0))
        self.notes = list(cursor.get("notes", []))
        self.done = bool(cursor.get("done", False))
        self.stopped = bool(cursor.get("stopped", False))

    def _setup_replay(self, checkpoint: Checkpoint | None) -> ReplayFeed:
        spec = self.spec
        self._build_accounts({})
        self.start_ns = to_ns(parse_iso(str(spec.start)))
        self.end_ns = self.start_ns + spec.window_bars * self.step
        warm = spec.warmup_bars() * self.step
        lengths = self.lengths
        for symbol in spec.symbols:
            lo, hi = from_ns(self.start_ns - warm), from_ns(self.end_ns)
            candles = load_candles(self.settings, spec.source, symbol, spec.granularity, lo, hi)
            offset = int(np.searchsorted(candles.ts, self.start_ns))
            lengths[symbol] = len(candles) - offset
            if lengths[symbol] < 2:
                raise DataError(f"{symbol}: fewer than 2 {spec.granularity} bars from {spec.start} in {spec.source}")
            self.offsets[symbol] = offset
            self.buffers[symbol] = BarBuffer(candles, visible=offset)
        self._restore(checkpoint)
        index = min(self.bars_done.values())
        for symbol in spec.symbols:
            self.buffers[symbol].n = self.offsets[symbol] + min(index, lengths[symbol])
        self._build_signals(DEFAULT_CHUNK if spec.speed is None else 1)
        return ReplayFeed(self.buffers, self.offsets, lengths, self.broker, self.step, spec.speed, index)

    def _setup_live(self, checkpoint: Checkpoint | None) -> LiveFeed:
        spec = self.spec
        rules = (self._rules or _product_rules)(spec, self.settings)
        self._build_accounts(rules)
        source = (self._quotes or _quote_feed)(spec, self.settings)
        feed = LiveFeed(source, spec.symbols, self.step, spec.window_bars)
        self.feed = feed  # closed by run() even if the set-up fails below
        if checkpoint is not None:
            feed.connect()
            self.start_ns = int(checkpoint.cursor["start_ns"])
        else:
            self.start_ns = feed.connect()
        self.end_ns = self.start_ns + spec.window_bars * self.step
        warm = spec.warmup_bars()
        for symbol in spec.symbols:
            lo = self.start_ns - warm * self.step
            candles = window_candles(self.settings, spec.source, symbol, spec.granularity, lo, self.start_ns)
            self.offsets[symbol] = len(candles)
            self.buffers[symbol] = BarBuffer(candles, capacity=len(candles) + spec.window_bars + 1)
        self._restore(checkpoint)
        for row in checkpoint.bars if checkpoint else []:
            self.buffers[row["symbol"]].append(Bar.from_dict(row))
        resume = {}
        for symbol in spec.symbols:
            buffer = self.buffers[symbol]
            prev = float(buffer.column("close")[-1]) if buffer.known else math.nan
            resume[symbol] = (self.start_ns + self.bars_done[symbol] * self.step, prev)
        feed.begin(self.start_ns, resume)
        self._build_signals(1)
        return feed

    # --- the loop ------------------------------------------------------------------------------------------------

    def run(self) -> SessionOutcome:
        """Set up (or restore), play the feed to its end, commit the final state."""
        checkpoint = self.store.checkpoint(self.sid)
        try:
            feed = self._setup_replay(checkpoint) if self.spec.replay else self._setup_live(checkpoint)
            self.feed = feed
            if not self.done:
                if self.stopped or self.store.stop_requested(self.sid):
                    self.stopped = True
                    feed.finish()
                self._play(feed)
        finally:
            if self.feed is not None:
                self.feed.close()
        return self._outcome()

    def _play(self, feed: Feed) -> None:
        for event in feed.events():
            if isinstance(event, Tick):
                # A replayed fill is committed with its bar's close (a resume replays the bar identically).
                if self._on_tick(event) and not self.spec.replay:
                    self._commit_or_hold()
            elif isinstance(event, BarClosed):
                self._on_bar(event)
                if self._step_complete(event):
                    self._commit_or_hold()
            self._check(feed)
        self.done = True
        while not self._commit_or_hold():
            time.sleep(HOLD_RETRY_S)  # the last commit must land: wait for the store (up to the outage limit)

    def _commit_or_hold(self) -> bool:
        """Commit, or, while the store is unreachable, keep what is new in memory for the next commit (every commit
        carries everything since the last one that landed); gives up after ``BACKFARM_REDIS_OUTAGE`` seconds.
        True when the commit landed."""
        try:
            self._commit()
        except TemporaryError as exc:
            down = self._outage.failed()
            if down is None:
                raise
            if not self._holding:
                log.warning("session %s: %s; holding its bars in memory and trying again", self.sid, exc)
            self._holding = True
            return False
        if (was_down := self._outage.answered()) is not None:
            log.warning("session %s: the store answers again after %.0f s; committed what was held", self.sid, was_down)
        self._holding = False
        return True

    def _step_complete(self, event: BarClosed) -> bool:
        """Live: every bar. Replay: once every symbol has closed bar ``index`` (one commit per bar step)."""
        if not self.spec.replay:
            return True
        later = self.spec.symbols[self.spec.symbols.index(event.symbol) + 1 :]
        return not any(event.index < self.lengths[s] for s in later)

    def _check(self, feed: Feed) -> None:
        """Lease lost → stop at once; a stop request → finish gracefully (at most every ``CHECK_EVERY_S``)."""
        if self.lost.is_set():
            raise LeaseLost(f"session {self.sid}: lease lost")
        now = time.monotonic()
        if now < self._next_check or self._holding:
            return  # (while the store is away, a stop request waits for it too)
        self._next_check = now + CHECK_EVERY_S
        try:
            requested = not self.stopped and self.store.stop_requested(self.sid)
        except TemporaryError:
            return  # the store is away: the next commit finds out, and holds
        if requested:
            self.stopped = True
            self.notes.append(f"stop requested at {iso(datetime.now(UTC))}")
            feed.finish()

    # --- events --------------------------------------------------------------------------------------------------

    def _on_tick(self, tick: Tick) -> bool:
        """Fill pending orders (and, live, stops and targets) at this quote; True when something filled."""
        symbol = tick.symbol
        self.quotes[symbol] = tick
        slots = self.slots[symbol]
        if not self._live_exits and not any(s.account.pending for s in slots):
            return False
        head = self.feed.head_ns if isinstance(self.feed, LiveFeed) else tick.time_ns
        refusal = self.broker.refusal(tick, head)
        if refusal is not None:
            if self.warnings.get(symbol) != refusal:
                self.warnings[symbol] = refusal
                log.warning("session %s %s: %s: not trading", self.sid, symbol, refusal)
            return False
        self.warnings.pop(symbol, None)
        bar = self.bars_done[symbol]
        bar_ts = self.start_ns + bar * self.step if not self.spec.replay else tick.time_ns
        prices = self.broker.prices(tick)
        filled = False
        for slot in slots:
            account = slot.account
            if account.pending:
                done = account.rebalance(prices, bar)
                if done is not None:
                    side, qty, price, trip = done
                    self._record(account, bar, bar_ts, side, qty, price, REBALANCE, tick, prices.ref, trip)
                    filled = True
                elif account.refused:
                    self.warnings[symbol] = f"{account.key}: order refused: {account.refused}"
            elif not self.broker.synthetic and (reason := account.touched(tick.bid)) is not None:
                qty, price = account.qty, self.broker.sell_price(tick)
                trip = account.exit_at(price, reason, bar)
                self._record(account, bar, bar_ts, "sell", qty, price, reason, tick, prices.ref, trip)
                filled = True
        return filled

    def _on_bar(self, event: BarClosed) -> None:
        """A bar closed: exits (replay), held bars and close-out, marks, and the strategies' new targets."""
        symbol, i, bar = event.symbol, event.index, event.bar
        buffer = self.buffers[symbol]
        if self.spec.replay:
            buffer.n = self.offsets[symbol] + i + 1
        else:
            buffer.append(bar)
            self._bars.append({"symbol": symbol, **bar.to_dict()})
            if bar.missed:
                self.notes.append(f"{symbol}: no quotes in the bar at {iso(from_ns(bar.ts))} (flat bar)")
        close_out = self._close_out_price(symbol) if event.last and not self.spec.replay else None
        slots = self.slots[symbol]
        row: list[Any] = [self.spec.symbols.index(symbol), i, bar.ts]
        for slot in slots:
            account = slot.account
            if self.spec.replay:
                hit = account.check_exits(bar.open, bar.high, bar.low)
                if hit is not None:
                    level, reason = hit
                    qty, price = account.qty, self.broker.exit_price(level)
                    trip = account.exit_at(price, reason, i)
                    self._record(account, i, bar.ts, "sell", qty, price, reason, None, level, trip)
            qty = account.qty
            trip = account.close_bar(bar.close, i, event.last, close_out)
            if trip is not None:
                price = close_out if close_out is not None else bar.close * (1.0 - account.markdown)
                self._record(account, i, bar.ts, "sell", qty, price, END, self.quotes.get(symbol), bar.close, trip)
            row.append(account.e_prev)
        if not event.last:
            targets = self.signals[symbol].targets(self.offsets[symbol] + i)
            for slot, x in zip(slots, targets, strict=True):
                slot.account.decide(x)
        self._equity.append(row)
        self.bars_done[symbol] = i + 1
        self.last_close[symbol] = (bar.ts, bar.close)

    def _close_out_price(self, symbol: str) -> float | None:
        """Live close-out: the last quote's bid (with slippage) if it is usable, else the engine's close rule."""
        tick = self.quotes.get(symbol)
        if tick is None or self.broker.refusal(tick, getattr(self.feed, "head_ns", tick.time_ns)) is not None:
            self.notes.append(f"{symbol}: no usable quote at the end: closed out at the last close")
            return None
        return self.broker.sell_price(tick)

    def _record(
        self,
        account: Account,
        bar: int,
        bar_ts: int,
        side: str,
        qty: float,
        price: float,
        reason: str,
        tick: Tick | None,
        ref: float,
        trip: RoundTrip | None,
    ) -> None:
        fill = Fill(
            fill_id=f"{account.key}:{bar}:{reason}",
            account=account.key,
            bar=bar,
            bar_ts=bar_ts,
            side=side,
            qty=qty,
            price=price,
            fee=qty * price * account.fee,
            reason=reason,
            time_ns=tick.time_ns if tick is not None else bar_ts,
            ref=ref,
            bid=tick.bid if tick is not None else math.nan,
            ask=tick.ask if tick is not None else math.nan,
            cash=account.cash,
            position=account.qty,
        )
        self._fills.append(fill)
        if trip is not None:
            self._trades.append(trip)

    # --- persistence ---------------------------------------------------------------------------------------------

    def cursor(self) -> dict[str, Any]:
        """The session-level part of the checkpoint (also what ``paper status`` reads)."""
        feed_stats = self.feed.stats() if self.feed is not None else {}
        return {
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "bars_done": dict(self.bars_done),
            "window_bars": self.spec.window_bars,
            "last": {s: list(v) for s, v in self.last_close.items()},
            "quotes": {
                s: {"bid": t.bid, "ask": t.ask, "time_ns": t.time_ns, "received": t.received, "source": t.source}
                for s, t in self.quotes.items()
            },
            "warnings": dict(self.warnings),
            "notes": self._recent_notes(),
            "equity_rows": self.rows + len(self._equity),
            "bar_rows": self.bar_rows + len(self._bars),
            "fills": self.fill_count + len(self._fills),
            "trades": self.trade_count + len(self._trades),
            "feed": {k: v for k, v in feed_stats.items() if isinstance(v, int | float | str)},
            "done": self.done,
            "stopped": self.stopped,
            "wall": time.time(),
        }

    def _recent_notes(self) -> list[str]:
        """The last 20 notes (older ones are dropped: a long session's missed bars must not grow the checkpoint)."""
        del self.notes[:-20]
        return list(self.notes)

    def _commit(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"session {self.sid}: lease lost")
        accounts = {s.account.key: s.account.state() for slots in self.slots.values() for s in slots if s.account.dirty}
        commit = Commit(
            cursor=self.cursor(),
            accounts=accounts,
            fills=self._fills,
            trades=self._trades,
            equity=self._equity,
            equity_from=self.rows,
            bars=self._bars,
            bars_from=self.bar_rows,
        )
        duplicates = self.store.commit(self.sid, self.token, commit)
        if duplicates:
            log.warning("session %s: %d fills were already recorded (kept once)", self.sid, duplicates)
        for slots in self.slots.values():
            for slot in slots:
                slot.account.dirty = False
        self.rows += len(self._equity)
        self.bar_rows += len(self._bars)
        self.fill_count += len(self._fills)
        self.trade_count += len(self._trades)
        self._fills, self._trades, self._equity, self._bars = [], [], [], []

    # --- results -------------------------------------------------------------------------------------------------

    def result_records(self) -> list[ResultRecord]:
        """One leaderboard result per account that has metrics, over the bars played (see :func:`account_record`)."""
        span = (self.start_ns, self.start_ns + max(self.bars_done.values(), default=0) * self.step)
        records = []
        for symbol, slots in self.slots.items():
            lo, hi = self.offsets[symbol], self.offsets[symbol] + self.bars_done[symbol]
            checksum = checksum_arrays(*(self.buffers[symbol].column(c)[lo:hi] for c in COLUMNS))
            for slot in slots:
                record = account_record(self.spec, slot.spec, slot.account, span, checksum, self.stopped)
                if record is not None:
                    records.append(record)
        return records

    def _outcome(self) -> SessionOutcome:
        bpy = bars_per_year(self.spec.bar_seconds)
        outcome = SessionOutcome(
            self.sid,
            "stopped" if self.stopped else "finished",
            bars=max(self.bars_done.values(), default=0),
            fills=self.fill_count,
        )
        for slots in self.slots.values():
            for slot in slots:
                outcome.metrics[slot.account.key] = slot.account.metrics(bpy)
                outcome.final_equity[slot.account.key] = slot.account.final_equity
        return outcome


# --- live helpers ------------------------------------------------------------------------------------------------


def _quote_feed(spec: SessionSpec, settings: Settings) -> QuoteSource:
    return QuoteFeed.from_settings(settings, spec.symbols, stale_after=max(10.0, spec.stale_after_s))


def _product_rules(spec: SessionSpec, settings: Settings) -> dict[str, SizeRules]:
    with CoinbaseClient.from_settings(settings) as client:
        products = client.products()
        rules = {}
        for symbol in spec.symbols:
            client.check_product(symbol)
            rules[symbol] = size_rules(products[symbol])
    return rules
