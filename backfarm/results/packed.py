"""A commit of results as the Redis store keeps it: one *chunk* of two blobs, facts and pictures, plus what ranking
needs to know of it without opening it.

- ``facts``: the identity, result hash and metrics of every row (the columns of :data:`backfarm.results.rows.FACTS`),
  as JSON columns (orjson: exact for every float, and no Arrow needed to read them back), zstd-compressed.
- ``pictures``: the equity curves, trade lists and other ``extra`` of every row: a JSON header of their fields
  followed by their bytes, zstd-compressed as one frame (the rows of a batch compress better together).
- the chunk's *zones*: per metric, the lowest and highest defined value and whether any row leaves it undefined;
  per filter field, the values its rows have. A ranking reads chunks best zone first and stops when no unread chunk
  can beat what it holds.

Encoding takes a batch as columns (a table's ``to_pydict()``, or the rows of records), so the worker that built the
results as Arrow and a client holding records produce the same blobs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import zstandard

from backfarm.core.results import METRICS
from backfarm.results import rows
from backfarm.results.rows import EQUITY_FIELDS, FACTS, FILTER_COLUMNS, PICTURES, TRADES_FIELDS, metric_column

LEVEL = 3
"""zstd level of both blobs (written once per batch by a worker; level 3 is zstd's default balance)."""
_HEADER = struct.Struct("<I")
_NAMES = (*FACTS, *PICTURES)


@dataclass
class Chunk:
    """A batch ready for the store: its blobs, its rows' ids and hashes, and its zones."""

    facts: bytes
    pictures: bytes
    job_ids: list[str]
    hashes: list[str]
    zones: dict[str, tuple[float | int, float | int]] = field(default_factory=dict)
    """Metric → (lowest, highest) of its defined values (absent: none defined)."""
    nulls: list[str] = field(default_factory=list)
    """Metrics some row leaves undefined."""
    values: dict[str, list[str]] = field(default_factory=dict)
    """Filter field → the values its rows have."""


def columns_of(stored: Sequence[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Rows as :func:`backfarm.results.rows.stored` makes them, as columns by name."""
    if not stored:
        return {name: [] for name in _NAMES}
    return {name: list(column) for name, column in zip(_NAMES, zip(*stored, strict=True), strict=True)}


def pack(columns: Mapping[str, Sequence[Any]]) -> Chunk:
    """The chunk of a batch given as columns (every name of :data:`FACTS` and :data:`PICTURES`)."""
    compress = zstandard.ZstdCompressor(level=LEVEL).compress
    facts = compress(orjson.dumps({name: list(columns[name]) for name in FACTS}))
    chunk = Chunk(facts, compress(_pictures(columns)), list(columns["job_id"]), list(columns["result_hash"]))
    for metric in METRICS:
        values = columns[metric_column(metric)]
        defined = [v for v in values if v is not None]
        if defined:
            chunk.zones[metric] = (min(defined), max(defined))
        if len(defined) < len(values):
            chunk.nulls.append(metric)
    for name in FILTER_COLUMNS:
        chunk.values[name] = sorted({str(v) for v in columns[name] if v is not None})
    return chunk


def _pictures(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The pictures blob before compression: header length, JSON header, then the artifacts' bytes in row order."""
    payload: list[bytes] = []
    header: dict[str, list[Any]] = {"equity": [], "trades": [], "extra": list(columns["extra"])}
    for name, fields in (("equity", EQUITY_FIELDS), ("trades", TRADES_FIELDS)):
        for art in columns[name]:
            if art is None:
                header[name].append(None)
                continue
            header[name].append([art[f] for f in fields] + [len(art["data"])])
            payload.append(art["data"])
    head = orjson.dumps(header)
    return _HEADER.pack(len(head)) + head + b"".join(payload)


def facts(blob: bytes) -> dict[str, list[Any]]:
    """The facts columns of a chunk."""
    data: dict[str, list[Any]] = orjson.loads(zstandard.ZstdDecompressor().decompress(blob))
    return data


def pictures(blob: bytes) -> dict[str, list[Any]]:
    """The picture columns of a chunk (artifacts as struct rows with their bytes, as the Arrow columns hold them)."""
    raw = zstandard.ZstdDecompressor().decompress(blob)
    (size,) = _HEADER.unpack_from(raw)
    header = orjson.loads(raw[_HEADER.size : _HEADER.size + size])
    at = _HEADER.size + size
    out: dict[str, list[Any]] = {"extra": header["extra"]}
    for name, fields in (("equity", EQUITY_FIELDS), ("trades", TRADES_FIELDS)):
        column: list[Any] = []
        for entry in header[name]:
            if entry is None:
                column.append(None)
                continue
            art: dict[str, Any] = dict(zip(fields, entry[:-1], strict=True))
            art["data"] = raw[at : at + entry[-1]]
            at += entry[-1]
            column.append(art)
        out[name] = column
    return out


def row_dicts(
    facts_columns: Mapping[str, list[Any]], picture_columns: Mapping[str, list[Any]] | None, at: Sequence[int]
) -> Iterator[dict[str, Any]]:
    """Rows ``at`` of a chunk as column name → value (with the pictures when given): what
    :func:`backfarm.results.rows.record` reads."""
    for i in at:
        row = {name: facts_columns[name][i] for name in FACTS}
        if picture_columns is not None:
            row.update((name, picture_columns[name][i]) for name in PICTURES)
        yield row


def records(
    facts_columns: Mapping[str, list[Any]], picture_columns: Mapping[str, list[Any]] | None, at: Sequence[int]
) -> list[Any]:
    """The records of rows ``at`` (``extra`` empty without the pictures)."""
    return [rows.record(row) for row in row_dicts(facts_columns, picture_columns, at)]
