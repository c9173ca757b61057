"""Configs tab: saved configs and presets; save the form, load into the form, import, download, delete."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .. import catalog
from ..config import ConfigError, load_yaml, parse_config
from ..jobs import JobManager
from .render import DELETE_LOOK


@dataclass
class ConfigsTab:
    table: gr.Dataframe
    picker: gr.Dropdown
    name: gr.Textbox
    overwrite: gr.Checkbox
    save_btn: gr.Button
    load_btn: gr.Button
    delete_btn: gr.Button
    download_btn: gr.DownloadButton
    import_file: gr.File
    message: gr.Markdown
    armed: gr.State  # the config id whose Delete was clicked once; the second click deletes


def table_frame(manager: JobManager) -> pd.DataFrame:
    found = sorted(catalog.all_configs(manager.store), key=lambda c: c["read_only"])  # yours first, then presets
    rows = [[c["config_id"], c["name"], "preset (read-only)" if c["read_only"] else "saved",
             c.get("updated_at", "") or "", c.get("description", "")] for c in found]
    return pd.DataFrame(rows, columns=["id", "name", "kind", "updated", "description"])


def choices(manager: JobManager) -> list[tuple[str, str]]:
    return [(("preset: " if c["read_only"] else "saved: ") + c["name"], c["config_id"])
            for c in catalog.all_configs(manager.store)]


def build(manager: JobManager) -> ConfigsTab:
    table = gr.Dataframe(table_frame(manager), interactive=False, wrap=True, label="Configs", elem_id="configs-table")
    with gr.Row():
        picker = gr.Dropdown(choices(manager), value=None, label="Config", scale=3, elem_id="config-picker")
        load_btn = gr.Button("Load into form", scale=1, elem_id="config-load")
        download_btn = gr.DownloadButton("Download YAML", scale=1, elem_id="config-download")
        delete_btn = gr.Button(**DELETE_LOOK, scale=1, elem_id="config-delete")
    with gr.Row():
        name = gr.Textbox(label="Save the current form as", placeholder="my experiment", scale=3,
                          elem_id="config-name")
        overwrite = gr.Checkbox(False, label="Overwrite if the name exists", scale=1)
        save_btn = gr.Button("Save current form", variant="primary", scale=1, elem_id="config-save")
    import_file = gr.File(label="Import a YAML config (saved under its file name)", file_types=[".yaml", ".yml"],
                          type="filepath", elem_id="config-import")
    message = gr.Markdown(elem_id="config-message")
    return ConfigsTab(table, picker, name, overwrite, save_btn, load_btn, delete_btn, download_btn, import_file,
                      message, gr.State(None))


def save_form(manager: JobManager, name: str, overwrite: bool, config_values: tuple[Any, ...]) -> str:
    from .formdata import values_to_config

    config = values_to_config(config_values)
    try:
        config_id = catalog.save_config(manager.store, name, config, overwrite)
    except FileExistsError:
        raise gr.Error(f"A config named '{name.strip()}' exists: tick 'Overwrite' to replace it.") from None
    except (catalog.ReadOnlyConfig, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    manager.touch()
    return config_id


def import_yaml(manager: JobManager, path: str | None) -> str:
    if not path:
        raise gr.Error("No file received.")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise gr.Error(f"Cannot read the file: {exc}") from None
    try:
        config = load_yaml(text)
    except ConfigError as exc:
        raise gr.Error("Invalid config: " + "; ".join(e.message for e in exc.errors)) from None
    name = config.name.strip() or Path(path).stem
    try:
        config_id = catalog.save_config(manager.store, name, config, overwrite=True)
    except (catalog.ReadOnlyConfig, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    manager.touch()
    return config_id


def find(manager: JobManager, config_id: str | None) -> dict[str, Any]:
    """The picked config, or a gr.Error saying what is wrong."""
    if not config_id:
        raise gr.Error("Pick a config first.")
    try:
        return catalog.find_config(manager.store, config_id)
    except catalog.ConfigNotFound as exc:
        raise gr.Error(str(exc)) from None


def download(manager: JobManager, config_id: str | None) -> str:
    found = find(manager, config_id)
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in found["name"])[:60] or "config"
    out = Path(tempfile.mkdtemp(prefix="sft-ui-config-")) / f"{safe}.yaml"
    out.write_text(parse_config(found["config"]).to_yaml(), encoding="utf-8")
    return str(out)
