"""Fixtures for the browser tests: one real `python app.py` (with the UI) per module, one headless Chromium,
a fresh page per test, screenshots under test-artifacts/e2e/, and no job left running between tests."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import CHROMIUM, REPO, Server, kill_processes_mentioning, new_workspace, server_env

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
STOP_GRACE_S = 15
STOP_TIMEOUT_S = STOP_GRACE_S + 20



@pytest.fixture(scope="module")
def e2e_workspace(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Path:
    return new_workspace(tmp_path_factory.mktemp("e2e"), models_cache)


@pytest.fixture(scope="module")
def e2e_server(e2e_workspace: Path) -> Iterator[Server]:
    env = server_env(e2e_workspace, HF_HUB_OFFLINE="1", SFT_UI_STOP_GRACE_S=str(STOP_GRACE_S),
                     SFT_UI_MAX_CONCURRENT="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # workers share two busy cores with the browser and the server
    server = Server(e2e_workspace, env, e2e_workspace.parent / "server.log", ui=True)
    try:
        yield server.start()
    finally:
        server.stop_all_jobs(STOP_TIMEOUT_S)
        server.kill()
        kill_processes_mentioning(str(e2e_workspace))  # a worker that outlived its stop


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed


@pytest.fixture
def page(browser: Any, e2e_server: Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context on the studio; a screenshot named FAILED-<test> is kept when the test fails.
    Afterwards every job is stopped: a test that fails mid-training must not hold the one training slot."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    pg.console_errors = []  # type: ignore[attr-defined]
    pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
    try:
        yield pg
    finally:
        if request.node.stash.get(CALL_FAILED, False):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            try:
                pg.screenshot(path=str(ARTIFACTS / f"FAILED-{_safe(request.node.name)}.png"), full_page=True)
            except Exception:  # a crashed page still lets the test report its own failure
                pass
        context.close()
        e2e_server.stop_all_jobs(STOP_TIMEOUT_S)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:100]


@pytest.fixture
def shot(page: Any) -> Callable[[str], Path]:
    """shot('01-name') saves a full-page screenshot to test-artifacts/e2e/01-name.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = ARTIFACTS / f"{_safe(name)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
