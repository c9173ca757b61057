"""Fixtures of the reliability suites: counts lines, seeded randomness, real servers and database audits.

Each suite (test_faults.py -> 'faults', test_load.py -> 'load') adds what it injected and measured to a
`SuiteCounts`; at the end of the session one line per suite that ran, e.g.

    RELIABILITY faults: injected=14 jobs=9 failures=0 xfailed=4 ...

is printed in pytest's summary and written to test-artifacts/reliability/<suite>.txt (see README.md).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import Server, kill_processes_mentioning, processes_mentioning

from sft_ui.status import TRANSITIONS, JobStatus

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "reliability"
SUITES = {"test_faults": "faults", "test_load": "load"}
HEADLINE = {"faults": ("injected", "jobs"), "load": ("submissions", "clients", "jobs", "errors")}
SEED_ENV = "SFT_UI_RELIABILITY_SEED"


# ---- counts lines ---------------------------------------------------------------------------------------------
@dataclass
class SuiteCounts:
    """What one suite injected/measured (summed over its tests) and how its tests ended."""

    suite: str
    counts: Counter[str] = field(default_factory=Counter)
    values: dict[str, Any] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)

    def add(self, **amounts: int) -> None:
        self.counts.update(amounts)

    def set(self, **values: Any) -> None:
        self.values.update(values)

    def line(self) -> str:
        parts = [f"{k}={self.counts.get(k, 0)}" for k in HEADLINE[self.suite]]
        parts.append(f"failures={self.outcomes.get('failed', 0)}")
        parts += [f"{k}={self.outcomes.get(k, 0)}" for k in ("passed", "xfailed", "skipped")]
        parts += [f"{k}={v}" for k, v in sorted(self.counts.items()) if k not in HEADLINE[self.suite]]
        parts += [f"{k}={v}" for k, v in sorted(self.values.items())]
        return f"RELIABILITY {self.suite}: " + " ".join(parts)


_COUNTS: dict[str, SuiteCounts] = {}


def _suite_of(nodeid: str) -> str | None:
    module = Path(nodeid.split("::", 1)[0]).stem
    return SUITES.get(module)


def _counts_for(suite: str) -> SuiteCounts:
    return _COUNTS.setdefault(suite, SuiteCounts(suite))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    suite = _suite_of(report.nodeid)
    if suite is None:
        return
    outcomes = _counts_for(suite).outcomes
    if report.failed:  # in setup, call or teardown; a strict XPASS is a failure too
        outcomes["failed"] += 1
    elif report.when == "call" and hasattr(report, "wasxfail"):
        outcomes["xfailed"] += 1
    elif report.when == "call" and report.passed:
        outcomes["passed"] += 1
    elif report.skipped:
        outcomes["skipped"] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _COUNTS:
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    terminalreporter.section("reliability counts")
    for suite, counts in sorted(_COUNTS.items()):
        line = counts.line()
        (ARTIFACTS / f"{suite}.txt").write_text(line + "\n", encoding="utf-8")
        terminalreporter.write_line(line)


@pytest.fixture
def suite_counts(request: pytest.FixtureRequest) -> SuiteCounts:
    suite = _suite_of(request.node.nodeid)
    assert suite is not None, f"{request.node.nodeid} is not part of a reliability suite"
    return _counts_for(suite)


@pytest.fixture(scope="session")
def seed() -> int:
    """SFT_UI_RELIABILITY_SEED to replay a run; otherwise a fresh one (printed in the counts lines)."""
    raw = os.environ.get(SEED_ENV, "").strip()
    return int(raw) if raw else int(time.time()) % 1_000_000


@pytest.fixture
def rng(seed: int, request: pytest.FixtureRequest, suite_counts: SuiteCounts) -> random.Random:
    suite_counts.set(seed=seed)
    return random.Random(f"{seed}:{request.node.name}")


# ---- real servers ---------------------------------------------------------------------------------------------
StartServer = Callable[..., Server]


@pytest.fixture
def start_server(workspace: Path, worker_env: dict[str, str], tmp_path: Path) -> Iterator[StartServer]:
    """start_server(env_overrides, ui=False) runs `python app.py` on `workspace`, on the same port every time
    (a restart). All are SIGKILLed at the end and every process naming the workspace is killed."""
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None, ui: bool = False, timeout: float = 240.0) -> Server:
        port = servers[-1].port if servers else None
        server = Server(workspace, {**worker_env, **(env or {})}, tmp_path / "server.log", port=port, ui=ui)
        servers.append(server)
        return server.start(timeout)

    yield start
    for server in reversed(servers):
        try:
            server.kill()
        except Exception:  # noqa: BLE001 - teardown must go on to kill the workers
            pass
    kill_processes_mentioning(str(workspace))


# ---- audits of a stopped server's database --------------------------------------------------------------------
live_processes = processes_mentioning  # zombies aside: init reaps those


class Audit:
    """Reads a workspace's SQLite file directly (sqlite3, not the package's store)."""

    @staticmethod
    def _connect(db: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(db, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    @classmethod
    def integrity(cls, db: Path) -> str:
        conn = cls._connect(db)
        try:
            return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
        finally:
            conn.close()

    @classmethod
    def query(cls, db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = cls._connect(db)
        try:
            return [dict(r) for r in conn.execute(sql, args).fetchall()]
        finally:
            conn.close()

    @classmethod
    def jobs(cls, db: Path) -> list[dict[str, Any]]:
        return cls.query(db, "SELECT * FROM jobs ORDER BY seq")

    @classmethod
    def transitions(cls, db: Path) -> list[dict[str, Any]]:
        return cls.query(db, "SELECT * FROM transitions ORDER BY id")

    @classmethod
    def illegal_transitions(cls, db: Path) -> list[str]:
        """Every history that is not a chain of allowed moves ending at the job's current status."""
        problems: list[str] = []
        status_of = {j["job_id"]: j["status"] for j in cls.jobs(db)}
        current: dict[str, str] = {}
        for t in cls.transitions(db):
            job_id, src, dst = t["job_id"], t["from_status"], t["to_status"]
            where = f"transition #{t['id']} of {job_id} ({src} -> {dst}, {t['reason']!r})"
            if job_id not in current:
                if src is not None or dst != JobStatus.QUEUED.value:
                    problems.append(f"{where}: a history must start with None -> queued")
            elif src != current[job_id]:
                problems.append(f"{where}: the job was {current[job_id]}")
            elif JobStatus(dst) not in TRANSITIONS[JobStatus(src)]:
                problems.append(f"{where}: not allowed by sft_ui.status.TRANSITIONS")
            current[job_id] = dst
        for job_id, status in status_of.items():
            if current.get(job_id) != status:
                problems.append(f"{job_id} is {status} but its history ends at {current.get(job_id)}")
        for job_id in set(current) - set(status_of):
            problems.append(f"history rows for a job that does not exist: {job_id}")
        return problems

    @staticmethod
    def live_processes(text: str) -> list[psutil.Process]:
        return live_processes(text)

    @staticmethod
    def wait_no_processes(text: str, timeout: float = 15.0) -> list[psutil.Process]:
        """Live processes naming `text` still there after `timeout` s (empty when all went)."""
        deadline = time.monotonic() + timeout
        left = live_processes(text)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = live_processes(text)
        return left


@pytest.fixture
def audit() -> type[Audit]:
    return Audit
