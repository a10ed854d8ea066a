"""``backfarm report`` (one self-contained HTML file) and ``backfarm plot`` (a PNG drawn with numpy)."""

from __future__ import annotations

import dataclasses
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from backfarm.core.results import Filters
from backfarm.dashboard import data
from backfarm.dashboard.plot import encode_png, nice_ticks, plot_png, time_ticks
from backfarm.dashboard.report import render, report_data
from backfarm.results.embedded import EmbeddedStore
from tests.dashboard.conftest import Results, invoke

URL_ATTR = re.compile(r"""\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def embedded(html: str) -> dict[str, object]:
    match = re.search(r'<script id="backfarm-data" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_report_is_one_self_contained_file(results: Results, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    code, _, err = invoke(results.env, "report", "latest", "--out", str(out))
    assert code == 0, err
    assert f"sweep {results.sweep_id}, {results.total} of {results.total} results, 20 equity curves" in err
    html = out.read_text()
    # Nothing to fetch: no external URL in any attribute, no linked script or stylesheet, a policy forbidding requests.
    assert URL_ATTR.search(html) is None
    assert "<script src=" not in html and "<link " not in html
    assert "default-src 'none'" in html and "connect-src" not in html
    assert "uPlot" in html and "decodeEquity" in html  # the chart library and the page's script are inline
    payload = embedded(html)
    assert payload["sweep_id"] == results.sweep_id and payload["total"] == results.total
    assert len(payload["rows"]) == results.total and len(payload["details"]) == 20
    with results.store() as store:
        best = [r.job_id for r in store.top("sharpe", 20, Filters(sweep=results.sweep_id))]
    assert [r["job_id"] for r in payload["rows"][:20]] == best
    assert set(payload["details"]) == set(best)
    assert {r["job_id"] for r in payload["rows"] if r["has_curve"]} == set(best)  # the page offers only these
    assert all("equity" in d["extra"] for d in payload["details"].values())


def test_report_rows_charts_and_metric(results: Results, tmp_path: Path) -> None:
    out = tmp_path / "small.html"
    code, _, err = invoke(
        results.env, "report", results.sweep_id[:6], "--out", str(out), "--rows", "10", "--charts", "3",
        "--metric", "total_return",
    )  # fmt: skip
    assert code == 0, err
    payload = embedded(out.read_text())
    with results.store() as store:
        best = [r.job_id for r in store.top("total_return", 10, Filters(sweep=results.sweep_id))]
    assert [r["job_id"] for r in payload["rows"]] == best
    assert list(payload["details"]) == best[:3] and payload["meta"]["default_metric"] == "total_return"
    code, _, err = invoke(results.env, "report", "nosuch", "--out", str(out))
    assert code == 2 and err.strip() == "error: unknown sweep 'nosuch' (see `backfarm sweeps`)"
    code, _, err = invoke(results.env, "report", "latest", "--metric", "sharp")
    assert code == 2 and "did you mean 'sharpe'" in err


def test_report_data_cannot_break_out_of_its_script(results: Results) -> None:
    with results.store() as store:
        payload = report_data(store, results.sweep_id, rows=2, charts=0)
    evil = "</script><script>alert(1)</script>"
    payload["rows"][0]["strategy"] = evil
    html = render(payload)
    assert evil not in html
    assert embedded(html)["rows"][0]["strategy"] == evil


def read_png(blob: bytes) -> np.ndarray:
    """Decode the PNGs :func:`encode_png` writes (8-bit RGB, filter 0): shape (h, w, 3)."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, body = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    w, h, depth, color, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(h, w * 3 + 1)
    assert not raw[:, 0].any()  # filter type 0 on every row
    return raw[:, 1:].reshape(h, w, 3)


def test_png_encoder_round_trip() -> None:
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert read_png(encode_png(image)).tolist() == image.tolist()


def test_ticks_by_hand() -> None:
    # span 160 over 5 ticks → raw step 32 → the next round step is 50.
    assert nice_ticks(9950, 10110).tolist() == [9950, 10000, 10050, 10100]
    assert nice_ticks(-3.2, 0.0, 3).tolist() == [-2.0, 0.0]  # raw step 1.07 → 2
    ticks, fmt = time_ticks(0, 2 * 86400)  # 6 h would give 8 ticks; 12 h gives 4
    assert ticks.tolist() == [0, 43200, 86400, 129600, 172800] and fmt == "%m-%d %H:%M"
    assert time_ticks(0, 30 * 86400)[1] == "%Y-%m-%d"


def colour_share(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> float:
    return float((np.abs(image.astype(int) - rgb).max(axis=2) <= tolerance).mean())


def test_plot_draws_curve_markers_and_drawdown(results: Results, tmp_path: Path) -> None:
    with results.store() as store:
        record = next(r for r in store.top("sharpe", 200) if 2 <= r.metrics["trades"] <= 20)
    out = tmp_path / "equity.png"
    code, _, err = invoke(results.env, "plot", record.job_id[:10], "--out", str(out))
    assert code == 0, err
    assert f"wrote {out}: {record.strategy} {record.symbol} {record.job_id}" in " ".join(err.split())
    image = read_png(out.read_bytes())
    assert image.shape == (700, 1200, 3)
    assert colour_share(image, (37, 99, 235)) > 0.001  # the equity line and entry markers (blue)
    assert colour_share(image, (185, 28, 28), 30) > 0.0005  # the drawdown line (red)
    pink = colour_share(image[495:660], (238, 198, 198), 12)  # the drawdown area: red at 25% on white
    assert pink > 0.001 or record.metrics["max_drawdown"] > -0.001
    assert colour_share(image[:60, :400], (31, 41, 51), 60) > 0.01  # the title's letters
    assert colour_share(image[:34, 700:], (146, 64, 14), 60) > 0.001  # "synthetic candles, not market data"
    assert plot_png(record) == out.read_bytes()  # deterministic


def test_plot_errors(results: Results, tmp_path: Path) -> None:
    code, _, err = invoke(results.env, "plot", "zzzzzzzz", "--out", str(tmp_path / "x.png"))
    assert code == 2 and err.strip() == "error: unknown result 'zzzzzzzz' (see `backfarm leaderboard`)"
    code, _, err = invoke(results.env, "plot", "ab", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "give at least 4 characters" in err
    code, _, err = invoke(results.env, "plot", results.paper_id, "--out", str(tmp_path / "x.jpg"))
    assert code == 2 and "--out must end in .png" in err
    with results.store() as store:
        assert data.find_result(store, "paper-").job_id == results.paper_id
        paper = store.get(results.paper_id)
    env = {**results.env, "BACKFARM_DATA_DIR": str(tmp_path / "other")}
    (tmp_path / "other").mkdir()
    with EmbeddedStore(tmp_path / "other" / "results") as other:
        other.put([dataclasses.replace(paper, extra={})])
    code, _, err = invoke(env, "plot", results.paper_id, "--out", str(tmp_path / "x.png"))
    assert code == 2 and err.strip().endswith(
        "no equity curve was stored with this paper result, and its session has no marks for it"
    )


def test_plot_draws_a_paper_result_from_its_session(results: Results, tmp_path: Path) -> None:
    out = tmp_path / "paper.png"
    code, _, err = invoke(results.env, "plot", results.paper_id, "--out", str(out))
    assert code == 0, err
    assert out.read_bytes().startswith(b"\x89PNG") and f"wrote {out}" in " ".join(err.split())
