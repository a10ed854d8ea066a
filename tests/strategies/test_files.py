"""Strategy files: loading, the decorator, identities that follow the code, and one-line errors with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from backfarm import Param, Rule, Strategy, strategy
from backfarm.cli import app
from backfarm.core.jobs import Params
from backfarm.errors import ConfigError
from backfarm.strategies import registry
from backfarm.strategies.files import code_hash, split_paths
from backfarm.strategies.indicators import Indicators
from tests.strategies.test_check import random_walk as synthetic

RSI_DIP = '''
from backfarm import Param, strategy
from helpers import below


@strategy("rsi_dip", params=[Param("period", int, 14, 2, 200, (7, 14)), Param("level", float, 30.0, 1.0, 99.0)])
def rsi_dip(ind, p):
    """Long while the RSI is below `level`."""
    return below(ind.rsi(p["period"]), p["level"])
'''
HELPERS = """
def below(x, level):
    return (x < level).astype(float)
"""
TREND = '''
import numpy as np
from backfarm import Param, Strategy


class Trend(Strategy):
    """Long while the close is above its `n`-bar average."""

    name = "trend_file"
    params = (Param("n", int, 20, 2, 500, (10, 20), step=5),)

    def exposure(self, ind, p):
        return (ind.close > ind.sma(p["n"])).astype(np.float64)


class _Base(Strategy):  # private: not a strategy of the file
    pass
'''


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unloaded registry without plugins for each test."""
    monkeypatch.setattr(registry, "_table", None)
    monkeypatch.setattr(registry, "entry_points", lambda group: [])


def write(folder: Path, name: str, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_a_folder_loads_its_strategies_and_helpers(tmp_path: Path) -> None:
    write(tmp_path, "helpers.py", HELPERS)
    write(tmp_path, "rsi_dip.py", RSI_DIP)
    write(tmp_path, "trend.py", TREND)
    write(tmp_path, "_scratch.py", "raise RuntimeError('never imported')")
    assert registry.load_paths([tmp_path]) == ["rsi_dip", "trend_file"]
    found = registry.origin("rsi_dip")
    assert found.kind == "file" and found.where == f"{tmp_path / 'rsi_dip.py'}:6"
    assert found.identity == f"1+code.{found.code}" and found.code == code_hash(tmp_path / "rsi_dip.py", [tmp_path])
    rsi = registry.get_strategy("rsi_dip")
    assert rsi.describe() == "Long while the RSI is below `level`."
    assert [p.name for p in rsi.params] == ["period", "level"] and rsi.param("level").grid == (30.0,)
    candles = synthetic(400)

    out = rsi.exposure(Indicators(candles), {"period": 14, "level": 30.0})
    assert out.dtype == np.float64 and out.shape == (400,) and set(np.unique(out)) <= {0.0, 1.0}
    trend = registry.get_strategy("trend_file")
    assert trend.param("n").step == 5 and registry.origin("trend_file").where.endswith("trend.py:6")


def test_the_code_hash_follows_the_file_and_its_local_imports(tmp_path: Path) -> None:
    helpers = write(tmp_path, "helpers.py", HELPERS)
    path = write(tmp_path, "rsi_dip.py", RSI_DIP)
    first = code_hash(path, [tmp_path])
    assert code_hash(path, [tmp_path]) == first  # deterministic
    helpers.write_text(HELPERS.replace("<", "<="))
    edited = code_hash(path, [tmp_path])
    assert edited != first  # a helper's edit reaches the strategies that import it
    helpers.write_text(HELPERS)
    assert code_hash(path, [tmp_path]) == first  # reverting finds the old identity again
    path.write_text(RSI_DIP + "\n# a comment is an edit too\n")
    assert code_hash(path, [tmp_path]) != first
    moved = tmp_path / "elsewhere"
    write(moved, "helpers.py", HELPERS)
    write(moved, "rsi_dip.py", RSI_DIP)
    assert code_hash(moved / "rsi_dip.py", [moved]) == first  # the folder's place does not matter


def test_an_edited_file_replaces_its_strategies_in_a_running_process(tmp_path: Path) -> None:
    path = write(tmp_path, "trend.py", TREND)
    registry.load_paths([path])
    before = registry.identity("trend_file")
    assert registry.load_paths([path]) == ["trend_file"] and registry.identity("trend_file") == before
    path.write_text(textwrap.dedent(TREND).replace("(10, 20)", "(10, 20, 40)"))
    registry.load_paths([path])
    assert registry.identity("trend_file") != before
    assert registry.get_strategy("trend_file").param("n").grid == (10, 20, 40)


def test_paths_split_like_path(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b"
    assert split_paths([f"{a}:{b}", str(a), ""]) == [a, b]


@pytest.mark.parametrize(
    ("name", "source", "message"),
    [
        ("syntax.py", "x = (\n", r"syntax\.py:1: syntax error: '\(' was never closed"),
        ("imports.py", "\n\nimport not_a_module_anywhere\n", r"imports\.py:3: ModuleNotFoundError: No module named"),
        ("raises.py", "def f():\n    raise ValueError('boom')\n\nf()\n", r"raises\.py:2: ValueError: boom"),
        ("empty.py", "x = 1\n", r"empty\.py:1: defines no strategy"),
        (
            "bounds.py",
            "from backfarm import Param, Strategy\n\nclass S(Strategy):\n    name = 's'\n"
            "    params = (Param('a', int, 500, 1, 100),)\n",
            r"bounds\.py:5: ValueError: parameter a: 500 is outside its bounds \[1, 100\]",
        ),
        (
            "noname.py",
            "import numpy as np\nfrom backfarm import Strategy\n\n\nclass S(Strategy):\n"
            "    def exposure(self, ind, p):\n        return np.zeros(ind.n)\n",
            r"noname\.py:5: strategy class S does not define a name",
        ),
        (
            "rules.py",
            "import numpy as np\nfrom backfarm import Param, Rule, Strategy\n\nclass S(Strategy):\n"
            "    name = 'ruled'\n    params = (Param('a', int, 5, 1, 9), Param('b', int, 3, 1, 9))\n"
            "    rules = (Rule('a < b', lambda p: p['a'] < p['b']),)\n"
            "    def exposure(self, ind, p):\n        return np.zeros(ind.n)\n",
            r"rules\.py:4: strategy ruled is not usable: ValidationError: ruled: parameters break the rule 'a < b'",
        ),
        (
            "builtin.py",
            "import numpy as np\nfrom backfarm import strategy\n\n@strategy('momentum')\ndef m(ind, p):\n"
            "    return np.zeros(ind.n)\n",
            r"builtin\.py:4: strategy 'momentum' is already a built-in strategy$",
        ),
    ],
)
def test_errors_are_one_line_naming_file_and_line(tmp_path: Path, name: str, source: str, message: str) -> None:
    path = write(tmp_path, name, source)
    with pytest.raises(ConfigError) as err:
        registry.load_paths([path])
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(str(path)), text
    assert __import__("re").search(message, text), text


def test_two_files_may_not_share_a_name(tmp_path: Path) -> None:
    first = write(tmp_path / "a", "trend.py", TREND)
    second = write(tmp_path / "b", "trend.py", TREND)
    registry.load_paths([first])
    with pytest.raises(
        ConfigError, match=rf"^{second}:6: strategy 'trend_file' is already a file strategy at {first}:6$"
    ):
        registry.load_paths([second])


def test_missing_and_non_python_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such strategy file or folder"):
        registry.load_paths([tmp_path / "nope.py"])
    text = write(tmp_path, "notes.txt", "hello")
    with pytest.raises(ConfigError, match=r"notes\.txt: a strategy file must be a \.py file"):
        registry.load_paths([text])


def test_the_decorator_makes_a_strategy_class() -> None:
    @strategy("dip", params=[Param("n", int, 10, 2, 100, (5, 10))], rules=[Rule("n > 3", lambda p: p["n"] > 3)],
              warmup=lambda p: 2 * int(p["n"]))  # fmt: skip
    def dip(ind: object, p: Params) -> list[float]:
        """Never invested (a list is fine: the decorator makes it float64)."""
        return [0.0] * ind.n  # type: ignore[attr-defined]

    assert issubclass(dip, Strategy) and dip.name == "dip" and dip.version == "1"
    instance = dip()
    assert instance.warmup({"n": 10}) == 20
    assert instance.describe() == "Never invested (a list is fine: the decorator makes it float64)."
    assert list(dip.default_grid()) == [{"n": 5}, {"n": 10}]

    out = instance.exposure(Indicators(synthetic(50)), {"n": 10})
    assert out.dtype == np.float64 and out.shape == (50,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"default": 5, "low": 10, "high": 1}, "low 10 is above high 1"),
        ({"default": 5, "low": 1, "high": 10, "grid": (5, 11)}, "11 is outside its bounds"),
        ({"default": 5, "low": 1, "high": 10, "step": 0}, "step must be positive"),
        ({"default": 5, "low": 0, "high": 10, "log": True}, "a log scale needs low > 0"),
        ({"default": 2.5, "low": 1, "high": 10}, "2.5 is not an integer"),
    ],
)
def test_param_declarations_must_keep_their_own_bounds(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Param("x", int, **kwargs)  # type: ignore[arg-type]


def test_param_grid_defaults_to_the_default() -> None:
    p = Param("k", float, 2.0, 0.5, 8.0, log=True)
    assert p.grid == (2.0,) and p.log and p.step is None


def test_a_bad_file_is_one_line_and_exit_2_on_every_command(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.py", "import numpy as np\n\n\nclass Broken(\n")
    env = {"BACKFARM_DATA_DIR": str(tmp_path / "data"), "BACKFARM_REDIS_URL": ""}
    for args in (
        ["strategies", "list"],
        ["strategies", "check"],
        ["backtest", "--source", "synthetic", "--days", "1"],
        ["paper", "start", "--duration", "1h", "--feed", "replay", "--source", "synthetic"],
    ):
        result = CliRunner().invoke(app, [*args, "--strategy-path", str(bad)], env=env)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == f"error: {bad}:4: syntax error: '(' was never closed\n", args
    result = CliRunner().invoke(app, ["strategies", "list"], env={**env, "BACKFARM_STRATEGY_PATH": str(bad)})
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {bad}:4:")
