"""Helpers shared by the store, job-manager, API and restart tests: polling, tiny configs, fake workers and
a real server subprocess (`python app.py`) that is always killed, with its port released, at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from sft_ui.config import JobConfig, apply_overrides, load_yaml
from sft_ui.launchers.local import LocalLauncher, WorkerHandle

REPO = Path(__file__).resolve().parents[1]
TINY_PRESET = REPO / "configs" / "tiny-lora.yaml"
# Small enough for two shared CPU cores: ~0.3-1 s a step once the worker has imported torch (~10 s).
TINY = {"max_samples": 100, "per_device_train_batch_size": 8, "max_length": 128, "logging_steps": 1,
        "save_steps": 1000}
SERVER_START_TIMEOUT_S = 180.0

T = TypeVar("T")


class WaitTimeout(AssertionError):
    pass


def wait_for(predicate: Callable[[], T], timeout: float = 120.0, interval: float = 0.1,
             what: str | Callable[[], str] = "condition") -> T:
    """Poll `predicate` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.TransportError, OSError) as exc:  # a server still starting, a file not yet written
            last_exc = exc
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {text}"
                              + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def tiny_config(**overrides: Any) -> JobConfig:
    """The tiny-lora preset shrunk to a few seconds of CPU work, plus `overrides`."""
    return apply_overrides(load_yaml(TINY_PRESET.read_text(encoding="utf-8")), {**TINY, **overrides})


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


# ---- processes -----------------------------------------------------------------------------------------------
def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return False
    except ProcessLookupError:
        return True
    except PermissionError:
        return False


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and text in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_processes_mentioning(text: str, timeout: float = 15.0) -> list[int]:
    """SIGKILL every live process (and its group) whose argv names `text`; returns their pids."""
    procs = processes_mentioning(text)
    for proc in procs:
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in procs]


@contextmanager
def paused(pgid: int) -> Iterator[None]:
    """SIGSTOP a worker's process group for the block (then SIGCONT): on an idle machine a tiny job can run
    dozens of steps a second, so anything that must happen while it runs happens while it is paused."""
    os.killpg(pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        try:
            os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def find_worker_pid(job_dir: str | Path) -> int | None:
    target = str(job_dir)
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if "sft_ui.worker" in cmd and target in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return proc.pid
        except psutil.Error:
            continue
    return None


# ---- fake workers ---------------------------------------------------------------------------------------------
FAKE_PRELUDE = """\
import json, os, signal, subprocess, sys, time
JOB_DIR = sys.argv[1]
ATTEMPT = int(sys.argv[2]) if len(sys.argv) > 2 else 1

def emit(kind, **fields):
    with open(os.path.join(JOB_DIR, "events.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"type": kind, "time": time.time(), "attempt": ATTEMPT, **fields}) + "\\n")

def write_exit(code, status):
    tmp = os.path.join(JOB_DIR, "exit.json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"exit_code": code, "status": status, "pid": os.getpid(), "time": time.time()}, fh)
    os.replace(tmp, os.path.join(JOB_DIR, "exit.json"))
"""

# Follows the worker's event protocol: start, a log event per step, end, exit.json; honours SIGTERM.
QUICK_WORKER = FAKE_PRELUDE + """
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
steps = int(os.environ.get("FAKE_STEPS", "3"))
emit("start", total_steps=steps, pid=os.getpid())
print("fake worker started", flush=True)
for step in range(1, steps + 1):
    time.sleep(float(os.environ.get("FAKE_STEP_S", "0.2")))
    emit("log", step=step, total_steps=steps, loss=1.0 / step, learning_rate=0.01)
    print(f"step {step}/{steps}", flush=True)
    if stop:
        emit("end", status="stopped", step=step)
        write_exit(0, "stopped")
        sys.exit(0)
emit("end", status="succeeded", step=steps)
write_exit(0, "succeeded")
"""

# Ignores SIGTERM and starts a sleeping child in its own process group; only SIGKILL of the group ends it.
STUBBORN_WORKER = FAKE_PRELUDE + """
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
                          JOB_DIR, "stubborn-child"])
with open(os.path.join(JOB_DIR, "child.pid"), "w") as fh:
    fh.write(str(child.pid))
emit("start", total_steps=1000, pid=os.getpid())
print("stubborn worker started; child", child.pid, flush=True)
step = 0
while True:
    step += 1
    emit("log", step=step, total_steps=1000, loss=1.0, learning_rate=0.01)
    time.sleep(0.2)
"""


def write_script(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


class FakeLauncher(LocalLauncher):
    """A LocalLauncher whose workers run `script JOB_DIR ATTEMPT` (the manager never passes argv itself)."""

    def __init__(self, workspace: Path, script: Path, env: dict[str, str] | None = None):
        super().__init__(workspace)
        self.script = script
        self.extra_env = env or {}
        self.started: list[tuple[Path, int]] = []

    def start(self, job_dir: Path, resume: bool = False, attempt: int = 1, env: dict[str, str] | None = None,
              argv: list[str] | None = None) -> WorkerHandle:
        self.started.append((job_dir, attempt))
        return super().start(job_dir, resume=resume, attempt=attempt, env={**self.extra_env, **(env or {})},
                             argv=argv or [sys.executable, str(self.script), str(job_dir), str(attempt)])


def new_workspace(root: Path, models_cache: Path | None = None) -> Path:
    """ROOT/workspace, its models/ pointing at the session's built embedded model (when given)."""
    ws = root / "workspace"
    ws.mkdir(parents=True)
    if models_cache is not None:
        (ws / "models").symlink_to(models_cache, target_is_directory=True)
    return ws


def server_env(workspace: Path, **extra: str) -> dict[str, str]:
    """The environment conftest's `worker_env` builds, for workspaces made outside that fixture."""
    env = dict(os.environ)
    env["SFT_UI_WORKSPACE"] = str(workspace)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env


# ---- the real server ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


ACTIVE_STATUSES = ("queued", "running", "stopping")


class Tally:
    """Inputs tried and failures (an input whose expectation did not hold) of one suite: written to
    test-artifacts/<area>/<suite>.txt and printed in the run's output by `write` when the suite ends."""

    def __init__(self, area: str, suite: str, max_listed: int | None = None):
        self.area, self.suite, self.max_listed = area, suite, max_listed
        self.tried = 0
        self.failures: list[str] = []

    def record(self, what: str, ok: bool, detail: str = "") -> bool:
        self.tried += 1
        if not ok:
            self.failures.append((f"{what}: {detail}" if detail else what)[:500])
        return ok

    def line(self) -> str:
        return f"{self.area.upper()} {self.suite}: inputs tried {self.tried}, failures {len(self.failures)}"

    def write(self, config: pytest.Config) -> None:
        artifacts = REPO / "test-artifacts" / self.area
        artifacts.mkdir(parents=True, exist_ok=True)
        text = "\n".join([self.line(), *(f"  FAIL {f}" for f in self.failures[:self.max_listed])]) + "\n"
        (artifacts / f"{self.suite}.txt").write_text(text, encoding="utf-8")
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            print(self.line())
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(self.line())


class Server:
    """`python app.py --port P --workspace WS` as a subprocess; output goes to a log file, never a pipe."""

    def __init__(self, workspace: Path, env: dict[str, str], log_path: Path, port: int | None = None,
                 ui: bool = False):
        self.workspace, self.env, self.log_path, self.ui = workspace, env, log_path, ui
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth: tuple[str, str] | None = None  # credentials for the health check, if the server wants them
        self.args: tuple[str, ...] = ()  # extra command-line flags

    def start(self, timeout: float = SERVER_START_TIMEOUT_S) -> Server:
        argv = [sys.executable, "app.py", "--port", str(self.port), "--workspace", str(self.workspace), *self.args]
        if not self.ui:
            argv.insert(2, "--no-ui")
        with self.log_path.open("ab") as log_fh:
            self.proc = subprocess.Popen(argv, cwd=str(REPO), env=self.env, stdin=subprocess.DEVNULL, stdout=log_fh,
                                         stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            return httpx.get(f"{self.url}/api/sft/health", auth=self.auth, timeout=5).status_code == 200

        wait_for(healthy, timeout, 0.2, lambda: f"the server on port {self.port}:\n{self.log()[-4000:]}")
        return self

    def log(self) -> str:
        return read_text(self.log_path)

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the server (its workers live in their own sessions and survive); wait for the port."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=timeout)
        wait_for(lambda: port_free(self.port), timeout, 0.1, f"port {self.port} to be released")

    def client(self, timeout: float = 30.0, check_tracebacks: bool = True) -> httpx.Client:
        hooks = {"response": [_no_traceback]} if check_tracebacks else {}
        return httpx.Client(base_url=self.url, timeout=timeout, event_hooks=hooks)

    def active_jobs(self) -> list[dict[str, Any]]:
        with self.client(timeout=15, check_tracebacks=False) as http:
            jobs = http.get("/api/sft/jobs", params={"limit": 500}).json()["jobs"]
        return [j for j in jobs if j["status"] in ACTIVE_STATUSES]

    def stop_all_jobs(self, timeout: float) -> None:
        """Teardown: stop every queued or running job and wait (bounded) until none is active."""
        if self.proc is None or self.proc.poll() is not None:
            return
        deadline = time.monotonic() + timeout
        try:
            with self.client(timeout=15, check_tracebacks=False) as http:
                for job in self.active_jobs():
                    http.post(f"/api/sft/jobs/{job['job_id']}/stop")
            while self.active_jobs() and time.monotonic() < deadline:
                time.sleep(0.3)
        except (httpx.HTTPError, KeyError, ValueError):
            pass


def _no_traceback(response: httpx.Response) -> None:
    response.read()
    assert "Traceback" not in response.text, f"{response.request.url} answered a traceback:\n{response.text[:4000]}"


def job_statuses(jobs: Iterable[dict[str, Any]]) -> list[str]:
    return [j["status"] for j in jobs]


def close_managers(managers: list[Any], owner_text: str) -> None:
    """Teardown for in-process JobManagers: stop watching, kill what the test started, reap our children."""
    for manager in managers:
        manager.close()
    kill_processes_mentioning(owner_text)
    for manager in managers:
        for proc in list(manager.launcher._children.values()):  # reap our children: no zombies left behind
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        manager.store.close()


CHROMIUM = Path("/usr/bin/chromium")


def require_browser() -> None:
    """At a browser test module's top: skip it without Chromium/Playwright, or fail under SFT_UI_REQUIRE_BROWSER=1."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (install Debian's chromium package)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright Python package is not installed"
    if reason is None:
        return
    if os.environ.get("SFT_UI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (SFT_UI_REQUIRE_BROWSER=1) but {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}; set SFT_UI_REQUIRE_BROWSER=1 to make this an error",
                allow_module_level=True)
