"""ExportManager finds exports again after a server restart, from the files the export worker leaves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil
import pytest

from sft_ui.exports import ExportManager

EXPORT_ID = "exp-0123abcd"


def write_export(workspace: Path, job_id: str, kind: str, status: dict[str, object] | None,
                 pid: subprocess.Popen[bytes] | None = None, suffix: str = "") -> Path:
    root = workspace / "exports"
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"{job_id}-{kind}-{EXPORT_ID}{suffix}"
    if status is not None:
        (root / f"{out.name}.status.json").write_text(json.dumps(status))
    if pid is not None:
        started = psutil.Process(pid.pid).create_time()
        (root / f"{out.name}.pid.json").write_text(json.dumps({"pid": pid.pid, "start_time": started}))
    return out


def test_finished_exports_are_listed_again_with_their_status(tmp_path: Path) -> None:
    out = write_export(tmp_path, "job-2026-a-b", "adapter_zip", {"status": "succeeded", "message": "zipped final",
                                                                 "progress": 1.0}, suffix=".zip")
    (tmp_path / "exports" / "unrelated.log").write_text("x")
    manager = ExportManager(tmp_path)
    view = manager.get(EXPORT_ID).view()
    assert view == {"export_id": EXPORT_ID, "job_id": "job-2026-a-b", "kind": "adapter_zip", "path": str(out),
                    "status": "succeeded", "message": "zipped final", "progress": 1.0}
    assert manager.list_for("job-2026-a-b") == [view]
    assert manager.list_for("job-other") == []


def test_a_running_export_whose_process_died_is_reported_failed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    write_export(tmp_path, "job-x", "merge", {"status": "running", "message": "merging", "progress": 0.4}, pid=gone)
    gone.wait(timeout=30)
    view = ExportManager(tmp_path).wait(EXPORT_ID, 5)
    assert view["status"] == "failed" and "ended without finishing" in view["message"], view


def test_a_running_export_whose_process_lives_stays_running(tmp_path: Path) -> None:
    alive = subprocess.Popen(["sleep", "60"])
    try:
        write_export(tmp_path, "job-x", "push", None, pid=alive)
        view = ExportManager(tmp_path).get(EXPORT_ID).view()
        assert view["status"] == "queued" and view["kind"] == "push", view  # no status file yet: still starting
    finally:
        alive.kill()
        alive.wait(timeout=30)


def test_unknown_export_is_a_key_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        ExportManager(tmp_path).get("exp-ffffffff")
