"""SQLite persistence: jobs, their metric points and state history, and saved configs.

WAL mode with a busy timeout, one connection per thread, schema migrations keyed by
`PRAGMA user_version`. Every status change is one guarded UPDATE (`WHERE status = :expected`), so two
writers can never both win, and each change is appended to `transitions` for audit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .status import InvalidTransition, JobNotFound, JobStatus, can_transition

MIGRATIONS: list[str] = [
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        config_json TEXT NOT NULL,
        job_dir TEXT NOT NULL,
        created_at TEXT NOT NULL,
        queued_at TEXT,
        started_at TEXT,
        finished_at TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        exit_code INTEGER,
        error TEXT,
        error_kind TEXT,
        pid INTEGER,
        pid_start REAL,
        step INTEGER NOT NULL DEFAULT 0,
        total_steps INTEGER,
        eta_s REAL,
        latest_json TEXT,
        info_json TEXT,
        end_status TEXT,
        events_offset INTEGER NOT NULL DEFAULT 0,
        gpu TEXT
    );
    CREATE INDEX jobs_status_seq ON jobs(status, seq);
    CREATE INDEX jobs_seq ON jobs(seq);
    CREATE TABLE metrics (
        job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        step INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        time REAL NOT NULL,
        loss REAL,
        learning_rate REAL,
        data_json TEXT NOT NULL,
        PRIMARY KEY (job_id, kind, step)
    ) WITHOUT ROWID;
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        from_status TEXT,
        to_status TEXT NOT NULL,
        at TEXT NOT NULL,
        reason TEXT
    );
    CREATE INDEX transitions_job ON transitions(job_id, id);
    CREATE TABLE configs (
        config_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        config_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 2: metrics keyed (job, step, kind) so 'since_step' reads a range instead of sorting every row
    """
    CREATE TABLE metrics_v2 (
        job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        kind TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        time REAL NOT NULL,
        loss REAL,
        learning_rate REAL,
        data_json TEXT NOT NULL,
        PRIMARY KEY (job_id, step, kind)
    ) WITHOUT ROWID;
    INSERT INTO metrics_v2 (job_id, step, kind, attempt, time, loss, learning_rate, data_json)
        SELECT job_id, step, kind, attempt, time, loss, learning_rate, data_json FROM metrics;
    DROP TABLE metrics;
    ALTER TABLE metrics_v2 RENAME TO metrics;
    """,
]

JOB_COLUMNS = ("job_id", "seq", "name", "status", "config_json", "job_dir", "created_at", "queued_at",
               "started_at", "finished_at", "attempt", "exit_code", "error", "error_kind", "pid", "pid_start",
               "step", "total_steps", "eta_s", "latest_json", "info_json", "end_status", "events_offset", "gpu")
UPDATABLE = frozenset(JOB_COLUMNS) - {"job_id", "seq", "status", "created_at"}


def utc_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc).isoformat(timespec="seconds")


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite ends it by itself on a full disk)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class SqliteStore:
    """One SQLite file; safe to use from several threads (each gets its own connection)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.migrate()

    def connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def migrate(self) -> None:
        conn = self.connect()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version={number}; COMMIT;")
            except BaseException:
                _rollback(conn)
                raise

    def now(self) -> str:
        return utc_iso(self.clock())

    # ---- jobs ----------------------------------------------------------------------------------------
    def insert_job(self, job_id: str, name: str, config: dict[str, Any], job_dir: str) -> dict[str, Any]:
        conn, now = self.connect(), self.now()
        conn.execute("BEGIN IMMEDIATE")
        try:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            conn.execute(
                "INSERT INTO jobs (job_id, seq, name, status, config_json, job_dir, created_at, queued_at) "
                "VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)", (job_id, seq, name, json.dumps(config), job_dir, now, now))
            conn.execute("INSERT INTO transitions (job_id, from_status, to_status, at, reason) "
                         "VALUES (?, NULL, 'queued', ?, 'submitted')", (job_id, now))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> dict[str, Any]:
        row = self.connect().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return dict(row)

    def list_jobs(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        """Newest first."""
        conn = self.connect()
        where, args = ("WHERE status = ?", [status]) if status else ("", [])
        total = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                            [*args, limit, offset]).fetchall()
        return [dict(r) for r in rows], total

    def jobs_with_status(self, statuses: Iterable[JobStatus], oldest_first: bool = True) -> list[dict[str, Any]]:
        values = [s.value for s in statuses]
        marks = ",".join("?" * len(values))
        order = "ASC" if oldest_first else "DESC"
        rows = self.connect().execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq {order}",
                                      values).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.connect().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}

    def transition(self, job_id: str, expected: JobStatus, new: JobStatus, reason: str = "",
                   **fields: Any) -> dict[str, Any]:
        """Move a job from `expected` to `new` (one guarded UPDATE) and set `fields`; raises if not allowed."""
        if not can_transition(expected, new):
            raise InvalidTransition(job_id, expected, new)
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        now = self.now()
        if new == JobStatus.RUNNING:
            fields.setdefault("started_at", now)
        if new.is_terminal():
            fields.setdefault("finished_at", now)
        if new == JobStatus.QUEUED:
            fields.update(queued_at=now, finished_at=None)
        sets = ", ".join(f"{k} = ?" for k in fields)
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(f"UPDATE jobs SET status = ?{', ' + sets if sets else ''} "
                               "WHERE job_id = ? AND status = ?", [new.value, *fields.values(), job_id, expected.value])
            if cur.rowcount == 1:
                conn.execute("INSERT INTO transitions (job_id, from_status, to_status, at, reason) "
                             "VALUES (?, ?, ?, ?, ?)", (job_id, expected.value, new.value, now, reason))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if cur.rowcount != 1:
            current = self.get_job(job_id)["status"]  # raises JobNotFound
            raise InvalidTransition(job_id, current, new, f"job {job_id} is {current}, not {expected.value}")
        return self.get_job(job_id)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Set non-status fields (progress, pid, offsets)."""
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.connect().execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*fields.values(), job_id])

    def delete_job(self, job_id: str, allowed: Iterable[JobStatus]) -> None:
        values = [s.value for s in allowed]
        marks = ",".join("?" * len(values))
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(f"DELETE FROM jobs WHERE job_id = ? AND status IN ({marks})", [job_id, *values])
            if cur.rowcount:
                conn.execute("DELETE FROM transitions WHERE job_id = ?", (job_id,))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if cur.rowcount != 1:
            current = self.get_job(job_id)["status"]
            raise InvalidTransition(job_id, current, "deleted", f"job {job_id} is {current}: stop it before deleting")

    def history(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.connect().execute("SELECT from_status, to_status, at, reason FROM transitions "
                                      "WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [dict(r) for r in rows]

    # ---- events -> progress and metrics, in one transaction ----------------------------------------------
    def ingest(self, job_id: str, points: list[dict[str, Any]], offset: int, **fields: Any) -> None:
        """Store metric points and progress fields with the new events offset, atomically."""
        bad = set(fields) - UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR REPLACE INTO metrics (job_id, kind, step, attempt, time, loss, learning_rate, data_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(job_id, p["kind"], int(p["step"]), int(p.get("attempt") or 1), float(p.get("time") or 0),
                  p.get("loss", p.get("eval_loss")), p.get("learning_rate"), json.dumps(p)) for p in points])
            sets = ", ".join(f"{k} = ?" for k in ("events_offset", *fields))
            conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [offset, *fields.values(), job_id])
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def metric_series(self, job_id: str, max_points: int = 2000) -> list[tuple[int, str, float | None,
                                                                               float | None]]:
        """(step, kind, loss, learning_rate) rows for charts, thinned in SQL to about max_points per kind."""
        conn = self.connect()
        count, last = conn.execute("SELECT COUNT(*), MAX(step) FROM metrics WHERE job_id = ?", (job_id,)).fetchone()
        stride = max(1, -(-int(count or 0) // max(1, max_points)))
        rows = conn.execute("SELECT step, kind, loss, learning_rate FROM metrics WHERE job_id = ? "
                            "AND (step % ? = 0 OR step = ?) ORDER BY step, kind", (job_id, stride, last)).fetchall()
        return [tuple(r) for r in rows]

    def metrics_json(self, job_id: str, since_step: int = -1, kind: str | None = None,
                     limit: int = 100_000) -> list[tuple[int, str]]:
        """(step, stored JSON text) in step order: an API can pass the text on without parsing it."""
        args: list[Any] = [job_id, since_step]
        extra = ""
        if kind:
            extra, args = " AND kind = ?", [*args, kind]
        rows = self.connect().execute(
            f"SELECT step, data_json FROM metrics WHERE job_id = ? AND step > ?{extra} ORDER BY step, kind LIMIT ?",
            [*args, limit]).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def metrics(self, job_id: str, since_step: int = -1, kind: str | None = None,
                limit: int = 100_000) -> list[dict[str, Any]]:
        return [json.loads(text) for _, text in self.metrics_json(job_id, since_step, kind, limit)]

    # ---- saved configs -----------------------------------------------------------------------------------
    def save_config(self, config_id: str, name: str, config: dict[str, Any], overwrite: bool = False) -> str:
        """Insert or (with overwrite) replace by name, atomically; FileExistsError for a taken name."""
        conn, now = self.connect(), self.now()
        conn.execute("BEGIN IMMEDIATE")
        try:
            existing = conn.execute("SELECT config_id FROM configs WHERE name = ?", (name,)).fetchone()
            if existing and not overwrite:
                raise FileExistsError(name)
            if existing:
                conn.execute("UPDATE configs SET config_json = ?, updated_at = ? WHERE config_id = ?",
                             (json.dumps(config), now, existing[0]))
                config_id = str(existing[0])
            else:
                conn.execute("INSERT INTO configs (config_id, name, config_json, created_at, updated_at) "
                             "VALUES (?, ?, ?, ?, ?)", (config_id, name, json.dumps(config), now, now))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return config_id

    def list_configs(self) -> list[dict[str, Any]]:
        rows = self.connect().execute("SELECT * FROM configs ORDER BY name").fetchall()
        return [dict(r) for r in rows]

    def get_config(self, config_id: str) -> dict[str, Any] | None:
        row = self.connect().execute("SELECT * FROM configs WHERE config_id = ? OR name = ?",
                                     (config_id, config_id)).fetchone()
        return dict(row) if row else None

    def delete_config(self, config_id: str) -> bool:
        cur = self.connect().execute("DELETE FROM configs WHERE config_id = ? OR name = ?", (config_id, config_id))
        return cur.rowcount == 1

    def version(self) -> tuple[int, int]:
        """Moves whenever anything is committed, by this thread's connection or any other."""
        conn = self.connect()
        return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes

    def integrity_ok(self) -> bool:
        return self.connect().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
