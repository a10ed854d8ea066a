"""Square brackets in what the CLI prints are text, not rich markup: strategy rules, parameter ranges, help texts."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.testing import CliRunner

from backfarm.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "400", "BACKFARM_REDIS_URL": ""}


def test_strategies_list_keeps_brackets() -> None:
    result = runner.invoke(app, ["strategies", "list"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "parameters (default [low, high])" in result.stdout
    assert "lookback=60 [1, 5000]" in result.stdout
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("│ momentum"))
    block = lines[first : next(i for i in range(first, len(lines)) if not lines[i].startswith("│"))]
    rule = " ".join(line.split("│")[-2].strip() for line in block)  # the rule cell, wrapped over the row's lines
    assert "close[t] / close[t - lookback] - 1" in rule


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under ``command`` with its path (groups by their ``commands``: Typer may bring its own click)."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


def test_every_bracket_in_a_help_text_is_shown() -> None:
    """Each ``[...]`` in an option's help (``[env: …]``, ranges) appears in ``--help`` as written."""
    checked = 0
    for path, command in _commands(typer.main.get_command(app)):
        wanted = [
            part.replace("\\[", "[")
            for param in command.params
            for part in re.findall(r"\\?\[[^\]]*\]", getattr(param, "help", None) or "")
        ]
        if not wanted:
            continue
        result = runner.invoke(app, [*path, "--help"], env=WIDE)
        assert result.exit_code == 0, (path, result.output)
        for part in wanted:
            assert part in result.stdout, (path, part)
            checked += 1
    assert checked >= 1  # the Coinbase key file's [env: …] at least
