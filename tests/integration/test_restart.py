"""A server killed with SIGKILL and started again on the same workspace: workers are reattached or settled."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import (
    TINY,
    Server,
    find_worker_pid,
    group_gone,
    kill_processes_mentioning,
    paused,
    read_text,
    wait_for,
)

from sft_ui.store import SqliteStore

RUN_TIMEOUT_S = 300.0
FINISHED = ("succeeded", "failed", "stopped", "interrupted")

StartServer = Callable[[], Server]


@pytest.fixture
def start_server(workspace: Path, worker_env: dict[str, str], tmp_path: Path) -> Iterator[StartServer]:
    """Starts `python app.py --no-ui` on `workspace` (the same port each time); all are killed at the end."""
    env = {**worker_env, "SFT_UI_STOP_GRACE_S": "10", "SFT_UI_MAX_CONCURRENT": "1"}
    servers: list[Server] = []

    def start() -> Server:
        port = servers[-1].port if servers else None
        server = Server(workspace, env, tmp_path / "server.log", port=port)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):  # they share one port: the newest holds it
        server.kill()
    kill_processes_mentioning(str(workspace))


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/sft/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_job(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = RUN_TIMEOUT_S) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        return job if until(job) else None

    def describe() -> str:
        job = get_job(client, job_id)
        return (f"job {job_id} {what}; it is {job['status']} at step {job['progress']['step']}: {job['error']}\n"
                + read_text(Path(job["job_dir"]) / "train.log")[-2000:])

    return wait_for(check, timeout, 0.2, describe)


def submit(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {**TINY, **overrides}})
    assert response.status_code == 201, response.text
    return response.json()


def running_at(step: int) -> Callable[[dict[str, Any]], bool]:
    def check(job: dict[str, Any]) -> bool:
        if job["status"] in FINISHED:
            raise AssertionError(f"job ended ({job['status']}) before step {step}: {job['error']}")
        return job["status"] == "running" and job["progress"]["step"] >= step

    return check


def total_jobs(client: httpx.Client) -> int:
    return int(client.get("/api/sft/jobs").json()["total"])


def test_running_job_is_reattached_after_server_sigkill(start_server: StartServer, workspace: Path) -> None:
    server = start_server()
    with server.client() as client:
        job = submit(client, max_steps=60)
        job_id = job["job_id"]
        running = wait_job(client, job_id, running_at(2), "to run step 2")
        worker_pid = running["info"]["pid"]
        total = total_jobs(client)
        assert total == 1

    # The worker is paused across the restart: on an idle machine it could otherwise finish before the new
    # server is up, and there would be nothing left to reattach.
    with paused(worker_pid):
        server.kill()
        assert psutil.pid_exists(worker_pid) and not group_gone(worker_pid), "the worker died with the server"
        server = start_server()
        with server.client() as client:
            assert total_jobs(client) == total
            after = get_job(client, job_id)
            assert after["job_id"] == job_id and after["status"] == "running", after
            assert after["attempt"] == 1  # reattached, not relaunched
            assert after["info"]["pid"] == worker_pid and find_worker_pid(after["job_dir"]) == worker_pid
            assert client.get("/api/sft/health").json()["running"] == 1
            seen = after["progress"]["step"]
    with server.client() as client:
        wait_job(client, job_id, lambda j: j["progress"]["step"] > seen, "to keep training after the restart")
        done = wait_job(client, job_id, lambda j: j["status"] in FINISHED, "to finish")
        assert done["status"] == "succeeded", done["error"]
        assert done["progress"]["step"] == 60 and done["final_dir"] and done["attempt"] == 1
        steps = [p["step"] for p in client.get(f"/api/sft/jobs/{job_id}/metrics").json()["points"]]
        assert steps == list(range(1, 61)), "metrics were lost or duplicated across the restart"
        assert total_jobs(client) == total
    store = SqliteStore(workspace / "sft_ui.db")
    assert [h["to_status"] for h in store.history(job_id)] == ["queued", "running", "succeeded"]
    assert store.integrity_ok()
    store.close()


def test_worker_that_died_while_the_server_was_down_is_interrupted_then_resumed(
        start_server: StartServer) -> None:
    server = start_server()
    with server.client() as client:
        job = submit(client, max_steps=24, save_steps=8)
        job_id = job["job_id"]
        running = wait_job(client, job_id, running_at(2), "to run step 2")
        total = total_jobs(client)

    worker_pid = find_worker_pid(running["job_dir"])
    assert worker_pid is not None and worker_pid == running["info"]["pid"]
    with paused(worker_pid):  # it must not finish on its own between the two kills
        server.kill()
        os.kill(worker_pid, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE,
             30, 0.05, "the worker to die")

    server = start_server()
    with server.client() as client:
        assert total_jobs(client) == total
        lost = get_job(client, job_id)
        assert lost["status"] == "interrupted", lost
        assert lost["error_kind"] == "lost" and lost["resumable"] and lost["exit_code"] is None
        assert "last lines of train.log" in lost["error"] and "step " in lost["error"]
        assert client.get("/api/sft/health").json()["running"] == 0

        response = client.post(f"/api/sft/jobs/{job_id}/resume")
        assert response.status_code == 200, response.text
        assert response.json()["status"] in ("queued", "running")
        done = wait_job(client, job_id, lambda j: j["status"] in FINISHED, "to finish after resume")
        assert done["status"] == "succeeded", done["error"]
        assert done["attempt"] == 2 and done["progress"]["step"] == 24 and done["final_dir"]
        assert total_jobs(client) == total
