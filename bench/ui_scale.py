"""Jobs-tab cost at scale: 1,000 jobs in the store while one job trains through the real server with its UI.

Fills a fresh workspace (like api_scale.py: finished jobs via SqliteStore, metric points via ingest), starts
`python app.py` (with the UI), submits the tiny-lora preset with max_steps 2000 and waits for its first logged
steps. Then measures:

  refresh tick     jobs_tab.list_view + jobs_tab.detail_view for the training job, in-process against the same
                   workspace (what the 1 s timer does whenever the manager's revision changed)
  log tick         jobs_tab.read_new_log (what the timer does every second)
  end to end       gradio_client: predict(api_name="/list_jobs") and predict(job_id, api_name="/open_job")
                   (the latter returns everything a refresh tick renders, through Gradio's queue)
  server RSS       psutil RSS of the server process alone (children excluded), and whether torch is mapped in it
  start to 200     `python app.py` launch -> first HTTP 200 on /, median of 3, against an empty Gradio Blocks
                   app mounted and served the same way (FastAPI + gr.mount_gradio_app + uvicorn)

A missed target is reported, not failed: the exit code is non-zero only on a crash. Every process started here
(servers, workers of this workspace) is stopped before exit.

    python bench/ui_scale.py [--quick] [--jobs 1000] [--iterations 300] [--launches 3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from api_scale import (  # noqa: E402  (bench/ is on the path: shared helpers)
    HOST,
    ROOT,
    TERMINAL,
    Proc,
    clean_env,
    fill_store,
    fmt_ms,
    free_port,
    get_json,
    kill_workers,
    pct,
    run_and_clean_up,
    start_server,
    time_inproc,
    wait_until,
)

REFRESH_P99_MS = 100.0
RSS_MB = 400.0
START_S = 5.0
GRADIO_SESSION_CAP = 10_000  # gradio's default state_session_capacity: sessions kept in memory
HEAVY_LIBS = ("libtorch", "/torch/", "/transformers/", "/trl/", "/peft/")

# An empty Blocks app served like ours. With a JSON file as 2nd argument it also has one trivial endpoint,
# /list_jobs, answering that constant: the floor for a Gradio queue round trip with the same payload.
EMPTY_APP = r"""
import json, sys
import gradio as gr
import uvicorn
from fastapi import FastAPI

app = FastAPI()
with gr.Blocks() as blocks:
    if len(sys.argv) > 2:
        payload = json.loads(open(sys.argv[2], encoding="utf-8").read())

        def list_jobs(status: str = "all", limit: float = 50, offset: float = 0) -> dict:
            return payload

        gr.api(list_jobs, api_name="list_jobs", concurrency_limit=None)
blocks.queue(default_concurrency_limit=4, max_size=256)
app = gr.mount_gradio_app(app, blocks, path="/", ssr_mode=False)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=2)
"""

# Where the start-up time goes (in a fresh interpreter, like the server).
BREAKDOWN = r"""
import sys, time
t0 = time.perf_counter()
import fastapi, uvicorn  # noqa
t1 = time.perf_counter()
import gradio as gr
t2 = time.perf_counter()
from pathlib import Path
from sft_ui.jobs import JobManager
from sft_ui.server import create_app
from sft_ui.settings import Settings
from sft_ui.ui.app import build_ui  # noqa
t3 = time.perf_counter()
settings = Settings(workspace=Path(sys.argv[1]))
manager = JobManager(settings)
t4 = time.perf_counter()
app = create_app(settings, manager, with_ui=True)
t5 = time.perf_counter()
print(f"import fastapi+uvicorn {t1 - t0:.2f} s; import gradio {t2 - t1:.2f} s; import sft_ui server+ui "
      f"{t3 - t2:.2f} s; JobManager {t4 - t3:.2f} s; create_app (build_ui + mount) {t5 - t4:.2f} s; "
      f"total {t5 - t0:.2f} s (then uvicorn binds)")
"""


class GradioRaw:
    """Gradio's own queue protocol (sse_v3), as the browser speaks it: POST queue/join, read queue/data."""

    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, timeout=30.0)
        config = self.http.get("/config").json()
        self.prefix = config.get("api_prefix", "/gradio_api")
        self.fn_index = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}

    def call(self, api_name: str, data: list[Any], timeout_s: float = 30.0) -> tuple[float, dict[str, Any]]:
        """(milliseconds from join to process_completed, that message); a fresh session each call."""
        session = uuid.uuid4().hex[:11]
        t0 = time.perf_counter()
        resp = self.http.post(f"{self.prefix}/queue/join", json={
            "data": data, "fn_index": self.fn_index[api_name], "session_hash": session, "event_data": None,
            "trigger_id": None})
        resp.raise_for_status()
        event_id = resp.json()["event_id"]
        deadline = time.monotonic() + timeout_s
        with self.http.stream("GET", f"{self.prefix}/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                        if not msg.get("success", True):
                            raise RuntimeError(f"{api_name} failed: {str(msg.get('output'))[:300]}")
                        return (time.perf_counter() - t0) * 1000, msg
                if time.monotonic() > deadline:
                    break
        raise RuntimeError(f"{api_name}: no process_completed within {timeout_s:.0f} s")

    def close(self) -> None:
        self.http.close()


def timed(fn: Callable[[], Any], n: int, time_limit_s: float = 90.0) -> list[float]:
    """Milliseconds per call, after one untimed call; fn may return its own figure (ms) instead."""
    fn()
    out: list[float] = []
    deadline = time.monotonic() + time_limit_s
    for _ in range(n):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        own = fn()
        out.append(own if isinstance(own, float) else (time.perf_counter() - t0) * 1000)
    return out


def measure_gradio(base: str, calls: dict[str, list[Any]], n: int,
                   log: Callable[[str], None]) -> tuple[dict[str, list[float]], float, str]:
    """Per api name: latencies through Gradio's queue, raw protocol ('raw NAME') and gradio_client ('client
    NAME'); plus the seconds Client() took and any error text."""
    from gradio_client import Client

    out: dict[str, list[float]] = {}
    errors = ""
    raw = GradioRaw(base)
    try:
        for name, data in calls.items():
            try:
                out[f"raw {name}"] = timed(lambda name=name, data=data: raw.call(name, data)[0], n)
            except Exception as exc:  # report, keep going
                errors += f"raw /{name}: {type(exc).__name__}: {str(exc)[:200]}; "
                out[f"raw {name}"] = []
    finally:
        raw.close()
    t0 = time.perf_counter()
    client = Client(base + "/", verbose=False, download_files=False, analytics_enabled=False)
    client_s = time.perf_counter() - t0
    try:
        for name, data in calls.items():
            args = [a for a in data if a is not None]  # gr.State inputs are not part of the client API
            try:
                out[f"client {name}"] = timed(lambda name=name, args=args: client.predict(*args, api_name=f"/{name}"),
                                              n)
            except Exception as exc:  # gradio_client raises many kinds; report, keep going
                errors += f"client /{name}: {type(exc).__name__}: {str(exc)[:200]}; "
                out[f"client {name}"] = []
    finally:
        client.close()
    for key, values in out.items():
        log(f"  {key}: p50 {pct(values, 50):.1f} p99 {pct(values, 99):.1f} ms ({len(values)} calls)")
    return out, client_s, errors


def rss_report(pid: int) -> tuple[float, float, list[str]]:
    """(RSS MB, USS MB, heavy libraries mapped) of one process, children excluded."""
    proc = psutil.Process(pid)
    rss = proc.memory_info().rss / 2**20
    try:
        uss = proc.memory_full_info().uss / 2**20
    except psutil.Error:
        uss = float("nan")
    heavy = sorted({m.path for m in proc.memory_maps() if any(h in m.path for h in HEAVY_LIBS)})
    return rss, uss, heavy


def launch_to_200(argv: list[str], workspace: Path, name: str, port: int, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds from launch to the first 200 on /, CPU seconds the process had used by then)."""
    proc = Proc(argv, workspace / f"{name}-{port}.log", env)
    try:
        wall = proc.wait_http(f"http://{HOST}:{port}/", timeout_s=60)
        try:
            cpu = psutil.Process(proc.pid).cpu_times()
            return wall, cpu.user + cpu.system
        except psutil.Error:
            return wall, float("nan")
    finally:
        proc.stop()


def profile_top(fn: Callable[[], Any], n: int = 20, lines: int = 18) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(lines)
    text = out.getvalue()
    keep = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("   Ordered", "   List reduced"))]
    return "\n".join(keep[:lines + 4])


def e2e_rows(e2e: dict[str, list[float]], floor: dict[str, list[float]], client_s: float) -> list[tuple[str, ...]]:
    def ratio(key: str) -> str:
        ours, base = pct(e2e.get(key, []), 50), pct(floor.get(key, []), 50)
        return f"p50 {ours / base:.1f}x the empty app's" if base == base and ours == ours and base > 0 else ""

    rows: list[tuple[str, ...]] = []
    for how, label in (("raw", "queue protocol"), ("client", "gradio_client")):
        for name, note in (("list_jobs", ""), ("open_job", " (= a refresh)")):
            values = e2e.get(f"{how} {name}", [])
            extra = ratio(f"{how} {name}") if name == "list_jobs" else "list + detail + log, postprocessed"
            if how == "client" and name == "list_jobs":
                extra = f"{extra}; Client() took {client_s:.2f} s"
            rows.append((f"{label} /{name}{note}", fmt_ms(pct(values, 50)), fmt_ms(pct(values, 99)), "ms", "", "",
                         extra))
        values = floor.get(f"{how} list_jobs", [])
        rows.append((f"  empty app + constant /list_jobs ({how})", fmt_ms(pct(values, 50)), fmt_ms(pct(values, 99)),
                     "ms", "", "", "floor"))
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="finished jobs in the store")
    p.add_argument("--points", type=int, default=200_000, help="metric points spread over them")
    p.add_argument("--big-points", type=int, default=100_000,
                   help="points of one finished job whose detail view is timed too (a long run)")
    p.add_argument("--max-steps", type=int, default=2000, help="max_steps of the training job")
    p.add_argument("--iterations", type=int, default=300, help="in-process ticks timed")
    p.add_argument("--client-calls", type=int, default=100, help="gradio_client predictions timed per endpoint")
    p.add_argument("--launches", type=int, default=3, help="launches timed per app for start-to-200")
    p.add_argument("--quick", action="store_true", help="small preset: 100 iterations, 30 client calls, 1 launch")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of 20 refresh ticks")
    p.add_argument("--keep", action="store_true", help="keep the workspace (its path is printed)")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.client_calls, args.launches, args.points, args.big_points = 100, 30, 1, 50_000, 20_000
    args.jobs = max(args.jobs, 10)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workspace = Path(tempfile.mkdtemp(prefix="sft_ui_ui_scale_"))
    return run_and_clean_up(lambda procs: _run(args, workspace, procs), workspace, args.keep)


def _run(args: argparse.Namespace, workspace: Path, procs: list[Proc]) -> int:
    def log(msg: str) -> None:
        print(msg, flush=True)

    load0 = os.getloadavg()
    log(f"ui_scale: {args.jobs} jobs, {args.points} points, training job max_steps {args.max_steps}; "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.2f}; workspace {workspace}")
    filled = fill_store(workspace, args.jobs, args.points, big_points=args.big_points, log=log)
    log(f"  filled in {filled.jobs_s + filled.points_s:.1f} s, db {filled.db_mb:.0f} MB")

    port = free_port()
    env = clean_env(SFT_UI_MAX_CONCURRENT="1", SFT_UI_STOP_GRACE_S="5", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    server = start_server(workspace, port, ui=True, env=env)
    procs.append(server)
    base = f"http://{HOST}:{port}"
    ready_s = server.wait_http(base + "/")
    log(f"server (with UI) answered / after {ready_s:.2f} s")
    rss_idle = rss_report(server.pid)
    http = httpx.Client(base_url=base, timeout=60.0)
    resp = http.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {
        "name": "ui_scale training", "max_steps": args.max_steps}})
    resp.raise_for_status()
    job_id = resp.json()["job_id"]
    log(f"training job {job_id} submitted; waiting for its first logged steps ...")
    if not wait_until(lambda: len(get_json(http, f"/api/sft/jobs/{job_id}/metrics")["points"]) >= 5, 240, 0.5):
        raise RuntimeError(f"the training job logged fewer than 5 steps within 240 s: "
                           f"{get_json(http, f'/api/sft/jobs/{job_id}')}")

    # ---- in-process: the Jobs tab's plain functions against the same workspace ----
    from sft_ui.jobs import JobManager
    from sft_ui.settings import Settings
    from sft_ui.ui import jobs_tab

    manager = JobManager(Settings(workspace=workspace))
    session = jobs_tab.new_session()
    jobs_tab.open_job(manager, session, job_id)
    refresh, lists, details, logs = [], [], [], []
    log_bytes = 0
    deadline = time.monotonic() + 120
    for _ in range(args.iterations):
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        jobs_tab.list_view(manager, session)
        t1 = time.perf_counter()
        jobs_tab.detail_view(manager, session["job"])
        t2 = time.perf_counter()
        before = session["log_offset"]
        jobs_tab.read_new_log(manager, session)
        t3 = time.perf_counter()
        log_bytes += session["log_offset"] - before
        lists.append((t1 - t0) * 1000)
        details.append((t2 - t1) * 1000)
        refresh.append((t2 - t0) * 1000)
        logs.append((t3 - t2) * 1000)
        time.sleep(0.03)  # let the job move on between ticks
    job_now = manager.get(job_id)
    n_points = len(manager.metrics(job_id))
    log(f"  {len(refresh)} ticks: refresh p50 {pct(refresh, 50):.1f} p99 {pct(refresh, 99):.1f} ms (list_view p50 "
        f"{pct(lists, 50):.1f}, detail_view p50 {pct(details, 50):.1f}); log tick p50 {pct(logs, 50):.2f} p99 "
        f"{pct(logs, 99):.2f} ms ({log_bytes:,} new log bytes); job at step {job_now['progress']['step']}, "
        f"{n_points} points")
    n_big = len(manager.metrics(filled.big_id))
    big_detail = time_inproc(lambda: jobs_tab.detail_view(manager, filled.big_id), 10, time_limit_s=60)
    big_metrics = time_inproc(lambda: manager.metrics(filled.big_id), 5, time_limit_s=30)
    log(f"  detail_view of a finished job with {n_big:,} points: p50 {pct(big_detail, 50):.0f} ms "
        f"(JobManager.metrics alone {pct(big_metrics, 50):.0f} ms)")
    cpu_refresh = time_inproc(lambda: (jobs_tab.list_view(manager, session),
                                       jobs_tab.detail_view(manager, session["job"])), 50, clock=time.thread_time)
    profile_text = profile_top(lambda: (jobs_tab.list_view(manager, session),
                                        jobs_tab.detail_view(manager, session["job"]))) if args.profile else ""

    # ---- end to end through Gradio's queue: the browser's protocol, and gradio_client ----
    rss_before_e2e = rss_report(server.pid)[0]
    e2e, client_s, e2e_error = measure_gradio(base, {"list_jobs": ["all", 50, 0], "open_job": [None, job_id]},
                                              args.client_calls, log)
    with_client = rss_report(server.pid)
    # every raw call opens a fresh session (like a page load); gradio_client holds one; +1 warm-up per endpoint
    sessions = len(e2e.get("raw list_jobs", [])) + len(e2e.get("raw open_job", [])) + 2 + 1
    per_session_mb = (with_client[0] - rss_before_e2e) / sessions
    projected_mb = rss_idle[0] + per_session_mb * GRADIO_SESSION_CAP
    log(f"  server RSS {rss_before_e2e:.0f} MB -> {with_client[0]:.0f} MB over {sessions} fresh Gradio sessions: "
        f"{per_session_mb * 1000:.0f} kB per session")
    list_answer = get_json(http, "/api/sft/jobs?limit=50")

    # ---- stop the job and the server ----
    http.post(f"/api/sft/jobs/{job_id}/stop")
    stopped = wait_until(lambda: get_json(http, f"/api/sft/jobs/{job_id}")["status"] in TERMINAL, 60, 0.2)
    rss_after = rss_report(server.pid)
    http.close()
    server.stop()
    procs.remove(server)
    kill_workers(workspace)
    log(f"training job stopped: {stopped}; server RSS idle {rss_idle[0]:.0f} MB, after the e2e calls "
        f"{with_client[0]:.0f} MB, at the end {rss_after[0]:.0f} MB")

    # ---- start to first 200 on /: ours against an empty Gradio app, alternating ----
    (workspace / "empty_app.py").write_text(EMPTY_APP, encoding="utf-8")
    ours_s, empty_s, ours_cpu, empty_cpu = [], [], [], []
    for k in range(args.launches):
        for name in (("ours", "empty") if k % 2 == 0 else ("empty", "ours")):
            p = free_port()
            if name == "ours":
                argv = [sys.executable, str(ROOT / "app.py"), "--port", str(p), "--workspace", str(workspace)]
                wall, cpu = launch_to_200(argv, workspace, "ours", p, env)
                ours_s.append(wall)
                ours_cpu.append(cpu)
            else:
                argv = [sys.executable, str(workspace / "empty_app.py"), str(p)]
                wall, cpu = launch_to_200(argv, workspace, "empty", p, env)
                empty_s.append(wall)
                empty_cpu.append(cpu)
        log(f"  launch {k + 1}: ours {ours_s[-1]:.2f} s ({ours_cpu[-1]:.2f} s CPU), empty Gradio app "
            f"{empty_s[-1]:.2f} s ({empty_cpu[-1]:.2f} s CPU)")
    # The floor for a Gradio round trip: the empty app plus one endpoint answering our list as a constant.
    (workspace / "list.json").write_text(json.dumps(list_answer), encoding="utf-8")
    p = free_port()
    floor_app = Proc([sys.executable, str(workspace / "empty_app.py"), str(p), str(workspace / "list.json")],
                     workspace / f"floor-{p}.log", env)
    procs.append(floor_app)
    floor_app.wait_http(f"http://{HOST}:{p}/", timeout_s=60)
    floor, _, floor_error = measure_gradio(f"http://{HOST}:{p}", {"list_jobs": ["all", 50, 0]}, args.client_calls,
                                           lambda m: log(m.replace("  ", "  floor ", 1)))
    e2e_error += floor_error
    floor_app.stop()
    breakdown = Proc([sys.executable, "-c", BREAKDOWN, str(workspace)], workspace / "breakdown.log", env)
    procs.append(breakdown)
    try:
        breakdown.proc.wait(120)
    except subprocess.TimeoutExpired:
        breakdown.stop()
    breakdown_text = breakdown.tail(3)

    # ---- report ----
    ours_med, empty_med = pct(ours_s, 50), pct(empty_s, 50)
    rss_peak = max(rss_idle[0], with_client[0], rss_after[0])
    heavy = sorted(set(rss_idle[2] + with_client[2] + rss_after[2]))
    rows = [
        ("refresh tick (list_view + detail_view)", fmt_ms(pct(refresh, 50)), fmt_ms(pct(refresh, 99)), "ms",
         f"p99 < {REFRESH_P99_MS:.0f} ms", "PASS" if pct(refresh, 99) < REFRESH_P99_MS else "MISS",
         f"thread CPU p50 {fmt_ms(pct(cpu_refresh, 50))} p99 {fmt_ms(pct(cpu_refresh, 99))} ms"),
        ("  list_view (50 of the jobs)", fmt_ms(pct(lists, 50)), fmt_ms(pct(lists, 99)), "ms", "", "", ""),
        ("  detail_view (training job)", fmt_ms(pct(details, 50)), fmt_ms(pct(details, 99)), "ms", "", "",
         f"{n_points} points at the end"),
        (f"  detail_view ({n_big:,}-pt finished job)", fmt_ms(pct(big_detail, 50)), fmt_ms(pct(big_detail, 99)),
         "ms", f"p99 < {REFRESH_P99_MS:.0f} ms", "PASS" if pct(big_detail, 99) < REFRESH_P99_MS else "MISS",
         f"JobManager.metrics alone p50 {fmt_ms(pct(big_metrics, 50))} ms"),
        ("log tick (read_new_log)", fmt_ms(pct(logs, 50)), fmt_ms(pct(logs, 99)), "ms", "", "",
         f"{log_bytes:,} B read"),
        *e2e_rows(e2e, floor, client_s),
        ("server RSS (children excluded)", f"{rss_idle[0]:.0f}", f"{rss_peak:.0f}", "MB", f"< {RSS_MB:.0f} MB",
         "PASS" if rss_peak < RSS_MB and not heavy else "MISS",
         f"columns: idle, peak; USS {with_client[1]:.0f} MB; torch mapped: {'yes' if heavy else 'no'}"),
        ("server RSS growth per fresh UI session", f"{per_session_mb * 1000:.0f}", "", "kB",
         f"< {RSS_MB:.0f} MB at cap", "PASS" if projected_mb < RSS_MB else "MISS",
         f"{sessions} sessions; at Gradio's {GRADIO_SESSION_CAP:,}-session cap: ~{projected_mb / 1024:.1f} GB"),
        ("start -> first 200 on /", f"{ours_med:.2f}", f"{max(ours_s):.2f}", "s", f"< {START_S:.0f} s",
         "PASS" if ours_med < START_S else "MISS",
         f"columns: median, max of {len(ours_s)}; CPU used by then: median {pct(ours_cpu, 50):.2f} s"),
        ("  empty Gradio app, same way", f"{empty_med:.2f}", f"{max(empty_s):.2f}", "s", "", "",
         f"ours/empty {ours_med / empty_med:.2f}x wall, {pct(ours_cpu, 50) / pct(empty_cpu, 50):.2f}x CPU "
         f"(empty: {pct(empty_cpu, 50):.2f} s CPU)"),
    ]
    load1 = os.getloadavg()
    print()
    print(f"== ui_scale: {args.jobs:,} jobs in the store, one tiny-lora job training (load average {load0[0]:.2f} "
          f"-> {load1[0]:.2f} on {os.cpu_count()} CPUs) ==")
    head = ("measure", "p50", "p99", "unit", "target", "verdict", "notes")
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head))]
    for line in (head, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) if i in (0, 4, 6) else str(x).rjust(w)
                        for i, (x, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    print(f"start-up breakdown (fresh interpreter): {breakdown_text}")
    if heavy:
        print("heavy libraries mapped in the server: " + ", ".join(heavy[:5]))
    if e2e_error:
        print(f"gradio_client errors: {e2e_error}")
    if profile_text:
        print("cProfile, 20 refresh ticks (cumulative):\n" + profile_text)
    misses = [r[0].strip() for r in rows if r[5] == "MISS"]
    print("targets missed: " + (", ".join(misses) if misses else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
