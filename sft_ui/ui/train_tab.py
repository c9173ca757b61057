"""Train tab: presets, the generated config form, dataset choice/upload/preview, YAML preview, Start."""

from __future__ import annotations

import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from .. import catalog
from ..config import EMBEDDED_MODEL, ConfigError, JobConfig, parse_config
from ..data import FILE_SUFFIXES, DatasetError, preview, sample_names
from ..jobs import JobManager
from ..paths import confine, looks_like_path
from ..settings import Settings
from .form import ConfigForm, build_form
from .formdata import values_to_config, values_to_dict
from .render import preview_frame

log = logging.getLogger(__name__)
DEFAULT_PRESET = "tiny-lora"
EMBEDDED_NOTE = ("**Embedded demo model** (`embedded:tiny-llama`): a 2-layer Llama with random weights, built "
                 "offline. It trains in seconds on a CPU and its loss falls, but it learns the sample's patterns, "
                 "not language: expect gibberish in chat. Set `model_name_or_path` to a real model for real results.")


@dataclass
class TrainTab:
    preset: gr.Dropdown
    form: ConfigForm
    sample: gr.Dropdown
    upload: gr.File
    preview_btn: gr.Button
    preview_table: gr.Dataframe
    preview_info: gr.Markdown
    yaml_view: gr.Code
    command_view: gr.Code
    errors: gr.Markdown
    start: gr.Button
    result: gr.Markdown
    model_note: gr.Markdown


def preset_choices(manager: JobManager) -> list[tuple[str, str]]:
    return [(("preset: " if c["read_only"] else "saved: ") + c["name"], c["config_id"])
            for c in catalog.all_configs(manager.store)]


def initial_config() -> JobConfig:
    from ..presets import preset_config

    return preset_config(DEFAULT_PRESET) or JobConfig()


def build(manager: JobManager, settings: Settings) -> TrainTab:
    config = initial_config()
    with gr.Row():
        preset = gr.Dropdown(choices=preset_choices(manager), value=DEFAULT_PRESET, label="Preset or saved config",
                             info="Fills the form; change any field afterwards.", scale=3, elem_id="preset")
        start = gr.Button("Start training", variant="primary", scale=1, elem_id="start-training")
    errors = gr.Markdown(elem_id="form-errors")
    result = gr.Markdown(elem_id="start-result")
    model_note = gr.Markdown(EMBEDDED_NOTE if config.model_name_or_path == EMBEDDED_MODEL else "")
    with gr.Row():
        with gr.Column(scale=3):
            form = build_form(config)
        with gr.Column(scale=2):
            with gr.Accordion("Dataset helpers", open=True):
                sample = gr.Dropdown(choices=[""] + sample_names(), value="", label="Use a shipped sample",
                                     elem_id="sample-picker")
                upload = gr.File(label=f"Upload a dataset ({', '.join(FILE_SUFFIXES)}; up to "
                                       f"{settings.max_upload_mb} MB)", file_types=list(FILE_SUFFIXES),
                                 type="filepath", elem_id="dataset-upload")
                preview_btn = gr.Button("Preview dataset", size="sm", elem_id="preview-btn")
                preview_info = gr.Markdown(elem_id="preview-info")
                preview_table = gr.Dataframe(headers=["#", "row as trained"], label="First rows as they will be "
                                             "trained", interactive=False, wrap=True, max_height=320,
                                             elem_id="preview-table")
            yaml_view = gr.Code(config.to_yaml(), language="yaml", label="config.yaml (plain TRL names)",
                                interactive=False, elem_id="yaml-preview")
            command_view = gr.Code(_command(config, settings.port), language="shell", label="Run the same job headless",
                                   interactive=False)
    return TrainTab(preset, form, sample, upload, preview_btn, preview_table, preview_info, yaml_view, command_view,
                    errors, start, result, model_note)


def _command(config: JobConfig, port: int = 7860) -> str:
    return ("# save the YAML above as my-config.yaml, then:\npython -m sft_ui train my-config.yaml\n"
            f"# or through the REST API of this server:\ncurl -X POST localhost:{port}/api/sft/train "
            "-H 'content-type: application/json' -d @- <<'EOF'\n" + '{"config": ' + config.to_json() + "}\nEOF")


def errors_markdown(exc: ConfigError | DatasetError) -> str:
    if isinstance(exc, ConfigError):
        items = [f"- **{e.field}**: {e.message}" for e in exc.errors] or [f"- {exc}"]
    else:
        items = [f"- **dataset**: {m}" for m in (exc.errors or [str(exc)])]
    return "<div class='sft-errors'>\n\n**Fix these before starting:**\n\n" + "\n".join(items[:20]) + "\n\n</div>"


def save_upload(settings: Settings, temp_path: str | None) -> str:
    """Copy an upload into the workspace under a server-made name; returns the new path."""
    if not temp_path:
        raise gr.Error("No file received.")
    suffix = Path(temp_path).suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise gr.Error(f"Unsupported file type {suffix or '(none)'}: use {', '.join(FILE_SUFFIXES)}.")
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)
    target = settings.uploads_dir / f"upload-{secrets.token_hex(8)}{suffix}"
    shutil.copyfile(temp_path, target)
    return str(target)


def wire(tab: TrainTab, manager: JobManager, settings: Settings) -> None:
    inputs = tab.form.inputs
    ds = tab.form.components

    def load_preset(config_id: str | None) -> list[Any]:
        if not config_id:
            return [gr.skip()] * len(inputs)
        try:
            found = catalog.find_config(manager.store, config_id)
        except catalog.ConfigNotFound:
            raise gr.Error(f"Config {config_id!r} no longer exists.") from None
        return tab.form.updates(parse_config(found["config"]))

    tab.preset.input(load_preset, [tab.preset], inputs, api_name="load_config")

    def live_yaml(*values: Any) -> tuple[str, str, str, str]:
        try:
            config = values_to_config(values)
        except ConfigError as exc:
            return gr.skip(), gr.skip(), errors_markdown(exc), gr.skip()
        note = EMBEDDED_NOTE if config.model_name_or_path == EMBEDDED_MODEL else ""
        return config.to_yaml(), _command(config, settings.port), "", note

    for component in inputs:
        component.change(live_yaml, inputs, [tab.yaml_view, tab.command_view, tab.errors, tab.model_note],
                         queue=False, show_progress="hidden", api_visibility="private")

    def do_preview(name: str, fmt: str, mapping_text: str, split: str) -> tuple[Any, str]:
        try:
            mapping = values_to_dict_partial(mapping_text)
            name = name.strip()
            if looks_like_path(name):
                name = str(confine(name, settings, "dataset_name"))
            found = preview(name, fmt or "auto", mapping, n=8, split=split or "train")
        except (DatasetError, ConfigError) as exc:
            return preview_frame([]), f"<div class='sft-errors'>❌ {exc}</div>"
        except (OSError, ValueError) as exc:
            return preview_frame([]), f"<div class='sft-errors'>❌ {type(exc).__name__}: {exc}</div>"
        text = (f"Detected format: **{found.format}** · columns: {', '.join(found.columns)} · "
                f"scanned {found.scanned} rows")
        if found.errors:
            problems = "\n".join(f"- ❌ {e}" for e in found.errors[:10])
            text += f"\n\n<div class='sft-errors'>\n\n{problems}\n\n</div>"
        else:
            text += " · no problems found"
        return preview_frame(found.rows), text

    preview_inputs = [ds["dataset_name"], ds["dataset_format"], ds["column_mapping"], ds["dataset_train_split"]]
    tab.preview_btn.click(do_preview, preview_inputs, [tab.preview_table, tab.preview_info], api_name="preview_dataset")
    ds["dataset_name"].blur(do_preview, preview_inputs, [tab.preview_table, tab.preview_info],
                            api_visibility="private")

    def pick_sample(name: str) -> Any:
        return name if name else gr.skip()

    tab.sample.input(pick_sample, [tab.sample], [ds["dataset_name"]], api_visibility="private").then(
        do_preview, preview_inputs, [tab.preview_table, tab.preview_info], api_visibility="private")

    def on_upload(path: str | None) -> str:
        return save_upload(settings, path)

    tab.upload.upload(on_upload, [tab.upload], [ds["dataset_name"]], api_name="upload_dataset").then(
        do_preview, preview_inputs, [tab.preview_table, tab.preview_info], api_visibility="private")


def values_to_dict_partial(mapping_text: str) -> dict[str, str]:
    """Parse just the column_mapping widget (for previews before the whole form is valid)."""
    from .formdata import from_widget, specs

    spec = next(s for s in specs() if s.name == "column_mapping")
    return from_widget(spec, mapping_text)


def start_job(manager: JobManager, values: tuple[Any, ...]) -> tuple[str, str, str | None]:
    """(errors markdown, result markdown, job id or None). Nothing is created when the form is invalid."""
    try:
        config = values_to_config(values)
        job = manager.submit(config)
    except (ConfigError, DatasetError) as exc:
        return errors_markdown(exc), "", None
    return "", f"✅ Queued **{job['name']}** (`{job['job_id']}`). Watch it in the Jobs tab.", job["job_id"]


__all__ = ["TrainTab", "build", "wire", "start_job", "values_to_dict"]
