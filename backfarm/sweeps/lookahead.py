"""The lookahead gate: strategy code nobody has checked yet is checked before it runs, once per code hash.

``backtest`` and ``paper start`` (and :mod:`backfarm.api`) call :func:`gate` with the strategies they will run. A
strategy whose identity carries a code hash (a strategy file, a class registered from a notebook) and whose hash this
data directory has not seen is put through :func:`backfarm.strategies.check.check_strategy` on fixed synthetic
candles (so the verdict depends on the code alone); the verdict is remembered in ``strategies/checked.json`` under the
data directory. A failing strategy is refused (a ``ValidationError`` naming it and the first bar that moved) unless
lookahead is allowed; then its identity gains the ``+lookahead`` label, so every result it produces says so.
Built-ins and installed plugins are not gated: their authors check them (``backfarm strategies check``). A plugin is
identified by its distribution's version, not its code; where Python can see its source, the gate remembers the code
hash of each plugin identity (``strategies/plugins.json``) and warns when the code changed under the same version
(stored results of the old code would be reused).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backfarm._util.disk import writing
from backfarm.candles.load import load_candles
from backfarm.config import Settings
from backfarm.core.candles import Candles
from backfarm.errors import ValidationError
from backfarm.strategies.check import check_strategy
from backfarm.strategies.registry import get_strategy, label_lookahead, origin

__all__ = ["CHECK_DAYS", "Verdict", "check_candles", "gate"]

log = logging.getLogger(__name__)

CHECK_SYMBOL, CHECK_DAYS = "BTC-USD", 2
"""The candles of the gate's check: two days of synthetic 1-minute BTC-USD bars (2,880 bars) ending at
:data:`CHECK_END`, fixed so that a verdict belongs to the code and not to the day it ran."""
CHECK_END = datetime(2024, 1, 1, tzinfo=UTC)
GATED_KINDS = ("file", "registered")
"""Origins whose code the gate checks (their identity holds a code hash)."""


@dataclass(frozen=True)
class Verdict:
    """The remembered outcome of checking one strategy identity."""

    ok: bool
    checked: int
    message: str


def gate(
    settings: Settings,
    names: Sequence[str],
    allow: bool = False,
    announce: Callable[[str], None] = lambda _: None,
) -> dict[str, Verdict]:
    """Check the gated strategies among ``names`` whose code is new here; refuse a failing one unless ``allow``.

    ``announce`` hears one line before each check that runs (they take a few seconds). Returns the verdict of every
    gated strategy, new or remembered."""
    seen = _read(_path(settings))
    verdicts: dict[str, Verdict] = {}
    _watch_plugins(settings, names)
    for name in dict.fromkeys(names):
        found = origin(name)
        if found.kind not in GATED_KINDS or not found.code:
            continue
        verdict = seen.get(found.identity)
        if verdict is None:
            announce(f"checking {name} ({found.identity}) for lookahead: its code is new here")
            verdict = _check(settings, name)
            seen[found.identity] = verdict
            _write(_path(settings), seen)
        verdicts[name] = verdict
        if not verdict.ok:
            if not allow:
                raise ValidationError(
                    f"strategy {name} fails the lookahead check: {verdict.message}; fix it, or pass "
                    "--allow-lookahead to run it anyway with every result labelled"
                )
            label_lookahead(name)
            log.warning("running %s although it fails the lookahead check; its results are labelled", name)
    return verdicts


def _watch_plugins(settings: Settings, names: Sequence[str]) -> None:
    """Warn about a plugin whose code changed while its distribution's version did not (where the code is seen)."""
    path = settings.data_dir / "strategies" / "plugins.json"
    found_of = {name: origin(name) for name in dict.fromkeys(names)}
    plugins = {name: found for name, found in found_of.items() if found.kind == "plugin" and found.code}
    if not plugins:
        return
    known = {key: str(code) for key, code in _load(path).items()}
    changed = False
    for name, found in plugins.items():
        before = known.get(found.identity)
        if before is not None and before != found.code:
            log.warning(
                "strategy %s: the code of %s changed but its version did not; results of the old code are reused "
                "under the same job ids: bump the distribution's version",
                name, found.where,
            )  # fmt: skip
        if before != found.code:
            known[found.identity] = found.code
            changed = True
    if changed:
        _write_json(path, known)


def check_candles(settings: Settings, symbol: str, days: int, end: datetime | None = None) -> Candles:
    """``days`` of synthetic 1-minute candles of ``symbol`` ending at ``end`` (default today 00:00 UTC): what the
    lookahead check runs on (``strategies check``, the API's ``check``, the gate with its fixed end)."""
    if days <= 0:
        raise ValidationError(f"--days must be positive, got {days}")
    end = end or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return load_candles(settings, "synthetic", symbol, "1m", end - timedelta(days=days), end)


def _check(settings: Settings, name: str) -> Verdict:
    """Run the lookahead check of ``name`` on the gate's fixed candles."""
    report = check_strategy(get_strategy(name), check_candles(settings, CHECK_SYMBOL, CHECK_DAYS, CHECK_END))
    return Verdict(report.ok, report.checked, report.message)


def _path(settings: Settings) -> Path:
    return settings.data_dir / "strategies" / "checked.json"


def _read(path: Path) -> dict[str, Verdict]:
    """The remembered verdicts; an unreadable one is forgotten (that strategy is checked again)."""
    verdicts = {}
    for key, v in _load(path).items():
        try:
            verdicts[key] = Verdict(bool(v["ok"]), int(v["checked"]), str(v["message"]))
        except (TypeError, KeyError, ValueError):
            log.warning("forgetting an unreadable lookahead verdict in %s (%s)", path, key)
    return verdicts


def _load(path: Path) -> dict[str, Any]:
    """A remembered JSON object; a missing file is empty, an unreadable one is forgotten (and said so)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("forgetting unreadable %s (%s)", path, exc)
        return {}
    if not isinstance(raw, dict):
        log.warning("forgetting unreadable %s (not a JSON object)", path)
        return {}
    return raw


def _write(path: Path, seen: dict[str, Verdict]) -> None:
    data = {key: {"ok": v.ok, "checked": v.checked, "message": v.message} for key, v in sorted(seen.items())}
    _write_json(path, data)


def _write_json(path: Path, data: object) -> None:
    """Write ``data`` atomically: readers see the old file or the new one, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing(path):
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
