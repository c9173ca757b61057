"""Fault injection: SIGKILL of the server and of workers, a full disk, misbehaving workers, corrupt events.

CI runs reduced counts; `pytest --full` runs the full ones (server kills during 20 jobs, 10 worker kills).
The counts line `RELIABILITY faults: ...` lands in test-artifacts/reliability/faults.txt (see README.md).
Known bugs are `xfail(strict=True)` tests whose reason names the file and function at fault.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import httpx
import psutil
import pytest
from helpers import (
    FAKE_PRELUDE,
    QUICK_WORKER,
    STUBBORN_WORKER,
    Server,
    close_managers,
    kill_processes_mentioning,
    read_text,
    server_env,
    tiny_config,
    wait_for,
    write_script,
)

from sft_ui.config import load_yaml
from sft_ui.events import CONFIG_FILE, EVENTS_FILE, LOG_FILE, EventTailer, EventWriter, latest_checkpoint
from sft_ui.jobs import JobManager
from sft_ui.launchers.local import LocalLauncher, WorkerHandle
from sft_ui.settings import load_settings
from sft_ui.store import SqliteStore

SERVER_KILL_JOBS = {False: 4, True: 20}  # CI, --full
WORKER_KILLS = {False: 3, True: 10}
KILLS_PER_JOB = 3
WORKER_KILL_STEPS = 12  # checkpoints at 3, 6, 9, 12
PHASES = ("queued", "starting", "mid-step", "checkpointing", "finishing")  # in the order a job passes them
# Tiny real jobs: ~15 s of imports on this machine, then well under a second a step.
TINY_JOB = {"max_samples": 64, "per_device_train_batch_size": 8, "max_length": 64, "logging_steps": 1,
            "save_steps": 3}
PHASE_TIMEOUT_S = 150.0
FINISH_TIMEOUT_S = 300.0
FINISHED = ("succeeded", "failed", "stopped", "interrupted")
STOP_GRACE_S = 2.0
FLOOD_MB = 50


# ---- what a job's folder says about it (read by the test, independently of the server) -----------------------
@dataclass
class Disk:
    launched: bool  # train.log exists: a worker was started
    started: bool  # a 'start' event: imports done, training began
    step: int
    checkpoints: tuple[int, ...]  # complete ones (trainer_state.json written)
    partial: tuple[int, ...]  # checkpoint folders being written (or left half-written by a kill)
    ended: bool  # an 'end' event
    final: bool  # final/ exists

    def brief(self) -> str:
        return (f"launched={self.launched} started={self.started} step={self.step} ckpts={list(self.checkpoints)}"
                f" partial={list(self.partial)} ended={self.ended} final={self.final}")


def read_events(job_dir: Path) -> list[dict[str, Any]]:
    events = []
    for line in read_text(job_dir / EVENTS_FILE).splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(event, dict):
            events.append(event)
    return events


def disk_state(job_dir: Path, attempt: int | None = None) -> Disk:
    events = [e for e in read_events(job_dir) if attempt is None or e.get("attempt") == attempt]
    complete, partial = [], []
    for path in job_dir.glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if path.is_dir() and suffix.isdigit():
            (complete if (path / "trainer_state.json").exists() else partial).append(int(suffix))
    steps = [int(e["step"]) for e in events if e.get("type") == "log" and isinstance(e.get("step"), int)]
    return Disk(launched=(job_dir / LOG_FILE).exists(), started=any(e.get("type") == "start" for e in events),
                step=max(steps, default=0), checkpoints=tuple(sorted(complete)), partial=tuple(sorted(partial)),
                ended=any(e.get("type") == "end" for e in events), final=(job_dir / "final").is_dir())


def poll_until(check: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll `check` every `interval` s; True as soon as it holds, False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


# ---- REST helpers ---------------------------------------------------------------------------------------------
def submit(client: httpx.Client, preset: str = "tiny-lora", **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/sft/train", json={"config_id": preset, "overrides": {**TINY_JOB, **overrides}})
    assert response.status_code == 201, response.text
    return response.json()


def all_jobs(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.get("/api/sft/jobs", params={"limit": 500})
    assert response.status_code == 200, response.text
    return response.json()["jobs"]


def wait_jobs_finished(server: Server, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    with server.client() as client:
        def done() -> dict[str, dict[str, Any]] | None:
            jobs = {j["job_id"]: j for j in all_jobs(client)}
            return jobs if all(jobs[i]["status"] in FINISHED for i in ids) else None

        def describe() -> str:
            return ", ".join(f"{j['job_id']}={j['status']}@{j['progress']['step']}" for j in all_jobs(client))

        return wait_for(done, timeout, 0.5, lambda: f"every job to finish ({describe()})")


# ---- 1. SIGKILL of the server at random moments ----------------------------------------------------------------
def plan_server_kills(rng: Random, n_jobs: int) -> list[tuple[int, str]]:
    """(job index, phase) for each kill: every phase at least once, kills spread over the jobs in order."""
    n_kills = max(n_jobs, len(PHASES))
    phases = [PHASES[i % len(PHASES)] for i in range(n_kills)]
    rng.shuffle(phases)
    targets = [k * n_jobs // n_kills for k in range(n_kills)]
    plan = []
    for job in sorted(set(targets)):
        mine = sorted((p for t, p in zip(targets, phases, strict=True) if t == job), key=PHASES.index)
        plan += [(job, p) for p in mine]
    return plan


def reach_server_kill_phase(phase: str, dirs: list[Path], target: int, rng: Random) -> str:
    """Wait until job `target` is in `phase` (read from its folder) and return a label of what was hit."""
    job_dir = dirs[target]
    if phase == "queued":  # the moment the slot frees and the scheduler launches the next queued job
        if target > 0:
            poll_until(lambda: disk_state(dirs[target - 1]).ended, PHASE_TIMEOUT_S)
        time.sleep(rng.uniform(0.0, 0.3))
        # job 0 launches on submission: its 'queued' kill lands right after the others were queued
        waiting = dirs[target + 1] if target == 0 and len(dirs) > 1 else job_dir
        hit = not disk_state(waiting).launched
    elif phase == "starting":  # worker launched, still importing torch
        poll_until(lambda: disk_state(job_dir).launched, PHASE_TIMEOUT_S)
        time.sleep(rng.uniform(0.0, 2.0))
        state = disk_state(job_dir)
        hit = state.launched and not state.started
    elif phase == "mid-step":
        poll_until(lambda: disk_state(job_dir).step >= 1 or disk_state(job_dir).ended, PHASE_TIMEOUT_S)
        time.sleep(rng.uniform(0.0, 0.5))
        state = disk_state(job_dir)
        hit = state.step >= 1 and not state.ended
    elif phase == "checkpointing":
        before = disk_state(job_dir)

        def saving() -> bool:
            state = disk_state(job_dir)
            return state.partial != before.partial or state.checkpoints != before.checkpoints or state.ended

        poll_until(saving, PHASE_TIMEOUT_S)
        hit = not disk_state(job_dir).ended
    else:  # finishing: final/ being written, the end event, exit.json
        poll_until(lambda: disk_state(job_dir).final or disk_state(job_dir).ended, PHASE_TIMEOUT_S)
        hit = True
    return phase if hit else f"{phase}(late)"


def test_server_sigkill_at_random_moments_loses_no_job(start_server: Callable[..., Server], workspace: Path,
                                                        full_run: bool, rng: Random, suite_counts: Any,
                                                        audit: Any) -> None:
    n_jobs = SERVER_KILL_JOBS[full_run]
    env = {"SFT_UI_MAX_CONCURRENT": "1", "SFT_UI_STOP_GRACE_S": "10"}
    server = start_server(env)
    max_steps = [rng.randint(5, 15) for _ in range(n_jobs)]
    with server.client() as client:
        submitted = [submit(client, max_steps=s, max_samples=32, max_length=32, name=f"server-kill-{i}")
                     for i, s in enumerate(max_steps)]
    suite_counts.add(jobs=n_jobs)
    ids = [j["job_id"] for j in submitted]
    dirs = [Path(j["job_dir"]) for j in submitted]

    kills: list[str] = []
    for number, (target, phase) in enumerate(plan_server_kills(rng, n_jobs), start=1):
        label = reach_server_kill_phase(phase, dirs, target, rng)
        state = disk_state(dirs[target])
        down = time.monotonic()
        server.kill()  # SIGKILL, the server only: its workers live in their own sessions
        suite_counts.add(injected=1, server_kills=1)
        server = start_server(env)
        down = time.monotonic() - down
        with server.client() as client:
            after = client.get(f"/api/sft/jobs/{ids[target]}").json()
        kills.append(f"kill {number}: job {target} ({ids[target]}) at {label}: {state.brief()}"
                     f" -> back in {down:.1f} s: {after['status']}@{after['progress']['step']}")
    print("\n" + "\n".join(kills))

    finished = wait_jobs_finished(server, ids, FINISH_TIMEOUT_S + 60 * n_jobs)
    resumed = []
    with server.client() as client:
        for job_id in ids:
            if finished[job_id]["status"] != "succeeded":
                assert finished[job_id]["status"] in ("interrupted", "failed"), finished[job_id]
                resumed.append(f"{job_id}: {finished[job_id]['status']} ({finished[job_id]['error_kind']})")
                response = client.post(f"/api/sft/jobs/{job_id}/resume")
                assert response.status_code == 200, response.text
    print(f"resumed after the kills: {resumed or 'none'}")
    suite_counts.add(server_kill_resumes=len(resumed))
    finished = wait_jobs_finished(server, ids, FINISH_TIMEOUT_S)
    bad = {i: (j["status"], j["error"]) for i, j in finished.items() if i in ids and j["status"] != "succeeded"}
    assert not bad, f"jobs not succeeded after one resume: {bad}"

    with server.client() as client:
        listed = [j["job_id"] for j in all_jobs(client)]
        metric_steps = {i: sorted({p["step"] for p in client.get(f"/api/sft/jobs/{i}/metrics").json()["points"]
                                   if p["kind"] == "train"}) for i in ids}
    assert sorted(listed) == sorted(ids) and len(set(listed)) == len(listed), (listed, ids)
    for job_id, steps in zip(ids, max_steps, strict=True):
        assert metric_steps[job_id] == list(range(1, steps + 1)), f"{job_id}: metric steps {metric_steps[job_id]}"

    server.kill()
    db = workspace / "sft_ui.db"
    assert audit.integrity(db) == "ok"
    rows = audit.jobs(db)
    assert sorted(r["job_id"] for r in rows) == sorted(ids) and len(rows) == n_jobs
    assert not audit.illegal_transitions(db)
    for row in rows:  # every attempt launched one worker: no double start across restarts
        starts = [e["attempt"] for e in read_events(Path(row["job_dir"])) if e.get("type") == "start"]
        assert len(starts) == len(set(starts)) and len(starts) <= row["attempt"], (row["job_id"], starts)
        if not any(row["job_id"] in r for r in resumed):
            assert row["attempt"] == 1, f"{row['job_id']} was launched {row['attempt']} times without a resume"
    left = audit.wait_no_processes(str(workspace))
    assert not left, f"orphan workers: {[(p.pid, p.cmdline()) for p in left]}"


# ---- in-process managers -------------------------------------------------------------------------------------
MakeManager = Callable[..., JobManager]


@pytest.fixture
def make_manager(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeManager]:
    """Started JobManagers on `workspace`, settings from SFT_UI_* variables; closed and cleaned up at the end."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    managers: list[JobManager] = []

    def make(launcher: LocalLauncher | None = None, store: SqliteStore | None = None, **env: str) -> JobManager:
        settings = load_settings({"SFT_UI_WORKSPACE": str(workspace), **env}).with_overrides(poll_interval_s=0.1)
        manager = JobManager(settings, store=store, launcher=launcher)
        manager.start()
        managers.append(manager)
        return manager

    yield make
    close_managers(managers, str(tmp_path))


def wait_row(manager: JobManager, job_id: str, check: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = FINISH_TIMEOUT_S) -> dict[str, Any]:
    def describe() -> str:
        row = manager.store.get_job(job_id)
        return (f"job {job_id} {what}; it is {row['status']} (attempt {row['attempt']}, step {row['step']}): "
                f"{row['error']}\n" + read_text(Path(row["job_dir"]) / LOG_FILE)[-2000:])

    return wait_for(lambda: (lambda r: r if check(r) else None)(manager.store.get_job(job_id)), timeout, 0.05,
                    describe)


# ---- 2. SIGKILL of the worker ------------------------------------------------------------------------------------
def reach_worker_kill_phase(phase: str, job_dir: Path, attempt: int, rng: Random) -> str:
    resumed_from = max(disk_state(job_dir).checkpoints, default=0)
    if phase == "starting":  # importing torch: no start event of this attempt yet
        time.sleep(rng.uniform(0.3, 5.0))
        state = disk_state(job_dir, attempt)
        return "missed" if state.ended else phase if not state.started else f"{phase}(late)"
    if phase == "mid-step":
        poll_until(lambda: (lambda s: s.step > resumed_from or s.ended)(disk_state(job_dir, attempt)), PHASE_TIMEOUT_S)
        time.sleep(rng.uniform(0.0, 0.5))
    else:  # checkpointing: a checkpoint folder of this attempt appears or completes
        before = disk_state(job_dir)

        def saving() -> bool:
            state = disk_state(job_dir, attempt)
            return state.ended or (state.partial, state.checkpoints) != (before.partial, before.checkpoints)

        poll_until(saving, PHASE_TIMEOUT_S)
    return "missed" if disk_state(job_dir, attempt).ended else phase


def test_worker_sigkill_fails_the_job_with_its_log_tail_and_resume_succeeds(
        make_manager: MakeManager, full_run: bool, rng: Random, suite_counts: Any) -> None:
    manager = make_manager(SFT_UI_MAX_CONCURRENT="1", SFT_UI_STOP_GRACE_S="10")
    target, kills, jobs, notes, last_pid = WORKER_KILLS[full_run], 0, 0, [], None
    while kills < target and jobs < target + 2:
        job = manager.submit(tiny_config(**TINY_JOB, max_steps=WORKER_KILL_STEPS, name=f"worker-kill-{jobs}"))
        job_id, job_dir = job["job_id"], Path(job["job_dir"])
        jobs += 1
        suite_counts.add(jobs=1)
        phases = [rng.choice(("starting", "mid-step", "checkpointing")) for _ in range(min(KILLS_PER_JOB,
                                                                                           target - kills))]
        for attempt, phase in enumerate(phases, start=1):
            row = wait_row(manager, job_id, lambda r, a=attempt, old=last_pid: r["attempt"] == a
                           and r["status"] == "running" and r["pid"] not in (None, old), f"to run attempt {attempt}")
            last_pid = row["pid"]
            label = reach_worker_kill_phase(phase, job_dir, attempt, rng)
            if label == "missed":
                notes.append(f"{job_id} attempt {attempt}: finished before the {phase} kill")
                break
            state = disk_state(job_dir, attempt)
            os.kill(row["pid"], signal.SIGKILL)
            kills += 1
            suite_counts.add(injected=1, worker_kills=1)
            failed = wait_row(manager, job_id, lambda r: r["status"] in FINISHED, "to settle after SIGKILL", 60)
            notes.append(f"{job_id} attempt {attempt}: SIGKILL at {label} ({state.brief()}) -> {failed['status']}")
            assert failed["status"] == "failed", failed
            assert failed["error_kind"] == "killed" and failed["exit_code"] == -signal.SIGKILL, failed
            assert "killed by signal SIGKILL" in failed["error"], failed["error"]
            log_lines = [line.strip() for line in read_text(job_dir / LOG_FILE).splitlines() if line.strip()]
            if log_lines:
                assert "--- last lines of train.log ---" in failed["error"], failed["error"]
                assert log_lines[-1] in failed["error"], (log_lines[-1], failed["error"])
            checkpoint = latest_checkpoint(job_dir)
            expected_from = int(checkpoint.name.split("-")[1]) if checkpoint else None
            manager.resume(job_id)

            def next_start(a: int = attempt + 1, d: Path = job_dir, i: str = job_id) -> dict[str, Any] | None:
                starts = [e for e in read_events(d) if e.get("type") == "start" and e.get("attempt") == a]
                if starts:
                    return starts[0]
                row = manager.store.get_job(i)
                assert row["status"] not in FINISHED, f"attempt {a} ended before training: {row['error']}"
                return None

            start = wait_for(next_start, PHASE_TIMEOUT_S, 0.1, f"attempt {attempt + 1} of {job_id} to start")
            assert start.get("resumed_from_step") == expected_from, (start, expected_from)
        done = wait_row(manager, job_id, lambda r: r["status"] in FINISHED, "to finish")
        assert done["status"] == "succeeded", done["error"]
        view = manager.get(job_id)
        assert view["progress"]["step"] == WORKER_KILL_STEPS and view["final_dir"], view
        steps = sorted({p["step"] for p in manager.metrics(job_id) if p["kind"] == "train"})
        assert steps == list(range(1, WORKER_KILL_STEPS + 1)), steps
    print("\n" + "\n".join(notes))
    assert kills == target, f"only {kills} of {target} kills landed while a worker trained: {notes}"


# ---- 3. a full disk while checkpointing --------------------------------------------------------------------------
@dataclass
class DiskFullRun:
    variant: str
    job: dict[str, Any]  # the job as the server shows it some seconds after the worker ended
    events: list[dict[str, Any]]  # what the worker itself wrote
    health_errors: list[str]  # /health calls that failed while the disk was full
    health_calls: int
    integrity: str
    server_log: str
    after_freeing: dict[str, Any] | None = None  # the job once space was freed (whole-workspace variant)


def _mount_tmpfs(where: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the full-disk test cannot run here")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip() or done.returncode}")


def _unmount(where: Path) -> None:
    for args in (["umount", str(where)], ["umount", "-l", str(where)]):
        if subprocess.run(args, capture_output=True, timeout=30).returncode == 0:
            return


@pytest.fixture(scope="module")
def disk_full(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[dict[str, DiskFullRun]]:
    """Two servers at once, each training a full fine-tune with save_steps=1 into a 3 MB tmpfs:
    'jobs-on-tmpfs' (workspace on disk, jobs/ a symlink into the tmpfs: the database has room) and
    'workspace-on-tmpfs' (the database fills up too). models/ always points at the shared cache on disk."""
    root = tmp_path_factory.mktemp("disk-full")
    mounts: list[Path] = []
    servers: dict[str, Server] = {}
    workspaces: dict[str, Path] = {}
    try:
        for variant in ("jobs-on-tmpfs", "workspace-on-tmpfs"):
            mount = root / f"{variant}-tmpfs"
            _mount_tmpfs(mount)
            mounts.append(mount)
            if variant == "jobs-on-tmpfs":
                ws = root / variant
                ws.mkdir()
                (ws / "jobs").symlink_to(mount, target_is_directory=True)
            else:
                ws = mount
            (ws / "models").symlink_to(models_cache, target_is_directory=True)
            workspaces[variant] = ws
            servers[variant] = Server(ws, server_env(ws, SFT_UI_STOP_GRACE_S="5"), root / f"{variant}.log")
        for server in servers.values():
            server.start()
        job_ids = {}
        for variant, server in servers.items():
            with server.client() as client:
                job_ids[variant] = submit(client, "tiny-full", max_steps=6, save_steps=1, max_length=64,
                                          name=f"disk-full-{variant}")["job_id"]
        yield _watch_disk_full(servers, workspaces, job_ids)
    finally:
        for server in servers.values():
            try:
                server.kill()
            except Exception:  # noqa: BLE001 - unmount no matter what
                pass
        kill_processes_mentioning(str(root))
        for mount in mounts:
            _unmount(mount)


def _watch_disk_full(servers: dict[str, Server], workspaces: dict[str, Path],
                     job_ids: dict[str, str]) -> dict[str, DiskFullRun]:
    health: dict[str, list[str]] = {v: [] for v in servers}
    calls = dict.fromkeys(servers, 0)
    worker_gone: dict[str, float] = {}
    seen_alive = dict.fromkeys(servers, False)
    jobs: dict[str, dict[str, Any]] = {}
    job_dirs = {v: workspaces[v] / "jobs" / job_ids[v] for v in servers}
    deadline = time.monotonic() + FINISH_TIMEOUT_S
    clients = {v: s.client(timeout=10) for v, s in servers.items()}
    try:
        while time.monotonic() < deadline and len(jobs) < len(servers):
            for variant, client in clients.items():
                if variant in jobs:
                    continue
                calls[variant] += 1
                try:
                    response = client.get("/api/sft/health")
                    if response.status_code != 200:
                        health[variant].append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    health[variant].append(repr(exc))
                job = client.get(f"/api/sft/jobs/{job_ids[variant]}").json()
                if job["status"] in FINISHED:
                    jobs[variant] = job
                    continue
                alive = any(job_ids[variant] in " ".join(p.info["cmdline"] or []) and p.info["status"] != "zombie"
                            for p in psutil.process_iter(["cmdline", "status"]))
                seen_alive[variant] = seen_alive[variant] or alive
                if seen_alive[variant] and not alive:
                    worker_gone.setdefault(variant, time.monotonic())
                    if time.monotonic() - worker_gone[variant] > 6.0:  # 24 ticks: it should have settled
                        jobs[variant] = job
            time.sleep(0.25)
        after_freeing = None
        if jobs.get("workspace-on-tmpfs", {}).get("status") == "running":
            for ckpt in job_dirs["workspace-on-tmpfs"].glob("checkpoint-*"):  # free the space: does it settle?
                shutil.rmtree(ckpt, ignore_errors=True)
            with servers["workspace-on-tmpfs"].client() as client:
                after_freeing = wait_for(
                    lambda: (lambda j: j if j["status"] in FINISHED else None)(
                        client.get(f"/api/sft/jobs/{job_ids['workspace-on-tmpfs']}").json()), 30, 0.25,
                    "the job to settle once space was freed")
    finally:
        for client in clients.values():
            client.close()
    runs = {}
    for variant, server in servers.items():
        assert variant in jobs, f"{variant}: the job neither finished nor lost its worker in time"
        server.kill()
        runs[variant] = DiskFullRun(variant, jobs[variant], read_events(job_dirs[variant]), health[variant],
                                    calls[variant], db_integrity(workspaces[variant] / "sft_ui.db"),
                                    server.log(), after_freeing if variant == "workspace-on-tmpfs" else None)
    return runs


def db_integrity(db: Path) -> str:  # the module-scoped fixture cannot use the function-scoped `audit`
    conn = sqlite3.connect(db, timeout=30)
    try:
        return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())
    finally:
        conn.close()


def test_full_disk_while_checkpointing_fails_the_job_and_the_server_keeps_answering(
        disk_full: dict[str, DiskFullRun], suite_counts: Any) -> None:
    suite_counts.add(injected=2, disk_full=2, jobs=2)
    for run in disk_full.values():
        print(f"\n{run.variant}: job {run.job['status']} ({run.job['error_kind']}): {str(run.job['error'])[:300]!r}"
              f"; worker error events: {[e.get('message', '')[:120] for e in run.events if e['type'] == 'error']}"
              f"; health {run.health_calls - len(run.health_errors)}/{run.health_calls} ok"
              f"; 'database or disk is full' in the server log {run.server_log.count('database or disk is full')}x"
              + (f"; after freeing space: {run.after_freeing['status']} ({run.after_freeing['error_kind']}) "
                 f"{str(run.after_freeing['error'])[:120]!r}" if run.after_freeing else ""))
        assert not run.health_errors, f"{run.variant}: /health failed: {run.health_errors[:5]}"
        assert run.integrity == "ok", f"{run.variant}: {run.integrity}"
    on_disk_db = disk_full["jobs-on-tmpfs"].job
    assert on_disk_db["status"] == "failed", on_disk_db


def test_full_disk_error_says_no_space_left(disk_full: dict[str, DiskFullRun]) -> None:
    job = disk_full["jobs-on-tmpfs"].job
    assert job["status"] == "failed"
    assert job["error_kind"] == "disk_full" and "no space left" in str(job["error"]).lower(), job["error"]


def test_full_disk_with_the_database_on_it_still_settles_the_job(disk_full: dict[str, DiskFullRun]) -> None:
    """While the database's own disk is full nothing can be recorded; the server keeps answering, hides no
    error behind a failed ROLLBACK, loses no event, and settles the job once space is freed."""
    run = disk_full["workspace-on-tmpfs"]
    assert "cannot rollback" not in run.server_log
    assert run.after_freeing is not None and run.after_freeing["status"] == "failed", run.after_freeing


# ---- 4. misbehaving fake workers ------------------------------------------------------------------------------
HANGING_WORKER = FAKE_PRELUDE + """
signal.signal(signal.SIGTERM, lambda *a: print("SIGTERM noted; still loading", flush=True))  # a flag, never read
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", JOB_DIR, "hanging-child"])
with open(os.path.join(JOB_DIR, "child.pid"), "w") as fh:
    fh.write(str(child.pid))
print("loading the model ...", flush=True)
import threading
threading.Event().wait()  # hangs before its first step, forever
"""

FLOODING_WORKER = FAKE_PRELUDE + f"""
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
emit("start", total_steps=100000, pid=os.getpid())
chunk = (("x" * 1023 + "\\n") * 1024).encode()  # 1 MiB of 1 KiB lines
written, step = 0, 0
while not stop:
    step += 1
    if written < {FLOOD_MB} * 2**20:
        os.write(1, chunk)
        written += len(chunk)
        if written >= {FLOOD_MB} * 2**20:
            open(os.path.join(JOB_DIR, "flood.done"), "w").close()
    emit("log", step=step, total_steps=100000, loss=1.0, learning_rate=0.01)
    time.sleep(0.05 if written < {FLOOD_MB} * 2**20 else 0.2)
emit("end", status="stopped", step=step)
write_exit(0, "stopped")
"""


class ScriptLauncher(LocalLauncher):
    """Runs `python SCRIPT JOB_DIR ATTEMPT`, SCRIPT chosen by the job's name (from its config.yaml)."""

    def __init__(self, workspace: Path, scripts: dict[str, Path]):
        super().__init__(workspace)
        self.scripts = scripts

    def start(self, job_dir: Path, resume: bool = False, attempt: int = 1, env: dict[str, str] | None = None,
              argv: list[str] | None = None) -> WorkerHandle:
        name = load_yaml((job_dir / CONFIG_FILE).read_text(encoding="utf-8")).name
        script = self.scripts[name]
        return super().start(job_dir, resume=resume, attempt=attempt, env=env,
                             argv=[sys.executable, str(script), str(job_dir), str(attempt)])


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                found.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def test_stubborn_hanging_and_flooding_workers_are_stopped_within_the_grace(
        make_manager: MakeManager, workspace: Path, tmp_path: Path, suite_counts: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sft_ui.jobs")
    scripts = {name: write_script(tmp_path, f"{name}.py", source) for name, source in
               (("stubborn", STUBBORN_WORKER), ("hanging", HANGING_WORKER), ("flooding", FLOODING_WORKER))}
    manager = make_manager(ScriptLauncher(workspace, scripts), SFT_UI_MAX_CONCURRENT="3",
                           SFT_UI_STOP_GRACE_S=str(STOP_GRACE_S))
    assert manager.settings.stop_grace_s == STOP_GRACE_S and manager.settings.max_concurrent == 3
    ids = {name: manager.submit(tiny_config(name=name))["job_id"] for name in scripts}
    suite_counts.add(injected=3, fake_workers=3, jobs=3)
    rows = {name: wait_row(manager, job_id, lambda r: r["status"] == "running" and r["pid"] is not None,
                           "to run", 60) for name, job_id in ids.items()}
    dirs = {name: Path(row["job_dir"]) for name, row in rows.items()}
    children = {name: int(wait_for(lambda d=dirs[name]: read_text(d / "child.pid"), 60, 0.05, f"{name}'s child"))
                for name in ("stubborn", "hanging")}
    wait_row(manager, ids["stubborn"], lambda r: r["step"] >= 1, "to log a step", 60)

    # While ~50 MB pour into train.log: reads stay bounded and the manager keeps ingesting events.
    flood_log, max_bytes = dirs["flooding"] / LOG_FILE, 256 * 1024
    offset, reads, flood_steps, stubborn_steps = 0, 0, set(), set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and reads < 5000:
        chunk = manager.read_log(ids["flooding"], offset, max_bytes=max_bytes)
        reads += 1
        assert 0 <= chunk["next_offset"] - offset <= max_bytes, (offset, chunk["next_offset"])
        assert len(chunk["text"].encode("utf-8")) <= max_bytes
        offset = chunk["next_offset"]
        flood_steps.add(manager.get(ids["flooding"])["progress"]["step"])
        stubborn_steps.add(manager.get(ids["stubborn"])["progress"]["step"])
        if (dirs["flooding"] / "flood.done").exists() and offset >= flood_log.stat().st_size:
            break
        time.sleep(0.01)
    size = flood_log.stat().st_size
    print(f"\nflood: {size / 2**20:.0f} MiB read back in {reads} bounded reads; steps seen while flooding: "
          f"flooder {len(flood_steps)}, stubborn {len(stubborn_steps)}")
    assert size >= FLOOD_MB * 2**20 and offset >= FLOOD_MB * 2**20, (size, offset)
    assert len(flood_steps) >= 3 and len(stubborn_steps) >= 3, "the manager stopped ingesting during the flood"
    assert all(manager.get(i)["status"] == "running" for i in ids.values())

    pgids = {name: row["pid"] for name, row in rows.items()}
    started = time.monotonic()
    for job_id in ids.values():
        assert manager.stop(job_id)[1].startswith("stopping")
    every_process = list(pgids.values()) + list(children.values())

    def all_gone() -> bool:
        return not any(group_members(pgid) for pgid in pgids.values()) and not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in every_process)

    wait_for(all_gone, STOP_GRACE_S + 10, 0.05,
             lambda: f"every process of the three jobs to end: {[group_members(g) for g in pgids.values()]}")
    elapsed = time.monotonic() - started
    for name, job_id in ids.items():
        wait_row(manager, job_id, lambda r: r["status"] == "stopped", f"({name}) to be stopped", 30)
    print(f"all three jobs' processes ended {elapsed:.1f} s after stop (grace {STOP_GRACE_S:.0f} s)")
    suite_counts.set(fake_stop_s=round(elapsed, 1))
    assert sum("ignored SIGTERM" in r.getMessage() for r in caplog.records) == 2  # stubborn and hanging


# ---- 5. corrupt and truncated event lines ------------------------------------------------------------------------
CORRUPTING_WORKER = FAKE_PRELUDE + """
emit("start", total_steps=6, pid=os.getpid())
for step in (1, 2):
    emit("log", step=step, total_steps=6, loss=1.0 / step, learning_rate=0.01)
with open(os.path.join(JOB_DIR, "events.jsonl"), "ab") as fh:
    fh.write(b"\\x00\\xff\\xfe garbage \\x80\\x81 not json\\n")         # garbage bytes
    fh.write(b'{"type": "log", "step": 3, "loss": 0.5, "learn\\n')      # half a JSON line
    fh.write(b'[1, 2, 3]\\n')                                           # JSON, but not an event
open(os.path.join(JOB_DIR, "corrupt.written"), "w").close()
deadline = time.time() + 120
while not os.path.exists(os.path.join(JOB_DIR, "go")) and time.time() < deadline:
    time.sleep(0.05)
for step in range(3, 7):
    emit("log", step=step, total_steps=6, loss=1.0 / step, learning_rate=0.01)
emit("end", status="succeeded", step=6)
write_exit(0, "succeeded")
"""


def test_corrupt_event_lines_are_skipped_and_later_events_still_ingested(
        make_manager: MakeManager, workspace: Path, tmp_path: Path, suite_counts: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sft_ui.events")
    launcher = ScriptLauncher(workspace, {"corrupt": write_script(tmp_path, "corrupt.py", CORRUPTING_WORKER)})
    manager = make_manager(launcher)
    job_id = manager.submit(tiny_config(name="corrupt"))["job_id"]
    suite_counts.add(injected=3, corrupt_lines=3, jobs=1)
    row = wait_row(manager, job_id, lambda r: r["status"] == "running" and r["step"] == 2, "to reach step 2", 60)
    job_dir = Path(row["job_dir"])
    wait_for(lambda: (job_dir / "corrupt.written").exists(), 60, 0.05, "the corrupt lines")
    tailer = wait_for(lambda: (lambda t: t if t is not None and t.skipped >= 3 else None)(
        manager._tailers.get(job_id)), 30, 0.05, "the tailer to skip the three bad lines")
    assert tailer.skipped == 3 and manager.get(job_id)["progress"]["step"] == 2
    (job_dir / "go").touch()
    done = wait_row(manager, job_id, lambda r: r["status"] in FINISHED, "to finish", 60)
    assert done["status"] == "succeeded", done
    assert manager.get(job_id)["progress"]["step"] == 6
    assert [p["step"] for p in manager.metrics(job_id) if p["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert sum("corrupt event line" in r.getMessage() for r in caplog.records) == 3
    replay = EventTailer(job_dir / EVENTS_FILE)
    assert len(replay.read_new()) == 8 and replay.skipped == 3  # start, 6 logs, end: the same from scratch


def test_event_after_a_torn_last_line_is_not_lost(tmp_path: Path, suite_counts: Any) -> None:
    suite_counts.add(injected=1, corrupt_lines=1)
    path = tmp_path / EVENTS_FILE
    first = EventWriter(path, attempt=1)
    first.emit("start", total_steps=5)
    first.emit("log", step=1, total_steps=5, loss=1.0)
    first.close()
    with path.open("ab") as fh:
        fh.write(b'{"type":"log","time":1.0,"attempt":1,"step":2,"lo')  # the writer died here
    second = EventWriter(path, attempt=2)
    second.emit("start", total_steps=5, resumed_from_step=1)
    second.emit("log", step=2, total_steps=5, loss=0.5)
    second.close()
    tailer = EventTailer(path)
    events = tailer.read_new()
    assert tailer.skipped == 1
    assert [e["type"] for e in events if e["attempt"] == 2] == ["start", "log"]


# ---- 6. a database write that fails while ingesting -------------------------------------------------------------
class FullOnceStore(SqliteStore):
    """SQLite whose ingest of the batch holding the 'end' event fails once, as a full disk makes COMMIT fail."""

    failures = 1

    def ingest(self, job_id: str, points: list[dict[str, Any]], offset: int, **fields: Any) -> None:
        if "end_status" in fields and self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        super().ingest(job_id, points, offset, **fields)


def test_events_survive_a_failed_database_write(make_manager: MakeManager, workspace: Path, tmp_path: Path,
                                                suite_counts: Any) -> None:
    suite_counts.add(injected=1, db_write_failures=1, jobs=1)
    store = FullOnceStore(workspace / "sft_ui.db")
    launcher = ScriptLauncher(workspace, {"quick": write_script(tmp_path, "quick.py", QUICK_WORKER)})
    manager = make_manager(launcher, store)
    job_id = manager.submit(tiny_config(name="quick"))["job_id"]
    done = wait_row(manager, job_id, lambda r: r["status"] in FINISHED, "to finish", 60)
    assert store.failures == 0, "the simulated failure never happened"
    assert done["status"] == "succeeded", (done["status"], done["error_kind"], done["error"])
