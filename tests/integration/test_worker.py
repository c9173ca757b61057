"""The training worker as a real subprocess on the embedded tiny model: success, stop/resume and failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sft_ui.config import JobConfig, apply_overrides, load_yaml
from sft_ui.events import (
    CONFIG_FILE,
    EVENTS_FILE,
    EXIT_BAD_INPUT,
    EXIT_FILE,
    EXIT_OK,
    FINAL_DIR,
    LOG_FILE,
    EventTailer,
)
from sft_ui.jobdirs import create_job_dir, new_job_id

RUN_TIMEOUT_S = 300
EVENT_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60

# `EventWriter.emit(self, kind, **fields)` takes the event type as `kind`, and run_job passes `kind=` for
# error events: every error event raises TypeError, so the worker dies with a traceback (exit 1), no
# error/end event and no exit.json.
EMIT_KIND_BUG = ("sft_ui/events.py EventWriter.emit names its first parameter 'kind', so run_job's "
                 "events.emit('error', kind=...) raises TypeError: no error/end event, no exit.json, exit 1")

SHORT = {"max_steps": 10, "per_device_train_batch_size": 8, "max_length": 128, "max_samples": 120,
         "logging_steps": 1, "save_steps": 1000}


def make_job(workspace: Path, **fields: Any) -> Path:
    return create_job_dir(workspace / "jobs", new_job_id(), JobConfig(**{**SHORT, **fields}))


def read_events(job_dir: Path) -> list[dict[str, Any]]:
    """Every line of events.jsonl, each of which must be strict JSON."""
    text = (job_dir / EVENTS_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n"), "events.jsonl must end with a complete line"
    events = [json.loads(line) for line in text.splitlines()]
    for ev in events:
        assert {"type", "time", "attempt"} <= set(ev), ev
    return events


def of_type(events: list[dict[str, Any]], kind: str, attempt: int | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind and (attempt is None or e["attempt"] == attempt)]


def train_log(job_dir: Path) -> str:
    try:
        return (job_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class Workers:
    """Starts worker subprocesses (own session, stdout+stderr to JOB_DIR/train.log) and cleans them up."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.env, self.cwd = env, cwd
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, job_dir: Path, *extra: str, attempt: int = 1) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "sft_ui.worker", str(job_dir), "--attempt", str(attempt), *extra]
        with (job_dir / LOG_FILE).open("ab") as log_fh:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                                    cwd=str(self.cwd), env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait(self, proc: subprocess.Popen[bytes], job_dir: Path, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            pytest.fail(f"worker did not exit within {timeout} s; train.log:\n{train_log(job_dir)[-3000:]}")

    def run(self, job_dir: Path, *extra: str, attempt: int = 1) -> int:
        return self.wait(self.start(job_dir, *extra, attempt=attempt), job_dir)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(30)

    def cleanup(self) -> None:
        for proc in self.procs:
            self._kill(proc)


@pytest.fixture
def workers(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    w = Workers(worker_env, tmp_path)
    yield w
    w.cleanup()


def wait_for_event(job_dir: Path, proc: subprocess.Popen[bytes], pred: Callable[[dict[str, Any]], bool],
                   timeout: float = EVENT_TIMEOUT_S) -> dict[str, Any]:
    """The first event matching `pred`; fails if the worker exits or the time runs out first."""
    tailer = EventTailer(job_dir / EVENTS_FILE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in tailer.read_new():
            if pred(ev):
                return ev
        if proc.poll() is not None:
            for ev in tailer.read_new():
                if pred(ev):
                    return ev
            pytest.fail(f"worker exited ({proc.returncode}) before the awaited event; "
                        f"train.log:\n{train_log(job_dir)[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no matching event within {timeout} s; train.log:\n{train_log(job_dir)[-3000:]}")


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


# ---- successful runs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "learning_rate", "model_file"), [
    ("full", 1e-3, "model.safetensors"),
    ("lora", 1e-2, "adapter_model.safetensors"),
])
def test_training_run_succeeds_and_loss_falls(workspace: Path, workers: Workers, method: str, learning_rate: float,
                                              model_file: str) -> None:
    job_dir = make_job(workspace, method=method, learning_rate=learning_rate, max_steps=30)
    code = workers.run(job_dir)
    assert code == EXIT_OK, train_log(job_dir)[-3000:]

    events = read_events(job_dir)
    kinds = {e["type"] for e in events}
    assert {"start", "log", "end"} <= kinds
    assert not of_type(events, "error")
    assert all(e["attempt"] == 1 for e in events)
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"

    start = of_type(events, "start")[0]
    assert start["device"] == "cpu"
    assert start["method"] == method
    assert start["total_steps"] == 30
    assert start["trainable_params"] > 0
    if method == "lora":
        assert start["trainable_params"] < start["total_params"]
    else:
        assert start["trainable_params"] == start["total_params"]

    logs = of_type(events, "log")
    steps = [e["step"] for e in logs]
    assert steps == sorted(set(steps)), f"log steps must strictly increase: {steps}"
    assert steps[0] == 1 and steps[-1] == 30
    losses = [e["loss"] for e in logs]
    assert all(isinstance(x, float) for x in losses), losses
    assert mean(losses[-5:]) < mean(losses[:5]), f"loss did not fall: {losses}"

    end = events[-1]
    assert end["status"] == "succeeded"
    assert end["step"] == 30
    final = job_dir / FINAL_DIR
    assert Path(end["final_dir"]) == final
    assert (final / model_file).is_file()
    assert (final / "tokenizer.json").is_file() and (final / "tokenizer_config.json").is_file()
    meta = json.loads((final / "sft_ui.json").read_text(encoding="utf-8"))
    assert meta["method"] == method and meta["steps"] == 30

    exit_info = json.loads((job_dir / EXIT_FILE).read_text(encoding="utf-8"))
    assert exit_info["exit_code"] == 0 and exit_info["status"] == "succeeded"


def test_eval_fraction_produces_eval_events(workspace: Path, workers: Workers) -> None:
    job_dir = make_job(workspace, method="lora", learning_rate=1e-2, max_steps=10, eval_fraction=0.2, eval_steps=5)
    assert workers.run(job_dir) == EXIT_OK, train_log(job_dir)[-3000:]
    events = read_events(job_dir)
    start = of_type(events, "start")[0]
    assert start["eval_rows"] == 24 and start["train_rows"] == 96
    evals = of_type(events, "eval")
    assert [e["step"] for e in evals] == [5, 10]
    assert all(isinstance(e["eval_loss"], float) for e in evals)
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"


def test_train_log_is_human_readable(workspace: Path, workers: Workers) -> None:
    job_dir = make_job(workspace, method="lora", learning_rate=1e-2, max_steps=10)
    assert workers.run(job_dir) == EXIT_OK, train_log(job_dir)[-3000:]
    text = train_log(job_dir)
    assert "step 1/10" in text
    assert "step 10/10" in text
    assert "{'loss':" not in text and "{'train_runtime':" not in text and "{'eval_loss':" not in text
    assert "Traceback" not in text


# ---- stop and resume -------------------------------------------------------------------------------------
def test_sigterm_stops_with_checkpoint_then_resume_finishes(workspace: Path, workers: Workers) -> None:
    job_dir = make_job(workspace, method="lora", learning_rate=1e-2, max_steps=2000, save_steps=1000,
                       logging_steps=1)
    proc = workers.start(job_dir)
    wait_for_event(job_dir, proc, lambda e: e["type"] == "log" and e["step"] >= 3)
    os.killpg(proc.pid, signal.SIGTERM)  # what the launcher does
    assert workers.wait(proc, job_dir, STOP_TIMEOUT_S) == EXIT_OK, train_log(job_dir)[-3000:]

    events = read_events(job_dir)
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "stopped", end
    n = end["step"]
    assert 3 <= n < 2000
    checkpoint = job_dir / f"checkpoint-{n}"
    assert checkpoint.is_dir() and (checkpoint / "trainer_state.json").is_file()
    assert end["checkpoint"] == str(checkpoint)
    assert any(e["step"] == n for e in of_type(events, "checkpoint")), of_type(events, "checkpoint")
    assert not (job_dir / FINAL_DIR).exists()
    assert json.loads((job_dir / EXIT_FILE).read_text(encoding="utf-8"))["status"] == "stopped"

    # resume with only max_steps changed
    config = load_yaml((job_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    (job_dir / CONFIG_FILE).write_text(apply_overrides(config, {"max_steps": n + 5}).to_yaml(), encoding="utf-8")
    code = workers.run(job_dir, "--resume", attempt=2)
    assert code == EXIT_OK, train_log(job_dir)[-3000:]

    events = read_events(job_dir)
    start2 = of_type(events, "start", attempt=2)
    assert len(start2) == 1 and start2[0]["resumed_from_step"] == n
    logs2 = of_type(events, "log", attempt=2)
    assert logs2 and logs2[0]["step"] == n + 1
    assert [e["step"] for e in logs2] == list(range(n + 1, n + 6))
    end2 = events[-1]
    assert end2["type"] == "end" and end2["attempt"] == 2
    assert end2["status"] == "succeeded" and end2["step"] == n + 5
    assert (job_dir / FINAL_DIR / "adapter_model.safetensors").is_file()
    assert json.loads((job_dir / EXIT_FILE).read_text(encoding="utf-8"))["status"] == "succeeded"


def test_sigterm_during_startup_stops_cleanly(workspace: Path, workers: Workers) -> None:
    """A stop before training starts still ends with exit 0 and an end event 'stopped', nothing trained.

    The signal handler is installed when run_job starts (events.jsonl is created just after), so the test
    waits for that file: a SIGTERM during interpreter start-up, earlier than that, kills the process.
    """
    job_dir = make_job(workspace, method="lora", max_steps=2000, save_steps=1000)
    proc = workers.start(job_dir)
    t0 = time.monotonic()
    while not (job_dir / EVENTS_FILE).exists() and proc.poll() is None and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    time.sleep(max(0.0, 0.5 - (time.monotonic() - t0)))
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGTERM)
    assert workers.wait(proc, job_dir, STOP_TIMEOUT_S) == EXIT_OK, train_log(job_dir)[-3000:]

    events = read_events(job_dir)
    assert not of_type(events, "log")
    assert not of_type(events, "error")
    end = events[-1]
    assert end["type"] == "end" and end["status"] == "stopped", end
    assert end.get("step") in (None, 0), end  # nothing trained (the field may be left out)
    assert not (job_dir / FINAL_DIR).exists()
    exit_info = json.loads((job_dir / EXIT_FILE).read_text(encoding="utf-8"))
    assert exit_info["exit_code"] == 0 and exit_info["status"] == "stopped"


# ---- failures a person can act on ---------------------------------------------------------------------
def assert_failed_with(job_dir: Path, code: int, kind: str) -> dict[str, Any]:
    """The run ended 'failed' with one error event of `kind`; returns that event."""
    events = read_events(job_dir)
    errors = of_type(events, "error")
    assert len(errors) == 1 and errors[0]["kind"] == kind, (errors, train_log(job_dir)[-3000:])
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed"
    assert not of_type(events, "log")
    assert not (job_dir / FINAL_DIR).exists()
    exit_info = json.loads((job_dir / EXIT_FILE).read_text(encoding="utf-8"))
    assert exit_info["exit_code"] == code and exit_info["status"] == "failed"
    return errors[0]


def test_missing_dataset_file(workspace: Path, workers: Workers, tmp_path: Path) -> None:
    job_dir = make_job(workspace, dataset_name=str(tmp_path / "missing.jsonl"))
    assert workers.run(job_dir) == EXIT_BAD_INPUT, train_log(job_dir)[-3000:]
    error = assert_failed_with(job_dir, EXIT_BAD_INPUT, "dataset")
    assert "not found" in error["message"]
    assert "missing.jsonl" in error["message"]


def test_malformed_dataset_names_the_row(workspace: Path, workers: Workers, tmp_path: Path) -> None:
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [good, good, bad, good, good]) + "\n", encoding="utf-8")
    job_dir = make_job(workspace, dataset_name=str(data))
    assert workers.run(job_dir) == EXIT_BAD_INPUT, train_log(job_dir)[-3000:]
    error = assert_failed_with(job_dir, EXIT_BAD_INPUT, "dataset")
    assert "row 3" in error["message"]
    assert "robot" in error["message"]


def test_bad_model_path(workspace: Path, workers: Workers, tmp_path: Path) -> None:
    empty = tmp_path / "empty-model"
    empty.mkdir()
    job_dir = make_job(workspace, model_name_or_path=str(empty))
    code = workers.run(job_dir)
    assert code != EXIT_OK
    error = assert_failed_with(job_dir, code, "model")
    assert "model_name_or_path" in error["message"]
    assert str(empty) in error["message"]


def test_qlora_on_cpu_is_refused(workspace: Path, workers: Workers) -> None:
    job_dir = make_job(workspace, method="qlora")
    code = workers.run(job_dir)
    assert code != EXIT_OK
    error = assert_failed_with(job_dir, code, "qlora")
    assert "CUDA" in error["message"]



def test_invalid_config_file_is_reported_not_crashed_on(workspace: Path, workers: Workers) -> None:
    """A hand-edited config.yaml with an unknown key: an error event naming it, exit 2, exit.json written."""
    job_dir = make_job(workspace)
    (job_dir / "config.yaml").write_text("bogus: 1\nlearning_rate: 0\n", encoding="utf-8")
    assert workers.run(job_dir) == EXIT_BAD_INPUT, train_log(job_dir)[-3000:]
    error = assert_failed_with(job_dir, EXIT_BAD_INPUT, "config")
    assert "unknown key 'bogus'" in error["message"] and "learning_rate must be" in error["message"]
    assert all(isinstance(d, str) for d in error["details"])
