"""Job identifiers and job directories: everything needed to re-run a job headless lives in its folder."""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path

from .config import JobConfig
from .events import CONFIG_FILE


def new_job_id(now: float | None = None) -> str:
    """Sortable by creation time, unique without coordination: '20261204-195301-3fa9c1'."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def is_valid_job_id(job_id: str) -> bool:
    parts = job_id.split("-")
    return (len(job_id) <= 40 and len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit()
            and all(c in "0123456789abcdef" for c in parts[2]))


def create_job_dir(root: Path, job_id: str, config: JobConfig) -> Path:
    """Make ROOT/JOB_ID with its config.yaml (written atomically)."""
    job_dir = root / job_id
    job_dir.mkdir(parents=True, exist_ok=False)
    tmp = job_dir / (CONFIG_FILE + ".tmp")
    tmp.write_text(config.to_yaml(), encoding="utf-8")
    tmp.replace(job_dir / CONFIG_FILE)
    return job_dir


def remove_job_dir(root: Path, job_id: str) -> None:
    """Delete a job folder, refusing anything that is not directly under root."""
    job_dir = (root / job_id).resolve()
    if job_dir.parent != root.resolve() or not is_valid_job_id(job_id):
        raise ValueError(f"refusing to delete {job_dir}: not a job folder")
    shutil.rmtree(job_dir, ignore_errors=True)
