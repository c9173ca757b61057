"""Shared fixtures: the embedded tiny model is built once per session; every test gets its own workspace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import new_workspace, processes_mentioning

REPO = Path(__file__).resolve().parents[1]


def _env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SFT_UI_WORKSPACE"] = str(workspace)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WORKSPACE/models with the embedded model built (in a subprocess, like the worker does)."""
    models = tmp_path_factory.mktemp("shared-workspace") / "models"
    code = "import sys; from pathlib import Path; from sft_ui.embedded import ensure_embedded_model as e; " \
           "print(e(Path(sys.argv[1])))"
    subprocess.run([sys.executable, "-c", code, str(models)], check=True, env=_env(models.parent),
                   capture_output=True, timeout=300)
    return models


@pytest.fixture
def workspace(tmp_path: Path, models_cache: Path) -> Path:
    """A fresh workspace whose models/ points at the session's built embedded model."""
    return new_workspace(tmp_path, models_cache)


@pytest.fixture
def worker_env(workspace: Path) -> dict[str, str]:
    return _env(workspace)


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path) -> Iterator[None]:
    """Every process a test started (they all name its tmp_path in argv) must be gone when it ends."""
    yield
    deadline = time.monotonic() + 5.0
    left = processes_mentioning(str(tmp_path))
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(str(tmp_path))
    for proc in left:
        proc.kill()
    assert not left, f"processes left running: {[p.pid for p in left]}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", default=False,
                     help="run the reliability/load suites with their full counts (CI runs reduced ones)")


@pytest.fixture(scope="session")
def full_run(request: pytest.FixtureRequest) -> bool:
    """True under --full: suites use the issue's counts instead of CI's reduced ones."""
    return bool(request.config.getoption("--full"))
