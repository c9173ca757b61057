"""JobManager: the queue, start/stop/resume/delete, event ingestion and recovery after a restart.

The manager owns the store and the queue; a launcher owns processes. A background thread ticks a few
times a second: it tails each running job's events into the store, notices exits, enforces stop
deadlines and starts queued jobs up to the concurrency limit. Commands return at once.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import views
from .config import ConfigError, FieldError, JobConfig
from .data import DatasetError, preview, resolve_local
from .events import EVENTS_FILE, LOG_FILE, EventTailer, latest_checkpoint, read_exit, tail_text
from .ingest import digest
from .jobdirs import create_job_dir, new_job_id, remove_job_dir
from .launchers.local import LocalLauncher, WorkerHandle
from .paths import confine_config
from .settings import Settings
from .status import FINISHED, RESUMABLE, ErrorKind, InvalidTransition, JobStatus
from .store import SqliteStore

log = logging.getLogger(__name__)
ACTIVE = (JobStatus.RUNNING, JobStatus.STOPPING)
LOG_TAIL_LINES = 12


class JobManager:
    def __init__(self, settings: Settings, store: SqliteStore | None = None, launcher: LocalLauncher | None = None,
                 clock: Callable[[], float] = time.monotonic, gpus: list[str] | None = None):
        self.settings = settings
        self.store = store or SqliteStore(settings.db_path)
        self.launcher = launcher or LocalLauncher(settings.workspace)
        self.clock = clock
        self.gpus = gpus or []
        self.revision = 0
        self._lock = threading.RLock()
        self._handles: dict[str, WorkerHandle] = {}
        self._tailers: dict[str, EventTailer] = {}
        self._deadlines: dict[str, float] = {}
        self._gpu_of: dict[str, str] = {}
        self._list_cache: dict[tuple[Any, ...], tuple[list[dict[str, Any]], int]] = {}
        self._stop_loop = threading.Event()
        self._thread: threading.Thread | None = None
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)

    # ---- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover first, then serve: reattach live workers, settle dead ones, start the queue."""
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="sft-ui-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching; running workers keep running and are reattached by the next start."""
        self._stop_loop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        last_error, last_logged = "", 0.0
        while not self._stop_loop.wait(self.settings.poll_interval_s):
            try:
                self.tick()
                last_error = ""
            except Exception as exc:  # one bad tick must not end the loop that every job depends on
                text = f"{type(exc).__name__}: {exc}"
                if text != last_error:
                    log.exception("job manager tick failed")
                elif time.monotonic() - last_logged > 30:
                    log.warning("job manager tick still failing: %s", text)
                else:
                    continue
                last_error, last_logged = text, time.monotonic()

    def _bump(self) -> None:
        self.revision += 1

    def touch(self) -> None:
        """Tell pollers that something they show (e.g. the saved configs) changed."""
        self._bump()

    # ---- commands -----------------------------------------------------------------------------------------
    def check_config(self, config: JobConfig) -> JobConfig:
        """Server-side rules on top of JobConfig's own validation; raises ConfigError/DatasetError."""
        if config.trust_remote_code and not self.settings.allow_remote_code:
            raise ConfigError([FieldError("trust_remote_code", "trust_remote_code is refused: start the server "
                                                               "with --allow-remote-code to permit it")])
        config = confine_config(config, self.settings)
        if self.settings.demo:
            steps = self.settings.demo_max_steps
            if config.max_steps < 0 or config.max_steps > steps:
                config = config.model_copy(update={"max_steps": steps})
        if resolve_local(config.dataset_name) is not None:  # local data: check the first rows now
            found = preview(config.dataset_name, config.dataset_format, config.column_mapping, n=1, scan_rows=20,
                            split=config.dataset_train_split)
            if found.errors:
                where = re.match(r".* row (\d+): (.*)", found.errors[0], re.S)
                row, problem = (int(where[1]), where[2]) if where else (None, found.errors[0])
                raise DatasetError(found.source, problem, row, errors=found.errors)
        return config

    def submit(self, config: JobConfig) -> dict[str, Any]:
        config = self.check_config(config)
        job_id = new_job_id()
        job_dir = create_job_dir(self.settings.jobs_dir, job_id, config)
        with self._lock:
            self.store.insert_job(job_id, config.name or job_id, config.to_dict(), str(job_dir))
            submitted = self.get(job_id)  # the answer says 'queued'; the launch below follows at once
            self._bump()
            self._schedule()
        return submitted

    def stop(self, job_id: str) -> tuple[dict[str, Any], str]:
        """Stop a job; idempotent. Returns (job, what happened)."""
        with self._lock:
            job = self.store.get_job(job_id)
            status = JobStatus(job["status"])
            if status == JobStatus.QUEUED:
                self.store.transition(job_id, status, JobStatus.STOPPED, "stopped while queued")
                message = "stopped before it started"
            elif status == JobStatus.RUNNING:
                self.store.transition(job_id, status, JobStatus.STOPPING, "stop requested")
                self._deadlines[job_id] = self.clock() + self.settings.stop_grace_s
                handle = self._handles.get(job_id)
                if handle is not None:
                    self.launcher.terminate(handle)
                message = "stopping: the worker saves a checkpoint and exits"
            elif status == JobStatus.STOPPING:
                message = "already stopping"
            else:
                message = f"already {status.value}: nothing to stop"
            self._bump()
            return self.get(job_id), message

    def resume(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self.store.get_job(job_id)
            status = JobStatus(job["status"])
            if status not in RESUMABLE:
                raise InvalidTransition(job_id, status, JobStatus.QUEUED,
                                        f"job {job_id} is {status.value}: only stopped, failed or interrupted "
                                        "jobs can be resumed")
            self.store.transition(job_id, status, JobStatus.QUEUED, "resume", error=None, error_kind=None,
                                  end_status=None, exit_code=None)
            self._bump()
            self._schedule()
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self.store.delete_job(job_id, [*FINISHED, JobStatus.QUEUED])
            self._tailers.pop(job_id, None)
            remove_job_dir(self.settings.jobs_dir, job_id)
            self._bump()

    # ---- queries --------------------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any]:
        return views.job_view(self.store.get_job(job_id))

    def list(self, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Newest first; answers are reused until the revision moves (pollers ask the same thing often)."""
        key = (self.revision, self.store.version(), status, limit, offset)
        cached = self._list_cache.get(key)
        if cached is not None:
            return cached
        rows, total = self.store.list_jobs(status, limit, offset)
        answer = ([views.job_view(r, with_config=False) for r in rows], total)
        if len(self._list_cache) > 32:
            self._list_cache.clear()  # dict ops are atomic under the GIL; a racing reader just recomputes
        self._list_cache[key] = answer
        return answer

    def metrics(self, job_id: str, since_step: int = -1, limit: int = 100_000) -> list[dict[str, Any]]:
        self.store.get_job(job_id)
        return self.store.metrics(job_id, since_step, limit=limit)

    def read_log(self, job_id: str, offset: int = 0, max_bytes: int = 256 * 1024) -> dict[str, Any]:
        job = self.store.get_job(job_id)
        return views.read_log(Path(job["job_dir"]) / LOG_FILE, offset, max_bytes,
                              JobStatus(job["status"]).is_terminal())

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    # ---- the loop -----------------------------------------------------------------------------------------
    def tick(self) -> None:
        with self._lock:
            for job in self.store.jobs_with_status(ACTIVE):
                self._watch(job)
            self._schedule()

    def _watch(self, job: dict[str, Any]) -> None:
        job_id = job["job_id"]
        handle = self._handles.get(job_id)
        if handle is None:  # reattached rows always have one; anything else is a lost worker
            self._settle(job, None)
            return
        alive = self.launcher.is_alive(handle)
        self._ingest(job)
        if not alive:
            self._settle(self.store.get_job(job_id), handle)
            return
        deadline = self._deadlines.get(job_id)
        if job["status"] == JobStatus.STOPPING.value and deadline is not None and self.clock() > deadline:
            log.warning("job %s ignored SIGTERM for %.0f s: killing its process group", job_id,
                        self.settings.stop_grace_s)
            self.launcher.kill(handle)
            self._deadlines[job_id] = self.clock() + 3600  # killed once; the exit is noticed next tick

    def _ingest(self, job: dict[str, Any]) -> bool:
        job_id = job["job_id"]
        tailer = self._tailers.setdefault(job_id, EventTailer(Path(job["job_dir"]) / EVENTS_FILE,
                                                             int(job["events_offset"] or 0)))
        changed = False
        while True:
            before = tailer.offset
            events = tailer.read_new()
            if not events:
                return changed
            found = digest(events)
            try:
                self.store.ingest(job_id, found.points, tailer.offset, **found.fields)
            except BaseException:
                tailer.offset = before  # not stored: read these events again next tick
                raise
            self._bump()
            changed = True

    def _settle(self, job: dict[str, Any], handle: WorkerHandle | None, recovering: bool = False) -> None:
        """The worker is gone: decide the final status from its end event, exit code and how it went."""
        job_id, job_dir = job["job_id"], Path(job["job_dir"])
        self._ingest(job)
        job = self.store.get_job(job_id)
        if handle is not None:
            code = self.launcher.exit_code(handle, job_dir)
        else:
            code = (read_exit(job_dir) or {}).get("exit_code")
        if handle is not None and self.launcher.group_alive(handle):
            self.launcher.kill(handle)  # nothing of a finished job may outlive it
        status, end = JobStatus(job["status"]), job["end_status"]
        fields: dict[str, Any] = {"exit_code": code, "eta_s": None if end != "succeeded" else 0}
        if end in ("succeeded", "stopped"):
            new = JobStatus(end)
        elif end == "failed":
            new = JobStatus.FAILED
            fields["error"] = job["error"] or self._failure_text(job_dir, code)
        elif status == JobStatus.STOPPING:
            new = JobStatus.STOPPED
        elif recovering or handle is None:
            new = JobStatus.INTERRUPTED
            fields.update(error_kind=ErrorKind.LOST.value,
                          error=_with_tail("the worker ended while the server was not watching", job_dir))
        else:
            new = JobStatus.FAILED
            fields.update(error_kind=ErrorKind.KILLED.value, error=self._failure_text(job_dir, code))
        self.store.transition(job_id, status, new, f"worker exited ({code})", **fields)
        self._forget(job_id)
        self._bump()
        log.info("job %s %s (exit code %s)", job_id, new.value, code)

    @staticmethod
    def _failure_text(job_dir: Path, code: int | None) -> str:
        if code is not None and code < 0:
            try:
                what = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                what = f"killed by signal {-code}"
        else:
            what = f"exit code {code}" if code is not None else "no exit code"
        return _with_tail(f"the worker ended unexpectedly ({what})", job_dir)

    def _forget(self, job_id: str) -> None:
        handle = self._handles.pop(job_id, None)
        if handle is not None:
            self.launcher.forget(handle)
        self._tailers.pop(job_id, None)
        self._deadlines.pop(job_id, None)
        self._gpu_of.pop(job_id, None)

    def _schedule(self) -> None:
        active = len(self.store.jobs_with_status(ACTIVE))
        while active < self.settings.max_concurrent:
            queued = self.store.jobs_with_status([JobStatus.QUEUED])
            if not queued:
                return
            self._launch(queued[0])
            active += 1

    def _free_gpu(self) -> str | None:
        if len(self.gpus) < 2:
            return None
        used = set(self._gpu_of.values())
        return next((g for g in self.gpus if g not in used), None)

    def _launch(self, job: dict[str, Any]) -> None:
        job_id, job_dir = job["job_id"], Path(job["job_dir"])
        attempt = int(job["attempt"]) + 1
        gpu = self._free_gpu()
        self.store.transition(job_id, JobStatus.QUEUED, JobStatus.RUNNING, f"attempt {attempt}", attempt=attempt,
                              exit_code=None, gpu=gpu)
        try:
            env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None
            handle = self.launcher.start(job_dir, resume=latest_checkpoint(job_dir) is not None, attempt=attempt,
                                         env=env)
        except OSError as exc:
            self.store.transition(job_id, JobStatus.RUNNING, JobStatus.FAILED, "launch failed",
                                  error_kind=ErrorKind.LAUNCH.value, error=f"could not start the worker: {exc}")
            return
        self.store.update_job(job_id, pid=handle.pid, pid_start=handle.start_time)
        self._handles[job_id] = handle
        if gpu is not None:
            self._gpu_of[job_id] = gpu
        self._bump()

    def recover(self) -> None:
        """Reconcile rows with processes before serving: reattach the living, settle the dead."""
        with self._lock:
            for job in self.store.jobs_with_status(ACTIVE):
                job_dir = Path(job["job_dir"])
                handle = WorkerHandle(job["pid"], job["pid_start"] or 0.0) if job["pid"] else None
                if handle is None or not self.launcher.is_alive(handle):
                    handle = self.launcher.find_worker(job_dir)
                if handle is not None:
                    self._handles[job["job_id"]] = handle
                    log.info("reattached job %s (pid %d)", job["job_id"], handle.pid)
                    if job["status"] == JobStatus.STOPPING.value:
                        self.launcher.terminate(handle)
                        self._deadlines[job["job_id"]] = self.clock() + self.settings.stop_grace_s
                else:
                    self._settle(job, None, recovering=True)
            for job in self.store.jobs_with_status([JobStatus.QUEUED]):
                orphan = self.launcher.find_worker(Path(job["job_dir"]))
                if orphan is not None:  # launched just before a crash: adopt it instead of starting twice
                    self.store.transition(job["job_id"], JobStatus.QUEUED, JobStatus.RUNNING, "adopted",
                                          attempt=int(job["attempt"]) + 1, pid=orphan.pid, pid_start=orphan.start_time)
                    self._handles[job["job_id"]] = orphan
            self._bump()


def _with_tail(summary: str, job_dir: Path) -> str:
    tail = tail_text(job_dir / LOG_FILE, LOG_TAIL_LINES)
    return f"{summary}\n--- last lines of train.log ---\n{tail}" if tail else summary
