"""Confining paths that users and requests name to the allowed roots (server side).

Allowed: the workspace (uploads live there), the shipped samples, and SFT_UI_DATA_DIRS. A path is
resolved with symlinks followed before the check, so `..`, absolute escapes and symlinks pointing out
are all refused; NUL bytes and over-long names are refused before touching the filesystem. Relative
paths are taken relative to the workspace (a worker's working directory is its job folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import EMBEDDED_MODEL, ConfigError, FieldError, JobConfig
from .data import FILE_SUFFIXES, SAMPLES_DIR
from .settings import Settings

MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 255


def allowed_roots(settings: Settings) -> list[Path]:
    return [settings.workspace.resolve(), SAMPLES_DIR.resolve(), *(p.resolve() for p in settings.data_dirs)]


def looks_like_path(value: str) -> bool:
    """True for what the worker would read from disk; False for Hub ids, samples and the embedded model."""
    if value.startswith(("sample:", "embedded:")) or value == EMBEDDED_MODEL:
        return False
    if "\x00" in value or value.startswith(("/", ".", "~")) or "\\" in value:
        return True
    if Path(value).suffix.lower() in FILE_SUFFIXES:
        return True
    return value.count("/") != 1  # 'org/name' is a Hub id; anything else is a local name


def confine(value: str, settings: Settings, field: str) -> Path:
    """The resolved path, or ConfigError naming the field when it is not allowed."""
    def refuse(why: str) -> ConfigError:
        return ConfigError([FieldError(field, f"{field}: {why}")])

    if "\x00" in value:
        raise refuse("path contains a NUL byte")
    if len(value) > MAX_PATH_CHARS or any(len(part) > MAX_NAME_CHARS for part in value.split("/")):
        raise refuse("path is too long")
    raw = Path(os.path.expanduser(value))
    path = raw if raw.is_absolute() else settings.workspace / raw
    try:
        resolved = path.resolve(strict=False)
    except (OSError, RuntimeError):
        raise refuse("path cannot be resolved (a symlink loop?)") from None
    roots = allowed_roots(settings)
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise refuse(f"{value!r} is outside the allowed folders (the workspace, the shipped samples, and "
                     "SFT_UI_DATA_DIRS); upload the file or add its folder to SFT_UI_DATA_DIRS")
    if not resolved.exists():
        raise refuse(f"{value!r}: file or folder not found")
    return resolved


def confine_config(config: JobConfig, settings: Settings) -> JobConfig:
    """Check every path-like field and store it absolute (the worker runs in the job folder)."""
    updates: dict[str, str] = {}
    for field in ("dataset_name", "model_name_or_path"):
        value = getattr(config, field)
        if looks_like_path(value):
            updates[field] = str(confine(value, settings, field))
    return config.model_copy(update=updates) if updates else config
