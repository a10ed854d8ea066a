"""The farm's result store in Redis: results, leaderboards, sweeps with their manifests and dead jobs.

Layout (see :mod:`backfarm.results.keys`): one hash per result, one sorted set per metric (member = job id;
undefined values stay out of it and rank last), one set per filter value, a global ``done`` set, and per sweep a
manifest set and a dead hash. Every multi-key write is one Lua script, so it is atomic: a batch
of results lands completely or not at all, even if Redis is killed mid-write, and re-running a batch (a re-delivered
Celery task) changes nothing. Progress is computed from the sets, never from Celery. Needs Redis >= 6.2.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import pyarrow as pa

from backfarm._util.connection import RedisConnection
from backfarm._util.ids import canonical_json
from backfarm._util.keys import DEFAULT_PREFIX
from backfarm.core.results import (
    FILTER_FIELDS,
    METRICS,
    AggregateRow,
    Conflict,
    Filters,
    PutReport,
    ResultRecord,
    SweepInfo,
    SweepRecord,
)
from backfarm.errors import ValidationError
from backfarm.results import columns, ranking
from backfarm.results.keys import ResultKeys
from backfarm.results.store import ResultStore

INDEX_FIELDS: tuple[str, ...] = tuple(f for f in FILTER_FIELDS if f != "sweep")
"""Record fields with an index set per value (``sweep`` is the manifest's business)."""
CHUNK = 1000
"""Commands per pipeline round trip when reading many keys."""

# KEYS: done, conflicts, conflict-seen, board[1..M], nulls[1..M]
# ARGV: M, F, now, result-key prefix, then groups of records sharing their F index keys: record count, F index keys,
# then per record its meta (job id, result hash and M scores, tab-separated; '' = null score) and its record JSON.
# Two arguments per record instead of 4 + M + F: encoding each argument costs the client more than the script pays
# to split one string. Each record costs one HGET (and one HSET when new); the set and board updates of all the new
# records are then gathered into one SADD or ZADD per key, in chunks that unpack() takes.
_PUT = """
local m, f, now, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local inserted, duplicates, conflicts = 0, 0, 0
local done, boards, nulls, sets, order = {}, {}, {}, {}, {}
for j = 1, m do boards[j], nulls[j] = {}, {} end
local i = 5
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  local indexes = {}
  for j = 1, f do
    local index = ARGV[i + j]
    indexes[j] = index
    if not sets[index] then
      sets[index] = {}
      order[#order + 1] = index
    end
  end
  i = i + 1 + f
  for _ = 1, count do
    local meta = {}
    for token in string.gmatch(ARGV[i] .. '\t', '([^\t]*)\t') do meta[#meta + 1] = token end
    local job, hash = meta[1], meta[2]
    local key = prefix .. job
    local stored = redis.call('HGET', key, 'hash')
    if not stored then
      redis.call('HSET', key, 'hash', hash, 'json', ARGV[i + 1])
      done[#done + 1] = job
      for j = 1, m do
        local score = meta[2 + j]
        if score == '' then
          nulls[j][#nulls[j] + 1] = job
        else
          local board = boards[j]
          board[#board + 1] = score
          board[#board + 1] = job
        end
      end
      for j = 1, f do
        local members = sets[indexes[j]]
        members[#members + 1] = job
      end
      inserted = inserted + 1
    elseif stored == hash then
      duplicates = duplicates + 1
    else
      if redis.call('SADD', KEYS[3], job .. ':' .. hash) == 1 then
        redis.call('RPUSH', KEYS[2], cjson.encode({job, stored, hash, now}))
      end
      conflicts = conflicts + 1
    end
    i = i + 2
  end
end
local function bulk(command, key, items)
  for s = 1, #items, 1000 do  -- even, so a ZADD's score and member stay together
    redis.call(command, key, unpack(items, s, math.min(s + 999, #items)))
  end
end
bulk('SADD', KEYS[1], done)
for j = 1, m do
  bulk('ZADD', KEYS[3 + j], boards[j])
  bulk('SADD', KEYS[3 + m + j], nulls[j])
end
for _, index in ipairs(order) do
  if #sets[index] > 0 then bulk('SADD', index, sets[index]) end
end
return {inserted, duplicates, conflicts}
"""

# KEYS: board, nulls, filter sets...; ARGV: n, '1' when the highest score is best.
# Returns {ranked, ties, nulls}: the n best (member, score) pairs, every member tying with the n-th (a reversed range
# orders ties by member descending, the contract wants ascending), and enough undefined members to fill up to n.
_TOP = """
local n, high = tonumber(ARGV[1]), ARGV[2] == '1'
local nf = #KEYS - 2
local ranked, ties, nulls = {}, {}, {}
local all
if nf == 0 then
  if high then
    ranked = redis.call('ZRANGE', KEYS[1], '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, n, 'WITHSCORES')
  else
    ranked = redis.call('ZRANGE', KEYS[1], '-inf', '+inf', 'BYSCORE', 'LIMIT', 0, n, 'WITHSCORES')
  end
else
  local args = {'ZINTER', nf + 1, KEYS[1]}
  for j = 3, #KEYS do args[#args + 1] = KEYS[j] end
  args[#args + 1] = 'WEIGHTS'
  args[#args + 1] = 1
  for j = 1, nf do args[#args + 1] = 0 end
  args[#args + 1] = 'WITHSCORES'
  all = redis.call(unpack(args))
  local count = #all / 2
  local first, last, step = 1, math.min(n, count), 1
  if high then first, last, step = count, math.max(1, count - n + 1), -1 end
  for k = first, last, step do
    ranked[#ranked + 1] = all[2 * k - 1]
    ranked[#ranked + 1] = all[2 * k]
  end
end
local found = #ranked / 2
if high and found == n and n > 0 then
  local b = ranked[#ranked]
  if nf == 0 then
    ties = redis.call('ZRANGE', KEYS[1], b, b, 'BYSCORE', 'LIMIT', 0, n, 'WITHSCORES')
  else
    for k = 1, #all / 2 do
      if all[2 * k] == b and #ties < 2 * n then
        ties[#ties + 1] = all[2 * k - 1]
        ties[#ties + 1] = b
      end
    end
  end
end
if found < n then
  local members
  if nf == 0 then
    members = redis.call('SMEMBERS', KEYS[2])
  else
    members = redis.call('SINTER', KEYS[2], unpack(KEYS, 3))
  end
  table.sort(members)
  for k = 1, math.min(n - found, #members) do nulls[k] = members[k] end
end
return {ranked, ties, nulls}
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


def _score(value: Any) -> str:
    """The sorted-set score of a metric value (``''`` when undefined); ``+ 0.0`` folds -0.0 into 0.0."""
    return "" if ranking.is_null(value) else repr(float(value) + 0.0)


class RedisStore(ResultStore):
    """:class:`ResultStore` on Redis. Opens its own connection from a URL, or shares one it is given."""

    def __init__(self, conn: RedisConnection | str, prefix: str = DEFAULT_PREFIX) -> None:
        self.keys = ResultKeys(prefix)
        self.conn, self._owns = RedisConnection.of(conn)
        self._r = self.conn.client
        self._put = self._r.register_script(_PUT)
        self._top = self._r.register_script(_TOP)
        self._create_sweep = self._r.register_script(_CREATE_SWEEP)
        self._mark_dead = self._r.register_script(_MARK_DEAD)
        self._progress = self._r.register_script(_PROGRESS)

    def __repr__(self) -> str:
        return f"RedisStore({self.conn.safe_url!r}, prefix={self.keys.prefix!r})"

    def close(self) -> None:
        """Close the connection pool, if this store opened it."""
        if self._owns:
            self.conn.close()

    @_guarded
    def pending(self, sweep_id: str) -> list[str]:
        """Expected job ids of a sweep that are neither done nor dead, sorted: what reconcile re-enqueues."""
        pipe = self._r.pipeline(transaction=True)
        pipe.sdiff([self.keys.manifest(sweep_id), self.keys.done])
        pipe.hkeys(self.keys.dead(sweep_id))
        open_jobs, dead = pipe.execute()
        return sorted(set(open_jobs) - set(dead))

    # --- results -------------------------------------------------------------------------------------------------

    @_guarded
    def put(self, results: Sequence[ResultRecord] | pa.Table) -> PutReport:
        """Store ``results`` in one atomic script (idempotent; conflicts recorded once each, originals kept)."""
        if isinstance(results, pa.Table):
            results = columns.records(results)
        if not results:
            return PutReport()
        k = self.keys
        groups: dict[tuple[str, ...], list[str]] = {}
        for r in results:
            if "\t" in r.job_id:  # the script splits each record's meta on tabs
                raise ValidationError(f"a job id cannot contain a tab: {r.job_id!r}")
            meta = "\t".join((r.job_id, r.result_hash, *[_score(r.metrics.get(m)) for m in METRICS]))
            group = groups.setdefault(tuple(k.index(f, getattr(r, f)) for f in INDEX_FIELDS), [])
            group += (meta, ranking.record_json(r))
        args: list[Any] = [len(METRICS), len(INDEX_FIELDS), repr(time.time()), k.result("")]
        for indexes, records in groups.items():
            args += (len(records) // 2, *indexes, *records)
        keys = [k.done, k.conflicts, k.conflict_seen, *map(k.board, METRICS), *map(k.nulls, METRICS)]
        inserted, duplicates, conflicts = self._put(keys=keys, args=args)
        return PutReport(inserted=int(inserted), duplicates=int(duplicates), conflicts=int(conflicts))

    @_guarded
    def get(self, job_id: str) -> ResultRecord | None:
        """One result by job id."""
        text = self._r.hget(self.keys.result(job_id), "json")
        return ResultRecord.from_json(text) if text is not None else None

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
    def conflicts(self) -> list[Conflict]:
        """Every recorded conflict, oldest first."""
        entries = (json.loads(e) for e in self._r.lrange(self.keys.conflicts, 0, -1))
        return [Conflict(job, stored, new, float(at)) for job, stored, new, at in entries]

    def _records(self, job_ids: Sequence[str]) -> list[ResultRecord]:
        """Records of ``job_ids`` (in that order), read in pipelined chunks."""
        records: list[ResultRecord] = []
        for i in range(0, len(job_ids), CHUNK):
            pipe = self._r.pipeline(transaction=False)
            for job_id in job_ids[i : i + CHUNK]:
                pipe.hget(self.keys.result(job_id), "json")
            records += [ResultRecord.from_json(text) for text in pipe.execute() if text is not None]
        return records

    def _filter_sets(self, filters: Filters | None) -> list[str]:
        """The sets whose intersection is the job ids passing ``filters``."""
        if filters is None:
            return []
        sets = [self.keys.manifest(filters.sweep)] if filters.sweep is not None else []
        for name in INDEX_FIELDS:
            value = getattr(filters, name)
            if value is not None:
                sets.append(self.keys.index(name, value))
        return sets

    # --- queries ---------------------------------------------------------------------------------------------------

    @_guarded
    def top(
        self,
        metric: str,
        n: int,
        filters: Filters | None = None,
        ascending: bool | None = None,
        pictures: bool = True,
    ) -> list[ResultRecord]:
        """The best ``n`` results by ``metric``: defined values in order, then undefined ones by job id."""
        ranking.check_metric(metric)
        if ranking.check_limit(n) == 0:
            return []
        high = not ranking.is_ascending(metric, ascending)
        keys = [self.keys.board(metric), self.keys.nulls(metric), *self._filter_sets(filters)]
        ranked, ties, nulls = self._top(keys=keys, args=[n, "1" if high else "0"])
        candidates = sorted(set(ranked[0::2]) | set(ties[0::2]) | set(nulls))
        found = ranking.rank(self._records(candidates), metric, n, ascending)
        return found if pictures else [ranking.bare(r) for r in found]

    def _ids(self, filters: Filters | None) -> list[str]:
        sets = self._filter_sets(filters)
        members = self._r.sinter([self.keys.done, *sets]) if sets else self._r.smembers(self.keys.done)
        return sorted(str(m) for m in members)

    def iter_results(self, filters: Filters | None = None) -> Iterator[ResultRecord]:
        """Every result passing ``filters``, ordered by job id, read in chunks."""
        with self.conn.guard():
            ids = self._ids(filters)
        for i in range(0, len(ids), CHUNK):
            with self.conn.guard():
                chunk = self._records(ids[i : i + CHUNK])
            yield from chunk

    def aggregate(self, by: str, filters: Filters | None = None) -> list[AggregateRow]:
        """Summaries by ``strategy`` or ``symbol`` (same arithmetic as every store: :mod:`ranking`)."""
        ranking.check_group(by)
        return ranking.aggregate_records(self.iter_results(filters), by)

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
