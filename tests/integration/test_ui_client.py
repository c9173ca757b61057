"""The real server with its UI, driven through `gradio_client` endpoints (the studio's scripting API)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from gradio_client import Client
from helpers import TINY_PRESET, Server, kill_processes_mentioning, read_text, wait_for

FINISHED = ("succeeded", "failed", "stopped", "interrupted")
HEAVY_LIBS = ("libtorch", "/torch/", "/transformers/", "/trl/", "/peft/")
MAX_SERVER_RSS = 400 * 1024 * 1024
STOP_TIMEOUT_S = 40  # the stop grace below (20 s) plus time to save a checkpoint


@pytest.fixture
def server(workspace: Path, worker_env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    env = {**worker_env, "SFT_UI_STOP_GRACE_S": "20", "SFT_UI_MAX_CONCURRENT": "1"}
    srv = Server(workspace, env, tmp_path / "server.log", ui=True)
    try:
        yield srv.start()
    finally:
        srv.stop_all_jobs(STOP_TIMEOUT_S)
        srv.kill()
        kill_processes_mentioning(str(workspace))  # any worker that outlived its stop


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.url, verbose=False, download_files=False)


def preset_yaml(**changes: Any) -> str:
    data = yaml.safe_load(TINY_PRESET.read_text(encoding="utf-8"))
    data.update(changes)
    return yaml.safe_dump(data, sort_keys=False)


def heavy_mappings(pid: int) -> list[str]:
    maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")
    return sorted({line.split()[-1] for line in maps.splitlines()
                   if len(line.split()) >= 6 and any(h in line.split()[-1] for h in HEAVY_LIBS)})


def test_client_starts_follows_and_stops_a_job(server: Server, client: Client) -> None:
    assert httpx.get(server.url + "/", timeout=30).status_code == 200

    job = client.predict(preset_yaml(name="client job", max_steps=400), api_name="/start_training")
    assert isinstance(job, dict) and job["status"] in ("queued", "running"), job
    job_id = job["job_id"]
    assert job["name"] == "client job" and job["config"]["max_steps"] == 400

    listed = client.predict("all", 50, 0, api_name="/list_jobs")
    assert listed["total"] == 1 and [j["job_id"] for j in listed["jobs"]] == [job_id]
    assert client.predict("running", 50, 0, api_name="/list_jobs")["total"] in (0, 1)
    assert client.predict("succeeded", 50, 0, api_name="/list_jobs")["total"] == 0

    def describe() -> str:
        current = client.predict(job_id, api_name="/get_job")
        return (f"job {job_id} is {current['status']} at step {current['progress']['step']}: {current['error']}\n"
                + read_text(Path(current["job_dir"]) / "train.log")[-2000:] + "\nserver:\n" + server.log()[-2000:])

    chunk = wait_for(lambda: (c := client.predict(job_id, 0, api_name="/job_log"))["text"] and c, 120, 0.5,
                     lambda: "log text; " + describe())
    assert chunk["next_offset"] == len(chunk["text"].encode()) and chunk["complete"] is False
    later = client.predict(job_id, chunk["next_offset"], api_name="/job_log")
    assert later["next_offset"] >= chunk["next_offset"]

    # it trains: steps are counted before we stop it
    wait_for(lambda: client.predict(job_id, api_name="/get_job")["progress"]["step"] >= 2, 180, 0.5,
             lambda: "step 2; " + describe())

    # the web server never loads the training libraries, and stays small, even while a job trains
    proc = psutil.Process(server.proc.pid)
    assert heavy_mappings(proc.pid) == []
    assert not any("torch" in m.path for m in proc.memory_maps())
    assert proc.memory_info().rss < MAX_SERVER_RSS, f"server RSS {proc.memory_info().rss / 2**20:.0f} MB"

    stopped = client.predict(job_id, api_name="/stop_job")
    assert stopped["job_id"] == job_id and stopped["message"], stopped
    assert stopped["status"] in ("stopping", "stopped"), stopped
    again = client.predict(job_id, api_name="/stop_job")
    assert again["message"]  # idempotent

    final = wait_for(lambda: (j := client.predict(job_id, api_name="/get_job"))["status"] in FINISHED and j, 90,
                     0.5, lambda: "the stop; " + describe())
    assert final["status"] == "stopped", describe()
    assert final["resumable"] is True
    assert 0 < final["progress"]["step"] < 400
    whole = client.predict(job_id, 0, api_name="/job_log")
    assert whole["complete"] is True and whole["text"].startswith(chunk["text"])

    # the Jobs tab's Delete asks first: one click arms it, the second deletes (checkpoints are hours of work)
    job_dir = Path(final["job_dir"])
    client.predict(job_id, api_name="/open_job")
    client.predict(api_name="/ui_delete_job")
    assert client.predict(job_id, api_name="/get_job")["status"] == "stopped" and job_dir.is_dir()
    client.predict(api_name="/ui_delete_job")
    with pytest.raises(Exception, match="not found"):
        client.predict(job_id, api_name="/get_job")
    assert not job_dir.exists()


def test_client_errors_name_the_problem(client: Client) -> None:
    with pytest.raises(Exception, match="learning_rate") as info:
        client.predict(preset_yaml(learning_rate=0), api_name="/start_training")
    assert "Traceback" not in str(info.value)
    with pytest.raises(Exception, match="max_stpes.*did you mean 'max_steps'"):
        client.predict(preset_yaml(max_stpes=10), api_name="/start_training")
    with pytest.raises(Exception, match="invalid YAML"):
        client.predict("name: [unclosed", api_name="/start_training")
    with pytest.raises(Exception, match="not found"):
        client.predict("no-such-job", api_name="/get_job")
    with pytest.raises(Exception, match="not found"):
        client.predict("no-such-job", api_name="/stop_job")
    assert client.predict("all", 50, 0, api_name="/list_jobs") == {"jobs": [], "total": 0}
