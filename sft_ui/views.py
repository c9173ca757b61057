"""Shapes shown to the outside (API, UI): a job row as a public job object, and log chunks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .events import CHECKPOINT_PREFIX, FINAL_DIR, checkpoints
from .status import RESUMABLE, JobStatus


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def job_view(row: dict[str, Any], with_config: bool = True) -> dict[str, Any]:
    """The public job object: status, timestamps, progress, latest metrics, error, outputs."""
    step, total = int(row["step"] or 0), row["total_steps"]
    percent = round(100.0 * step / total, 1) if total else (100.0 if row["status"] == "succeeded" else 0.0)
    job_dir = Path(row["job_dir"])
    status = JobStatus(row["status"])
    view: dict[str, Any] = {
        "job_id": row["job_id"], "name": row["name"], "status": status.value,
        "created_at": row["created_at"], "started_at": row["started_at"], "finished_at": row["finished_at"],
        "attempt": row["attempt"], "exit_code": row["exit_code"],
        "progress": {"step": step, "total_steps": total, "percent": min(percent, 100.0), "eta_s": row["eta_s"]},
        "latest": _json(row["latest_json"]),
        "error": row["error"] if status in (JobStatus.FAILED, JobStatus.INTERRUPTED) else None,
        "error_kind": row["error_kind"] if status in (JobStatus.FAILED, JobStatus.INTERRUPTED) else None,
        "resumable": status in RESUMABLE,
        "job_dir": str(job_dir),
        "info": _json(row["info_json"]),
    }
    if with_config:
        view["config"] = _json(row["config_json"])
        view["checkpoints"] = [int(p.name[len(CHECKPOINT_PREFIX):]) for p in checkpoints(job_dir)]
        view["final_dir"] = str(job_dir / FINAL_DIR) if (job_dir / FINAL_DIR).is_dir() else None
    return view


def read_log(path: Path, offset: int, max_bytes: int, finished: bool) -> dict[str, Any]:
    """Bytes of a log from `offset`, cut at a line end when more follows, decoded leniently."""
    offset = max(0, offset)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if offset > size:  # the file was replaced or truncated: start over
        offset = 0
    data = b""
    if size > offset:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(max_bytes)
        if offset + len(data) < size or (not finished and not data.endswith(b"\n")):
            cut = data.rfind(b"\n")
            if cut >= 0:
                data = data[: cut + 1]
    next_offset = offset + len(data)
    return {"text": data.decode("utf-8", errors="replace"), "next_offset": next_offset,
            "complete": finished and next_offset >= size}
