"""A Hugging Face token never leaks: not into the workspace (database, WAL, job folders, logs, exports), not into
any API response, and not onto any process's command line.

The server runs with HF_TOKEN=<server sentinel> in its environment; a tiny job trains to success, every GET
endpoint is read, and a Hub push is asked for with X-HF-Token: <typed sentinel> (a loopback fake Hub, HF_ENDPOINT,
refuses it; the test checks that the typed token was the one sent). Environments are not scanned: the worker
legitimately inherits HF_TOKEN.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest
from helpers import wait_for

if TYPE_CHECKING:
    from conftest import Kit, SecureServer, Tally

SERVER_TOKEN = "hf_SENTINEL_abc123xyz"
TYPED_TOKEN = "hf_SENTINEL_typed_987"
SENTINELS = (SERVER_TOKEN, TYPED_TOKEN)
RUN_TIMEOUT_S = 300.0
TERMINAL = {"succeeded", "failed", "stopped", "interrupted"}


class ArgvWatcher:
    """Samples the command line of every process on the machine until stopped; remembers any with a sentinel."""

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.samples = 0
        self.processes_seen: set[int] = set()
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="argv-watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples += 1
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    cmdline = " ".join(proc.info["cmdline"] or [])
                except psutil.Error:
                    continue
                self.processes_seen.add(proc.info["pid"])
                for sentinel in SENTINELS:
                    if sentinel in cmdline:
                        self.hits.append(f"pid {proc.info['pid']}: {cmdline[:300]}")
            self._stop.wait(self.interval)

    def __enter__(self) -> ArgvWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class FakeHub:
    """A loopback stand-in for the Hub (HF_ENDPOINT): refuses every request with 401 and remembers the
    Authorization headers, so the test knows the typed token really was used by the push."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                hub.authorizations.append(self.headers.get("Authorization", ""))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(min(length, 10_000_000))
                body = json.dumps({"error": "Invalid username or password."}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = _refuse  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-hub", daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def secret_server(tmp_path: Path, models_cache: Path, fake_hub: FakeHub, kit: type[Kit]
                  ) -> Iterator[tuple[SecureServer, Path]]:
    root = tmp_path
    hf_home = root / "hf-home"
    hf_home.mkdir()
    env = kit.clean_env(kit.new_workspace(root, models_cache), HF_TOKEN=SERVER_TOKEN, HF_HOME=str(hf_home),
                    HF_ENDPOINT=fake_hub.url, HF_HUB_DISABLE_TELEMETRY="1", SFT_UI_STOP_GRACE_S="5")
    env.pop("HF_HUB_OFFLINE")  # the push really talks to the (fake, loopback) Hub with the typed token
    with kit.running_server(root, env) as srv:
        yield srv, root


def _scan_files(root: Path, record: Callable[[str, bool, str], object]) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():  # models/ links to the shared, token-free model cache
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        found = [s for s in SENTINELS if s.encode() in data]
        record(f"file {path.relative_to(root)}", not found, f"contains {found}")
        hits += [f"{path.relative_to(root)} contains {s}" for s in found]
    return hits


def test_hf_tokens_never_leak(secret_server: tuple[SecureServer, Path], fake_hub: FakeHub, tally: Tally) -> None:
    server, root = secret_server
    ws = server.workspace
    responses: list[tuple[str, httpx.Response]] = []

    with ArgvWatcher() as watcher, server.client(timeout=60) as client:
        def call(method: str, path: str, **kwargs: object) -> httpx.Response:
            response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
            responses.append((f"{method} {path}", response))
            return response

        created = call("POST", "/api/sft/train", json={"config_id": "tiny-lora", "overrides": {"max_steps": 3}})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]

        def finished() -> dict[str, object] | None:
            job = client.get(f"/api/sft/jobs/{job_id}").json()
            return job if job["status"] in TERMINAL else None

        job = wait_for(finished, RUN_TIMEOUT_S, 0.5, "the tiny job to finish")
        assert job["status"] == "succeeded", job

        for path in ("/api/sft/jobs", f"/api/sft/jobs/{job_id}", f"/api/sft/jobs/{job_id}/logs",
                     f"/api/sft/jobs/{job_id}/metrics", f"/api/sft/jobs/{job_id}/stream", "/api/sft/configs",
                     "/api/sft/configs/tiny-lora", "/api/sft/health", "/api/sft/system", "/api/sft/schema",
                     "/openapi.json", "/docs", "/api/sft/jobs?status=succeeded"):
            response = call("GET", path)
            assert response.status_code == 200, (path, response.status_code, response.text[:500])

        push = call("POST", f"/api/sft/jobs/{job_id}/export", headers={"X-HF-Token": TYPED_TOKEN},
                    json={"kind": "push", "repo_id": "someone/sft-ui-secret-test", "private": True})
        assert push.status_code == 202, push.text
        export_id = push.json()["export_id"]

        def export_done() -> bool:
            return call("GET", f"/api/sft/exports/{export_id}").json()["status"] in ("failed", "succeeded")

        wait_for(export_done, RUN_TIMEOUT_S, 0.5, "the push export to end (the fake Hub refuses it)")
        zipped = call("POST", f"/api/sft/jobs/{job_id}/export", headers={"X-HF-Token": TYPED_TOKEN},
                      json={"kind": "adapter_zip"})
        assert zipped.status_code == 202, zipped.text
        call("GET", f"/api/sft/exports/{zipped.json()['export_id']}/download")
        time.sleep(0.5)  # one more argv sample after the last process ended

    leaks = []
    for what, response in responses:
        body = response.content
        found = [s for s in SENTINELS if s.encode() in body or s in str(response.headers)]
        tally.record(f"response {what}", not found, f"contains {found}")
        leaks += [f"response to {what} contains {s}" for s in found]
    tally.record(f"argv of {len(watcher.processes_seen)} processes in {watcher.samples} samples", not watcher.hits,
                 "; ".join(watcher.hits[:5]))
    leaks += [f"argv: {hit}" for hit in watcher.hits[:20]]
    leaks += _scan_files(root, tally.record)
    assert watcher.samples > 10 and len(list(ws.rglob("*"))) > 10, "the scan did not see the run"
    assert list((ws / "exports").glob("*.log")), "the push export left no log to scan"
    assert f"Bearer {TYPED_TOKEN}" in fake_hub.authorizations, \
        f"the push did not use the typed token: {sorted(set(fake_hub.authorizations))}"
    assert not leaks, leaks


def test_the_scanners_find_a_planted_token(tmp_path: Path, tally: Tally) -> None:
    """The scans above can fail: a planted token is found in a file and on a command line."""
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "leak.db-wal").write_bytes(b"\x00\x01" + TYPED_TOKEN.encode() + b"\x02")
    assert _scan_files(tmp_path, lambda *args: None) == [f"nested/leak.db-wal contains {TYPED_TOKEN}"]
    with ArgvWatcher(interval=0.05) as watcher:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", SERVER_TOKEN, str(tmp_path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: watcher.hits, 30, 0.05, "the watcher to see the planted command line")
        finally:
            proc.kill()
            proc.wait(timeout=30)
    tally.record("planted token found", True)
