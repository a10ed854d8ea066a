"""A commit of results as the Redis store keeps it: one *chunk* of two blobs, facts and pictures, plus what ranking
needs to know of it without opening it.

- ``facts``: the identity, result hash and metrics of every row (the columns of :data:`backfarm.results.rows.FACTS`),
  as JSON columns (orjson: exact for every float, and no Arrow needed to read them back), zstd-compressed.
- ``pictures``: the equity curves, trade lists and other ``extra`` of every row: a JSON header of their fields
  followed by their bytes, zstd-compressed as one frame (the rows of a batch compress better together).
- the chunk's *bounds*: per metric and direction, the sort key of its best row — the value in a byte order
  (:func:`sort_key`) followed by the job id, so ties go by job id exactly as rankings break them — and whether any
  row leaves the metric undefined; per filter field, the values its rows have. A ranking reads chunks best bound
  first and stops when the next bound is worse than its n-th result: exact, ties included.

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
from backfarm.results.rows import ARTIFACTS, FACTS, FILTER_COLUMNS, PICTURES, metric_column

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
    bounds: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Metric → the sort keys (:func:`row_key`) of the best row ascending and of the best row descending (absent:
    no row defines it)."""
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
    chunk = Chunk(
        encode_facts(columns), encode_pictures(columns), list(columns["job_id"]), list(columns["result_hash"])
    )
    ids = chunk.job_ids
    for metric in METRICS:
        values = columns[metric_column(metric)]
        defined = [(v, job) for v, job in zip(values, ids, strict=True) if v is not None]
        if defined:
            low = min(defined, key=lambda pair: (pair[0], pair[1]))
            high = min(defined, key=lambda pair: (-pair[0], pair[1]))
            chunk.bounds[metric] = (row_key(low[0], low[1], True), row_key(high[0], high[1], False))
        if len(defined) < len(values):
            chunk.nulls.append(metric)
    for name in FILTER_COLUMNS:
        chunk.values[name] = sorted({str(v) for v in columns[name] if v is not None})
    return chunk


def encode_facts(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The facts blob of a chunk's columns."""
    return zstandard.ZstdCompressor(level=LEVEL).compress(orjson.dumps({name: list(columns[name]) for name in FACTS}))


def encode_pictures(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The pictures blob of a chunk's columns."""
    return zstandard.ZstdCompressor(level=LEVEL).compress(_pictures(columns))


def sort_key(value: float | int, ascending: bool) -> str:
    """16 hex digits that sort as ``value`` does (ascending) or the other way round: the IEEE bits of the float with
    the sign bit flipped for positives and every bit for negatives (-0.0 counts as 0.0: they tie)."""
    number = float(value) + 0.0
    if not ascending:
        number = -number + 0.0
    (bits,) = struct.unpack(">Q", struct.pack(">d", number))
    return f"{bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | 1 << 63:016x}"


def row_key(value: float | int, job_id: str, ascending: bool) -> str:
    """A defined row's place in a ranking, as text that sorts like it: its value's :func:`sort_key`, then its job
    id (ties break by job id)."""
    return sort_key(value, ascending) + job_id


def _pictures(columns: Mapping[str, Sequence[Any]]) -> bytes:
    """The pictures blob before compression: header length, JSON header, then the artifacts' bytes in row order."""
    payload: list[bytes] = []
    header: dict[str, list[Any]] = {name: [] for name, _ in ARTIFACTS}
    header["extra"] = list(columns["extra"])
    for name, fields in ARTIFACTS:
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
    for name, fields in ARTIFACTS:
        column: list[Any] = []
        for entry in header.get(name) or [None] * len(header["extra"]):  # a chunk written before ``name`` existed
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
        row = {name: column[i] for name, column in facts_columns.items()}  # (older chunks lack the newer columns)
        if picture_columns is not None:
            row.update((name, picture_columns[name][i]) for name in PICTURES)
        yield row


def records(
    facts_columns: Mapping[str, list[Any]], picture_columns: Mapping[str, list[Any]] | None, at: Sequence[int]
) -> list[Any]:
    """The records of rows ``at`` (``extra`` empty without the pictures)."""
    return [rows.record(row) for row in row_dicts(facts_columns, picture_columns, at)]
