"""Built-in presets: the YAML files in `configs/`, read-only, identified by file stem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ConfigError, JobConfig, load_yaml

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"


def _description(text: str) -> str:
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("#")]
    return " ".join(lines)


def list_presets(directory: Path = PRESETS_DIR) -> list[dict[str, Any]]:
    """Every valid preset as {config_id, name, description, read_only, config}; invalid files are skipped."""
    found = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        try:
            config = load_yaml(text)
        except ConfigError:
            continue
        found.append({"config_id": path.stem, "name": config.name or path.stem, "description": _description(text),
                      "read_only": True, "config": config.to_dict()})
    return found


def get_preset(config_id: str, directory: Path = PRESETS_DIR) -> dict[str, Any] | None:
    return next((p for p in list_presets(directory) if p["config_id"] == config_id), None)


def preset_config(config_id: str) -> JobConfig | None:
    found = get_preset(config_id)
    return JobConfig.model_validate(found["config"]) if found else None
