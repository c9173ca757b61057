"""Plain API endpoints for `gradio_client` (same operations as the buttons, with simple signatures)."""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr

from ..config import ConfigError, load_yaml
from ..data import DatasetError
from ..jobs import JobManager
from ..status import InvalidTransition, JobNotFound


def _guard(fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        try:
            return fn(*args)
        except (ConfigError, DatasetError, InvalidTransition, JobNotFound) as exc:
            raise gr.Error(str(exc)) from None
    return wrapped


def register(manager: JobManager) -> None:
    """Call inside the Blocks context."""

    def start_training(config_yaml: str) -> dict[str, Any]:
        """Queue a job from a YAML config (flat JobConfig keys); returns the job."""
        return manager.submit(load_yaml(config_yaml))

    def list_jobs(status: str = "all", limit: float = 50, offset: float = 0) -> dict[str, Any]:
        """Jobs, newest first: {"jobs": [...], "total": N}."""
        jobs, total = manager.list(None if status in ("", "all") else status, max(1, min(int(limit), 500)),
                                   max(0, int(offset)))
        return {"jobs": jobs, "total": total}

    def get_job(job_id: str) -> dict[str, Any]:
        """One job with its config, progress and latest metrics."""
        return manager.get(job_id)

    def stop_job(job_id: str) -> dict[str, Any]:
        """Stop a job (idempotent)."""
        job, message = manager.stop(job_id)
        return {**job, "message": message}

    def resume_job(job_id: str) -> dict[str, Any]:
        """Resume a stopped, failed or interrupted job from its latest checkpoint."""
        return manager.resume(job_id)

    def delete_job(job_id: str) -> dict[str, Any]:
        """Delete a finished job and its files."""
        manager.delete(job_id)
        return {"job_id": job_id, "deleted": True}

    def job_log(job_id: str, offset: float = 0) -> dict[str, Any]:
        """Log text from a byte offset: {"text", "next_offset", "complete"}."""
        return manager.read_log(job_id, max(0, int(offset)))

    for fn in (start_training, list_jobs, get_job, stop_job, resume_job, delete_job, job_log):
        gr.api(_guard(fn), api_name=fn.__name__, concurrency_limit=None)
