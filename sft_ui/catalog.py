"""Saved configs and built-in presets as one catalogue (used by the API and the UI alike)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from .config import JobConfig
from .presets import get_preset, list_presets
from .store import SqliteStore


class ConfigNotFound(KeyError):
    def __str__(self) -> str:
        return f"config {self.args[0]!r} not found"


class ReadOnlyConfig(PermissionError):
    pass


def _saved_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"config_id": row["config_id"], "name": row["name"], "read_only": False, "description": "",
            "config": json.loads(row["config_json"]), "updated_at": row["updated_at"]}


def all_configs(store: SqliteStore) -> list[dict[str, Any]]:
    return list_presets() + [_saved_view(r) for r in store.list_configs()]


def find_config(store: SqliteStore, config_id: str) -> dict[str, Any]:
    preset = get_preset(config_id)
    if preset is not None:
        return preset
    saved = store.get_config(config_id)
    if saved is None:
        raise ConfigNotFound(config_id)
    return _saved_view(saved)


def save_config(store: SqliteStore, name: str, config: JobConfig, overwrite: bool = False) -> str:
    """Raises ReadOnlyConfig for a preset's name, FileExistsError for a taken name (unless overwrite)."""
    name = name.strip()
    if not name:
        raise ValueError("name: give the config a name")
    if get_preset(name) is not None:
        raise ReadOnlyConfig(f"'{name}' is a built-in preset name; choose another name")
    return store.save_config(f"cfg-{secrets.token_hex(4)}", name, config.to_dict(), overwrite)


def delete_config(store: SqliteStore, config_id: str) -> None:
    if get_preset(config_id) is not None:
        raise ReadOnlyConfig(f"'{config_id}' is a built-in preset and cannot be deleted")
    if not store.delete_config(config_id):
        raise ConfigNotFound(config_id)
