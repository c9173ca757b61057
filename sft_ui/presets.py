"""Built-in presets: the YAML files in `configs/`, read-only, identified by file stem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ConfigError, JobConfig, load_yaml

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def _description(text: str) -> str:
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    return " ".join(lines)


_cache: dict[Path, tuple[float, dict[str, Any] | None]] = {}


def _read(path: Path) -> dict[str, Any] | None:
    """One preset file, parsed once per modification (lookups happen on every config_id request)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    cached = _cache.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    text = path.read_text(encoding="utf-8")
    try:
        config = load_yaml(text)
        found: dict[str, Any] | None = {"config_id": path.stem, "name": config.name or path.stem,
                                        "description": _description(text), "read_only": True,
                                        "config": config.to_dict()}
    except ConfigError:
        found = None
    _cache[path] = (mtime, found)
    return found


def list_presets(directory: Path = PRESETS_DIR) -> list[dict[str, Any]]:
    """Every valid preset as {config_id, name, description, read_only, config}; invalid files are skipped."""
    return [p for p in (_read(path) for path in sorted(directory.glob("*.yaml"))) if p is not None]


def get_preset(config_id: str, directory: Path = PRESETS_DIR) -> dict[str, Any] | None:
    """The preset whose file stem is `config_id`. The id is looked up among the files, never made into a
    path: a NUL byte, `..`, a separator or an over-long name from a request simply matches nothing."""
    path = next((p for p in directory.glob("*.yaml") if p.stem == config_id and not p.name.startswith(".")), None)
    return _read(path) if path is not None else None


def preset_config(config_id: str) -> JobConfig | None:
    found = get_preset(config_id)
    return JobConfig.model_validate(found["config"]) if found else None
