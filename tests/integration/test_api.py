"""The REST API of a real server subprocess (`python app.py --no-ui`), started once for this module.

One long real job (stopped at the end) keeps the single training slot busy, so jobs submitted meanwhile stay
queued. Every response is checked for tracebacks by a client hook.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import TINY, Server, kill_processes_mentioning, new_workspace, paused, read_text, server_env, wait_for

RUN_TIMEOUT_S = 240.0
UNKNOWN = "20260101-000000-abcdef"
LONG_STEPS = 5000  # never finishes here: the last test stops it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api")
    ws = new_workspace(root, models_cache)
    env = server_env(ws, SFT_UI_STOP_GRACE_S="20", SFT_UI_MAX_CONCURRENT="1")
    srv = Server(ws, env, root / "server.log")
    try:
        yield srv.start()
    finally:
        srv.kill()
        kill_processes_mentioning(str(root))


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def long_job(client: httpx.Client) -> dict[str, Any]:
    """The POST /train answer for a long real job."""
    response = client.post("/api/sft/train", json={"config_id": "tiny-lora",
                                                    "overrides": {**TINY, "max_steps": LONG_STEPS,
                                                                  "name": "api long run"}})
    assert response.status_code == 201, response.text
    return {"status_code": response.status_code, **response.json()}


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/sft/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_running_step(client: httpx.Client, job_id: str, step: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job = get_job(client, job_id)
        if job["status"] != "running":
            assert job["status"] == "queued", f"job is {job['status']}: {job['error']}"
            return None
        return job if job["progress"]["step"] >= step else None

    return wait_for(check, RUN_TIMEOUT_S, 0.1, lambda: f"job {job_id} to run step {step}: "
                    + read_text(Path(get_job(client, job_id)["job_dir"]) / "train.log")[-2000:])


def submit(client: httpx.Client, **overrides: Any) -> dict[str, Any]:
    response = client.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {**TINY, **overrides}})
    assert response.status_code == 201, response.text
    return response.json()


def parse_sse(text: str) -> list[dict[str, Any]]:
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        frame: dict[str, Any] = {}
        for line in block.split("\n"):
            key, _, value = line.partition(": ")
            frame[key] = value
        frame["data"] = json.loads(frame["data"])
        frames.append(frame)
    return frames


# ---- submitting ---------------------------------------------------------------------------------------------
def test_train_with_config_id_and_overrides_queues_a_job(client: httpx.Client, long_job: dict[str, Any]) -> None:
    assert long_job["status_code"] == 201
    assert long_job["job_id"] and long_job["status"] == "queued"
    assert long_job["name"] == "api long run"
    assert long_job["config"]["max_steps"] == LONG_STEPS and long_job["config"]["lora_r"] == 8  # preset + overrides
    assert get_job(client, long_job["job_id"])["job_id"] == long_job["job_id"]


@pytest.mark.parametrize(("overrides", "field"), [({"lora_r": 0}, "lora_r"), ({"max_steps": "many"}, "max_steps"),
                                                  ({"lora_rank": 8}, "lora_rank"),
                                                  ({"method": "magic"}, "method")])
def test_train_with_an_invalid_override_is_422_naming_the_field(client: httpx.Client, overrides: dict[str, Any],
                                                                 field: str) -> None:
    before = client.get("/api/sft/jobs").json()["total"]
    response = client.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": overrides})
    assert response.status_code == 422, response.text
    body = response.json()
    assert field in body["detail"]
    assert [e["field"] for e in body["errors"]] == [field]
    assert client.get("/api/sft/jobs").json()["total"] == before


def test_train_request_shape_errors(client: httpx.Client) -> None:
    both = client.post("/api/sft/train", json={"config": {"max_steps": 3}, "config_id": "tiny-lora"})
    assert both.status_code == 422 and "exactly one" in both.json()["detail"]
    neither = client.post("/api/sft/train", json={})
    assert neither.status_code == 422 and "detail" in neither.json()
    extra = client.post("/api/sft/train", json={"config_id": "tiny-lora", "bogus": 1})
    assert extra.status_code == 422 and "bogus" in extra.json()["detail"]
    garbage = client.post("/api/sft/train", content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 422 and "detail" in garbage.json()
    bad_config = client.post("/api/sft/train", json={"config": {"learning_rate": -1}})
    assert bad_config.status_code == 422 and "learning_rate" in bad_config.json()["detail"]
    unknown = client.post("/api/sft/train", json={"config_id": "no-such-config"})
    assert unknown.status_code == 404 and "no-such-config" in unknown.json()["detail"]


# ---- a running job --------------------------------------------------------------------------------------------
def test_resume_or_delete_of_a_running_job_is_409(client: httpx.Client, long_job: dict[str, Any]) -> None:
    job_id = long_job["job_id"]
    wait_running_step(client, job_id, 1)
    resume = client.post(f"/api/sft/jobs/{job_id}/resume")
    assert resume.status_code == 409 and "running" in resume.json()["detail"]
    delete = client.delete(f"/api/sft/jobs/{job_id}")
    assert delete.status_code == 409 and "running" in delete.json()["detail"]
    job = get_job(client, job_id)
    assert job["status"] == "running" and Path(job["job_dir"]).is_dir()


def test_logs_from_an_offset_return_only_new_text(client: httpx.Client, long_job: dict[str, Any]) -> None:
    job_id = long_job["job_id"]
    job = wait_running_step(client, job_id, 2)
    log_path = Path(job["job_dir"]) / "train.log"
    first = client.get(f"/api/sft/jobs/{job_id}/logs").json()
    assert first["text"] and not first["complete"] and first["next_offset"] == len(first["text"].encode())
    wait_for(lambda: log_path.read_bytes()[first["next_offset"]:].count(b"\n") >= 2, RUN_TIMEOUT_S, 0.1,
             "more log lines")
    second = client.get(f"/api/sft/jobs/{job_id}/logs", params={"offset": first["next_offset"]}).json()
    assert second["text"] and second["next_offset"] > first["next_offset"]
    assert (first["text"] + second["text"]).encode() == log_path.read_bytes()[: second["next_offset"]]
    small = client.get(f"/api/sft/jobs/{job_id}/logs", params={"offset": 0, "max_bytes": 10}).json()
    assert small["next_offset"] <= 10 and first["text"].startswith(small["text"])
    assert client.get(f"/api/sft/jobs/{job_id}/logs", params={"offset": -1}).status_code == 422


def test_metrics_since_step(client: httpx.Client, long_job: dict[str, Any]) -> None:
    job_id = long_job["job_id"]
    wait_running_step(client, job_id, 4)
    every = client.get(f"/api/sft/jobs/{job_id}/metrics").json()["points"]
    assert [p["step"] for p in every][:4] == [1, 2, 3, 4] and all(p["kind"] == "train" for p in every)
    since = client.get(f"/api/sft/jobs/{job_id}/metrics", params={"since_step": 2}).json()["points"]
    assert since and all(p["step"] > 2 for p in since) and since[0]["step"] == 3
    assert client.get(f"/api/sft/jobs/{job_id}/metrics", params={"since_step": 10**9}).json()["points"] == []
    assert client.get(f"/api/sft/jobs/{job_id}/metrics", params={"since_step": -2}).status_code == 422


def test_health_counts_and_system(client: httpx.Client, long_job: dict[str, Any]) -> None:
    wait_running_step(client, long_job["job_id"], 1)
    health = client.get("/api/sft/health").json()
    assert health["status"] == "ok" and health["running"] == 1 and health["queued"] == 0 and health["version"]
    system = client.get("/api/sft/system")
    assert system.status_code == 200
    assert {"cpu", "memory", "disk"} <= set(system.json())


def test_list_jobs_paging_and_status_filter(client: httpx.Client, long_job: dict[str, Any]) -> None:
    wait_running_step(client, long_job["job_id"], 1)  # the slot is busy: new jobs stay queued
    before = client.get("/api/sft/jobs").json()["total"]
    new = [submit(client, max_steps=3, name=f"waiting {i}")["job_id"] for i in range(3)]
    try:
        everything = client.get("/api/sft/jobs", params={"limit": 500}).json()
        assert everything["total"] == before + 3
        assert [j["job_id"] for j in everything["jobs"]][:3] == new[::-1]  # newest first
        page1 = client.get("/api/sft/jobs", params={"limit": 2, "offset": 0}).json()
        page2 = client.get("/api/sft/jobs", params={"limit": 2, "offset": 2}).json()
        assert page1["total"] == page2["total"] == before + 3
        assert [j["job_id"] for j in page1["jobs"]] == new[:0:-1]
        assert [j["job_id"] for j in page2["jobs"]][0] == new[0]
        assert len(page2["jobs"]) == min(2, before + 1)
        beyond = client.get("/api/sft/jobs", params={"offset": 1000}).json()
        assert beyond == {"jobs": [], "total": before + 3}
        queued = client.get("/api/sft/jobs", params={"status": "queued"}).json()
        assert queued["total"] == 3 and {j["job_id"] for j in queued["jobs"]} == set(new)
        assert all(j["status"] == "queued" for j in queued["jobs"])
        running = client.get("/api/sft/jobs", params={"status": "running"}).json()
        assert [j["job_id"] for j in running["jobs"]] == [long_job["job_id"]]
        assert client.get("/api/sft/health").json()["queued"] == 3
        for params in ({"status": "bogus"}, {"limit": 0}, {"limit": 501}, {"offset": -1}):
            bad = client.get("/api/sft/jobs", params=params)
            assert bad.status_code == 422, params
            assert "detail" in bad.json()

        stopped = client.post(f"/api/sft/jobs/{new[0]}/stop")  # a queued job stops without ever starting
        assert stopped.status_code == 200
        assert stopped.json()["status"] == "stopped" and stopped.json()["message"] == "stopped before it started"
        assert not (Path(stopped.json()["job_dir"]) / "train.log").exists()
    finally:
        for job_id in new:  # queued and stopped jobs can be deleted
            assert client.delete(f"/api/sft/jobs/{job_id}").json() == {"job_id": job_id, "deleted": True}
    for job_id in new:
        assert client.get(f"/api/sft/jobs/{job_id}").status_code == 404
    assert client.get("/api/sft/jobs").json()["total"] == before


def test_unknown_job_is_404_everywhere(client: httpx.Client) -> None:
    calls = [("GET", f"/api/sft/jobs/{UNKNOWN}"), ("POST", f"/api/sft/jobs/{UNKNOWN}/stop"),
             ("POST", f"/api/sft/jobs/{UNKNOWN}/resume"), ("DELETE", f"/api/sft/jobs/{UNKNOWN}"),
             ("GET", f"/api/sft/jobs/{UNKNOWN}/logs"), ("GET", f"/api/sft/jobs/{UNKNOWN}/metrics"),
             ("GET", f"/api/sft/jobs/{UNKNOWN}/stream"), ("GET", "/api/sft/jobs/..%2F..%2Fetc")]
    for method, url in calls:
        response = client.request(method, url)
        assert response.status_code == 404, (method, url, response.text)
        assert "detail" in response.json()


# ---- configs ----------------------------------------------------------------------------------------------------
def test_configs_save_list_get_delete(client: httpx.Client) -> None:
    config = {**TINY, "max_steps": 3, "lora_r": 4}
    saved = client.post("/api/sft/configs", json={"name": "my api config", "config": config})
    assert saved.status_code == 201, saved.text
    config_id = saved.json()["config_id"]
    assert saved.json()["name"] == "my api config"

    dup = client.post("/api/sft/configs", json={"name": "my api config", "config": config})
    assert dup.status_code == 409 and "overwrite" in dup.json()["detail"]
    over = client.post("/api/sft/configs", params={"overwrite": "true"},
                       json={"name": "my api config", "config": {**config, "lora_r": 2}})
    assert over.status_code == 201 and over.json()["config_id"] == config_id
    preset_name = client.post("/api/sft/configs", json={"name": "tiny-lora", "config": config})
    assert preset_name.status_code == 409
    invalid = client.post("/api/sft/configs", json={"name": "bad", "config": {"lora_r": -3}})
    assert invalid.status_code == 422 and "lora_r" in invalid.json()["detail"]
    assert client.post("/api/sft/configs", json={"name": "", "config": {}}).status_code == 422

    listed = {c["config_id"]: c for c in client.get("/api/sft/configs").json()["configs"]}
    assert listed["tiny-lora"]["read_only"] is True and listed["tiny-lora"]["config"]["max_steps"] == 60
    assert listed[config_id]["read_only"] is False and listed[config_id]["name"] == "my api config"
    assert listed[config_id]["config"]["lora_r"] == 2
    assert "bad" not in {c["name"] for c in listed.values()}

    one = client.get(f"/api/sft/configs/{config_id}")
    assert one.status_code == 200 and one.json()["config"]["lora_r"] == 2 and one.json()["read_only"] is False
    assert client.get("/api/sft/configs/tiny-lora").json()["read_only"] is True
    assert client.get("/api/sft/configs/nope").status_code == 404

    assert client.delete("/api/sft/configs/tiny-lora").status_code == 403
    assert client.get("/api/sft/configs/tiny-lora").status_code == 200
    deleted = client.delete(f"/api/sft/configs/{config_id}")
    assert deleted.status_code == 200 and deleted.json() == {"config_id": config_id, "deleted": True}
    assert client.get(f"/api/sft/configs/{config_id}").status_code == 404
    assert client.delete(f"/api/sft/configs/{config_id}").status_code == 404


def test_train_from_a_saved_config(client: httpx.Client, long_job: dict[str, Any]) -> None:
    wait_running_step(client, long_job["job_id"], 1)  # keeps the new job queued: no second worker starts
    saved = client.post("/api/sft/configs", json={"name": "saved for training", "config": {**TINY, "lora_r": 4}})
    config_id = saved.json()["config_id"]
    try:
        job = client.post("/api/sft/train", json={"config_id": config_id, "overrides": {"max_steps": 2}})
        assert job.status_code == 201, job.text
        assert job.json()["config"]["lora_r"] == 4 and job.json()["config"]["max_steps"] == 2
        assert client.delete(f"/api/sft/jobs/{job.json()['job_id']}").status_code == 200
    finally:
        client.delete(f"/api/sft/configs/{config_id}")


def test_openapi_lists_the_api(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/sft/train", "/api/sft/jobs", "/api/sft/jobs/{job_id}", "/api/sft/jobs/{job_id}/stop",
                 "/api/sft/jobs/{job_id}/resume", "/api/sft/jobs/{job_id}/logs", "/api/sft/jobs/{job_id}/metrics",
                 "/api/sft/jobs/{job_id}/stream", "/api/sft/configs", "/api/sft/configs/{config_id}",
                 "/api/sft/health", "/api/sft/system"):
        assert path in paths, path
    assert client.get("/api/sft/schema").json()["properties"]["lora_r"]["type"] == "integer"


# ---- stop, then the event stream of the finished job --------------------------------------------------------------
def test_stop_is_idempotent_and_the_stream_ends(client: httpx.Client, long_job: dict[str, Any]) -> None:
    job_id = long_job["job_id"]
    job = wait_running_step(client, job_id, 2)
    with paused(job["info"]["pid"]):  # SIGTERM waits until it runs again: the second stop sees 'stopping'
        first = client.post(f"/api/sft/jobs/{job_id}/stop")
        assert first.status_code == 200 and first.json()["status"] == "stopping"
        second = client.post(f"/api/sft/jobs/{job_id}/stop")
        assert second.status_code == 200 and second.json()["message"] == "already stopping"
    stopped = wait_for(lambda: (j := get_job(client, job_id))["status"] == "stopped" and j, RUN_TIMEOUT_S, 0.2,
                       "the job to stop")
    assert stopped["resumable"] and stopped["checkpoints"]
    assert client.post(f"/api/sft/jobs/{job_id}/stop").json()["message"].startswith("already stopped")

    full_log = client.get(f"/api/sft/jobs/{job_id}/logs").json()
    assert full_log["complete"]
    stream = client.get(f"/api/sft/jobs/{job_id}/stream", timeout=60)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(stream.text)
    assert frames and all(f.get("id") for f in frames)
    assert frames[-1]["event"] == "end" and frames[-1]["data"]["status"] == "stopped"
    logs = [f for f in frames if f["event"] == "log"]
    assert "".join(f["data"]["text"] for f in logs) == full_log["text"]
    steps = [f["data"]["step"] for f in frames if f["event"] == "metric"]
    assert steps == sorted(steps) and steps[-1] == stopped["progress"]["step"]
    assert [f["data"]["status"] for f in frames if f["event"] == "status"] == ["stopped"]

    # a reconnect with Last-Event-ID resumes where the first stream was: nothing is sent twice
    last = frames[-1]["id"]
    again = parse_sse(client.get(f"/api/sft/jobs/{job_id}/stream", headers={"Last-Event-ID": last}).text)
    assert [f["event"] for f in again] == ["status", "end"]
    mid = logs[0]["id"]  # after the first log chunk only: no log text again, metrics from the start
    resumed = parse_sse(client.get(f"/api/sft/jobs/{job_id}/stream", headers={"Last-Event-ID": mid}).text)
    assert not [f for f in resumed if f["event"] == "log"] or \
        logs[0]["data"]["text"] not in "".join(f["data"]["text"] for f in resumed if f["event"] == "log")
    assert resumed[-1]["event"] == "end"
    garbled = parse_sse(client.get(f"/api/sft/jobs/{job_id}/stream", headers={"Last-Event-ID": "x:y"}).text)
    assert "".join(f["data"]["text"] for f in garbled if f["event"] == "log") == full_log["text"]

    # finished: now it can be resumed (not here) or deleted
    assert client.delete(f"/api/sft/jobs/{job_id}").status_code == 200
    assert not Path(stopped["job_dir"]).exists()
    assert client.get("/api/sft/health").json()["running"] == 0


# ---- the studio mounted at / --------------------------------------------------------------------------------------
def test_ui_is_served_at_root(workspace: Path, worker_env: dict[str, str], tmp_path: Path) -> None:
    server = Server(workspace, worker_env, tmp_path / "ui-server.log", ui=True)
    try:
        server.start()
        with server.client() as c:
            root = c.get("/")
            assert root.status_code == 200 and "text/html" in root.headers["content-type"]
            assert c.get("/api/sft/health").json()["status"] == "ok"
    finally:
        server.kill()
