"""Fixtures for the security suites: a real server subprocess that may require a password, and a tally of
inputs tried and failures that each suite prints and writes to test-artifacts/security/<suite>.txt."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from helpers import REPO, Server, Tally, kill_processes_mentioning, new_workspace

# Variables that change what a server does with passwords, tokens or its bind address: every server
# these suites start gets exactly the ones a test sets, never the ones of the shell that runs pytest.
SCRUBBED = ("SFT_UI_AUTH", "SFT_UI_AUTH_FILE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GRADIO_SERVER_NAME",
            "GRADIO_SERVER_PORT", "PORT", "SFT_UI_DATA_DIRS", "SFT_UI_ALLOW_REMOTE_CODE", "SFT_UI_DEMO")


def clean_env(workspace: Path, **extra: str) -> dict[str, str]:
    """The environment of a server or CLI run: the test's own settings only, offline."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env["SFT_UI_WORKSPACE"] = str(workspace)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["GRADIO_ANALYTICS_ENABLED"] = "False"  # loopback only: no phoning home from the UI server
    env.update(extra)
    return env


class SecureServer(Server):
    """helpers.Server started with credentials (a password-protected API answers 401 without) and extra flags;
    its clients carry the credentials."""

    def __init__(self, workspace: Path, env: dict[str, str], log_path: Path, auth: tuple[str, str] | None = None,
                 ui: bool = False, args: tuple[str, ...] = ()):
        super().__init__(workspace, env, log_path, ui=ui)
        self.auth, self.args = auth, args

    def client(self, timeout: float = 30.0, check_tracebacks: bool = True, with_auth: bool = True) -> httpx.Client:
        """An httpx client for this server: its credentials (unless with_auth=False) and the traceback hook."""
        client = super().client(timeout, check_tracebacks)
        if self.auth is not None and with_auth:
            client.auth = httpx.BasicAuth(*self.auth)
        return client


@contextmanager
def running_server(root: Path, env: dict[str, str], auth: tuple[str, str] | None = None, ui: bool = False,
                   args: tuple[str, ...] = ()) -> Iterator[SecureServer]:
    """A started server whose process, workers and port are all gone when the block ends."""
    server = SecureServer(Path(env["SFT_UI_WORKSPACE"]), env, root / "server.log", auth=auth, ui=ui, args=args)
    try:
        yield server.start()
    finally:
        server.kill()
        kill_processes_mentioning(str(root))


class Kit:
    """What the security suites share, handed out by the `kit` fixture (test modules do not import conftest:
    with several conftest.py files on sys.path, `import conftest` finds whichever was loaded last)."""

    clean_env = staticmethod(clean_env)
    new_workspace = staticmethod(new_workspace)
    running_server = staticmethod(running_server)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """One per suite (module; test_paths.py -> 'paths'): written to test-artifacts/security/<suite>.txt and
    printed when the module ends."""
    found = Tally("security", Path(str(request.node.path)).stem.removeprefix("test_"))
    yield found
    found.write(request.config)
