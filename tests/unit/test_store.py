"""SqliteStore on a real SQLite file: migrations, WAL, guarded transitions, history, metrics and configs."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from sft_ui.status import FINISHED, TRANSITIONS, InvalidTransition, JobNotFound, JobStatus
from sft_ui.store import MIGRATIONS, SqliteStore

S = JobStatus


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "db" / "sft_ui.db", clock=clock)
    yield s
    s.close()


_ids = count(1)


def new_job(store: SqliteStore, tmp_path: Path) -> str:
    job_id = f"20260101-000000-{next(_ids):06x}"
    store.insert_job(job_id, f"job {job_id}", {"max_steps": 3}, str(tmp_path / job_id))
    return job_id


def at(store: SqliteStore, tmp_path: Path, status: JobStatus) -> str:
    """A job in `status`, reached through allowed transitions."""
    job_id = new_job(store, tmp_path)
    path = {S.QUEUED: [], S.RUNNING: [S.RUNNING], S.STOPPING: [S.RUNNING, S.STOPPING],
            S.SUCCEEDED: [S.RUNNING, S.SUCCEEDED], S.FAILED: [S.RUNNING, S.FAILED],
            S.STOPPED: [S.RUNNING, S.STOPPED], S.INTERRUPTED: [S.RUNNING, S.INTERRUPTED]}[status]
    current = S.QUEUED
    for nxt in path:
        store.transition(job_id, current, nxt)
        current = nxt
    assert store.get_job(job_id)["status"] == status.value
    return job_id


# ---- schema -------------------------------------------------------------------------------------------------
def test_migrations_set_user_version_and_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "sft_ui.db"
    first = SqliteStore(path)
    assert first.connect().execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    first.close()
    again = SqliteStore(path)  # a second open must not re-run (CREATE TABLE would fail) nor bump the version
    assert again.connect().execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in again.connect().execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "metrics", "transitions", "configs"} <= tables
    again.close()
    raw = sqlite3.connect(path)  # a plain connection sees the same version on disk
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    raw.close()


def test_wal_mode_and_integrity(store: SqliteStore) -> None:
    assert store.connect().execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    raw = sqlite3.connect(store.path)  # WAL is persistent: a fresh connection sees it too
    assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    raw.close()
    assert store.integrity_ok()


def test_each_thread_gets_its_own_connection(store: SqliteStore, tmp_path: Path) -> None:
    job_id = new_job(store, tmp_path)
    seen: list[object] = []

    def other() -> None:
        seen.append(store.connect())
        seen.append(store.get_job(job_id)["status"])
        store.close()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert seen[0] is not store.connect() and seen[1] == "queued"


# ---- jobs ---------------------------------------------------------------------------------------------------------
def test_insert_job_is_queued_with_increasing_seq_and_history(store: SqliteStore, tmp_path: Path,
                                                               clock: FakeClock) -> None:
    a, b = new_job(store, tmp_path), new_job(store, tmp_path)
    ja, jb = store.get_job(a), store.get_job(b)
    assert ja["status"] == jb["status"] == "queued"
    assert jb["seq"] == ja["seq"] + 1
    assert ja["created_at"] == ja["queued_at"] and ja["started_at"] is None and ja["finished_at"] is None
    assert ja["created_at"].startswith("2027-01-15T")  # the injected clock, as UTC ISO
    assert store.history(a) == [{"from_status": None, "to_status": "queued", "at": ja["created_at"],
                                 "reason": "submitted"}]


def test_unknown_job_raises_job_not_found(store: SqliteStore) -> None:
    with pytest.raises(JobNotFound) as info:
        store.get_job("nope")
    assert info.value.job_id == "nope" and "nope" in str(info.value)
    assert isinstance(info.value, KeyError)
    with pytest.raises(JobNotFound):
        store.transition("nope", S.QUEUED, S.RUNNING)
    with pytest.raises(JobNotFound):
        store.delete_job("nope", FINISHED)
    assert store.history("nope") == []


def test_guarded_transition_second_writer_from_same_status_loses(store: SqliteStore, tmp_path: Path) -> None:
    job_id = new_job(store, tmp_path)
    won = store.transition(job_id, S.QUEUED, S.RUNNING, "first")
    assert won["status"] == "running"
    with pytest.raises(InvalidTransition) as info:
        store.transition(job_id, S.QUEUED, S.STOPPED, "second")
    assert info.value.src == "running" and info.value.dst == "stopped"
    assert store.get_job(job_id)["status"] == "running"
    assert [h["to_status"] for h in store.history(job_id)] == ["queued", "running"]  # the loser left no trace


def test_concurrent_writers_exactly_one_wins(store: SqliteStore, tmp_path: Path) -> None:
    job_id = at(store, tmp_path, S.RUNNING)
    targets = [S.SUCCEEDED, S.FAILED, S.STOPPED, S.INTERRUPTED, S.STOPPING] * 4
    barrier = threading.Barrier(len(targets))
    results: list[str] = []
    lock = threading.Lock()

    def write(dst: JobStatus) -> None:
        barrier.wait(10)
        try:
            store.transition(job_id, S.RUNNING, dst)
            outcome = f"won:{dst.value}"
        except InvalidTransition:
            outcome = "lost"
        finally:
            store.close()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=write, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r in results if r.startswith("won:")]
    assert len(results) == len(targets) and len(winners) == 1, results
    assert store.get_job(job_id)["status"] == winners[0].split(":")[1]
    assert len(store.history(job_id)) == 3  # submitted, running, the one winner


@pytest.mark.parametrize("src", list(S))
def test_disallowed_transitions_raise_and_change_nothing(store: SqliteStore, tmp_path: Path, src: JobStatus) -> None:
    job_id = at(store, tmp_path, src)
    before = store.get_job(job_id)
    for dst in S:
        if dst in TRANSITIONS[src]:
            continue
        with pytest.raises(InvalidTransition):
            store.transition(job_id, src, dst)
    assert store.get_job(job_id) == before
    assert len(store.history(job_id)) == 1 + {S.QUEUED: 0, S.RUNNING: 1, S.STOPPING: 2}.get(src, 2)


def test_succeeded_is_final_and_queued_cannot_succeed(store: SqliteStore, tmp_path: Path) -> None:
    done = at(store, tmp_path, S.SUCCEEDED)
    for dst in S:
        with pytest.raises(InvalidTransition):
            store.transition(done, S.SUCCEEDED, dst)
    queued = new_job(store, tmp_path)
    with pytest.raises(InvalidTransition):
        store.transition(queued, S.QUEUED, S.SUCCEEDED)
    with pytest.raises(InvalidTransition):
        store.transition(queued, S.QUEUED, S.INTERRUPTED)
    assert store.get_job(queued)["status"] == "queued"


def test_transition_with_wrong_expected_status_raises_naming_the_current_one(store: SqliteStore,
                                                                             tmp_path: Path) -> None:
    job_id = at(store, tmp_path, S.STOPPED)
    with pytest.raises(InvalidTransition) as info:
        store.transition(job_id, S.RUNNING, S.SUCCEEDED)  # allowed edge, but the job is not running
    assert info.value.src == "stopped"
    assert "stopped" in str(info.value)


def test_timestamps_started_finished_and_requeue(store: SqliteStore, tmp_path: Path, clock: FakeClock) -> None:
    job_id = new_job(store, tmp_path)
    clock.now += 10
    running = store.transition(job_id, S.QUEUED, S.RUNNING, attempt=1, pid=1234, pid_start=5.5)
    assert running["started_at"] == store.now() and running["finished_at"] is None
    assert (running["attempt"], running["pid"], running["pid_start"]) == (1, 1234, 5.5)
    clock.now += 10
    stopping = store.transition(job_id, S.RUNNING, S.STOPPING)
    assert stopping["finished_at"] is None and stopping["started_at"] == running["started_at"]
    clock.now += 10
    stopped = store.transition(job_id, S.STOPPING, S.STOPPED, exit_code=0)
    assert stopped["finished_at"] == store.now() and stopped["finished_at"] > stopped["started_at"]
    assert stopped["exit_code"] == 0
    clock.now += 10
    requeued = store.transition(job_id, S.STOPPED, S.QUEUED, "resume", error=None)
    assert requeued["finished_at"] is None and requeued["queued_at"] == store.now()
    clock.now += 10
    again = store.transition(job_id, S.QUEUED, S.RUNNING, attempt=2)
    assert again["started_at"] == store.now() and again["started_at"] > running["started_at"]
    clock.now += 10
    failed = store.transition(job_id, S.RUNNING, S.FAILED, error="boom", error_kind="runtime")
    assert failed["finished_at"] == store.now() and (failed["error"], failed["error_kind"]) == ("boom", "runtime")
    history = store.history(job_id)
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "queued"), ("queued", "running"), ("running", "stopping"), ("stopping", "stopped"),
        ("stopped", "queued"), ("queued", "running"), ("running", "failed")]
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    assert history[4]["reason"] == "resume"


def test_transition_and_update_refuse_unknown_or_protected_fields(store: SqliteStore, tmp_path: Path) -> None:
    job_id = new_job(store, tmp_path)
    for bad in ({"status": "running"}, {"seq": 7}, {"created_at": "x"}, {"nonsense": 1}):
        with pytest.raises(ValueError):
            store.transition(job_id, S.QUEUED, S.RUNNING, **bad)
        with pytest.raises(ValueError):
            store.update_job(job_id, **bad)
    assert store.get_job(job_id)["status"] == "queued"
    store.update_job(job_id, step=3, total_steps=10)
    assert (store.get_job(job_id)["step"], store.get_job(job_id)["total_steps"]) == (3, 10)


def test_list_jobs_newest_first_with_filter_and_paging(store: SqliteStore, tmp_path: Path) -> None:
    ids = [new_job(store, tmp_path) for _ in range(5)]
    store.transition(ids[1], S.QUEUED, S.RUNNING)
    rows, total = store.list_jobs()
    assert total == 5 and [r["job_id"] for r in rows] == ids[::-1]
    page, total = store.list_jobs(limit=2, offset=1)
    assert total == 5 and [r["job_id"] for r in page] == [ids[3], ids[2]]
    queued, total = store.list_jobs(status="queued")
    assert total == 4 and ids[1] not in [r["job_id"] for r in queued]
    assert store.list_jobs(status="failed") == ([], 0)
    assert store.counts() == {"queued": 4, "running": 1}
    assert [j["job_id"] for j in store.jobs_with_status([S.QUEUED])] == [i for i in ids if i != ids[1]]
    assert [j["job_id"] for j in store.jobs_with_status([S.QUEUED], oldest_first=False)][0] == ids[4]


def test_delete_refuses_active_jobs_and_removes_finished_ones(store: SqliteStore, tmp_path: Path) -> None:
    allowed = [*FINISHED, S.QUEUED]
    for status in (S.RUNNING, S.STOPPING):
        job_id = at(store, tmp_path, status)
        with pytest.raises(InvalidTransition) as info:
            store.delete_job(job_id, allowed)
        assert status.value in str(info.value)
        assert store.get_job(job_id)["status"] == status.value
    for status in (*FINISHED, S.QUEUED):
        job_id = at(store, tmp_path, status)
        store.ingest(job_id, [{"kind": "train", "step": 1, "loss": 1.0}], offset=10)
        store.delete_job(job_id, allowed)
        with pytest.raises(JobNotFound):
            store.get_job(job_id)
        assert store.history(job_id) == []
        assert store.metrics(job_id) == []  # ON DELETE CASCADE
    assert store.integrity_ok()


# ---- metrics ------------------------------------------------------------------------------------------------------
def test_ingest_upserts_on_job_kind_step_and_filters(store: SqliteStore, tmp_path: Path) -> None:
    job_id = at(store, tmp_path, S.RUNNING)
    store.ingest(job_id, [{"kind": "train", "step": s, "loss": 10.0 - s, "attempt": 1} for s in (1, 2, 3)],
                 offset=100, step=3, total_steps=6)
    store.ingest(job_id, [{"kind": "eval", "step": 3, "eval_loss": 4.5, "attempt": 1}], offset=150)
    # a resumed attempt re-logs step 3: the same (job, kind, step) is replaced, not duplicated
    store.ingest(job_id, [{"kind": "train", "step": 3, "loss": 6.5, "attempt": 2},
                          {"kind": "train", "step": 4, "loss": 6.0, "attempt": 2}], offset=220, step=4)
    points = store.metrics(job_id)
    assert [(p["kind"], p["step"]) for p in points] == [("train", 1), ("train", 2), ("eval", 3), ("train", 3),
                                                         ("train", 4)]
    step3 = [p for p in points if p["kind"] == "train" and p["step"] == 3]
    assert len(step3) == 1 and step3[0]["loss"] == 6.5 and step3[0]["attempt"] == 2
    assert [p["step"] for p in store.metrics(job_id, since_step=2)] == [3, 3, 4]
    assert [p["step"] for p in store.metrics(job_id, kind="eval")] == [3]
    assert [p["step"] for p in store.metrics(job_id, limit=2)] == [1, 2]
    row = store.get_job(job_id)
    assert (row["events_offset"], row["step"], row["total_steps"]) == (220, 4, 6)
    raw = store.connect().execute("SELECT COUNT(*), MAX(attempt) FROM metrics WHERE job_id = ?", (job_id,)).fetchone()
    assert tuple(raw) == (5, 2)


def test_ingest_is_atomic(store: SqliteStore, tmp_path: Path) -> None:
    job_id = at(store, tmp_path, S.RUNNING)
    store.ingest(job_id, [{"kind": "train", "step": 1, "loss": 1.0}], offset=50)
    with pytest.raises(ValueError):
        store.ingest(job_id, [{"kind": "train", "step": 2, "loss": 1.0}], offset=99, status="failed")
    with pytest.raises(KeyError):  # a malformed point rolls the whole batch back, offset included
        store.ingest(job_id, [{"kind": "train", "step": 2, "loss": 1.0}, {"kind": "train"}], offset=99)
    assert [p["step"] for p in store.metrics(job_id)] == [1]
    assert store.get_job(job_id)["events_offset"] == 50


# ---- configs ------------------------------------------------------------------------------------------------------
def test_configs_save_duplicate_overwrite_get_delete(store: SqliteStore, clock: FakeClock) -> None:
    assert store.save_config("cfg-1", "my run", {"lora_r": 8}) == "cfg-1"
    with pytest.raises(FileExistsError):
        store.save_config("cfg-2", "my run", {"lora_r": 16})
    assert store.get_config("cfg-1")["config_json"] == '{"lora_r": 8}'
    clock.now += 60
    assert store.save_config("cfg-3", "my run", {"lora_r": 32}, overwrite=True) == "cfg-1"  # keeps its id
    saved = store.get_config("my run")  # by name as well as by id
    assert saved is not None and saved["config_id"] == "cfg-1" and '"lora_r": 32' in saved["config_json"]
    assert saved["updated_at"] > saved["created_at"]
    assert store.save_config("cfg-4", "another", {}) == "cfg-4"
    assert [c["name"] for c in store.list_configs()] == ["another", "my run"]
    assert store.get_config("cfg-2") is None and store.get_config("cfg-3") is None
    assert store.delete_config("cfg-1") is True
    assert store.delete_config("cfg-1") is False
    assert store.get_config("cfg-1") is None
    assert [c["config_id"] for c in store.list_configs()] == ["cfg-4"]


SAVE_CONFIG_RACE = ("sft_ui/store.py SqliteStore.save_config checks for the name with a SELECT and INSERTs in a "
                    "separate autocommit statement (no transaction): a writer that saves the same name in between "
                    "makes the INSERT raise sqlite3.IntegrityError (UNIQUE configs.name) instead of "
                    "FileExistsError, so concurrent POST /api/sft/configs answer 500 instead of 409")


def test_save_config_with_a_concurrent_writer_of_the_same_name_raises_file_exists(tmp_path: Path) -> None:
    """Another connection saves the same name right after save_config's existence check."""
    path = tmp_path / "sft_ui.db"
    SqliteStore(path).close()
    blocked: list[bool] = []

    def other_writer() -> None:
        raw = sqlite3.connect(path, timeout=0.5, isolation_level=None)
        try:
            raw.execute("INSERT INTO configs (config_id, name, config_json, created_at, updated_at) "
                        "VALUES ('cfg-other', 'shared', '{}', 'now', 'now')")
            blocked.append(False)
        except sqlite3.OperationalError:  # a save_config that holds a write transaction keeps it out
            blocked.append(True)
        finally:
            raw.close()

    class Interleaved(sqlite3.Connection):
        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:  # type: ignore[override]
            cursor = super().execute(sql, *args)
            if sql.startswith("SELECT config_id FROM configs WHERE name") and not blocked:
                thread = threading.Thread(target=other_writer)
                thread.start()
                thread.join(30)
            return cursor

    store = SqliteStore(path)
    store.close()
    store._local.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, factory=Interleaved)
    store._local.conn.row_factory = sqlite3.Row
    try:
        result: str | BaseException = store.save_config("cfg-mine", "shared", {"lora_r": 4})
    except FileExistsError as exc:
        result = exc
    assert blocked, "the interleaved writer did not run"
    if blocked[0]:  # serialised: ours went first and won
        assert result == "cfg-mine"
    else:  # the other writer won between the check and the insert: ours must be told the name exists
        assert isinstance(result, FileExistsError)
        assert store.get_config("shared")["config_id"] == "cfg-other"
    store.close()


def test_concurrent_overwrite_saves_keep_one_row(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sft_ui.db")
    store.save_config("cfg-1", "shared", {"v": 0})
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait(10)
        try:
            store.save_config(f"cfg-x{i}", "shared", {"v": i}, overwrite=True)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert [c["config_id"] for c in store.list_configs()] == ["cfg-1"]
