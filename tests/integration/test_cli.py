"""`python -m sft_ui train | validate` as a person runs them: real processes, the embedded tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from sft_ui.config import apply_overrides, load_yaml
from sft_ui.events import CONFIG_FILE, EVENTS_FILE, EXIT_BAD_INPUT, FINAL_DIR, LOG_FILE, EventTailer

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 300
EVENT_TIMEOUT_S = 120


def cli(*args: str, env: dict[str, str], timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sft_ui", *args], cwd=str(REPO), env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def read_events(job_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (job_dir / EVENTS_FILE).read_text(encoding="utf-8").splitlines()]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Background CLI processes; any still running at teardown are stopped, then killed with their workers."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
    # a worker runs in a session of its own: if its CLI died uncleanly, end it by its pid
    for worker in psutil.process_iter(["cmdline"]):
        try:
            cmdline = worker.info["cmdline"] or []
            if "sft_ui.worker" in cmdline and str(tmp_path) in " ".join(cmdline):
                worker.kill()
        except psutil.Error:
            continue


def start_long_run(workspace: Path, env: dict[str, str], out: Path,
                   started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sft_ui", "train", "configs/tiny-lora.yaml", "--set", "max_steps=2000",
             "--set", "save_steps=1000", "--workspace", str(workspace)],
            cwd=str(REPO), env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    started.append(proc)
    return proc


def test_train_succeeds_and_prints_the_result(workspace: Path, worker_env: dict[str, str]) -> None:
    result = cli("train", "configs/tiny-lora.yaml", "--set", "max_steps=5", "--workspace", str(workspace),
                 env=worker_env)
    assert result.returncode == 0, result.stdout + result.stderr
    finals = list((workspace / "runs").glob(f"*/{FINAL_DIR}"))
    assert len(finals) == 1, finals
    final = finals[0]
    assert (final / "adapter_model.safetensors").is_file()
    assert "succeeded" in result.stdout
    assert str(final) in result.stdout
    assert f"job directory: {final.parent}" in result.stdout
    assert "Traceback" not in result.stderr
    end = read_events(final.parent)[-1]
    assert end["type"] == "end" and end["status"] == "succeeded" and end["step"] == 5


def test_train_unknown_set_key_suggests_the_field(workspace: Path, worker_env: dict[str, str]) -> None:
    result = cli("train", "configs/tiny-lora.yaml", "--set", "learning_rat=1", "--workspace", str(workspace),
                 env=worker_env, timeout=60)
    assert result.returncode == EXIT_BAD_INPUT, result.stdout + result.stderr
    assert "did you mean 'learning_rate'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())


def test_validate_prints_the_full_config(worker_env: dict[str, str]) -> None:
    result = cli("validate", "configs/tiny-full.yaml", env=worker_env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "method: full" in result.stdout
    assert "learning_rate: 0.001" in result.stdout
    assert "lora_r:" in result.stdout  # defaults are filled in
    assert load_yaml(result.stdout).method == "full"


def test_train_missing_config_file(workspace: Path, worker_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = cli("train", str(missing), "--workspace", str(workspace), env=worker_env, timeout=60)
    assert result.returncode == EXIT_BAD_INPUT
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr
    assert "No such file" in result.stderr or "not found" in result.stderr


def _wait_for(predicate: Any, proc: subprocess.Popen[bytes], what: str, log: Path,
              timeout: float = EVENT_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the CLI exited ({proc.returncode}) before {what}:\n{read_text(log)[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s:\n{read_text(log)[-3000:]}")


def wait_until_training(proc: subprocess.Popen[bytes], out: Path) -> Path:
    """The job directory the CLI printed, once its worker has logged step 3."""

    def job_dir() -> Path | None:
        m = re.search(r"^job directory: (.+)$", read_text(out), re.MULTILINE)
        return Path(m.group(1)) if m else None

    jd: Path = _wait_for(job_dir, proc, "the job directory line", out)
    tailer = EventTailer(jd / EVENTS_FILE)
    _wait_for(lambda: any(e["type"] == "log" and e["step"] >= 3 for e in tailer.read_new()), proc,
              "a log event at step >= 3", jd / LOG_FILE)
    return jd


def test_ctrl_c_stops_cleanly_then_resume_finishes(workspace: Path, worker_env: dict[str, str], tmp_path: Path,
                                                    started: list[subprocess.Popen[bytes]]) -> None:
    out = tmp_path / "cli.out"
    proc = start_long_run(workspace, worker_env, out, started)
    jd = wait_until_training(proc, out)

    os.kill(proc.pid, signal.SIGINT)  # only the CLI: it forwards the stop to its worker
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the CLI did not exit after Ctrl-C:\n{read_text(out)[-3000:]}")
    text = read_text(out)
    assert code == 0, text
    assert "stopped" in text and "resume with" in text, text
    assert f"--resume {jd}" in text
    assert "Traceback" not in text
    end = read_events(jd)[-1]
    assert end["type"] == "end" and end["status"] == "stopped"
    n = end["step"]
    assert n >= 3 and (jd / f"checkpoint-{n}").is_dir()
    assert f"stopped at step {n}" in text

    config = load_yaml((jd / CONFIG_FILE).read_text(encoding="utf-8"))
    (jd / CONFIG_FILE).write_text(apply_overrides(config, {"max_steps": n + 3}).to_yaml(), encoding="utf-8")
    result = cli("train", "--resume", str(jd), env=worker_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    assert str(jd / FINAL_DIR) in result.stdout
    assert (jd / FINAL_DIR / "adapter_model.safetensors").is_file()
    events = read_events(jd)
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    assert events[-1]["attempt"] == 2 and events[-1]["step"] == n + 3
    first_log = next(e for e in events if e["type"] == "log" and e["attempt"] == 2)
    assert first_log["step"] == n + 1


def test_second_ctrl_c_while_stopping_is_ignored(workspace: Path, worker_env: dict[str, str], tmp_path: Path,
                                                 started: list[subprocess.Popen[bytes]]) -> None:
    out = tmp_path / "cli.out"
    proc = start_long_run(workspace, worker_env, out, started)
    jd = wait_until_training(proc, out)
    os.kill(proc.pid, signal.SIGINT)
    _wait_for(lambda: "stopping:" in read_text(out), proc, "the 'stopping' line", out)
    os.kill(proc.pid, signal.SIGINT)  # impatient second Ctrl-C while the worker saves its checkpoint
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the CLI did not exit after Ctrl-C:\n{read_text(out)[-3000:]}")
    text = read_text(out)
    # the worker itself stops cleanly either way
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (jd / "exit.json").exists():
        time.sleep(0.1)
    assert read_events(jd)[-1]["status"] == "stopped"
    assert "Traceback" not in text, text
    assert code == 0, text
    assert "resume with" in text
