"""Runs a training worker as a local subprocess in its own session (process group).

Output goes to `JOB_DIR/train.log`, never a pipe, so nobody has to drain it and the worker survives a
server restart. A handle is (pid, process start time): the start time guards against PID reuse when a
restarted server reattaches. Stop is SIGTERM to the group, then SIGKILL to the group after a grace.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from ..events import LOG_FILE, read_exit

log = logging.getLogger(__name__)
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
START_TIME_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class WorkerHandle:
    pid: int
    start_time: float


def handle_for(pid: int) -> WorkerHandle:
    """The handle of a process just started: its start time guards a later liveness check against PID reuse."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = time.time()
    return WorkerHandle(pid, started)


def handle_alive(handle: WorkerHandle) -> bool:
    """Whether the process of `handle` still runs, child of ours or not: same PID, same start time, no zombie."""
    try:
        proc = psutil.Process(handle.pid)
        same = abs(proc.create_time() - handle.start_time) < START_TIME_TOLERANCE_S
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def worker_argv(job_dir: Path, resume: bool, attempt: int, module: str = "sft_ui.worker") -> list[str]:
    argv = [sys.executable, "-m", module, str(job_dir), "--attempt", str(attempt)]
    return argv + (["--resume"] if resume else [])


def worker_env(workspace: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["SFT_UI_WORKSPACE"] = str(workspace)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class LocalLauncher:
    """Starts, watches and stops worker processes on this machine."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, job_dir: Path, resume: bool = False, attempt: int = 1, env: dict[str, str] | None = None,
              argv: list[str] | None = None) -> WorkerHandle:
        """Launch the worker; returns at once. `argv` replaces the worker command (tests use it)."""
        with (job_dir / LOG_FILE).open("ab") as log_fh:
            proc = subprocess.Popen(
                argv or worker_argv(job_dir, resume, attempt), stdin=subprocess.DEVNULL, stdout=log_fh,
                stderr=subprocess.STDOUT, cwd=str(job_dir), env=worker_env(self.workspace, env),
                start_new_session=True, close_fds=True,
            )
        self._children[proc.pid] = proc
        return handle_for(proc.pid)

    def _reap(self, pid: int) -> int | None:
        """Exit code of a child of ours that has ended (and reap it), None while it runs."""
        proc = self._children.get(pid)
        if proc is None:
            return None
        code = proc.poll()
        return code

    def is_alive(self, handle: WorkerHandle) -> bool:
        if handle.pid in self._children:
            return self._reap(handle.pid) is None
        return handle_alive(handle)

    def exit_code(self, handle: WorkerHandle, job_dir: Path) -> int | None:
        """The worker's exit code: from the OS if it was our child, else from its exit file."""
        code = self._reap(handle.pid)
        if code is not None:
            return code
        recorded = read_exit(job_dir)
        if recorded and recorded.get("pid") == handle.pid:
            return int(recorded.get("exit_code", 1))
        return None

    def group_alive(self, handle: WorkerHandle) -> bool:
        """True while any process of the worker's process group exists."""
        self._reap(handle.pid)
        try:
            os.killpg(handle.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True

    def signal(self, handle: WorkerHandle, sig: int) -> bool:
        """Send `sig` to the whole group; False if nothing of it is left."""
        leader_ok = self.is_alive(handle)
        if not leader_ok and not self.group_alive(handle):
            return False
        try:
            os.killpg(handle.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def terminate(self, handle: WorkerHandle) -> bool:
        return self.signal(handle, signal.SIGTERM)

    def kill(self, handle: WorkerHandle) -> bool:
        return self.signal(handle, signal.SIGKILL)

    def stop_and_wait(self, handle: WorkerHandle, grace_s: float) -> None:
        """Blocking stop for the CLI: SIGTERM, wait up to grace_s, then SIGKILL the group."""
        self.terminate(handle)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.group_alive(handle):
            time.sleep(0.1)
        if self.group_alive(handle):
            log.warning("worker %d ignored SIGTERM for %.0f s: killing its process group", handle.pid, grace_s)
            self.kill(handle)
        self.wait(handle, 10.0)

    def wait(self, handle: WorkerHandle, timeout_s: float) -> bool:
        """Wait until the group is gone; True if it is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.group_alive(handle):
                return True
            time.sleep(0.05)
        return not self.group_alive(handle)

    def forget(self, handle: WorkerHandle) -> None:
        proc = self._children.pop(handle.pid, None)
        if proc is not None and proc.poll() is None:
            self._children[handle.pid] = proc  # still running: keep it so it gets reaped

    def find_worker(self, job_dir: Path) -> WorkerHandle | None:
        """A live worker for `job_dir` that nobody recorded (the server died while launching it)."""
        target = str(job_dir)
        for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
            try:
                cmd = proc.info["cmdline"] or []
                if ("sft_ui.worker" in cmd and target in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE
                        and os.getpgid(proc.pid) == proc.pid):
                    return WorkerHandle(proc.pid, proc.info["create_time"])
            except (psutil.Error, ProcessLookupError):
                continue
        return None
