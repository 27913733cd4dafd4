"""SQL for jobs and attempts. Every function takes a connection and runs inside the caller's transaction
(reads may run outside one). The rules these statements apply live in `ashjobs.queue`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Protocol

from ashjobs import queue as rules
from ashjobs.clock import iso
from ashjobs.queue import Outcome, State

# One C encoder built once: json.dumps (and JSONEncoder.encode) build a new one per call, which dominates
# bulk inserts. The shared markers dict still catches circular structures.
_encode = c_make_encoder({}, str, encode_basestring_ascii, None, ":", ",", False, False, True)


def dumps(value: Any) -> str:
    if not value and isinstance(value, dict):
        return "{}"
    return "".join(_encode(value, 0))


@dataclass
class NewJob:
    """What an insert needs; defaults come from the task's options, then from the queue rules."""

    task: str
    args: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = rules.DEFAULT_MAX_ATTEMPTS
    scheduled_at: float | None = None
    unique: rules.Unique | None = None
    partition: str | None = None
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    actor: str | None = None
    timeout: float | None = None


@dataclass
class Job:
    id: int
    state: State
    queue: str
    task: str
    args: dict[str, Any]
    meta: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    errors: list[dict[str, Any]]
    scheduled_at: float
    inserted_at: float
    attempted_at: float | None
    completed_at: float | None
    cancelled_at: float | None
    discarded_at: float | None
    unique_key: str | None
    partition: str | None
    domain: str | None
    actor: str | None
    timeout: float | None
    lease_owner: str | None
    lease_token: int | None
    lease_expires_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        d.pop("unique_states", None)
        d["args"] = json.loads(d["args"])
        d["meta"] = json.loads(d["meta"])
        d["errors"] = json.loads(d["errors"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a job in every `--json` output."""
        lease = None
        if self.state == "executing" and self.lease_token is not None:
            lease = {"node": self.lease_owner, "token": self.lease_token, "expires_at": iso(self.lease_expires_at)}
        return {
            "id": self.id, "task": self.task, "queue": self.queue, "state": self.state,
            "args": self.args, "meta": self.meta, "priority": self.priority, "attempt": self.attempt,
            "max_attempts": self.max_attempts, "partition": self.partition, "domain": self.domain,
            "actor": self.actor, "errors": self.errors, "unique_key": self.unique_key, "timeout": self.timeout,
            "scheduled_at": iso(self.scheduled_at), "inserted_at": iso(self.inserted_at),
            "attempted_at": iso(self.attempted_at), "completed_at": iso(self.completed_at),
            "cancelled_at": iso(self.cancelled_at), "discarded_at": iso(self.discarded_at), "lease": lease,
        }


_INSERT = """
INSERT INTO jobs (state, queue, task, args, meta, priority, max_attempts, scheduled_at, inserted_at,
                  unique_key, unique_states, partition, domain, actor, timeout)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id, state
"""


def _insert_params(job: NewJob, now: float) -> tuple[Any, ...]:
    scheduled_at = now if job.scheduled_at is None else job.scheduled_at
    state: State = "scheduled" if scheduled_at > now else "available"
    partition = job.partition or ("default" if job.domain else None)
    key, mask = None, 0
    if job.unique is not None:
        fields = {"task": job.task, "queue": job.queue, "args": job.args, "partition": partition,
                  "domain": job.domain}
        mask = rules.state_mask(job.unique.states)
        if mask & rules.state_bit(state):
            key = rules.unique_key(job.unique, fields, now)
    return (state, job.queue, job.task, dumps(job.args), dumps(job.meta), job.priority, job.max_attempts,
            scheduled_at, now, key, mask, partition, job.domain, job.actor, job.timeout)


def insert(conn: sqlite3.Connection, job: NewJob, now: float) -> tuple[int, State, bool]:
    """Insert one job. On a uniqueness conflict return the existing job's id and state, conflict=True."""
    params = _insert_params(job, now)
    row = conn.execute(_INSERT, params).fetchone()
    if row is not None:
        return row[0], row[1], False
    existing = conn.execute("SELECT id, state FROM jobs WHERE unique_key = ?", (params[9],)).fetchone()
    return existing[0], existing[1], True


# Most bulk inserts set only these columns; binding 8 parameters instead of 15 nearly doubles the rate.
_INSERT_LEAN = ("INSERT INTO jobs (state, queue, task, args, priority, max_attempts, scheduled_at, inserted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def _is_lean(j: NewJob) -> bool:
    return (not j.meta and j.partition is None and j.domain is None and j.actor is None and j.timeout is None
            and j.unique is None)


def insert_many(conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[tuple[int, State, bool]]:
    """Insert jobs in the caller's transaction; ids are contiguous (one writer holds the lock)."""
    if any(j.unique for j in jobs):
        return [insert(conn, j, now) for j in jobs]
    if all(_is_lean(j) for j in jobs):
        conn.executemany(_INSERT_LEAN, [
            ("available" if j.scheduled_at is None or j.scheduled_at <= now else "scheduled", j.queue, j.task,
             dumps(j.args), j.priority, j.max_attempts, now if j.scheduled_at is None else j.scheduled_at, now)
            for j in jobs])
    else:
        conn.executemany(_INSERT.replace("RETURNING id, state", ""), [_insert_params(j, now) for j in jobs])
    last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    first = last - len(jobs) + 1
    return [(first + i, "available" if (j.scheduled_at or 0) <= now else "scheduled", False)
            for i, j in enumerate(jobs)]


def stage(conn: sqlite3.Connection, now: float, limit: int = 5000) -> int:
    """scheduled/retryable jobs whose time has come become available (Oban's stager)."""
    cur = conn.execute(
        "UPDATE jobs SET state = 'available' WHERE id IN (SELECT id FROM jobs "
        "WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= ? LIMIT ?)", (now, limit))
    return cur.rowcount


def next_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT min(scheduled_at) FROM jobs WHERE state IN ('scheduled', 'retryable')").fetchone()
    return row[0]


def next_tokens(conn: sqlite3.Connection, n: int) -> int:
    """Reserve n fencing tokens; returns the first. Tokens only grow, across restarts too."""
    row = conn.execute("UPDATE counters SET value = value + ? WHERE name = 'fencing_token' RETURNING value",
                       (n,)).fetchone()
    return int(row[0]) - n + 1


_CLAIM_COLS = ("id, task, queue, args, attempt, max_attempts, timeout, attempted_at, lease_token, partition, "
               "domain, actor, meta")


def claim(conn: sqlite3.Connection, queue: str, limit: int, node: str, now: float,
          lease_ttl: float) -> list[sqlite3.Row]:
    """Move up to `limit` unrouted available jobs of `queue` to executing under a fresh lease, in one
    statement. One fencing token serves the whole batch: a token fences one job's successive leases, and
    each job appears once in a batch, so its next lease always carries a higher token."""
    token = next_tokens(conn, 1)
    return conn.execute(
        "UPDATE jobs SET state = 'executing', attempt = attempt + 1, attempted_at = ?1, lease_owner = ?2, "
        "lease_token = ?3, lease_expires_at = ?4 WHERE id IN (SELECT id FROM jobs WHERE state = 'available' "
        "AND queue = ?5 AND partition IS NULL ORDER BY priority, scheduled_at, id LIMIT ?6) "
        f"RETURNING {_CLAIM_COLS}", (now, node, token, now + lease_ttl, queue, limit)).fetchall()


def lease(conn: sqlite3.Connection, ids: Sequence[int], node: str, now: float,
          lease_ttl: float) -> list[sqlite3.Row]:
    """Start an attempt of each available job in `ids` under a new lease for `node` (e.g. a poller)."""
    if not ids:
        return []
    token = next_tokens(conn, 1)
    rows = []
    for job_id in ids:
        row = conn.execute(
            "UPDATE jobs SET state = 'executing', attempt = attempt + 1, attempted_at = ?, lease_owner = ?, "
            f"lease_token = ?, lease_expires_at = ? WHERE id = ? AND state = 'available' RETURNING {_CLAIM_COLS}",
            (now, node, token, now + lease_ttl, job_id)).fetchone()
        if row is not None:
            rows.append(row)
    return rows


def renew(conn: sqlite3.Connection, leases: Iterable[tuple[int, int]], expires_at: float) -> list[int]:
    """Extend leases given as (job id, token). Returns the ids whose lease is no longer theirs."""
    lost = []
    for job_id, token in leases:
        cur = conn.execute("UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'executing' "
                           "AND lease_token = ?", (expires_at, job_id, token))
        if cur.rowcount == 0:
            lost.append(job_id)
    return lost


@dataclass
class Result:
    """The end of one attempt, reported by whoever ran it, fenced by its lease token."""

    job_id: int
    token: int
    outcome: Outcome | None  # None with snooze: the attempt did not count
    node: str
    started_at: float
    duration: float
    error: str | None = None
    snooze: float | None = None  # seconds: run again later without burning an attempt
    backoff: float | None = None  # seconds before the retry, from the task's backoff
    discard: bool = False  # a failure that must not be retried (Discard, unknown task)


@dataclass
class FinishedAttempt:
    """Handed to a task's `on_finish` hook inside the transaction that records the attempt."""

    job_id: int
    task: str
    args: dict[str, Any]
    meta: dict[str, Any]
    attempt: int
    max_attempts: int
    outcome: Outcome
    state: State  # the job's state after this attempt
    error: str | None
    partition: str | None
    now: float


class OnFinish(Protocol):
    """Per-task hooks run inside the transaction that records an attempt; `tasks` names the tasks that
    have one, so the bulk path only loads the rows it must hand over."""

    @property
    def tasks(self) -> Collection[str]: ...

    def __call__(self, conn: sqlite3.Connection, done: FinishedAttempt) -> None: ...


def _unique_after(state: State) -> str:
    # Keep the uniqueness key only while the job stays in one of its unique states.
    return f"unique_key = CASE WHEN unique_states & {rules.state_bit(state)} THEN unique_key ELSE NULL END"


def finish(conn: sqlite3.Connection, results: Iterable[Result], now: float,
           on_finish: OnFinish | None = None) -> list[Result]:
    """Record attempts and move jobs on. Returns the results refused for a stale token (the job is not
    executing under that lease any more: cancelled, rescued, or re-leased to another node)."""
    results = list(results)
    fast = [r for r in results if r.outcome == "success" and r.snooze is None]
    refused = _complete_many(conn, fast, now) if fast else []
    if fast and on_finish is not None and on_finish.tasks:
        _hooks_for(conn, [r for r in fast if r not in refused], now, on_finish)
    results = [r for r in results if r.outcome != "success" or r.snooze is not None]
    clear = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
    for r in results:
        row = conn.execute("SELECT task, queue, attempt, max_attempts, args, meta, partition FROM jobs "
                           "WHERE id = ? AND state = 'executing' AND lease_token = ?", (r.job_id, r.token)).fetchone()
        if row is None:
            refused.append(r)
            continue
        task, queue, attempt, max_attempts = row[0], row[1], row[2], row[3]
        if r.snooze is not None:
            conn.execute(f"UPDATE jobs SET state = 'scheduled', attempt = attempt - 1, scheduled_at = ?, {clear}, "
                         f"{_unique_after('scheduled')} WHERE id = ?", (now + r.snooze, r.job_id))
            continue
        assert r.outcome is not None
        _attempt(conn, r.job_id, attempt, task, queue, r.node, r.started_at, now, r.outcome, r.error)
        state: State
        if r.outcome == "success":
            state = "completed"
            conn.execute(f"UPDATE jobs SET state = 'completed', completed_at = ?, {clear}, "
                         f"{_unique_after('completed')} WHERE id = ?", (now, r.job_id))
        elif r.outcome == "cancelled":
            state = "cancelled"
            entry = dumps({"attempt": attempt, "at": iso(now), "error": r.error or "cancelled"})
            conn.execute(f"UPDATE jobs SET state = 'cancelled', cancelled_at = ?, {clear}, "
                         f"errors = json_insert(errors, '$[#]', json(?)), {_unique_after('cancelled')} "
                         "WHERE id = ?", (now, entry, r.job_id))
        else:
            state = _fail(conn, r.job_id, attempt, max_attempts, now, r.error or r.outcome,
                          r.backoff if r.backoff is not None else rules.default_backoff(attempt),
                          discard=r.discard)
        if on_finish is not None:
            on_finish(conn, FinishedAttempt(r.job_id, task, json.loads(row[4]), json.loads(row[5]), attempt,
                                            max_attempts, r.outcome, state, r.error, row[6], now))
    return refused


def _complete_many(conn: sqlite3.Connection, results: list[Result], now: float) -> list[Result]:
    """The common case in bulk: successful attempts, each fenced by its token, in two statements whatever
    the batch size. An attempt row is written only for a job still executing under the reported token;
    the jobs that got one are then completed. Returns the stale results (they got none)."""
    batch = json.dumps([[r.job_id, r.token, r.node, r.started_at] for r in results])
    before = conn.execute("SELECT coalesce(max(id), 0) FROM attempts").fetchone()[0]
    conn.execute(
        "INSERT INTO attempts (job_id, attempt, task, queue, node, started_at, finished_at, outcome, duration) "
        "SELECT j.id, j.attempt, j.task, j.queue, json_extract(r.value, '$[2]'), json_extract(r.value, '$[3]'), "
        "?1, 'success', max(?1 - json_extract(r.value, '$[3]'), 0) FROM json_each(?2) AS r CROSS "
        "JOIN jobs AS j ON j.id = json_extract(r.value, '$[0]') AND j.state = 'executing' "
        "AND j.lease_token = json_extract(r.value, '$[1]')", (now, batch))
    done = conn.execute(
        "UPDATE jobs SET state = 'completed', completed_at = ?, lease_owner = NULL, lease_token = NULL, "
        f"lease_expires_at = NULL, {_unique_after('completed')} "
        "WHERE id IN (SELECT job_id FROM attempts WHERE id > ?)", (now, before)).rowcount
    if done == len(results):
        return []
    ok = {row[0] for row in conn.execute("SELECT job_id FROM attempts WHERE id > ?", (before,))}
    return [r for r in results if r.job_id not in ok]


def _hooks_for(conn: sqlite3.Connection, done: list[Result], now: float, on_finish: OnFinish) -> None:
    ids = [r.job_id for r in done]
    names = list(on_finish.tasks)
    for row in conn.execute(
            "SELECT id, task, args, meta, attempt, max_attempts, partition FROM jobs "
            f"WHERE id IN ({','.join('?' * len(ids))}) AND task IN ({','.join('?' * len(names))})", [*ids, *names]):
        on_finish(conn, FinishedAttempt(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4], row[5],
                                        "success", "completed", None, row[6], now))


def _attempt(conn: sqlite3.Connection, job_id: int, attempt: int, task: str, queue: str, node: str | None,
             started_at: float, now: float, outcome: Outcome, error: str | None) -> None:
    conn.execute("INSERT INTO attempts (job_id, attempt, task, queue, node, started_at, finished_at, outcome, "
                 "error, duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (job_id, attempt, task, queue, node, started_at, now, outcome, error, max(0.0, now - started_at)))


def _fail(conn: sqlite3.Connection, job_id: int, attempt: int, max_attempts: int, now: float, error: str,
          backoff: float, *, discard: bool = False) -> State:
    after = rules.after_failure(attempt, max_attempts, now, backoff)
    entry = dumps({"attempt": attempt, "at": iso(now), "error": error})
    clear = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
    errors = "errors = json_insert(errors, '$[#]', json(?))"
    if discard or after.state == "discarded":
        conn.execute(f"UPDATE jobs SET state = 'discarded', discarded_at = ?, {errors}, {clear}, "
                     f"{_unique_after('discarded')} WHERE id = ?", (now, entry, job_id))
        return "discarded"
    conn.execute(f"UPDATE jobs SET state = 'retryable', scheduled_at = ?, {errors}, {clear}, "
                 f"{_unique_after('retryable')} WHERE id = ?", (after.scheduled_at, entry, job_id))
    return "retryable"


def rescue(conn: sqlite3.Connection, now: float, *, owner: str | None = None,
           expired_before: float | None = None, reason: str = "lease expired: its runner stopped answering",
           ids: Sequence[int] | None = None, on_finish: OnFinish | None = None) -> list[tuple[int, str | None]]:
    """Lifeline: executing jobs whose runner is gone get a `lost` attempt and run again (available, or
    discarded by the usual rule once their attempts are used up). Select by owner (all of a node's jobs at
    its start), by lease expiry, or by id. Returns (job id, the lost lease's owner)."""
    where: list[str] = ["state = 'executing'"]
    params: list[Any] = []
    if owner is not None:
        where.append("lease_owner = ?")
        params.append(owner)
    if expired_before is not None:
        where.append("lease_expires_at < ?")
        params.append(expired_before)
    if ids is not None:
        where.append(f"id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    rows = conn.execute("SELECT id, task, queue, attempt, max_attempts, lease_owner, attempted_at, args, meta, "
                        f"partition FROM jobs WHERE {' AND '.join(where)}", params).fetchall()
    out = []
    for job_id, task, queue, attempt, max_attempts, lease_owner, attempted_at, args, meta, partition in rows:
        _attempt(conn, job_id, attempt, task, queue, lease_owner, attempted_at or now, now, "lost", reason)
        state: State = "available"
        if attempt >= max_attempts:
            state = _fail(conn, job_id, attempt, max_attempts, now, reason, 0.0, discard=True)
        else:
            conn.execute("UPDATE jobs SET state = 'available', lease_owner = NULL, lease_token = NULL, "
                         f"lease_expires_at = NULL, {_unique_after('available')} WHERE id = ?", (job_id,))
        if on_finish is not None:
            on_finish(conn, FinishedAttempt(job_id, task, json.loads(args), json.loads(meta), attempt,
                                            max_attempts, "lost", state, reason, partition, now))
        out.append((job_id, lease_owner))
    return out


def requeue(conn: sqlite3.Connection, leases: Iterable[tuple[int, int]]) -> int:
    """Put jobs back to available without burning their attempt (a drain ran out of time)."""
    n = 0
    for job_id, token in leases:
        n += conn.execute("UPDATE jobs SET state = 'available', attempt = max(attempt - 1, 0), lease_owner = NULL, "
                          "lease_token = NULL, lease_expires_at = NULL WHERE id = ? AND state = 'executing' "
                          "AND lease_token = ?", (job_id, token)).rowcount
    return n


def cancel(conn: sqlite3.Connection, job_id: int, now: float) -> State | None:
    """Cancel a job that has not finished. Returns its previous state (None if unknown). An executing
    job's lease is dropped here, so its runner's result is refused; the runner is told to stop."""
    row = conn.execute("SELECT state, task, queue, attempt, lease_owner, attempted_at FROM jobs WHERE id = ?",
                       (job_id,)).fetchone()
    if row is None:
        return None
    state = row["state"]
    if state in rules.FINISHED:
        return state
    if state == "executing":
        _attempt(conn, job_id, row["attempt"], row["task"], row["queue"], row["lease_owner"],
                 row["attempted_at"] or now, now, "cancelled", "cancelled by request")
    conn.execute("UPDATE jobs SET state = 'cancelled', cancelled_at = ?, lease_owner = NULL, lease_token = NULL, "
                 f"lease_expires_at = NULL, {_unique_after('cancelled')} WHERE id = ?", (now, job_id))
    return state


def retry(conn: sqlite3.Connection, job_id: int, now: float) -> State | None:
    """Manual retry: a discarded, cancelled (or completed) job runs again with fresh attempts."""
    row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    if row[0] in ("discarded", "cancelled", "completed", "retryable", "scheduled"):
        conn.execute("UPDATE jobs SET state = 'available', scheduled_at = ?, "
                     "max_attempts = max(max_attempts, attempt + 1), completed_at = NULL, cancelled_at = NULL, "
                     "discarded_at = NULL WHERE id = ?", (now, job_id))
    return row[0]


def prune(conn: sqlite3.Connection, before: float, limit: int = 10_000) -> int:
    """Delete one batch of finished jobs that finished before `before`. Attempts stay.

    A job finishes after it is inserted and ids grow with insertion time, so candidates all have ids at or
    below the last id inserted before `before`: the scan walks only that old prefix of the table."""
    cutoff = _last_id_inserted_before(conn, before)
    if cutoff is None:
        return 0
    return conn.execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE id <= ? AND state IN ('completed', 'cancelled', "
        "'discarded') AND coalesce(completed_at, cancelled_at, discarded_at) < ? LIMIT ?)",
        (cutoff, before, limit)).rowcount


def _last_id_inserted_before(conn: sqlite3.Connection, before: float) -> int | None:
    lo, hi = conn.execute("SELECT min(id), max(id) FROM jobs").fetchone()
    if lo is None:
        return None
    found = None
    while lo <= hi:  # binary search over the primary key; ~20 point lookups for millions of rows
        mid = (lo + hi) // 2
        row = conn.execute("SELECT id, inserted_at FROM jobs WHERE id >= ? ORDER BY id LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= before:
            hi = mid - 1
        else:
            found, lo = row[0], row[0] + 1
    return found


def get(conn: sqlite3.Connection, job_id: int) -> Job | None:
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return Job.from_row(row) if row else None


def states_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[str, int | None]]:
    if not ids:
        return {}
    rows = conn.execute(f"SELECT id, state, lease_token FROM jobs WHERE id IN ({','.join('?' * len(ids))})", ids)
    return {r[0]: (r[1], r[2]) for r in rows}


def leased_attempts(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[str, int, int]]:
    """(task, attempt, lease token) of those of `ids` that are executing: what a result's log line names."""
    if not ids:
        return {}
    rows = conn.execute("SELECT id, task, attempt, lease_token FROM jobs WHERE state = 'executing' "
                        "AND id IN (SELECT value FROM json_each(?))", (dumps(list(ids)),))
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def attempts(conn: sqlite3.Connection, job_id: int) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT attempt, node, outcome, error, started_at, finished_at, duration FROM attempts "
                        "WHERE job_id = ? ORDER BY id", (job_id,))
    return [{"attempt": r[0], "node": r[1], "outcome": r[2], "error": r[3], "started_at": iso(r[4]),
             "finished_at": iso(r[5]), "duration": round(r[6], 6)} for r in rows]


def list_jobs(conn: sqlite3.Connection, *, state: str | None = None, queue: str | None = None,
              task: str | None = None, limit: int = 50) -> list[Job]:
    where, params = [], []
    for col, val in (("state", state), ("queue", queue), ("task", task)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC LIMIT ?"
    return [Job.from_row(r) for r in conn.execute(sql, [*params, limit])]


def counts(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """{queue: {state: n}} from the fetch index alone, fast on millions of rows: each state's queues are
    found by seeking the index (no scan), then each (state, queue) range is counted without grouping."""
    out: dict[str, dict[str, int]] = {}
    for state in rules.STATES:
        queue, op = "", ">="
        while (row := conn.execute(f"SELECT queue FROM jobs WHERE state = ? AND queue {op} ? "
                                   "ORDER BY state, queue LIMIT 1", (state, queue)).fetchone()) is not None:
            queue, op = row[0], ">"
            out.setdefault(queue, {})[state] = conn.execute(
                "SELECT count(*) FROM jobs WHERE state = ? AND queue = ?", (state, queue)).fetchone()[0]
    return out


def oldest_available(conn: sqlite3.Connection) -> float | None:
    return conn.execute("SELECT min(scheduled_at) FROM jobs WHERE state = 'available'").fetchone()[0]


def recent_failures(conn: sqlite3.Connection, limit: int = 5) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT job_id, attempt, task, node, outcome, error, finished_at FROM attempts "
                        "WHERE outcome != 'success' ORDER BY id DESC LIMIT ?", (limit,))
    return [{"job_id": r[0], "attempt": r[1], "task": r[2], "node": r[3], "outcome": r[4], "error": r[5],
             "finished_at": iso(r[6])} for r in rows]


def set_paused(conn: sqlite3.Connection, queue: str, paused: bool, now: float) -> None:
    conn.execute("INSERT INTO queues (name, paused, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                 "SET paused = excluded.paused, updated_at = excluded.updated_at", (queue, int(paused), now))


def paused_queues(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM queues WHERE paused = 1")}


def waiting_reasons(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Why routed jobs wait (set by the dispatcher in meta.waiting), e.g. "no poller for partition p1"."""
    out: dict[str, int] = {}
    queues = [r[0] for r in conn.execute("SELECT DISTINCT queue FROM jobs INDEXED BY jobs_fetch "
                                         "WHERE state = 'available'")]
    for q in queues:
        for reason, n in conn.execute(
                "SELECT json_extract(meta, '$.waiting'), count(*) FROM jobs WHERE state = 'available' AND queue = ? "
                "AND partition >= '' GROUP BY 1", (q,)):
            if reason:
                out[reason] = out.get(reason, 0) + n
    return [{"reason": r, "count": n} for r, n in sorted(out.items())]
