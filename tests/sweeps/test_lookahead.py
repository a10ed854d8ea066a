"""The lookahead gate: new strategy code is checked once per code hash, a failing strategy is refused or labelled,
and a plugin whose code changed under the same version is reported."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest

from backfarm.config import Settings
from backfarm.core.results import Filters
from backfarm.errors import ValidationError
from backfarm.paper.session import run_session
from backfarm.paper.spec import SessionSpec
from backfarm.paper.store.sqlite import SQLiteSessionStore
from backfarm.results.embedded import EmbeddedStore
from backfarm.strategies import registry
from backfarm.sweeps.lookahead import gate
from tests.paper.conftest import replay_spec
from tests.strategies.test_registry import install_plugin

HONEST = '''
import numpy as np
from backfarm import Param, strategy


@strategy("honest", params=[Param("n", int, 10, 2, 100, (5, 10))])
def honest(ind, p):
    """Long above the SMA."""
    return (ind.close > ind.sma(p["n"])).astype(np.float64)
'''
PEEK = '''
import numpy as np
from backfarm import strategy


@strategy("peek")
def peek(ind, p):
    """Long when the next close is higher (lookahead)."""
    c = np.asarray(ind.close)
    return np.append(c[1:] > c[:-1], False).astype(np.float64)
'''
PLUGIN = '''
import numpy as np
from backfarm import Param, Strategy


class Plug(Strategy):
    """Long above the SMA ({tag})."""

    name = "plug"
    params = (Param("n", int, 10, 2, 100),)

    def exposure(self, ind, p):
        return (ind.close > ind.sma(p["n"])).astype(np.float64)
'''


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_table", None)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def load(tmp_path: Path, name: str, source: str) -> None:
    path = tmp_path / "files" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(textwrap.dedent(source))
    registry.load_paths([path])


def test_new_code_is_checked_once_and_remembered(settings: Settings, tmp_path: Path) -> None:
    load(tmp_path, "honest.py", HONEST)
    heard: list[str] = []
    verdicts = gate(settings, ["momentum", "honest"], announce=heard.append)
    assert list(verdicts) == ["honest"] and verdicts["honest"].ok and verdicts["honest"].checked > 1000
    assert heard == [f"checking honest ({registry.identity('honest')}) for lookahead: its code is new here"]
    saved = json.loads((settings.data_dir / "strategies" / "checked.json").read_text())
    assert saved[registry.identity("honest")]["ok"] is True
    heard.clear()
    assert gate(settings, ["honest"], announce=heard.append) == verdicts and heard == []  # remembered


def test_a_failing_strategy_is_refused_unless_allowed_then_labelled(settings: Settings, tmp_path: Path) -> None:
    load(tmp_path, "peek.py", PEEK)
    plain = registry.identity("peek")
    with pytest.raises(ValidationError, match=r"^strategy peek fails the lookahead check: cheater: exposure at bar 0"):
        gate(settings, ["peek"])
    assert registry.identity("peek") == plain
    with pytest.raises(ValidationError):  # the verdict is remembered: refused again without checking
        gate(settings, ["peek"], announce=lambda line: pytest.fail(line))
    gate(settings, ["peek"], allow=True)
    assert registry.identity("peek") == plain + "+lookahead"
    assert registry.base_identity(registry.identity("peek")) == plain


def test_an_unreadable_verdict_file_is_forgotten(settings: Settings, tmp_path: Path) -> None:
    load(tmp_path, "honest.py", HONEST)
    path = settings.data_dir / "strategies" / "checked.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    heard: list[str] = []
    assert gate(settings, ["honest"], announce=heard.append)["honest"].ok and len(heard) == 1
    assert json.loads(path.read_text())[registry.identity("honest")]["ok"] is True


def test_a_plugin_whose_code_changed_under_the_same_version_is_reported(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.undo()  # real entry points for this test
    monkeypatch.setattr(registry, "_table", None)
    first = tmp_path / "v1"
    first.mkdir()
    install_plugin(first, monkeypatch, "plugmod", "plug = plugmod:Plug", PLUGIN.format(tag="first"))
    assert registry.identity("plug") == "1+plugmod-0.1"
    with caplog.at_level(logging.WARNING, logger="backfarm"):
        gate(settings, ["plug"])
    assert not caplog.records
    monkeypatch.setattr(registry, "_table", None)
    (first / "plugmod.py").write_text(textwrap.dedent(PLUGIN.format(tag="edited")))
    monkeypatch.delitem(sys.modules, "plugmod")
    assert registry.identity("plug") == "1+plugmod-0.1"  # the same version: the same job ids
    with caplog.at_level(logging.WARNING, logger="backfarm"):
        gate(settings, ["plug"])
    (record,) = caplog.records
    assert "strategy plug: the code of plugmod-0.1 changed but its version did not" in record.getMessage()


def test_a_paper_session_labels_what_its_command_allowed(settings: Settings, tmp_path: Path) -> None:
    """`paper start --allow-lookahead` writes the failing strategies into the session; whichever process runs it
    (a spawned `paper run`, a farm worker) labels their results."""
    load(tmp_path, "peek.py", PEEK)
    plain = registry.identity("peek")
    spec = replay_spec(["peek", "momentum"], ["BTC-USD"], "6h", "2024-06-03T00:00:00Z")
    spec = dataclasses.replace(spec, lookahead=("peek",))
    assert SessionSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    sessions = SQLiteSessionStore(tmp_path / "sessions.sqlite")
    sessions.create(spec)
    with EmbeddedStore(tmp_path / "results") as results:
        run_session(sessions, spec.session_id, settings, results=results)
        versions = {r.strategy: r.strategy_version for r in results.iter_results(Filters(kind="paper"))}
    assert versions == {"peek": plain + "+lookahead", "momentum": "1"}
