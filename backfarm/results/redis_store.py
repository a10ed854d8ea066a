"""The farm's result store in Redis: results in chunks (one per commit), what ranks and finds them, sweeps.

Layout (see :mod:`backfarm.results.keys`): a commit is one *chunk*, a hash holding its results as two compressed
blobs (facts, pictures: :mod:`backfarm.results.packed`) and which of its rows are live. Per result Redis keeps only
what exactly-once needs: the done mark and a ``jobs`` entry (where the result is, and its hash for conflict
detection). Ranking needs no per-result entry: per metric, two sorted sets rank the *chunks* by their lowest and
highest value, so the top N by any metric reads the best chunks first and stops when no unread chunk can beat what it
holds; per filter value, a set names the chunks holding such rows. Every filter (strategy, symbol, granularity,
window, source, kind, sweep) and every metric stays rankable.

A commit is one Lua script, so it is atomic: a batch lands completely or not at all, even if Redis is killed
mid-write, and re-running it (a re-delivered Celery task) changes nothing. Its cost in Redis is three commands per
result plus a few per batch (it was ~30 per result when each result had its own hash and 15 sorted-set entries).
Progress is computed from the sets, never from Celery. Needs Redis >= 6.2.

Stores written by backfarm 0.1 (one hash per result) are refused until ``backfarm store migrate`` converts them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis

from backfarm._util.connection import RedisConnection
from backfarm._util.ids import canonical_json
from backfarm._util.keys import DEFAULT_PREFIX
from backfarm.core.results import (
    MOMENTS,
    AggregateRow,
    Conflict,
    Filters,
    PutReport,
    ResultRecord,
    SweepInfo,
    SweepRecord,
)
from backfarm.errors import ConfigError, ValidationError
from backfarm.results import packed, ranking, rows
from backfarm.results.keys import ResultKeys
from backfarm.results.rows import FILTER_COLUMNS, metric_column
from backfarm.results.store import ResultStore

if TYPE_CHECKING:  # a worker hands its batch over as Arrow; nothing here needs Arrow loaded
    import pyarrow as pa

CHUNK = 1000
"""Commands per pipeline round trip when reading many keys."""
ROUND = 16
"""Chunks fetched per round trip while ranking (each holds one commit: up to a few hundred results)."""
BOUNDS_PAGE = 256
"""Chunk bounds read per round trip while ranking."""

# KEYS: chunk-seq, jobs, done, chunks, conflicts, conflict-seen
# ARGV: now, chunk key prefix, facts, pictures, rows, then job id and result hash per row, then the bound count and
# per bound (sorted-set key, member without the chunk number), then the count and names of the sets the chunk joins.
# Each row costs one HGET (and an HSET when new); a chunk with no new row is not stored at all.
_PUT = """
local now, chunk_prefix, facts, pictures = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = tonumber(ARGV[5])
local id = redis.call('INCR', KEYS[1])
local live, done = {}, {}
local inserted, duplicates, conflicts = 0, 0, 0
for r = 0, n - 1 do
  local job, hash = ARGV[6 + 2 * r], ARGV[7 + 2 * r]
  local stored = redis.call('HGET', KEYS[2], job)
  if not stored then
    redis.call('HSET', KEYS[2], job, id .. ':' .. r .. ':' .. hash)
    done[#done + 1] = job
    live[r + 1] = '1'
    inserted = inserted + 1
  else
    live[r + 1] = '0'
    local old = string.match(stored, '[^:]*$')
    if old == hash then
      duplicates = duplicates + 1
    else
      if redis.call('SADD', KEYS[6], job .. ':' .. hash) == 1 then
        redis.call('RPUSH', KEYS[5], cjson.encode({job, old, hash, now}))
      end
      conflicts = conflicts + 1
    end
  end
end
if inserted > 0 then
  redis.call('HSET', chunk_prefix .. id, 'facts', facts, 'pictures', pictures, 'live', table.concat(live))
  redis.call('SADD', KEYS[4], id)
  for s = 1, #done, 1000 do
    redis.call('SADD', KEYS[3], unpack(done, s, math.min(s + 999, #done)))
  end
  local i = 6 + 2 * n
  local bounds = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, bounds do
    redis.call('ZADD', ARGV[i], 0, ARGV[i + 1] .. ':' .. id)
    i = i + 2
  end
  local sets = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, sets do
    redis.call('SADD', ARGV[i], id)
    i = i + 1
  end
end
return {inserted, duplicates, conflicts}
"""

# KEYS: sweep, sweeps, manifest; ARGV: sweep id, created_at, spec JSON, source, job ids...
_CREATE_SWEEP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'created_at', ARGV[2], 'spec', ARGV[3], 'source', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
for i = 5, #ARGV, 1000 do
  redis.call('SADD', KEYS[3], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return 1
"""

# KEYS: sweep, dead; ARGV: reason, job ids...
_MARK_DEAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 2, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], ARGV[1]) end
return 1
"""


# KEYS: manifest, done, dead. done = manifest jobs with a result; dead = manifest jobs given up and still without one.
_PROGRESS = """
local total = redis.call('SCARD', KEYS[1])
local ok, done = pcall(redis.call, 'SINTERCARD', 2, KEYS[1], KEYS[2])
if not ok then done = #redis.call('SINTER', KEYS[1], KEYS[2]) end
local dead = 0
for _, job in ipairs(redis.call('HKEYS', KEYS[3])) do
  if redis.call('SISMEMBER', KEYS[1], job) == 1 and redis.call('SISMEMBER', KEYS[2], job) == 0 then
    dead = dead + 1
  end
end
return {total, done, dead}
"""

P = ParamSpec("P")
T = TypeVar("T")


def _guarded(method: Callable[P, T]) -> Callable[P, T]:
    """Turn connection and authentication failures of a store method into one-line backfarm errors."""

    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, RedisStore)
        with store.conn.guard():
            return method(*args, **kwargs)

    return wrapper


Spot = tuple[int, int]
"""Where a result is: (chunk, row)."""
Facts = dict[str, list[Any]]


class RedisStore(ResultStore):
    """:class:`ResultStore` on Redis. Opens its own connection from a URL, or shares one it is given.

    ``check_layout=False`` opens a store of an older layout anyway (what ``backfarm store migrate`` does)."""

    def __init__(self, conn: RedisConnection | str, prefix: str = DEFAULT_PREFIX, check_layout: bool = True) -> None:
        self.keys = ResultKeys(prefix)
        self.conn, self._owns = RedisConnection.of(conn)
        self._r = self.conn.client
        self._put = self._r.register_script(_PUT)
        self._create_sweep = self._r.register_script(_CREATE_SWEEP)
        self._mark_dead = self._r.register_script(_MARK_DEAD)
        self._progress = self._r.register_script(_PROGRESS)
        if check_layout:
            try:
                self._check_layout()
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        return f"RedisStore({self.conn.safe_url!r}, prefix={self.keys.prefix!r})"

    def close(self) -> None:
        """Close the connection pool, if this store opened it."""
        if self._owns:
            self.conn.close()

    def _check_layout(self) -> None:
        """Refuse a store that holds results of the 0.1 layout (they would be invisible here)."""
        if self.legacy_results():
            raise ConfigError(
                f"Redis at {self.conn.safe_url} holds results in the layout of backfarm 0.1; convert them once with "
                "`backfarm store migrate` (stop the workers first)"
            )

    def migrate_legacy(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Convert the results of the 0.1 layout into chunks, then delete the old keys; the results moved.

        Results are read a thousand at a time and put like any batch (so running it again after an interruption
        only adds what is missing); sweeps, manifests, dead jobs, conflicts and the done marks keep their keys. The
        old keys go once every result is in a chunk. ``progress(done, total)`` is told as it goes."""
        r, k = self._r, self.keys
        with self.conn.guard():
            total = int(r.scard(k.done))
        moved = 0
        batch: list[str] = []

        def flush() -> None:
            nonlocal moved
            with self.conn.guard():
                pipe = r.pipeline(transaction=False)  # one round trip per thousand results
                for key in batch:
                    pipe.hget(key, "json")
                found = [ResultRecord.from_json(text) for text in pipe.execute() if text is not None]
                self.put(found)
            moved += len(found)
            batch.clear()
            if progress is not None:
                progress(moved, max(total, moved))

        with self.conn.guard():
            keys = list(r.scan_iter(match=k.legacy_result("*"), count=CHUNK))
        for key in keys:
            batch.append(key)
            if len(batch) == CHUNK:
                flush()
        if batch:
            flush()
        with self.conn.guard():
            for pattern in k.legacy_patterns():
                old = list(r.scan_iter(match=pattern, count=CHUNK))
                for i in range(0, len(old), CHUNK):
                    r.unlink(*old[i : i + CHUNK])
        return moved

    def legacy_results(self) -> bool:
        """Whether results of the 0.1 layout are here (every such result ranks in, or is null for, Sharpe)."""
        with self.conn.guard():
            old = self.keys.key
            return bool(self._r.exists(old("board", "sharpe"), old("nulls", "sharpe")))

    @_guarded
    def pending(self, sweep_id: str) -> list[str]:
        """Expected job ids of a sweep that are neither done nor dead, sorted: what reconcile re-enqueues."""
        pipe = self._r.pipeline(transaction=True)
        pipe.sdiff([self.keys.manifest(sweep_id), self.keys.done])
        pipe.hkeys(self.keys.dead(sweep_id))
        open_jobs, dead = pipe.execute()
        return sorted(set(open_jobs) - set(dead))

    # --- writing ---------------------------------------------------------------------------------------------------

    @_guarded
    def put(self, results: Sequence[ResultRecord] | pa.Table) -> PutReport:
        """Store ``results`` as one chunk, in one atomic script (idempotent; conflicts recorded once each, originals
        kept). A table (what a worker builds) is packed as it is; records are laid out as a table would hold them."""
        if hasattr(results, "to_pydict"):
            columns = results.to_pydict()
        else:
            columns = packed.columns_of([rows.stored(r) for r in results])
        if not columns["job_id"]:
            return PutReport()
        chunk = packed.pack(columns)
        k = self.keys
        args: list[Any] = [repr(time.time()), k.chunk(""), chunk.facts, chunk.pictures, len(chunk.job_ids)]
        for job_id, digest in zip(chunk.job_ids, chunk.hashes, strict=True):
            args += (job_id, digest)
        args.append(2 * len(chunk.bounds))
        for metric, (low, high) in chunk.bounds.items():
            args += (k.bounds(metric, True), low, k.bounds(metric, False), high)
        sets = [k.znull(m) for m in chunk.nulls]
        sets += [k.cindex(name, value) for name, values in chunk.values.items() for value in values]
        args += (len(sets), *sets)
        keys = [k.chunk_seq, k.jobs, k.done, k.chunks, k.conflicts, k.conflict_seen]
        inserted, duplicates, conflicts = self._put(keys=keys, args=args)
        return PutReport(inserted=int(inserted), duplicates=int(duplicates), conflicts=int(conflicts))

    # --- reading chunks ----------------------------------------------------------------------------------------------

    def _facts(self, chunks: Iterable[int]) -> dict[int, tuple[Facts, str]]:
        """The facts and live flags of ``chunks`` (pipelined)."""
        wanted = list(dict.fromkeys(chunks))
        out: dict[int, tuple[Facts, str]] = {}
        for i in range(0, len(wanted), ROUND):
            pipe = self.conn.raw.pipeline(transaction=False)
            for number in wanted[i : i + ROUND]:
                pipe.hmget(self.keys.chunk(number), ["facts", "live"])
            for number, (blob, live) in zip(wanted[i : i + ROUND], pipe.execute(), strict=True):
                if blob is not None:
                    out[number] = (packed.facts(blob), live.decode())
        return out

    def _pictures(self, chunks: Iterable[int]) -> dict[int, Facts]:
        """The picture columns of ``chunks`` (pipelined)."""
        wanted = list(dict.fromkeys(chunks))
        out: dict[int, Facts] = {}
        for i in range(0, len(wanted), ROUND):
            pipe = self.conn.raw.pipeline(transaction=False)
            for number in wanted[i : i + ROUND]:
                pipe.hget(self.keys.chunk(number), "pictures")
            for number, blob in zip(wanted[i : i + ROUND], pipe.execute(), strict=True):
                if blob is not None:
                    out[number] = packed.pictures(blob)
        return out

    def _records(self, spots: Sequence[Spot], facts: Mapping[int, tuple[Facts, str]], pictures: bool) -> list[Any]:
        """Records at ``spots``, in that order (the chunks' facts given; their pictures read when asked for)."""
        pics = self._pictures(chunk for chunk, _ in spots) if pictures else {}
        return [
            packed.records(facts[chunk][0], pics.get(chunk) if pictures else None, [row])[0] for chunk, row in spots
        ]

    def _spots(self, job_ids: Sequence[str]) -> dict[str, Spot]:
        """Where the results of ``job_ids`` are (ids without a result are left out)."""
        out: dict[str, Spot] = {}
        for i in range(0, len(job_ids), 10 * CHUNK):
            part = list(job_ids[i : i + 10 * CHUNK])
            entries: Any = self._r.hmget(self.keys.jobs, part)  # str or None per id (a text client)
            for job_id, entry in zip(part, entries, strict=True):
                if entry is not None:
                    chunk, row, _ = entry.split(":", 2)
                    out[job_id] = (int(chunk), int(row))
        return out

    def _candidates(self, filters: Filters | None) -> tuple[list[int], dict[int, set[int]] | None]:
        """The chunks that may hold results passing ``filters``, and, for a sweep, the rows of each that do."""
        if filters is not None and filters.sweep is not None:
            ids = sorted(str(i) for i in self._r.sinter([self.keys.manifest(filters.sweep), self.keys.done]))
            by_chunk: dict[int, set[int]] = defaultdict(set)
            for chunk, row in self._spots(ids).values():
                by_chunk[chunk].add(row)
            return sorted(by_chunk), by_chunk
        sets = self._filter_sets(filters)
        members = self._r.sinter(sets) if sets else self._r.smembers(self.keys.chunks)
        return sorted(int(m) for m in members), None

    def _filter_sets(self, filters: Filters | None) -> list[str]:
        """The chunk sets of ``filters``' field conditions."""
        if filters is None:
            return []
        return [self.keys.cindex(name, getattr(filters, name)) for name in FILTER_COLUMNS if getattr(filters, name)]

    def _rows(
        self, chunks: Sequence[int], sweep: dict[int, set[int]] | None, filters: Filters | None
    ) -> Iterator[tuple[int, Facts, list[int]]]:
        """(chunk, facts, rows) of ``chunks``: their live rows that pass ``filters`` (and, for a sweep, are its)."""
        for i in range(0, len(chunks), ROUND):
            group = chunks[i : i + ROUND]
            for chunk, (facts, live) in self._facts(group).items():
                keep = [r for r, flag in enumerate(live) if flag == "1" and (sweep is None or r in sweep[chunk])]
                yield chunk, facts, [r for r in keep if _passes(facts, r, filters)]

    # --- queries -----------------------------------------------------------------------------------------------------

    @_guarded
    def existing(self, job_ids: Iterable[str]) -> set[str]:
        """The subset of ``job_ids`` that already have a result."""
        ids = list(dict.fromkeys(job_ids))
        found: set[str] = set()
        for i in range(0, len(ids), 10 * CHUNK):
            chunk = ids[i : i + 10 * CHUNK]
            flags = self._r.smismember(self.keys.done, chunk)
            found.update(job for job, flag in zip(chunk, flags, strict=True) if flag)
        return found

    @_guarded
    def get(self, job_id: str) -> ResultRecord | None:
        """One result by job id."""
        spot = self._spots([job_id]).get(job_id)
        if spot is None:
            return None
        found: ResultRecord = self._records([spot], self._facts([spot[0]]), pictures=True)[0]
        return found

    @_guarded
    def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""
        entries = (json.loads(e) for e in self._r.lrange(self.keys.conflicts, 0, -1))
        return [Conflict(job, stored, new, float(at)) for job, stored, new, at in entries]

    @_guarded
    def top(
        self,
        metric: str,
        n: int,
        filters: Filters | None = None,
        ascending: bool | None = None,
        pictures: bool = True,
    ) -> list[ResultRecord]:
        """The best ``n`` results by ``metric``: defined values in order, then undefined ones, ties by job id."""
        column = metric_column(ranking.check_metric(metric))
        if ranking.check_limit(n) == 0:
            return []
        asc = ranking.is_ascending(metric, ascending)
        if filters is not None and filters.sweep is not None:
            chunks, sweep = self._candidates(filters)
            ranked = _rank(self._rows(chunks, sweep, filters), column, asc, n, None)
        else:
            ranked = self._top_by_zones(metric, column, asc, n, filters)
        spots = [(chunk, row) for _, chunk, row, _ in ranked]
        facts = {chunk: (f, "") for _, chunk, _, f in ranked}
        return self._records(spots, facts, pictures)

    def _top_by_zones(
        self, metric: str, column: str, asc: bool, n: int, filters: Filters | None
    ) -> list[tuple[Any, int, int, Facts]]:
        """The best ``n``: chunks in the order of their best row's key (value, then job id), read until the next
        chunk's best key is worse than the ``n``-th result's (so ties are decided exactly, by job id); then chunks
        with undefined values if fewer than ``n`` are defined."""
        sets = self._filter_sets(filters)
        eligible = {int(c) for c in self._r.sinter(sets)} if sets else None
        best: list[tuple[Any, int, int, Facts]] = []
        key = self.keys.bounds(metric, asc)
        start, pending = 0, []
        while True:
            members: Any = self._r.zrange(key, start, start + BOUNDS_PAGE - 1)  # all scores 0: lexicographic order
            start += BOUNDS_PAGE
            done = len(members) < BOUNDS_PAGE
            for member in members:
                bound, _, chunk = member.rpartition(":")
                if eligible is None or int(chunk) in eligible:
                    pending.append((bound, int(chunk)))
            while pending and (done or len(pending) >= ROUND):
                group, pending = pending[:ROUND], pending[ROUND:]
                if len(best) >= n and group[0][0] > _row_key(best[n - 1], column, asc):
                    pending = []
                    done = True
                    break  # the best unread chunk cannot beat the n-th: nothing unread can
                best = _rank(self._rows([c for _, c in group], None, filters), column, asc, n, best, defined_only=True)
            if done:
                break
        if len(best) < n:
            null_chunks = self._r.sinter([self.keys.znull(metric), *sets])
            chunks = sorted(int(c) for c in null_chunks)
            best += _rank(self._rows(chunks, None, filters), column, asc, n - len(best), None, undefined_only=True)
        return best

    def iter_results(self, filters: Filters | None = None) -> Iterator[ResultRecord]:
        """Every result passing ``filters``, chunk by chunk (in no particular order), a few chunks at a time."""
        with self.conn.guard():
            chunks, sweep = self._candidates(filters)
        for i in range(0, len(chunks), ROUND):
            with self.conn.guard():
                found = list(self._rows(chunks[i : i + ROUND], sweep, filters))
                pics = self._pictures(chunk for chunk, _, keep in found if keep)
            for chunk, facts, keep in found:
                yield from packed.records(facts, pics[chunk], keep)

    def incomplete(self, filters: Filters | None = None) -> Iterator[tuple[object, list[ResultRecord]]]:
        """Backtest results stored without their moments and daily returns, a chunk at a time (the chunk is the
        unit :meth:`fill_in` rewrites)."""
        with self.conn.guard():
            chunks, sweep = self._candidates(filters)
        for i in range(0, len(chunks), ROUND):
            with self.conn.guard():
                found = list(self._rows(chunks[i : i + ROUND], sweep, filters))
            for chunk, facts, keep in found:
                means = facts.get(_MEAN)
                lacking = [r for r in keep if facts["kind"][r] == "backtest" and (means is None or means[r] is None)]
                if lacking:
                    yield chunk, packed.records(facts, None, lacking)

    @_guarded
    def fill_in(self, results: pa.Table) -> int:
        """Rewrite the chunks holding results that lack their moments and daily returns, each in one transaction
        that fails (and is retried) if the chunk changed since it was read; the rows' other values, the chunk's
        bounds and its sets are unchanged (no metric changes)."""
        given = results.select(["job_id", "result_hash", *_COMPLETED]).to_pydict()
        at = {job: i for i, job in enumerate(given["job_id"])}
        entries: Any = self._r.hmget(self.keys.jobs, list(at)) if at else []
        by_chunk: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for job, entry in zip(at, entries, strict=True):
            if entry is not None:
                chunk, row, digest = entry.split(":", 2)
                if digest == given["result_hash"][at[job]]:
                    by_chunk[int(chunk)].append((int(row), at[job]))
        return sum(self._fill_chunk(chunk, rows, given) for chunk, rows in by_chunk.items())

    def _fill_chunk(self, chunk: int, rows: list[tuple[int, int]], given: Mapping[str, list[Any]]) -> int:
        """Fill in ``rows`` (row, index into ``given``) of one chunk; how many lacked them."""
        key = self.keys.chunk(chunk)
        with self.conn.raw.pipeline() as transaction:
            pipe: Any = transaction  # redis-py's pipeline is untyped in WATCH mode
            while True:
                try:
                    pipe.watch(key)
                    facts_blob, pics_blob = pipe.hmget(key, ["facts", "pictures"])
                    facts, pics = packed.facts(facts_blob), packed.pictures(pics_blob)
                    filled = _fill_columns(facts, pics, rows, given)
                    if filled:
                        both = {**facts, **pics}
                        blobs = {"facts": packed.encode_facts(both), "pictures": packed.encode_pictures(both)}
                        pipe.multi()
                        pipe.hset(key, mapping=blobs)
                        pipe.execute()
                    return filled
                except redis.WatchError:
                    continue  # the chunk changed between the read and the write (another completion): read again

    def aggregate(self, by: str, filters: Filters | None = None) -> list[AggregateRow]:
        """Summaries by ``strategy`` or ``symbol`` from the facts alone (same arithmetic as every store)."""
        key = ranking.check_group(by)
        with self.conn.guard():
            chunks, sweep = self._candidates(filters)
            found = list(self._rows(chunks, sweep, filters))
        tr, sh, dd, trades, wins = ranking.AGGREGATE_COLUMNS
        return ranking.aggregate_rows(
            (f[key][r], f[tr][r], f[sh][r], f[dd][r], f[trades][r], f[wins][r]) for _, f, keep in found for r in keep
        )

    # --- sweeps ----------------------------------------------------------------------------------------------------

    @_guarded
    def create_sweep(self, sweep: SweepRecord) -> bool:
        """Record a sweep and its manifest in one step; False (nothing changed) if the id exists."""
        k = self.keys
        keys = [k.sweep(sweep.sweep_id), k.sweeps, k.manifest(sweep.sweep_id)]
        args = [sweep.sweep_id, repr(float(sweep.created_at)), canonical_json(sweep.spec), sweep.source]
        return bool(self._create_sweep(keys=keys, args=[*args, *sweep.job_ids]))

    @_guarded
    def mark_dead(self, sweep_id: str, job_ids: str | Sequence[str], reason: str) -> None:
        """Give up on ``job_ids`` (one id or several) in ``sweep_id`` (the latest reason wins)."""
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        keys = [self.keys.sweep(sweep_id), self.keys.dead(sweep_id)]
        for i in range(0, max(1, len(ids)), CHUNK):
            if not self._mark_dead(keys=keys, args=[reason, *ids[i : i + CHUNK]]):
                raise ValidationError(f"unknown sweep '{sweep_id}'")

    @_guarded
    def dead(self, sweep_id: str) -> dict[str, str]:
        """Dead job ids of a sweep with their reasons."""
        reasons = self._r.hgetall(self.keys.dead(sweep_id))
        return {str(job): str(reasons[job]) for job in sorted(reasons)}

    @_guarded
    def manifest(self, sweep_id: str) -> list[str]:
        """The expected job ids of a sweep, sorted."""
        return sorted(str(m) for m in self._r.smembers(self.keys.manifest(sweep_id)))

    @_guarded
    def sweep(self, sweep_id: str) -> SweepInfo | None:
        """One sweep with its progress; a unique prefix of the id is accepted."""
        found = ranking.match_prefix(sweep_id, self._sweep_ids())
        return self._infos([found])[0] if found is not None else None

    @_guarded
    def sweeps(self) -> list[SweepInfo]:
        """All sweeps, newest first (ties by id)."""
        infos = self._infos(self._sweep_ids())
        return sorted(infos, key=lambda s: (-s.created_at, s.sweep_id))

    def recent_sweeps(self, limit: int) -> list[SweepInfo]:
        """The ``limit`` newest sweeps, newest first (what a worker's watchdog looks at)."""
        ids = [str(s) for s in self._r.zrange(self.keys.sweeps, 0, limit - 1, desc=True)]
        return self._infos(ids)

    def _sweep_ids(self) -> list[str]:
        return [str(s) for s in self._r.zrange(self.keys.sweeps, 0, -1)]

    def _infos(self, sweep_ids: Sequence[str]) -> list[SweepInfo]:
        k = self.keys
        pipe = self._r.pipeline(transaction=False)
        for sweep_id in sweep_ids:
            pipe.hgetall(k.sweep(sweep_id))
            self._progress(keys=[k.manifest(sweep_id), k.done, k.dead(sweep_id)], client=pipe)
        replies = pipe.execute()
        infos = []
        for sweep_id, meta, (total, done, dead) in zip(sweep_ids, replies[0::2], replies[1::2], strict=True):
            created = float(meta["created_at"])
            infos.append(SweepInfo(sweep_id, created, json.loads(meta["spec"]), meta["source"], total, done, dead))
        return infos


_MEAN = rows.moment_column("mean")
_COMPLETED = (*(rows.moment_column(m) for m in MOMENTS), "daily")
"""The columns :meth:`RedisStore.fill_in` fills in (the moments are facts, the daily returns a picture)."""


def _fill_columns(facts: Facts, pics: Facts, rows: list[tuple[int, int]], given: Mapping[str, list[Any]]) -> int:
    """Fill in the moments (facts) and daily returns (pictures) of a chunk's ``rows`` that lack them, from
    ``given``; how many did (chunks written before those columns existed get them, null elsewhere)."""
    size = len(facts["job_id"])
    home = {name: facts if name != "daily" else pics for name in _COMPLETED}
    for name in _COMPLETED:
        home[name].setdefault(name, [None] * size)
    todo = [(r, i) for r, i in rows if facts[_MEAN][r] is None]
    for r, i in todo:
        for name in _COMPLETED:
            home[name][name][r] = given[name][i]
    return len(todo)


def _row_key(entry: tuple[Any, int, int, Facts], column: str, asc: bool) -> str:
    """The :func:`~backfarm.results.packed.row_key` of a ranked entry (its value and job id, from its chunk)."""
    _, chunk, row, facts = entry
    return packed.row_key(facts[column][row], facts["job_id"][row], asc)


def _passes(facts: Facts, row: int, filters: Filters | None) -> bool:
    """Whether ``row`` of a chunk passes ``filters``' field conditions (the sweep is the caller's business)."""
    if filters is None:
        return True
    return all(getattr(filters, name) is None or facts[name][row] == getattr(filters, name) for name in FILTER_COLUMNS)


def _rank(
    found: Iterable[tuple[int, Facts, list[int]]],
    column: str,
    asc: bool,
    n: int,
    best: list[tuple[Any, int, int, Facts]] | None,
    defined_only: bool = False,
    undefined_only: bool = False,
) -> list[tuple[Any, int, int, Facts]]:
    """The best ``n`` of ``best`` and the rows of ``found`` by (value in the ranking's direction, job id), undefined
    values last: entries (sort key, chunk, row, that chunk's facts)."""
    out = list(best or [])
    for chunk, facts, keep in found:
        values, ids = facts[column], facts["job_id"]
        for r in keep:
            value = values[r]
            if value is None:
                if defined_only:
                    continue
                out.append(((1, 0.0, ids[r]), chunk, r, facts))
            elif not undefined_only:
                out.append(((0, value if asc else -value, ids[r]), chunk, r, facts))
    out.sort(key=lambda entry: entry[0])
    return out[:n]
