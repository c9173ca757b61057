"""REST API latency at scale: 10,000 finished jobs and 1,000,000 metric points in the store.

Fills a fresh workspace's SQLite store directly (SqliteStore.insert_job + transitions to succeeded, then
SqliteStore.ingest per job), starts the real server (`python app.py --no-ui`) on it with
SFT_UI_MAX_CONCURRENT=1, submits one long tiny-lora job so every later submission stays queued, and measures,
with 1 client and with N concurrent clients (threads, one keep-alive httpx.Client each):

  GET  /api/sft/jobs?limit=50               the list (and a bare FastAPI app serving the same bytes: the floor)
  GET  /api/sft/jobs/{id}/metrics           a job with ~100 points and one with ~100k points
  GET  /api/sft/jobs/{id}                   the status query (also JobManager.get in-process, no HTTP)
  POST /api/sft/train                       job creation up to the 201 (the jobs stay queued)
  event lag                                 (first seen via /metrics?since_step) - (the event's own time),
                                            polling every 20 ms while the long job trains
  job start                                 POST /train -> a 'sft_ui.worker' process for that job dir exists

Prints a table with each figure next to its target (PASS/MISS) and ours/bare ratios for the list. A missed
target is reported, not failed: the exit code is non-zero only on a crash. Every process started here (the
servers and the workers they launch for this workspace) is stopped before exit.

    python bench/api_scale.py [--quick] [--jobs 10000] [--points 1000000] [--clients 20] [--requests 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sft_ui.presets import preset_config  # noqa: E402
from sft_ui.status import JobStatus  # noqa: E402
from sft_ui.store import SqliteStore  # noqa: E402

HOST = "127.0.0.1"
WORKER_MODULE = "sft_ui.worker"
SERVER_START_TIMEOUT_S = 90.0
PHASE_TIME_LIMIT_S = 60.0  # every load phase stops early past this
SMALL_POINTS = 100
BIG_POINTS = 100_000
TERMINAL = {s.value for s in JobStatus if s.is_terminal()}

# Targets (milliseconds unless named otherwise).
LIST_P99_MS = 50.0
LAG_P95_S = 0.5
CREATE_MS = 10.0
STATUS_INPROC_MS = 1.0
STATUS_HTTP_MS = 5.0
START_MS = 50.0
ANY_MS = 100.0

# A FastAPI app with nothing of ours: the same bytes as our list answer, pre-encoded and as a dict.
BARE_APP = r"""
import json, sys
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

raw = open(sys.argv[2], "rb").read()
data = json.loads(raw)
app = FastAPI()

@app.get("/bytes")
def as_bytes() -> Response:
    return Response(content=raw, media_type="application/json")

@app.get("/dict")
def as_dict() -> dict:
    return data

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


# ---- small helpers ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def fmt_ms(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def job_id_for(i: int, base: float) -> str:
    """Valid, unique and sortable like jobdirs.new_job_id: '20261204-195301-00002a'."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(base + i)) + f"-{i:06x}"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SFT_UI_AUTH", "SFT_UI_DEMO", "SFT_UI_WORKSPACE", "PORT", "GRADIO_SERVER_PORT",
                        "GRADIO_SERVER_NAME", "SFT_UI_MAX_CONCURRENT", "SFT_UI_STOP_GRACE_S")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(extra)
    return env


# ---- filling the store ----------------------------------------------------------------------------------------
@dataclass
class Filled:
    ids: list[str]
    small_id: str
    big_id: str
    single_ids: list[str]  # jobs queried one by one (their folders exist)
    jobs_s: float = 0.0
    points_s: float = 0.0
    points: int = 0
    db_mb: float = 0.0


def preset_dict(config_id: str) -> dict[str, Any]:
    config = preset_config(config_id)
    if config is None:
        raise RuntimeError(f"preset {config_id!r} not found")
    return config.to_dict()


def per_points(workspace: Path, job_id: str) -> int:
    store = SqliteStore(workspace / "sft_ui.db")
    try:
        return int(store.connect().execute("SELECT COUNT(*) FROM metrics WHERE job_id = ?", (job_id,)).fetchone()[0])
    finally:
        store.close()


def _point(job_step: int, t: float) -> dict[str, Any]:
    loss = 2.5 / (1.0 + job_step / 50.0)
    return {"step": job_step, "time": round(t, 3), "attempt": 1, "loss": round(loss, 6),
            "learning_rate": 0.01 * (1 - job_step / 1e6), "grad_norm": 0.8, "epoch": round(job_step / 40.0, 4),
            "tokens_seen": 1024.0 * job_step, "tokens_per_s": 4096.0, "elapsed_s": round(job_step * 0.05, 3),
            "kind": "train"}


def fill_store(workspace: Path, n_jobs: int, n_points: int, big_points: int | None = None,
               n_single: int = 50, log: Callable[[str], None] = print) -> Filled:
    """n_jobs succeeded jobs through the store's own API; n_points metric points spread over them.

    The newest-but-one job gets `big_points` points (default: BIG_POINTS, at most a tenth of all), the
    newest-but-two SMALL_POINTS; the rest share what is left evenly. Only the jobs queried singly get a
    (empty) job folder.
    """
    store = SqliteStore(workspace / "sft_ui.db")
    jobs_dir = workspace / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    config_dict = preset_dict("tiny-lora")
    base = time.time() - 86400 * 30
    ids = [job_id_for(i, base) for i in range(n_jobs)]
    big_id, small_id = ids[-2], ids[-3]
    if big_points is None:
        big_points = min(BIG_POINTS, n_points // 10)
    big_points = max(0, min(big_points, n_points - SMALL_POINTS))
    rest = max(0, n_points - big_points - SMALL_POINTS)
    per_job = {job_id: 0 for job_id in ids}
    others = [j for j in ids if j not in (big_id, small_id)]
    for k, job_id in enumerate(others):
        per_job[job_id] = rest // len(others) + (1 if k < rest % len(others) else 0)
    per_job[big_id], per_job[small_id] = big_points, SMALL_POINTS
    single_ids = list(dict.fromkeys([small_id, big_id, *ids[-n_single:]]))

    t0 = time.perf_counter()
    info = json.dumps({"device": "cpu", "precision": "fp32", "method": "lora", "trainable_params": 100_000,
                       "total_params": 1_000_000, "train_rows": 64})
    for n, job_id in enumerate(ids):
        job_dir = jobs_dir / job_id
        store.insert_job(job_id, f"bench job {n}", config_dict, str(job_dir))
        store.transition(job_id, JobStatus.QUEUED, JobStatus.RUNNING, "attempt 1", attempt=1, exit_code=None)
        total = max(1, per_job[job_id])
        latest = json.dumps(_point(total, base + n))
        store.transition(job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED, "worker exited (0)", exit_code=0, eta_s=0,
                         step=total, total_steps=total, latest_json=latest, info_json=info, end_status="succeeded")
        if (n + 1) % 2000 == 0:
            log(f"  jobs: {n + 1}/{n_jobs} ({time.perf_counter() - t0:.1f} s)")
    jobs_s = time.perf_counter() - t0
    for job_id in single_ids:
        (jobs_dir / job_id).mkdir(exist_ok=True)

    t0 = time.perf_counter()
    done = 0
    for n, job_id in enumerate(ids):
        count = per_job[job_id]
        for start in range(1, count + 1, 10_000):
            points = [_point(step, base + n + step * 0.05) for step in range(start, min(count, start + 9_999) + 1)]
            store.ingest(job_id, points, 0)
            done += len(points)
        if (n + 1) % 2000 == 0:
            log(f"  points: {done}/{n_points} ({time.perf_counter() - t0:.1f} s)")
    points_s = time.perf_counter() - t0
    store.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    db_mb = (workspace / "sft_ui.db").stat().st_size / 1e6
    return Filled(ids, small_id, big_id, single_ids, jobs_s, points_s, done, db_mb)


# ---- processes ----------------------------------------------------------------------------------------------------
class Proc:
    """A subprocess in its own process group, with its output in a file; stopped by its own pid/pgid."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = ROOT):
        self.log_path = log_path
        self.t_launch = time.perf_counter()
        with log_path.open("ab") as fh:
            self.proc = subprocess.Popen(argv, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=fh,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, timeout_s: float = SERVER_START_TIMEOUT_S) -> float:
        """Seconds from launch to the first HTTP 200 on url; raises if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"process exited ({self.proc.returncode}): {self.tail()}")
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - self.t_launch
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)
        raise RuntimeError(f"no 200 from {url} within {timeout_s:.0f} s: {self.tail()}")

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # anything left in its group


def start_server(workspace: Path, port: int, ui: bool, env: dict[str, str]) -> Proc:
    argv = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--workspace", str(workspace)]
    return Proc(argv + ([] if ui else ["--no-ui"]), workspace / f"server-{port}.log", env)


def workers_of(workspace: Path) -> list[psutil.Process]:
    """Live worker processes whose command line names a job folder of this workspace (nobody else's)."""
    marker = str(workspace / "jobs")
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = proc.info["cmdline"] or []
            if (WORKER_MODULE in cmd and any(a.startswith(marker) for a in cmd)
                    and proc.info["status"] != psutil.STATUS_ZOMBIE):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_workers(workspace: Path, wait_s: float = 10.0) -> int:
    """SIGKILL the process group of every worker of this workspace, by pid; returns how many there were."""
    procs = workers_of(workspace)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL) if os.getpgid(proc.pid) == proc.pid else proc.kill()
    psutil.wait_procs(procs, timeout=wait_s)
    return len(procs)


# ---- load ----------------------------------------------------------------------------------------------------------
@dataclass
class Load:
    name: str
    clients: int
    ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    results: list[Any] = field(default_factory=list)
    cpu_s: float = float("nan")  # CPU time the serving process used during the phase

    @property
    def cpu_ms_per_req(self) -> float:
        return self.cpu_s * 1000 / len(self.ms) if self.ms else float("nan")

    @property
    def p50(self) -> float:
        return pct(self.ms, 50)

    @property
    def p99(self) -> float:
        return pct(self.ms, 99)

    @property
    def rps(self) -> float:
        return len(self.ms) / self.wall_s if self.wall_s else 0.0


def run_load(name: str, base_url: str, make: Callable[[int], tuple[str, str, Any]], n: int, clients: int,
             expect: int = 200, keep: Callable[[httpx.Response], Any] | None = None,
             time_limit_s: float = PHASE_TIME_LIMIT_S, warmup: int = 3, cpu_pid: int | None = None) -> Load:
    """n requests from `clients` threads; make(i) -> (method, path, json body). Latency in ms per request.

    With cpu_pid, also the CPU time (user + system) that process used from the first to the last request:
    unlike latency, hardly affected by other load on the machine.
    """
    result = Load(name, clients)
    lock = threading.Lock()
    counter = iter(range(n))
    gate = threading.Barrier(clients + 1, timeout=120)
    deadline = [time.monotonic() + time_limit_s]

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=60.0) as client:
            try:
                for i in range(warmup):  # connect and warm up; not counted
                    method, path, body = make(-1 - i)
                    if method == "GET":
                        client.request(method, path, json=body)
            finally:
                gate.wait()
            while time.monotonic() < deadline[0]:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                method, path, body = make(i)
                t0 = time.perf_counter()
                try:
                    resp = client.request(method, path, json=body)
                    ms = (time.perf_counter() - t0) * 1000
                except httpx.HTTPError as exc:
                    with lock:
                        result.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    if resp.status_code != expect:
                        result.errors.append(f"{resp.status_code}: {resp.text[:200]}")
                    else:
                        result.ms.append(ms)
                        if keep is not None:
                            result.results.append(keep(resp))

    threads = [threading.Thread(target=worker, name=f"load-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    gate.wait()  # every client connected and warmed up
    deadline[0] = time.monotonic() + time_limit_s
    cpu0 = _cpu(cpu_pid)
    t0 = time.perf_counter()
    for t in threads:
        t.join(time_limit_s + 120)
    result.wall_s = time.perf_counter() - t0
    cpu1 = _cpu(cpu_pid)
    if cpu0 is not None and cpu1 is not None:
        result.cpu_s = cpu1 - cpu0
    return result


def _cpu(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except psutil.Error:
        return None


def time_inproc(fn: Callable[[], Any], n: int, time_limit_s: float = PHASE_TIME_LIMIT_S,
                clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Milliseconds per call (wall clock, or e.g. time.thread_time for CPU time without preemption)."""
    fn()
    out = []
    deadline = time.monotonic() + time_limit_s
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        t0 = clock()
        fn()
        out.append((clock() - t0) * 1000)
    return out


# ---- the measured phases ------------------------------------------------------------------------------------------
def get_json(client: httpx.Client, path: str) -> Any:
    resp = client.get(path)
    resp.raise_for_status()
    return resp.json()


def wait_until(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every_s)
    return pred()


def measure_lag(client: httpx.Client, job_id: str, seconds: float, every_s: float = 0.02) -> tuple[list[float], int]:
    """(lags in s of points first seen during the window, polls made): seen-at minus the event's own time."""
    since = max([-1, *[int(p["step"]) for p in get_json(client, f"/api/sft/jobs/{job_id}/metrics")["points"]]])
    lags, polls = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        points = get_json(client, f"/api/sft/jobs/{job_id}/metrics?since_step={since}")["points"]
        seen = time.time()
        polls += 1
        for p in points:
            since = max(since, int(p["step"]))
            if p.get("kind") == "train" and isinstance(p.get("time"), (int, float)):
                lags.append(seen - float(p["time"]))
        time.sleep(every_s)
    return lags, polls


def measure_start(server: Proc, client: httpx.Client, body: dict[str, Any], n: int,
                  log: Callable[[str], None]) -> tuple[list[float], list[float], list[str]]:
    """(POST -> worker seen by psutil, ms; POST -> 201, ms; problems) over n submissions from idle.

    Polls the server's children (the launcher's Popen makes the worker one) every millisecond.
    """
    seen_ms, answer_ms, problems = [], [], []
    parent = psutil.Process(server.pid)
    for k in range(n):
        if not wait_until(lambda: _idle(client), 60):
            problems.append("the server did not become idle within 60 s")
            break
        t0 = time.perf_counter()
        resp = client.post("/api/sft/train", json=body)
        answer_ms.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 201:
            problems.append(f"POST /train -> {resp.status_code}: {resp.text[:200]}")
            break
        job = resp.json()
        job_dir = job["job_dir"]
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            for child in parent.children():
                try:
                    cmd = child.cmdline()
                except psutil.Error:
                    continue
                if WORKER_MODULE in cmd and job_dir in cmd:
                    found = child
                    seen_ms.append((time.perf_counter() - t0) * 1000)
                    break
            else:
                time.sleep(0.001)
        if found is None:
            problems.append(f"submission {k + 1}: no worker process for {job['job_id']} within 10 s")
        client.post(f"/api/sft/jobs/{job['job_id']}/stop")
        ok = wait_until(lambda jid=job["job_id"]: get_json(client, f"/api/sft/jobs/{jid}")["status"] in TERMINAL,
                        60, 0.05)
        if not ok:
            problems.append(f"job {job['job_id']} did not stop within 60 s")
        log(f"  start {k + 1}/{n}: worker seen after {seen_ms[-1] if found else float('nan'):.1f} ms")
    return seen_ms, answer_ms, problems


def _idle(client: httpx.Client) -> bool:
    health = get_json(client, "/api/sft/health")
    return health["running"] == 0 and health["queued"] == 0


# ---- report ---------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    what: str
    one: tuple[float, float] | None  # 1 client (p50, p99) ms
    many: tuple[float, float] | None  # N clients (p50, p99) ms
    target: str = ""
    limit: float | None = None  # judged on p99 (ms) unless `judge` says otherwise
    judge: str = "p99"
    extra: str = ""
    cpu: tuple[float, float] | None = None  # server CPU ms per request (1 client, N clients)

    def verdict(self, pair: tuple[float, float] | None) -> str:
        if self.limit is None or pair is None:
            return ""
        value = pair[1] if self.judge == "p99" else pair[0]
        if value != value:  # NaN: not measured
            return ""
        return "PASS" if value < self.limit else "MISS"


def print_table(rows: list[Row], clients: int) -> None:
    head = ["measure (ms)", "1 client p50", "p99", f"{clients} clients p50", "p99", "srv CPU/req", "target", "1 cl.",
            f"{clients} cl.", "notes"]
    body = []
    for r in rows:
        one = r.one or (float("nan"), float("nan"))
        many = r.many or (float("nan"), float("nan"))
        cpu = f"{fmt_ms(r.cpu[0])} / {fmt_ms(r.cpu[1])}" if r.cpu else ""
        body.append([r.what, fmt_ms(one[0]), fmt_ms(one[1]), fmt_ms(many[0]), fmt_ms(many[1]), cpu, r.target,
                     r.verdict(r.one), r.verdict(r.many), r.extra])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    for line in [head, ["-" * w for w in widths], *body]:
        print("  ".join(str(x).ljust(w) if i in (0, 6, 9) else str(x).rjust(w)
                        for i, (x, w) in enumerate(zip(line, widths, strict=True))).rstrip())


# ---- main ----------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=10_000, help="finished jobs in the store")
    p.add_argument("--points", type=int, default=1_000_000, help="metric points spread over them")
    p.add_argument("--clients", type=int, default=20, help="concurrent HTTP clients")
    p.add_argument("--requests", type=int, default=2000, help="requests per light endpoint and load level")
    p.add_argument("--posts", type=int, default=200, help="POST /train job creations (they stay queued)")
    p.add_argument("--starts", type=int, default=10, help="submissions timed up to the worker process")
    p.add_argument("--lag-s", type=float, default=15.0, help="seconds of event-lag polling")
    p.add_argument("--quick", action="store_true",
                   help="small preset: 1,000 jobs, 100,000 points, 8 clients, 300 requests, 30 posts, 3 starts")
    p.add_argument("--keep", action="store_true", help="keep the workspace (its path is printed)")
    args = p.parse_args(argv)
    if args.quick:
        args.jobs, args.points, args.clients, args.requests = 1000, 100_000, 8, 300
        args.posts, args.starts, args.lag_s = 30, 3, 8.0
    args.jobs = max(args.jobs, 10)
    return args


def run_and_clean_up(run: Callable[[list[Proc]], int], workspace: Path, keep: bool) -> int:
    """Run a bench body; on a crash print where and the servers' log tails; always stop what it started."""
    procs: list[Proc] = []
    try:
        return run(procs)
    except Exception as exc:  # a crash: say where, clean up, non-zero
        import traceback

        traceback.print_exc()
        print(f"CRASH: {type(exc).__name__}: {exc}")
        for proc in procs:
            print(f"--- last lines of {proc.log_path.name} ---\n{proc.tail()}")
        return 1
    finally:
        for proc in procs:
            proc.stop()
        left = kill_workers(workspace)
        if left:
            print(f"cleanup: killed {left} leftover worker process(es) of this workspace")
        if workers_of(workspace):
            print("WARNING: worker processes of this workspace are still alive")
        if keep:
            print(f"workspace kept: {workspace}")
        else:
            shutil.rmtree(workspace, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workspace = Path(tempfile.mkdtemp(prefix="sft_ui_api_scale_"))
    load0 = os.getloadavg()
    return run_and_clean_up(lambda procs: _run(args, workspace, procs, load0), workspace, args.keep)


def _run(args: argparse.Namespace, workspace: Path, procs: list[Proc], load0: tuple[float, float, float]) -> int:
    def log(msg: str) -> None:
        print(msg, flush=True)

    n_light, n_seq = args.requests, max(50, args.requests // 10)
    log(f"api_scale: {args.jobs} jobs, {args.points} points, {args.clients} clients, {args.requests} requests; "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.2f}; workspace {workspace}")

    log("filling the store ...")
    filled = fill_store(workspace, args.jobs, args.points, log=log)
    log(f"  {args.jobs} jobs in {filled.jobs_s:.1f} s ({filled.jobs_s / args.jobs * 1000:.2f} ms/job: insert + 2 "
        f"transitions), {filled.points} points in {filled.points_s:.1f} s "
        f"({filled.points / max(filled.points_s, 1e-9):,.0f}/s via ingest), db {filled.db_mb:.0f} MB")

    port, bare_port = free_port(), free_port()
    env = clean_env(SFT_UI_MAX_CONCURRENT="1", SFT_UI_STOP_GRACE_S="5", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    server = start_server(workspace, port, ui=False, env=env)
    procs.append(server)
    base = f"http://{HOST}:{port}"
    ready_s = server.wait_http(base + "/api/sft/health")
    log(f"server (--no-ui) answered after {ready_s:.2f} s")
    client = httpx.Client(base_url=base, timeout=60.0)

    # The long job: keeps the only slot, so every later submission stays queued.
    long_body = {"config_id": "tiny-lora", "overrides": {"name": "api_scale long", "max_steps": 100_000,
                                                         "save_steps": 1_000_000}}
    resp = client.post("/api/sft/train", json=long_body)
    resp.raise_for_status()
    long_id = resp.json()["job_id"]
    wait_until(lambda: get_json(client, f"/api/sft/jobs/{long_id}")["status"] == "running", 10, 0.05)
    log(f"long job {long_id} running")

    raw = client.get("/api/sft/jobs?limit=50").content
    (workspace / "list.json").write_bytes(raw)
    (workspace / "bare_app.py").write_text(BARE_APP, encoding="utf-8")
    bare = Proc([sys.executable, str(workspace / "bare_app.py"), str(bare_port), str(workspace / "list.json")],
                workspace / "bare.log", clean_env(OMP_NUM_THREADS="1"))
    procs.append(bare)
    bare.wait_http(f"http://{HOST}:{bare_port}/bytes")
    log(f"list answer: {len(raw):,} bytes; bare FastAPI app on port {bare_port}")

    single = filled.single_ids[2:] or filled.single_ids
    bare_url, sp, bp = f"http://{HOST}:{bare_port}", server.pid, bare.pid
    light: dict[str, tuple[str, Callable[[int], tuple[str, str, Any]], int]] = {
        "GET /jobs?limit=50": (base, lambda i: ("GET", "/api/sft/jobs?limit=50", None), sp),
        "bare FastAPI, same bytes": (bare_url, lambda i: ("GET", "/bytes", None), bp),
        "bare FastAPI, same dict": (bare_url, lambda i: ("GET", "/dict", None), bp),
        "GET /jobs/{id}": (base, lambda i: ("GET", f"/api/sft/jobs/{single[i % len(single)]}", None), sp),
        f"GET /jobs/{{id}}/metrics ({SMALL_POINTS} pts)":
            (base, lambda i: ("GET", f"/api/sft/jobs/{filled.small_id}/metrics", None), sp),
    }
    loads: dict[str, tuple[Load, Load]] = {}
    worker_proc = next(iter(workers_of(workspace)), None)
    if worker_proc is not None:
        worker_proc.cpu_percent()
    t_http = time.perf_counter()
    for name, (url, make, pid) in light.items():
        one = run_load(name, url, make, n_seq, 1, cpu_pid=pid)
        many = run_load(name, url, make, n_light, args.clients, cpu_pid=pid)
        loads[name] = (one, many)
        log(f"  {name}: 1 client p50 {one.p50:.1f} p99 {one.p99:.1f} ms ({one.rps:.0f}/s); {args.clients} clients "
            f"p50 {many.p50:.1f} p99 {many.p99:.1f} ms ({many.rps:.0f}/s); server CPU {one.cpu_ms_per_req:.2f} / "
            f"{many.cpu_ms_per_req:.2f} ms per request; errors {len(one.errors) + len(many.errors)}")
    big_n = per_points(workspace, filled.big_id)
    big_name = f"GET /jobs/{{id}}/metrics ({big_n:,} pts)"
    big_make = lambda i: ("GET", f"/api/sft/jobs/{filled.big_id}/metrics", None)  # noqa: E731
    one = run_load(big_name, base, big_make, 5, 1, warmup=1, cpu_pid=sp)
    many = run_load(big_name, base, big_make, args.clients, args.clients, warmup=0, time_limit_s=150, cpu_pid=sp)
    big_bytes = len(client.get(f"/api/sft/jobs/{filled.big_id}/metrics").content)
    loads[big_name] = (one, many)
    log(f"  {big_name}: 1 client p50 {one.p50:.0f} p99 {one.p99:.0f} ms; {args.clients} clients p50 {many.p50:.0f} "
        f"p99 {many.p99:.0f} ms; {big_bytes / 1e6:.1f} MB per answer")
    # What an incremental poller (the SSE stream, the lag probe) pays on a job with many points.
    tail_name = f"GET .../metrics?since_step=last-5 ({big_n:,}-pt job)"
    tail_make = lambda i: ("GET", f"/api/sft/jobs/{filled.big_id}/metrics?since_step={big_n - 5}", None)  # noqa: E731
    loads[tail_name] = (run_load(tail_name, base, tail_make, n_seq, 1, cpu_pid=sp),
                        run_load(tail_name, base, tail_make, n_light // 4, args.clients, cpu_pid=sp))
    log(f"  {tail_name}: 1 client p50 {loads[tail_name][0].p50:.1f} p99 {loads[tail_name][0].p99:.1f} ms; "
        f"{args.clients} clients p50 {loads[tail_name][1].p50:.1f} p99 {loads[tail_name][1].p99:.1f} ms")
    trainer_cpu = worker_proc.cpu_percent() if worker_proc is not None and worker_proc.is_running() else float("nan")
    log(f"  (the long job's worker used {trainer_cpu:.0f}% of a core during the {time.perf_counter() - t_http:.0f} s "
        "of HTTP load)")

    # In-process status query: JobManager.get on the same store, no HTTP.
    from sft_ui.jobs import JobManager
    from sft_ui.settings import Settings

    manager = JobManager(Settings(workspace=workspace))
    inproc = time_inproc(lambda: manager.get(filled.small_id), max(n_light, 1000))
    inproc_cpu = time_inproc(lambda: manager.get(filled.small_id), max(n_light, 1000), clock=time.thread_time)
    inproc_store = time_inproc(lambda: manager.store.get_job(filled.small_id), max(n_light, 1000))
    inproc_list = time_inproc(lambda: manager.list(None, 50, 0), max(200, n_seq))
    log(f"  in-process: JobManager.get p50 {pct(inproc, 50):.3f} p99 {pct(inproc, 99):.3f} ms; store.get_job p50 "
        f"{pct(inproc_store, 50):.3f} ms; JobManager.list(50) p50 {pct(inproc_list, 50):.2f} "
        f"p99 {pct(inproc_list, 99):.2f} ms")

    # Event lag on the real long job (waits for its first logged step: model loading takes a while).
    log("event lag: waiting for the long job's first logged step ...")
    has_points = wait_until(lambda: bool(get_json(client, f"/api/sft/jobs/{long_id}/metrics")["points"]), 180, 0.5)
    lags: list[float] = []
    polls = 0
    if has_points:
        lags, polls = measure_lag(client, long_id, args.lag_s)
        log(f"  {len(lags)} log events in {args.lag_s:.0f} s ({polls} polls): p50 {pct(lags, 50):.3f} s, "
            f"p95 {pct(lags, 95):.3f} s, max {max(lags, default=float('nan')):.3f} s")
    else:
        log("  the long job logged no step within 180 s: no lag figures")

    # Job creation: every POST queues (the long job holds the slot).
    post_body = {"config_id": "tiny-lora", "overrides": {"name": "api_scale queued", "max_steps": 5}}
    one = run_load("POST /train", base, lambda i: ("POST", "/api/sft/train", post_body), max(5, args.posts // 10), 1,
                   expect=201, keep=lambda r: r.json()["job_id"], warmup=0, cpu_pid=sp)
    many = run_load("POST /train", base, lambda i: ("POST", "/api/sft/train", post_body), args.posts, args.clients,
                    expect=201, keep=lambda r: r.json()["job_id"], warmup=0, cpu_pid=sp)
    loads["POST /train (201)"] = (one, many)
    queued = one.results + many.results
    inline_body = {"config": {**preset_dict("tiny-lora"), "name": "api_scale inline", "max_steps": 5}}
    inl1 = run_load("POST /train inline", base, lambda i: ("POST", "/api/sft/train", inline_body),
                    max(5, args.posts // 10), 1, expect=201, keep=lambda r: r.json()["job_id"], warmup=0, cpu_pid=sp)
    inln = run_load("POST /train inline", base, lambda i: ("POST", "/api/sft/train", inline_body), args.posts,
                    args.clients, expect=201, keep=lambda r: r.json()["job_id"], warmup=0, cpu_pid=sp)
    loads["POST /train inline config (201)"] = (inl1, inln)
    queued += inl1.results + inln.results
    log(f"  POST /train config_id: 1 client p50 {one.p50:.1f} p99 {one.p99:.1f} ms; {args.clients} clients p50 "
        f"{many.p50:.1f} p99 {many.p99:.1f} ms; inline config: 1 client p50 {inl1.p50:.1f} p99 {inl1.p99:.1f} ms; "
        f"{args.clients} clients p50 {inln.p50:.1f} p99 {inln.p99:.1f} ms; {len(queued)} jobs queued")
    for errs in (one.errors, many.errors, inl1.errors, inln.errors):
        for e in errs[:3]:
            log(f"    error: {e}")

    # Stop everything: the queued jobs, then the long one; wait until idle.
    t0 = time.perf_counter()
    stops = run_load("POST stop", base, lambda i: ("POST", f"/api/sft/jobs/{queued[i]}/stop", None), len(queued),
                     min(4, args.clients), warmup=0)
    client.post(f"/api/sft/jobs/{long_id}/stop").raise_for_status()
    idle = wait_until(lambda: _idle(client), 60, 0.1)
    log(f"stopped {len(stops.ms)} queued jobs (p50 {stops.p50:.1f} ms each) and the long one in "
        f"{time.perf_counter() - t0:.1f} s; idle: {idle}")

    # Submission -> worker process started, from idle.
    start_body = {"config_id": "tiny-lora", "overrides": {"name": "api_scale start", "max_steps": 5}}
    seen_ms, answer_ms, problems = measure_start(server, client, start_body, args.starts, log)
    for p in problems:
        log(f"  problem: {p}")
    client.close()

    # ---- report ----
    rows: list[Row] = []

    def pair(load: Load) -> tuple[float, float]:
        return (load.p50, load.p99)

    def cpu(loads_: tuple[Load, Load]) -> tuple[float, float]:
        return (loads_[0].cpu_ms_per_req, loads_[1].cpu_ms_per_req)

    lst = loads["GET /jobs?limit=50"]
    rows.append(Row("GET /jobs?limit=50", pair(lst[0]), pair(lst[1]), f"p99 < {LIST_P99_MS:.0f} ms", LIST_P99_MS,
                    cpu=cpu(lst)))
    for name in ("bare FastAPI, same bytes", "bare FastAPI, same dict"):
        rows.append(Row(name, pair(loads[name][0]), pair(loads[name][1]), "(floor)", None, cpu=cpu(loads[name])))
    rows.append(Row("GET /jobs/{id} (status, HTTP)", pair(loads["GET /jobs/{id}"][0]), pair(loads["GET /jobs/{id}"][1]),
                    f"< {STATUS_HTTP_MS:.0f} ms", STATUS_HTTP_MS, cpu=cpu(loads["GET /jobs/{id}"])))
    rows.append(Row("JobManager.get (in-process)", (pct(inproc, 50), pct(inproc, 99)), None,
                    f"< {STATUS_INPROC_MS:.0f} ms", STATUS_INPROC_MS,
                    extra=f"thread CPU time p50 {fmt_ms(pct(inproc_cpu, 50))} p99 {fmt_ms(pct(inproc_cpu, 99))} ms"))
    for name in (f"GET /jobs/{{id}}/metrics ({SMALL_POINTS} pts)", big_name, tail_name):
        rows.append(Row(name.replace("GET /jobs/{id}/metrics", "GET .../metrics"), pair(loads[name][0]),
                        pair(loads[name][1]), f"< {ANY_MS:.0f} ms (any)", ANY_MS, cpu=cpu(loads[name]),
                        extra=f"{big_bytes / 1e6:.1f} MB per answer" if name == big_name else ""))
    post = loads["POST /train (201)"]
    rows.append(Row("POST /train -> 201", pair(post[0]), pair(post[1]), f"< {CREATE_MS:.0f} ms", CREATE_MS,
                    cpu=cpu(post), extra='{"config_id": "tiny-lora", "overrides": {...}}'))
    inl = loads["POST /train inline config (201)"]
    rows.append(Row("POST /train -> 201 (inline)", pair(inl[0]), pair(inl[1]), f"< {CREATE_MS:.0f} ms", CREATE_MS,
                    cpu=cpu(inl), extra='{"config": {...}}: no preset lookup'))
    rows.append(Row("event lag (ms)", (pct(lags, 50) * 1000, pct(lags, 95) * 1000), None,
                    f"p95 < {LAG_P95_S:.1f} s", LAG_P95_S * 1000, extra=f"1 poller, 20 ms; {len(lags)} events; "
                    "columns: p50, p95"))
    rows.append(Row("POST -> worker process seen", (pct(seen_ms, 50), pct(seen_ms, 99)), None,
                    f"< {START_MS:.0f} ms", START_MS,
                    extra=f"{len(seen_ms)} starts from idle; their 201 came after p50 {fmt_ms(pct(answer_ms, 50))} ms"))
    ours = {name: ld for name, ld in loads.items() if not name.startswith("bare")}
    worst1 = max(ours, key=lambda name: ours[name][0].p99)
    worst_n = max(ours, key=lambda name: ours[name][1].p99)
    rows.append(Row("any API answer (worst p99)", (float("nan"), ours[worst1][0].p99),
                    (float("nan"), ours[worst_n][1].p99), f"< {ANY_MS:.0f} ms", ANY_MS,
                    extra=f"worst: {worst1} / {worst_n}"))

    load1 = os.getloadavg()
    print()
    print(f"== api_scale: {args.jobs:,} jobs, {filled.points:,} points, {args.clients} clients "
          f"(load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} CPUs; the long job trained during "
          "the HTTP phases) ==")
    print(f"fill: jobs {filled.jobs_s:.1f} s ({filled.jobs_s / args.jobs * 1000:.2f} ms/job), points "
          f"{filled.points_s:.1f} s ({filled.points / max(filled.points_s, 1e-9):,.0f}/s), db {filled.db_mb:.0f} MB; "
          f"server ready in {ready_s:.2f} s")
    print_table(rows, args.clients)
    bb, bd = loads["bare FastAPI, same bytes"], loads["bare FastAPI, same dict"]
    print(f"srv CPU/req: CPU time (user + system) of the serving process over the phase / requests, 1 client / "
          f"{args.clients} clients (includes the manager's 4 ticks/s in ours); latency verdicts judge p99")
    print(f"ours/bare (list, {len(raw):,} B): vs bytes  1 client p50 {lst[0].p50 / bb[0].p50:.1f}x p99 "
          f"{lst[0].p99 / bb[0].p99:.1f}x; {args.clients} clients p50 {lst[1].p50 / bb[1].p50:.1f}x p99 "
          f"{lst[1].p99 / bb[1].p99:.1f}x")
    c_ours, c_bytes, c_dict = ([x.cpu_ms_per_req for x in pair_] for pair_ in (lst, bb, bd))
    print(f"                         CPU per request vs bytes {c_ours[0] / c_bytes[0]:.1f}x / "
          f"{c_ours[1] / c_bytes[1]:.1f}x, vs dict {c_ours[0] / c_dict[0]:.1f}x / {c_ours[1] / c_dict[1]:.1f}x")
    print(f"                         vs dict   1 client p50 {lst[0].p50 / bd[0].p50:.1f}x p99 "
          f"{lst[0].p99 / bd[0].p99:.1f}x; {args.clients} clients p50 {lst[1].p50 / bd[1].p50:.1f}x p99 "
          f"{lst[1].p99 / bd[1].p99:.1f}x")
    print(f"throughput at {args.clients} clients: list {lst[1].rps:.0f}/s, bare bytes {bb[1].rps:.0f}/s, "
          f"bare dict {bd[1].rps:.0f}/s, status {loads['GET /jobs/{id}'][1].rps:.0f}/s, POST /train "
          f"{post[1].rps:.0f}/s")
    print(f"in-process: JobManager.list(50) p50 {pct(inproc_list, 50):.2f} ms p99 {pct(inproc_list, 99):.2f} ms; "
          f"store.get_job p50 {pct(inproc_store, 50):.3f} ms p99 {pct(inproc_store, 99):.3f} ms")
    errors = sum(len(a.errors) + len(b.errors) for a, b in loads.values())
    print(f"HTTP errors: {errors}; problems: {len(problems)}")
    misses = [r.what for r in rows if "MISS" in (r.verdict(r.one), r.verdict(r.many))]
    print("targets missed: " + (", ".join(misses) if misses else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
