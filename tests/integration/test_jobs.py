"""JobManager with real worker subprocesses (the embedded tiny model) and fake ones, on a real SQLite file."""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import (
    QUICK_WORKER,
    STUBBORN_WORKER,
    FakeLauncher,
    close_managers,
    group_gone,
    paused,
    read_text,
    tiny_config,
    wait_for,
    write_script,
)

from sft_ui.events import FINAL_DIR, LOG_FILE
from sft_ui.jobs import JobManager
from sft_ui.launchers.local import LocalLauncher
from sft_ui.settings import Settings
from sft_ui.status import InvalidTransition, JobNotFound

RUN_TIMEOUT_S = 240.0
FINISHED = ("succeeded", "failed", "stopped", "interrupted")

MakeManager = Callable[..., JobManager]


@pytest.fixture
def make_manager(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeManager]:
    """Started JobManagers on `workspace`; closed at the end, and every worker they left is killed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    managers: list[JobManager] = []

    def make(max_concurrent: int = 1, stop_grace_s: float = 30.0, launcher: LocalLauncher | None = None
             ) -> JobManager:
        settings = Settings(workspace=workspace, stop_grace_s=stop_grace_s, poll_interval_s=0.1,
                            max_concurrent=max_concurrent)
        manager = JobManager(settings, launcher=launcher)
        manager.start()
        managers.append(manager)
        return manager

    yield make
    close_managers(managers, str(workspace))


def job_of(manager: JobManager, job_id: str) -> dict[str, Any]:
    return manager.get(job_id)


def wait_status(manager: JobManager, job_id: str, statuses: tuple[str, ...] | str,
                timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    wanted = (statuses,) if isinstance(statuses, str) else statuses

    def reached() -> dict[str, Any] | None:
        job = manager.get(job_id)
        if job["status"] in wanted:
            return job
        if job["status"] in FINISHED:  # finished some other way: fail now, with the evidence
            raise AssertionError(f"job {job_id} is {job['status']}, expected {wanted}: {job['error']}\n"
                                 f"{read_text(Path(job['job_dir']) / LOG_FILE)[-3000:]}")
        return None

    return wait_for(reached, timeout, 0.1, lambda: f"job {job_id} to be {wanted} (it is {describe(manager, job_id)})")


def wait_step(manager: JobManager, job_id: str, step: int, timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = manager.get(job_id)
        if job["status"] != "running":
            raise AssertionError(f"job {job_id} is {job['status']} before step {step}: {job['error']}\n"
                                 f"{read_text(Path(job['job_dir']) / LOG_FILE)[-3000:]}")
        return job if job["progress"]["step"] >= step else None

    return wait_for(reached, timeout, 0.1, lambda: f"job {job_id} to reach step {step} ({describe(manager, job_id)})")


def describe(manager: JobManager, job_id: str) -> str:
    job = manager.get(job_id)
    return f"{job['status']} at step {job['progress']['step']}; log tail:\n" + \
        read_text(Path(job["job_dir"]) / LOG_FILE)[-2000:]


def transitions(manager: JobManager, job_id: str) -> list[tuple[str | None, str]]:
    return [(h["from_status"], h["to_status"]) for h in manager.store.history(job_id)]


# ---- real workers -----------------------------------------------------------------------------------------------
def test_real_job_succeeds_with_live_metrics_and_log_tail(make_manager: MakeManager) -> None:
    manager = make_manager()
    job = manager.submit(tiny_config(max_steps=16))
    job_id, job_dir = job["job_id"], Path(job["job_dir"])
    assert job["status"] == "queued" and job["attempt"] == 0

    # metrics arrive while it trains, and since_step filters them; the log is tailed incrementally
    wait_step(manager, job_id, 3)
    with paused(manager.store.get_job(job_id)["pid"]):
        assert manager.get(job_id)["status"] == "running"
        live = manager.metrics(job_id)
        assert live and all(p["kind"] == "train" for p in live)
        assert [p["step"] for p in live] == sorted(p["step"] for p in live)
        later = manager.metrics(job_id, since_step=2)
        assert later and all(p["step"] > 2 for p in later)
        assert {p["step"] for p in live if p["step"] > 2} <= {p["step"] for p in later}
        first = manager.read_log(job_id)
        assert first["text"] and first["next_offset"] == len(first["text"].encode()) and not first["complete"]
        assert first["text"].endswith("\n")
    log_path = job_dir / LOG_FILE
    wait_for(lambda: log_path.stat().st_size > first["next_offset"] and
             log_path.read_bytes()[first["next_offset"]:].count(b"\n") >= 1, RUN_TIMEOUT_S, 0.1, "more log text")
    second = manager.read_log(job_id, first["next_offset"])
    assert second["text"] and second["next_offset"] > first["next_offset"]
    assert (first["text"] + second["text"]).encode() == log_path.read_bytes()[: second["next_offset"]]
    assert first["text"] not in second["text"]

    done = wait_status(manager, job_id, "succeeded")
    assert done["exit_code"] == 0 and done["attempt"] == 1 and done["error"] is None
    assert done["progress"] == {"step": 16, "total_steps": 16, "percent": 100.0, "eta_s": 0}
    assert done["started_at"] is not None and done["finished_at"] >= done["started_at"]
    assert done["final_dir"] == str(job_dir / FINAL_DIR) and (job_dir / FINAL_DIR).is_dir()
    assert any((job_dir / FINAL_DIR).iterdir())
    assert done["latest"]["step"] == 16 and done["info"]["total_steps"] == 16
    points = manager.metrics(job_id)
    assert [p["step"] for p in points if p["kind"] == "train"] == list(range(1, 17))
    assert all(p["attempt"] == 1 and isinstance(p["loss"], float) for p in points)
    assert transitions(manager, job_id) == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    row = manager.store.get_job(job_id)
    assert (row["step"], row["total_steps"], row["end_status"]) == (16, 16, "succeeded")
    assert row["events_offset"] == (job_dir / "events.jsonl").stat().st_size
    whole = manager.read_log(job_id)
    assert whole["complete"] and "saved the result" in whole["text"]

    # a finished job: stop is a no-op, resume is refused, delete removes the row and the folder
    same, message = manager.stop(job_id)
    assert same["status"] == "succeeded" and message.startswith("already succeeded")
    with pytest.raises(InvalidTransition):
        manager.resume(job_id)
    assert manager.get(job_id)["status"] == "succeeded"
    manager.delete(job_id)
    with pytest.raises(JobNotFound):
        manager.get(job_id)
    assert not job_dir.exists()
    assert manager.list() == ([], 0)
    assert manager.store.history(job_id) == [] and manager.store.metrics(job_id) == []


def test_stop_twice_then_resume_continues_from_the_checkpoint(make_manager: MakeManager) -> None:
    manager = make_manager(stop_grace_s=120.0)
    job = manager.submit(tiny_config(max_steps=14))
    job_id, job_dir = job["job_id"], Path(job["job_dir"])
    wait_step(manager, job_id, 3)

    with paused(manager.store.get_job(job_id)["pid"]):  # SIGTERM stays pending until it runs again
        stopping, message = manager.stop(job_id)
        assert stopping["status"] == "stopping" and message.startswith("stopping")
        again, message2 = manager.stop(job_id)  # idempotent: no second SIGTERM, no second transition
        assert again["status"] == "stopping" and message2 == "already stopping"
    stopped = wait_status(manager, job_id, "stopped")
    assert stopped["resumable"] and stopped["error"] is None and stopped["exit_code"] == 0
    assert transitions(manager, job_id) == [(None, "queued"), ("queued", "running"), ("running", "stopping"),
                                            ("stopping", "stopped")]
    assert stopped["checkpoints"], f"no checkpoint after a stop:\n{describe(manager, job_id)}"
    checkpoint_step = stopped["checkpoints"][-1]
    assert checkpoint_step == stopped["progress"]["step"] and 3 <= checkpoint_step < 14
    assert manager.stop(job_id)[1].startswith("already stopped")
    assert max(p["step"] for p in manager.metrics(job_id)) == checkpoint_step

    resumed = manager.resume(job_id)  # launched at once; the worker then needs seconds to import torch
    assert resumed["status"] == "running" and resumed["attempt"] == 2 and resumed["error"] is None
    with pytest.raises(InvalidTransition):  # resume/delete of an active job are refused, and change nothing
        manager.resume(job_id)
    with pytest.raises(InvalidTransition):
        manager.delete(job_id)
    assert job_dir.is_dir() and manager.get(job_id)["attempt"] == 2

    done = wait_status(manager, job_id, "succeeded")
    assert done["attempt"] == 2 and done["progress"]["step"] == 14 and done["final_dir"]
    second = [p for p in manager.metrics(job_id) if p["attempt"] == 2]
    assert second and min(p["step"] for p in second) == checkpoint_step + 1
    assert [p["step"] for p in manager.metrics(job_id)] == list(range(1, 15))
    assert done["info"]["resumed_from_step"] == checkpoint_step
    assert transitions(manager, job_id)[4:] == [("stopped", "queued"), ("queued", "running"),
                                                ("running", "succeeded")]
    assert read_text(job_dir / LOG_FILE).count("training:") == 2  # both attempts append to one log
    with pytest.raises(InvalidTransition):
        manager.resume(job_id)


def test_kill_9_of_a_real_worker_fails_the_job_with_log_lines(make_manager: MakeManager) -> None:
    manager = make_manager()
    job = manager.submit(tiny_config(max_steps=200))
    job_id = job["job_id"]
    wait_step(manager, job_id, 2)
    pid = manager.store.get_job(job_id)["pid"]
    assert pid and psutil.Process(pid).cmdline()[1:3] == ["-m", "sft_ui.worker"]
    os.kill(pid, signal.SIGKILL)
    failed = wait_status(manager, job_id, "failed", timeout=60)
    assert failed["error_kind"] == "killed" and failed["exit_code"] == -signal.SIGKILL
    assert "SIGKILL" in failed["error"]
    assert "last lines of train.log" in failed["error"] and re.search(r"step \d+/200 loss", failed["error"])
    assert failed["resumable"] and failed["finished_at"]
    assert transitions(manager, job_id)[-1] == ("running", "failed")
    assert group_gone(pid)


def group_members(pgid: int) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                found.append(f"{proc.pid} {proc.info['status']} {proc.info['cmdline']}")
        except (psutil.Error, ProcessLookupError):
            continue
    return found


# ---- fake workers -------------------------------------------------------------------------------------------------
def test_unknown_job_ids_raise_job_not_found(make_manager: MakeManager) -> None:
    manager = make_manager()
    for call in (manager.stop, manager.resume, manager.delete, manager.get, manager.metrics, manager.read_log):
        with pytest.raises(JobNotFound):
            call("20260101-000000-abcdef")


def test_sigterm_ignoring_worker_and_its_group_are_killed_after_the_grace(
        make_manager: MakeManager, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sft_ui.jobs")
    launcher = FakeLauncher(tmp_path, write_script(tmp_path, "stubborn.py", STUBBORN_WORKER))
    manager = make_manager(stop_grace_s=2.0, launcher=launcher)
    job = manager.submit(tiny_config())
    job_id, job_dir = job["job_id"], Path(job["job_dir"])
    wait_step(manager, job_id, 2, timeout=60)
    pid = manager.store.get_job(job_id)["pid"]
    child_pid = int(wait_for(lambda: read_text(job_dir / "child.pid"), 30, 0.1, "the child's pid"))
    assert os.getpgid(child_pid) == pid  # the child lives in the worker's process group

    _, message = manager.stop(job_id)
    assert message.startswith("stopping")
    assert manager.get(job_id)["status"] == "stopping"
    stopped = wait_status(manager, job_id, "stopped", timeout=60)
    assert stopped["exit_code"] == -signal.SIGKILL
    # SIGKILL is sent to the whole group; its members may take a moment to be reaped by init
    wait_for(lambda: group_gone(pid), 30, 0.05, lambda: f"process group {pid} to be gone: {group_members(pid)}")
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not psutil.pid_exists(child_pid)
    assert any("ignored SIGTERM" in r.getMessage() for r in caplog.records)
    assert transitions(manager, job_id)[-2:] == [("running", "stopping"), ("stopping", "stopped")]


def test_stop_while_queued_never_starts_a_process(make_manager: MakeManager, tmp_path: Path) -> None:
    launcher = FakeLauncher(tmp_path, write_script(tmp_path, "quick.py", QUICK_WORKER),
                            env={"FAKE_STEPS": "100000", "FAKE_STEP_S": "0.1"})
    manager = make_manager(max_concurrent=1, stop_grace_s=10.0, launcher=launcher)
    first = manager.submit(tiny_config(name="long"))
    second = manager.submit(tiny_config(name="waiting"))
    wait_step(manager, first["job_id"], 1, timeout=60)
    assert manager.get(second["job_id"])["status"] == "queued"

    stopped, message = manager.stop(second["job_id"])
    assert stopped["status"] == "stopped" and message == "stopped before it started"
    assert manager.stop(second["job_id"])[1].startswith("already stopped")

    manager.stop(first["job_id"])
    wait_status(manager, first["job_id"], "stopped", timeout=60)
    time.sleep(1.0)  # ten ticks with a free slot: a job wrongly left queued would have been launched by now
    row = manager.store.get_job(second["job_id"])
    assert row["status"] == "stopped" and row["pid"] is None and row["attempt"] == 0 and row["started_at"] is None
    second_dir = Path(row["job_dir"])
    assert not (second_dir / LOG_FILE).exists() and not (second_dir / "events.jsonl").exists()
    assert [d for d, _ in launcher.started] == [Path(first["job_dir"])]
    assert transitions(manager, second["job_id"]) == [(None, "queued"), ("queued", "stopped")]


def test_concurrency_limit_one_runs_jobs_one_at_a_time_in_order(make_manager: MakeManager, tmp_path: Path) -> None:
    launcher = FakeLauncher(tmp_path, write_script(tmp_path, "quick.py", QUICK_WORKER),
                            env={"FAKE_STEPS": "3", "FAKE_STEP_S": "0.15"})
    manager = make_manager(max_concurrent=1, launcher=launcher)
    ids = [manager.submit(tiny_config(name=f"job {i}"))["job_id"] for i in range(5)]

    most_running = 0

    def all_done() -> bool:
        nonlocal most_running
        counts = manager.counts()
        most_running = max(most_running, counts.get("running", 0) + counts.get("stopping", 0))
        return counts.get("succeeded", 0) == 5

    wait_for(all_done, 120, 0.02, lambda: f"5 jobs to succeed: {manager.counts()}")
    assert most_running == 1

    jobs = [manager.get(i) for i in ids]
    assert all(j["attempt"] == 1 and j["progress"]["step"] == 3 for j in jobs)
    assert [d for d, _ in launcher.started] == [Path(j["job_dir"]) for j in jobs]
    for prev, nxt in zip(jobs, jobs[1:], strict=False):
        assert nxt["started_at"] >= prev["finished_at"]
    # the audit trail, in commit order: each job starts only after the previous one ended
    rows = manager.store.connect().execute(
        "SELECT job_id, to_status FROM transitions WHERE to_status IN ('running', 'succeeded') ORDER BY id"
    ).fetchall()
    expected = [(i, s) for i in ids for s in ("running", "succeeded")]
    assert [(r[0], r[1]) for r in rows] == expected
    for job_id in ids:
        assert [p["step"] for p in manager.metrics(job_id)] == [1, 2, 3]
