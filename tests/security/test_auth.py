"""Password protection of a real server (`python app.py`, UI mounted) started with SFT_UI_AUTH=alice:s3cret.

The API and its docs want HTTP Basic (401 + WWW-Authenticate: Basic otherwise); the Gradio UI wants its own
login; a malformed password setting or a non-loopback bind without one stops the server before it binds;
monitoring is off; no CORS grant for foreign origins; trust_remote_code is refused without --allow-remote-code.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from helpers import REPO, free_port, wait_for

USER, PASSWORD = "alice", "s3cret"
TERMINAL = {"succeeded", "failed", "stopped", "interrupted"}
TRAIN_BODY = {"config_id": "tiny-lora", "overrides": {"max_steps": 1}}

if TYPE_CHECKING:
    from conftest import Kit, SecureServer, Tally

PROTECTED = [
    ("GET", "/api/sft/health"),
    ("GET", "/api/sft/jobs"),
    ("POST", "/api/sft/train"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/api/sft/system"),
    ("GET", "/api/sft/configs"),
    ("DELETE", "/api/sft/configs/some-config"),
    ("GET", "/api/sft/jobs/20260101-000000-abcdef/logs"),
    ("POST", "/api/sft/jobs/20260101-000000-abcdef/export"),
    ("GET", "/api/sft/jobs/"),  # trailing slash and encoded letters are the same protected paths
    ("GET", "/%61pi/sft/jobs"),
    ("GET", "/api//sft/jobs"),
    ("GET", "/docs/"),
]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


BAD_CREDENTIALS: dict[str, dict[str, str]] = {
    "none": {},
    "wrong-password": {"Authorization": _basic(USER, "wrong")},
    "wrong-user": {"Authorization": _basic("mallory", PASSWORD)},
    "user-case": {"Authorization": _basic("Alice", PASSWORD)},
    "password-prefix": {"Authorization": _basic(USER, PASSWORD[:-1])},
    "password-plus-space": {"Authorization": _basic(USER, PASSWORD + " ")},
    "empty": {"Authorization": _basic("", "")},
    "user-only": {"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()},
    "password-as-user": {"Authorization": _basic(PASSWORD, USER)},
    "bearer": {"Authorization": f"Bearer {PASSWORD}"},
    "not-base64": {"Authorization": "Basic !!!not-base64!!!"},
    "latin1-garbage": {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode()},
    "scheme-only": {"Authorization": "Basic"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_cache: Path, kit: type[Kit]) -> Iterator[SecureServer]:
    root = tmp_path_factory.mktemp("auth")
    env = kit.clean_env(kit.new_workspace(root, models_cache), SFT_UI_AUTH=f"{USER}:{PASSWORD}",
                        SFT_UI_STOP_GRACE_S="2")
    with kit.running_server(root, env, auth=(USER, PASSWORD), ui=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def anon(server: SecureServer) -> Iterator[httpx.Client]:
    with server.client(with_auth=False) as c:
        yield c


@pytest.fixture(scope="module")
def alice(server: SecureServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def _request(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    url = httpx.URL(client.base_url.join("/")).copy_with(raw_path=path.encode())
    body = TRAIN_BODY if path.endswith("/train") else ({"kind": "adapter_zip"} if path.endswith("/export") else None)
    return client.request(method, url, headers=headers, json=body)


def _job_count(alice: httpx.Client) -> int:
    return alice.get("/api/sft/jobs", params={"limit": 500}).json()["total"]


@pytest.mark.parametrize("creds", sorted(BAD_CREDENTIALS))
def test_api_refuses_missing_or_wrong_credentials(creds: str, anon: httpx.Client, alice: httpx.Client,
                                                  tally: Tally) -> None:
    before = _job_count(alice)
    failures = []
    for method, path in PROTECTED:
        response = _request(anon, method, path, BAD_CREDENTIALS[creds])
        ok = response.status_code == 401 and response.headers.get("www-authenticate", "").startswith("Basic") \
            and PASSWORD not in response.text
        tally.record(f"{creds} {method} {path}", ok, f"{response.status_code} {response.headers}")
        if not ok:
            failures.append(f"{method} {path}: {response.status_code} www-authenticate="
                            f"{response.headers.get('www-authenticate')!r}")
    assert _job_count(alice) == before, "a refused request created a job"
    assert not failures, failures


def test_api_answers_with_credentials(server: SecureServer, alice: httpx.Client, tally: Tally) -> None:
    expected = {("GET", "/api/sft/health"): 200, ("GET", "/api/sft/jobs"): 200, ("GET", "/openapi.json"): 200,
                ("GET", "/docs"): 200, ("GET", "/api/sft/system"): 200, ("GET", "/api/sft/configs"): 200}
    failures = []
    for (method, path), status in expected.items():
        response = alice.request(method, path)
        tally.record(f"alice {method} {path}", response.status_code == status, str(response.status_code))
        if response.status_code != status:
            failures.append(f"{method} {path}: {response.status_code}")
    assert "paths" in alice.get("/openapi.json").json()
    response = alice.post("/api/sft/train", json=TRAIN_BODY)
    tally.record("alice POST /api/sft/train", response.status_code == 201, response.text[:200])
    assert response.status_code == 201, response.text
    job_id = response.json()["job_id"]
    alice.post(f"/api/sft/jobs/{job_id}/stop")
    wait_for(lambda: alice.get(f"/api/sft/jobs/{job_id}").json()["status"] in TERMINAL, 120, 0.5,
             "the job to stop")
    assert not failures, failures


def test_paths_that_dodge_the_prefix_reach_nothing(anon: httpx.Client, tally: Tally) -> None:
    """Paths the middleware does not see as /api/ must not reach an API route either."""
    for path in ("//api/sft/jobs", "/API/sft/jobs", "/./api/sft/jobs", "//openapi.json", "//docs", "/Docs"):
        response = _request(anon, "GET", path, {})
        ok = response.status_code in (401, 404) and '"jobs"' not in response.text and '"paths"' not in response.text
        tally.record(f"dodge {path}", ok, f"{response.status_code} {response.text[:200]}")
        assert ok, (path, response.status_code, response.text[:300])


def test_trust_remote_code_is_refused(alice: httpx.Client, tally: Tally) -> None:
    before = _job_count(alice)
    for body in ({"config_id": "tiny-lora", "overrides": {"trust_remote_code": True, "max_steps": 1}},
                 {"config": {"trust_remote_code": True, "max_steps": 1}}):
        response = alice.post("/api/sft/train", json=body)
        payload = response.json()
        ok = response.status_code == 422 and "trust_remote_code" in payload["detail"] and \
            any(e["field"] == "trust_remote_code" for e in payload.get("errors", []))
        tally.record(f"trust_remote_code {body}", ok, response.text[:300])
        assert ok, response.text
    assert _job_count(alice) == before


# ---- the Gradio UI ----------------------------------------------------------------------------------------------
def test_ui_needs_the_gradio_login(server: SecureServer, anon: httpx.Client, tally: Tally) -> None:
    for method, path in (("GET", "/config"), ("GET", "/gradio_api/info"), ("GET", "/gradio_api/queue/status"),
                         ("POST", "/gradio_api/call/start_training"), ("POST", "/gradio_api/upload")):
        for headers in ({}, {"Authorization": _basic(USER, "wrong")}):
            response = anon.request(method, path, headers=headers, json={"data": ["max_steps: 1"]}
                                    if method == "POST" else None)
            ok = response.status_code in (401, 403) and \
                response.headers.get("content-type", "").startswith("application/json") and \
                "named_endpoints" not in response.text and '"components"' not in response.text
            tally.record(f"ui {method} {path} {headers and 'wrong' or 'none'}", ok,
                         f"{response.status_code} {response.text[:200]}")
            assert ok, (path, response.status_code, response.text[:300])
    wrong = anon.post("/login", data={"username": USER, "password": "wrong"})
    tally.record("ui login with a wrong password", wrong.status_code >= 400, str(wrong.status_code))
    assert wrong.status_code >= 400
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        assert browser.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 200
        config = browser.get("/config")
        tally.record("ui /config after login", config.status_code == 200, str(config.status_code))
        assert config.status_code == 200 and "components" in config.json()


def test_monitoring_is_not_available(server: SecureServer, anon: httpx.Client, tally: Tally) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        assert browser.post("/login", data={"username": USER, "password": PASSWORD}).status_code == 200
        for who, client in (("anonymous", anon), ("logged-in", browser)):
            for path in ("/monitoring", "/monitoring/", "/gradio_api/monitoring"):
                response = client.get(path, follow_redirects=True)
                ok = response.status_code in (401, 403, 404)
                tally.record(f"monitoring {who} {path}", ok, f"{response.status_code} {response.text[:200]}")
                assert ok, (who, path, response.status_code, response.text[:300])


def test_no_cors_grant_for_a_foreign_origin(server: SecureServer, alice: httpx.Client, tally: Tally) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        browser.post("/login", data={"username": USER, "password": PASSWORD})
        for origin in ("http://evil.example", "null"):
            probes = [
                ("api GET", alice.get("/api/sft/health", headers={"Origin": origin})),
                ("api preflight", alice.options("/api/sft/train", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type"})),
                ("ui GET /config", browser.get("/config", headers={"Origin": origin})),
                ("ui preflight", browser.options("/gradio_api/call/start_training", headers={
                    "Origin": origin, "Access-Control-Request-Method": "POST"})),
                ("ui GET /", browser.get("/", headers={"Origin": origin})),
            ]
            for what, response in probes:
                allowed = response.headers.get("access-control-allow-origin")
                ok = allowed not in ("*", origin)
                tally.record(f"cors {origin} {what}", ok, f"access-control-allow-origin={allowed!r}")
                assert ok, (origin, what, allowed)


# ---- refusals before binding ------------------------------------------------------------------------------------
def _run_app(kit: type[Kit], tmp_path: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    ws = tmp_path / "ws"
    port = free_port()
    return subprocess.run([sys.executable, "app.py", "--no-ui", "--port", str(port), "--workspace", str(ws), *args],
                          cwd=str(REPO), env=kit.clean_env(ws, **env), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("spec", ["nocolon", "alice:", ":s3cret", "alice:s3cret,bob", "alice:s3cret\nnocolon"])
def test_malformed_auth_setting_exits_2(spec: str, tmp_path: Path, kit: type[Kit], tally: Tally) -> None:
    started = time.monotonic()
    done = _run_app(kit, tmp_path, [], SFT_UI_AUTH=spec)
    ok = done.returncode == 2 and "SFT_UI_AUTH" in done.stderr and "user:password" in done.stderr and \
        "Traceback" not in done.stderr and spec not in done.stderr.replace("SFT_UI_AUTH", "")
    tally.record(f"malformed SFT_UI_AUTH {spec!r}", ok, f"rc {done.returncode}: {done.stderr[-300:]}")
    assert ok, (done.returncode, done.stderr[-2000:])
    assert time.monotonic() - started < 60


def test_unreadable_auth_file_exits_2(tmp_path: Path, kit: type[Kit], tally: Tally) -> None:
    done = _run_app(kit, tmp_path, [], SFT_UI_AUTH_FILE=str(tmp_path / "missing-passwords.txt"))
    ok = done.returncode == 2 and "SFT_UI_AUTH_FILE" in done.stderr and "Traceback" not in done.stderr
    tally.record("unreadable SFT_UI_AUTH_FILE", ok, done.stderr[-300:])
    assert ok, (done.returncode, done.stderr[-2000:])


@pytest.mark.parametrize("how", ["--host 0.0.0.0", "GRADIO_SERVER_NAME=0.0.0.0", "--host ::"])
def test_public_bind_without_auth_is_refused(how: str, tmp_path: Path, kit: type[Kit], tally: Tally) -> None:
    """Exits 2 with a warning before binding (never run with --insecure here)."""
    if how.startswith("--"):
        done = _run_app(kit, tmp_path, how.split())
    else:
        key, _, value = how.partition("=")
        done = _run_app(kit, tmp_path, [], **{key: value})
    ok = done.returncode == 2 and "warning" in done.stderr.lower() and "SFT_UI_AUTH" in done.stderr and \
        "--insecure" in done.stderr
    tally.record(f"public bind {how}", ok, f"rc {done.returncode}: {done.stderr[-300:]}")
    assert ok, (done.returncode, done.stderr[-2000:])


def test_auth_file_with_two_users(tmp_path_factory: pytest.TempPathFactory, kit: type[Kit], tally: Tally) -> None:
    root = tmp_path_factory.mktemp("auth-file")
    passwords = root / "passwords.txt"
    passwords.write_text("# users of the studio\nalice:s3cret\n\nbob:hunter2:with-colon\n", encoding="utf-8")
    passwords.chmod(0o600)
    env = kit.clean_env(kit.new_workspace(root), SFT_UI_AUTH_FILE=str(passwords))
    with kit.running_server(root, env, auth=("bob", "hunter2:with-colon")) as srv, srv.client(with_auth=False) as c:
        cases = {("alice", "s3cret"): 200, ("bob", "hunter2:with-colon"): 200, ("bob", "hunter2"): 401,
                 ("alice", "hunter2:with-colon"): 401, ("bob", "s3cret"): 401, ("# users of the studio", ""): 401}
        for (user, password), status in cases.items():
            response = c.get("/api/sft/jobs", headers={"Authorization": _basic(user, password)})
            ok = response.status_code == status
            tally.record(f"auth file {user}", ok, str(response.status_code))
            assert ok, (user, password, response.status_code)
        assert c.get("/api/sft/jobs").status_code == 401
        log = srv.log()
    assert "s3cret" not in log and "hunter2" not in log, "a password reached the server log"
