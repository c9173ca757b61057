"""Schemathesis (4.x) against a real server's /openapi.json: no 5xx, and the answers match the schema.

The server runs with SFT_UI_MAX_CONCURRENT=1 and a "blocker" job whose worker is paused (SIGSTOP), so every job
the fuzzer manages to queue stays queued and costs no CPU; at the end every job is stopped. Excluded: the
endless or expensive operations GET /jobs/{id}/stream and POST /jobs/{id}/chat.

Counts (cases sent, failures) are printed and written to test-artifacts/reliability/api_fuzz.txt.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from helpers import Server, Tally, find_worker_pid, kill_processes_mentioning, new_workspace, server_env, wait_for

# schemathesis 4.32.5's lazy schemas (schemathesis.pytest.from_fixture) read and write `request.node._nodeid`,
# which pytest 9 no longer has (it keeps a structured `_id`): without this shim every lazy test fails with
# "AttributeError: 'Function' object has no attribute '_nodeid'". Only adds the old name; nothing else changes.
if not hasattr(pytest.Function, "_nodeid"):
    from _pytest.nodeid import coerce_node_id

    def _get_nodeid(node: pytest.Function) -> str:
        return node.nodeid

    def _set_nodeid(node: pytest.Function, value: str) -> None:
        node._id = coerce_node_id(value)

    pytest.Function._nodeid = property(_get_nodeid, _set_nodeid)  # type: ignore[attr-defined]
SUITE = "api_fuzz"
TERMINAL = {"succeeded", "failed", "stopped", "interrupted"}


class FuzzTally(Tally):
    """A Tally that also counts the statuses the server answered."""

    def __init__(self) -> None:
        super().__init__("reliability", SUITE, max_listed=200)
        self.statuses: dict[int, int] = {}

    def line(self) -> str:
        spread = " ".join(f"{k}x{v}" for k, v in sorted(self.statuses.items()))
        return f"{super().line()} (statuses {spread})"


COUNTS = FuzzTally()


@pytest.fixture(scope="module")
def counts(request: pytest.FixtureRequest) -> Iterator[FuzzTally]:
    yield COUNTS
    COUNTS.write(request.config)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-fuzz")
    ws = new_workspace(root, models_cache)
    env = server_env(ws, SFT_UI_MAX_CONCURRENT="1", SFT_UI_STOP_GRACE_S="2", HF_HUB_OFFLINE="1")
    for key in ("SFT_UI_AUTH", "SFT_UI_AUTH_FILE", "SFT_UI_DATA_DIRS", "HF_TOKEN"):
        env.pop(key, None)
    server = Server(ws, env, root / "server.log")
    paused: list[int] = []
    try:
        server.start()
        with server.client() as client:
            blocker = client.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {
                "max_steps": 100_000, "name": "fuzz blocker"}}).json()
            pid = wait_for(lambda: find_worker_pid(blocker["job_dir"]), 60, 0.05, "the blocker's worker")
            os.killpg(os.getpgid(pid), signal.SIGSTOP)  # holds the only slot without using the CPU
            paused.append(os.getpgid(pid))
        yield server
    finally:
        try:
            if server.proc is not None and server.proc.poll() is None:
                _stop_everything(server, paused)
        finally:
            _resume(paused)
            server.kill()
            kill_processes_mentioning(str(root))


def _resume(pgids: list[int]) -> None:
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def _stop_everything(server: Server, paused: list[int]) -> None:
    """Stop every job (the queued ones at once, the blocker by SIGTERM once it may run again) and wait for it."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        def jobs() -> list[dict[str, Any]]:
            return client.get("/api/sft/jobs", params={"limit": 500}).json()["jobs"]

        for _ in range(100):  # bounded: 500 jobs a page
            live = [j["job_id"] for j in jobs() if j["status"] not in TERMINAL and j["status"] != "stopping"]
            if not live:
                break
            for job_id in live:
                client.post(f"/api/sft/jobs/{job_id}/stop")
        _resume(paused)
        wait_for(lambda: all(j["status"] in TERMINAL for j in jobs()), 60, 0.25, "every job to stop")


@pytest.fixture(scope="module")
def served_schema(fuzz_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


@pytest.fixture(scope="module")
def api_schema(served_schema: Any, full_run: bool) -> Any:
    served_schema.config.generation.update(max_examples=200 if full_run else 25, database="none")
    return served_schema


# ---- what the fuzz test checks ------------------------------------------------------------------------------------
# Error statuses the routes answer on purpose but do not declare in the schema (see test_error_statuses_are_...):
# 400 a body that is not JSON (FastAPI's own answer), 404 unknown job/config/export id or route, 409 invalid
# transition / no result yet / name taken, 403 deleting a read-only preset. 405 only for a method the path does
# not have (schemathesis probes those).
UNDECLARED_ERRORS = {400, 403, 404, 409}


def known_status(ctx: Any, response: Any, case: Any) -> None:
    """The status is documented for the operation, or one of the deliberate undeclared error statuses."""
    documented = {int(code) for code in case.operation.responses.status_codes if code.isdigit()}
    allowed = {405} if case.method.upper() != case.operation.method.upper() else documented | UNDECLARED_ERRORS
    if response.status_code not in allowed:
        raise AssertionError(f"{case.method} {case.formatted_path}: status {response.status_code} is neither "
                             f"documented ({sorted(documented)}) nor a known error status")


def errors_are_json_details(ctx: Any, response: Any, case: Any) -> None:
    """Every error is JSON {"detail": "<text>"} (plus, for 422, "errors": [{field, message}]), never a traceback."""
    if response.status_code < 400:
        return
    text = response.text
    assert "Traceback" not in text, f"a traceback in the answer: {text[:500]}"
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), \
        f"error answered as {response.headers.get('content-type')}: {text[:200]}"
    body = json.loads(text)
    assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"].strip(), \
        f"no readable detail: {text[:300]}"
    if response.status_code == 422 and "errors" in body:
        errors = body["errors"]
        assert isinstance(errors, list) and errors and all(
            isinstance(e, dict) and isinstance(e.get("field"), str) and isinstance(e.get("message"), str)
            for e in errors), f"malformed errors list: {text[:300]}"


def schema_conformance_except_422(ctx: Any, response: Any, case: Any) -> None:
    """schemathesis' response_schema_conformance for every answer but 422, whose documented body (FastAPI's
    HTTPValidationError) the app replaces on purpose (see test_422_body_matches_the_schema)."""
    if response.status_code != 422:
        schemathesis.checks.response_schema_conformance(ctx, response, case)


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.unsupported_method,
    schemathesis.checks.use_after_free,
    schemathesis.checks.ensure_resource_availability,
    known_status,
    errors_are_json_details,
    schema_conformance_except_422,
]

# the filters must sit on the lazy schema: it replaces the fixture schema's own filter set
schema = schemathesis.pytest.from_fixture("api_schema").exclude(
    path_regex=r"/jobs/\{job_id\}/(stream|chat)$")


@schema.parametrize()
def test_api_fuzz(case: Any, counts: FuzzTally) -> None:
    """No 5xx; documented (or deliberate) statuses; schema-conformant bodies; readable JSON errors; invalid
    input rejected. Not checked: positive_data_acceptance (the schema types `config` as an open object, so
    schema-valid bodies are legitimately refused with 422), and the schema checks below."""
    COUNTS.tried += 1
    try:
        response = case.call_and_validate(checks=CHECKS, timeout=60)
    except Exception as exc:
        COUNTS.failures.append(f"{case.operation.label}: {type(exc).__name__}: {str(exc)[:300]}")
        raise
    COUNTS.statuses[response.status_code] = COUNTS.statuses.get(response.status_code, 0) + 1


def test_served_schema_lists_the_api(served_schema: Any, counts: FuzzTally) -> None:
    labels = {result.ok().label for result in served_schema.get_all_operations()}
    COUNTS.tried += 1
    expected = {"POST /api/sft/train", "GET /api/sft/jobs", "GET /api/sft/jobs/{job_id}",
                "POST /api/sft/jobs/{job_id}/stop", "POST /api/sft/jobs/{job_id}/export", "GET /api/sft/health"}
    assert expected <= labels, sorted(expected - labels)


# ---- schema problems (reported; strict xfails so a fix is noticed) -------------------------------------------------
def _validate(served_schema: Any, method: str, path: str, check: Any, base_url: str, **case_kwargs: Any) -> Any:
    case = served_schema[path][method].Case(**case_kwargs)
    return case.call_and_validate(base_url=base_url, checks=[check], timeout=30)


def test_error_statuses_are_documented(served_schema: Any, fuzz_server: Server, counts: FuzzTally) -> None:
    COUNTS.tried += 1
    _validate(served_schema, "GET", "/api/sft/jobs/{job_id}", schemathesis.checks.status_code_conformance,
              fuzz_server.url, path_parameters={"job_id": "20260101-000000-abcdef"})


def test_422_body_matches_the_schema(served_schema: Any, fuzz_server: Server, counts: FuzzTally) -> None:
    COUNTS.tried += 1
    _validate(served_schema, "GET", "/api/sft/jobs", schemathesis.checks.response_schema_conformance,
              fuzz_server.url, query={"limit": 0})


@pytest.mark.xfail(strict=True, reason=(
    "SCHEMA (Starlette routing): OPTIONS /api/sft/jobs/{id} and /api/sft/configs/{id} answer 405 with "
    "'Allow: GET' although the path also has DELETE (one route per method), so allow_header_conformance fails "
    "(ST205)"))
def test_allow_header_lists_every_method(fuzz_server: Server, counts: FuzzTally) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:
        for path in ("/api/sft/jobs/20260101-000000-abcdef", "/api/sft/configs/some-config"):
            COUNTS.tried += 1
            response = client.options(path)
            allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
            assert response.status_code == 405 and {"GET", "DELETE"} <= allowed, (path, response.headers)


def test_missing_body_error_names_something(fuzz_server: Server, counts: FuzzTally) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as client:
        for path in ("/api/sft/train", "/api/sft/configs"):
            COUNTS.tried += 1
            body = client.post(path).json()
            assert not body["detail"].startswith(":") and all(e["field"] for e in body["errors"]), (path, body)
