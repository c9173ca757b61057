"""Where a job's trained result lives (final/ or a checkpoint), and what it is. Torch-free."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import EMBEDDED_MODEL, JobConfig, load_yaml
from .events import CHECKPOINT_PREFIX, CONFIG_FILE, FINAL_DIR, checkpoints


class ResultError(ValueError):
    """The job has no usable result (yet); the message says what to do."""


def result_choices(job_dir: Path) -> list[str]:
    """'final' (when present) then checkpoints, newest first."""
    names = [FINAL_DIR] if (job_dir / FINAL_DIR).is_dir() else []
    return names + [p.name for p in reversed(checkpoints(job_dir))]


def resolve_result(job_dir: Path, result: str | None = None) -> Path:
    """The folder to load: `final`, `checkpoint-N`, or (None) the best available."""
    choices = result_choices(job_dir)
    if not choices:
        raise ResultError("this job has no result yet: wait for a checkpoint or for it to finish")
    name = result or choices[0]
    if name not in choices:
        raise ResultError(f"unknown result {name!r}: choose one of {', '.join(choices)}")
    return job_dir / name


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def job_config(job_dir: Path) -> JobConfig:
    return load_yaml((job_dir / CONFIG_FILE).read_text(encoding="utf-8"))


def base_model_path(job_dir: Path, workspace: Path) -> str:
    """The base model a LoRA result applies to: the embedded model's cache or the config's id/path."""
    config = job_config(job_dir)
    if config.model_name_or_path == EMBEDDED_MODEL:
        from .embedded import EMBEDDED_VERSION

        return str(workspace / "models" / f"embedded-tiny-llama-{EMBEDDED_VERSION}")
    return config.model_name_or_path


def describe(job_dir: Path) -> dict[str, Any]:
    info_file = job_dir / FINAL_DIR / "sft_ui.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    return {"results": result_choices(job_dir), "checkpoint_prefix": CHECKPOINT_PREFIX, **info}
