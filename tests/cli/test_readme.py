"""Every ``backfarm`` command the README shows parses as written: its commands exist and its options are real.

The README is the front door, so a renamed option must not leave it showing a command that fails. Each command line
of its shell blocks (continuation lines joined, comments dropped, ``docker compose run --rm cli ...`` read as the
``backfarm`` command it runs) goes through the real CLI with ``--help`` appended, which parses every option and
runs nothing. Values and the count of positional arguments are not checked (placeholders such as ``SWEEP_ID`` stand
in for them); the quickstart's own commands run for real in other tests. A usage synopsis in brackets
(``[ID] [--watch]``) is checked with every optional part present.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfarm.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
FENCE = re.compile(r"^```(?:sh|bash|shell|console)?\s*$")


def readme_commands() -> list[str]:
    """The ``backfarm`` command lines of the README's shell blocks, as written (without comments)."""
    commands: list[str] = []
    fenced = shell = False
    pending = ""
    for raw in README.read_text().splitlines():
        if raw.startswith("```"):
            fenced = not fenced
            shell = fenced and bool(FENCE.match(raw))
            pending = ""
            continue
        if not shell:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if not line.startswith(("backfarm ", "docker compose run ")):
            continue
        words = shlex.split(line, comments=True)
        if words[:4] == ["docker", "compose", "run", "--rm"] and words[4:5] == ["cli"]:
            words = ["backfarm", *words[5:]]
        if words[:1] == ["backfarm"]:
            commands.append(shlex.join(words))
    return commands


def parse(words: list[str], tmp: Path) -> tuple[int, str]:
    """``backfarm <words> --help`` (optional parts of a synopsis included): click parses every option before it acts
    on ``--help``, so an unknown command or option exits 2 and a valid line prints its command's usage and exits 0
    without running anything. Returns (exit code, output)."""
    args = [w.strip("[]") for w in words if w.strip("[]")]
    env = {"BACKFARM_DATA_DIR": str(tmp), "BACKFARM_REDIS_URL": "", "COLUMNS": "200"}
    result = CliRunner().invoke(app, [*args, "--help"], env=env)
    return result.exit_code, result.output


def usage_of(output: str) -> str:
    """The command path of a help page's usage line (``backfarm paper start``)."""
    match = re.search(r"Usage: (backfarm(?: [a-z][a-z-]*)*)", output)
    assert match, output
    return match.group(1)


def test_the_readme_shows_commands() -> None:
    shown = {" ".join(w for w in shlex.split(c)[1:3] if not w.startswith("-")) for c in readme_commands()}
    # The quickstart's and each section's commands are all found (a broken extraction would find none).
    expected = {"backtest", "leaderboard", "results SWEEP_ID", "strategies check", "paper start", "worker", "dashboard"}
    assert expected <= shown, shown
    assert len(readme_commands()) >= 25


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command: str, tmp_path: Path) -> None:
    words = shlex.split(command)[1:]
    code, output = parse(words, tmp_path)
    assert code == 0, output
    # The help shown is the command the line names (not the root's, as an unknown subcommand would give).
    names = [w for w in words if re.fullmatch(r"[a-z][a-z-]*", w)]
    assert usage_of(output).split()[1:] == names[: len(usage_of(output).split()) - 1], output


@pytest.mark.parametrize(
    "words",
    [
        ["backtest", "--grdi"],
        ["leaderboard", "--grid"],
        ["paper", "strat"],
        ["sweep", "reconcile", "X", "--watch"],
    ],
)
def test_the_parse_check_rejects_what_the_cli_rejects(words: list[str], tmp_path: Path) -> None:
    code, output = parse(words, tmp_path)
    assert code == 2, output
