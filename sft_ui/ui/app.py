"""The Gradio studio: builds each tab, then wires the few actions that cross tabs."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..config import parse_config
from ..exports import ExportManager
from ..inference import InferenceClient
from ..jobs import JobManager
from ..settings import Settings
from . import chat_tab, client_api, compare_tab, configs_tab, jobs_tab, system_tab, train_tab
from .render import CONFIRM_DELETE_LOOK, DELETE_LOOK

CSS = """
.sft-errors { color: #b91c1c; }
#job-log textarea { font-family: ui-monospace, monospace; font-size: 12px; }
"""
SCROLL_LOG_JS = "() => { const t = document.querySelector('#job-log textarea'); if (t) t.scrollTop = t.scrollHeight; }"
TICK_S = 1.0
SYSTEM_TICK_S = 5.0


def build_ui(manager: JobManager, settings: Settings, inference: InferenceClient | None = None,
             exports: ExportManager | None = None) -> gr.Blocks:
    inference = inference or InferenceClient(settings.workspace)
    exports = exports or ExportManager(settings.workspace)
    with gr.Blocks(title="sft_ui · fine-tuning studio") as blocks:
        gr.Markdown("## sft_ui · supervised fine-tuning studio\nTrain with TRL in a background worker; jobs "
                    "survive restarts and keep training when you close this page.")
        timer = gr.Timer(TICK_S)
        system_timer = gr.Timer(SYSTEM_TICK_S)
        with gr.Tabs(selected="train") as tabs:
            with gr.Tab("Train", id="train"):
                train = train_tab.build(manager, settings)
            with gr.Tab("Jobs", id="jobs"):
                jobs = jobs_tab.build()
            with gr.Tab("Chat & export", id="chat"):
                chat = chat_tab.build()
            with gr.Tab("Compare", id="compare"):
                comp = compare_tab.build()
            with gr.Tab("Configs", id="configs"):
                configs = configs_tab.build(manager)
            with gr.Tab("System", id="system"):
                system = system_tab.build(settings)
        train_tab.wire(train, manager, settings)
        jobs_tab.wire(jobs, manager, timer)
        compare_tab.wire(comp, manager)
        chat_tab.wire(chat, manager, inference, exports)
        system_tab.wire(system, settings, system_timer)
        _wire_cross_tab(manager, tabs, train, jobs, configs)
        client_api.register(manager)
        blocks.load(lambda: [gr.update(choices=train_tab.preset_choices(manager)),
                             gr.update(choices=compare_tab.job_choices(manager)),
                             gr.update(choices=configs_tab.choices(manager)), configs_tab.table_frame(manager)],
                    None, [train.preset, comp.jobs, configs.picker, configs.table], api_visibility="private",
                    show_progress="hidden")
        # keep the newest log lines in view: scroll the log box down whenever new text arrives
        jobs.log.change(None, None, None, js=SCROLL_LOG_JS, api_visibility="private", queue=False)
    return blocks


def _wire_cross_tab(manager: JobManager, tabs: gr.Tabs, train: train_tab.TrainTab, jobs: jobs_tab.JobsTab,
                    configs: configs_tab.ConfigsTab) -> None:
    form_inputs = train.form.inputs
    jobs_outputs = [jobs.state, *jobs.list_outputs, *jobs.detail_outputs, jobs.log]

    def start(*args: Any) -> list[Any]:
        *values, session = args
        errors, result, job_id = train_tab.start_job(manager, tuple(values))
        if job_id is None:
            return [errors, result, gr.skip(), *[gr.skip()] * len(jobs_outputs)]
        log_text = jobs_tab.open_job(manager, session, job_id)
        session["rev"] = manager.revision
        return [errors, result, gr.Tabs(selected="jobs"), session, *jobs_tab.list_view(manager, session),
                *jobs_tab.detail_view(manager, job_id), log_text]

    train.start.click(start, [*form_inputs, jobs.state], [train.errors, train.result, tabs, *jobs_outputs],
                      api_name="start_from_form")

    def clone(session: dict[str, Any]) -> list[Any]:
        if not session["job"]:
            raise gr.Error("Select a job first.")
        config = parse_config(manager.get(session["job"])["config"])
        config = config.model_copy(update={"name": f"{config.name} (copy)"[:120]})
        return [*train.form.updates(config), gr.Tabs(selected="train")]

    jobs.clone_btn.click(clone, [jobs.state], [*form_inputs, tabs], api_name="clone_to_form")

    def refresh_configs(message: str) -> list[Any]:
        picks = configs_tab.choices(manager)
        return [configs_tab.table_frame(manager), gr.update(choices=picks), gr.update(choices=picks), message]

    config_outputs = [configs.table, configs.picker, train.preset, configs.message]

    def save(name: str, overwrite: bool, *values: Any) -> list[Any]:
        config_id = configs_tab.save_form(manager, name, overwrite, values)
        return refresh_configs(f"✅ Saved as **{name.strip()}** (`{config_id}`).")

    configs.save_btn.click(save, [configs.name, configs.overwrite, *form_inputs], config_outputs,
                           api_name="save_config")

    def load(config_id: str | None) -> list[Any]:
        found = configs_tab.find(manager, config_id)
        return [*train.form.updates(parse_config(found["config"])), gr.update(value=config_id),
                gr.Tabs(selected="train")]

    configs.load_btn.click(load, [configs.picker], [*form_inputs, train.preset, tabs], api_name="load_config_to_form")

    def delete(config_id: str | None, armed: str | None) -> list[Any]:
        from .. import catalog

        if not config_id:
            raise gr.Error("Pick a config first.")
        if armed != config_id:  # the first click only asks
            if configs_tab.find(manager, config_id)["read_only"]:  # say so now, not after the confirmation
                raise gr.Error(f"'{config_id}' is a built-in preset and cannot be deleted")
            return [gr.skip()] * len(config_outputs[:-1]) + [
                f"Click **Confirm delete** to delete `{config_id}`.", config_id,
                gr.update(**CONFIRM_DELETE_LOOK)]
        try:
            catalog.delete_config(manager.store, config_id)
        except (catalog.ReadOnlyConfig, catalog.ConfigNotFound) as exc:
            raise gr.Error(str(exc)) from None
        manager.touch()
        return [*refresh_configs(f"Deleted `{config_id}`."), None, gr.update(**DELETE_LOOK)]

    delete_outputs = [*config_outputs, configs.armed, configs.delete_btn]
    configs.delete_btn.click(delete, [configs.picker, configs.armed], delete_outputs, api_name="delete_config")
    configs.picker.change(lambda _: [None, gr.update(**DELETE_LOOK)], [configs.picker],
                          [configs.armed, configs.delete_btn], api_visibility="private", show_progress="hidden")

    def do_import(path: str | None) -> list[Any]:
        config_id = configs_tab.import_yaml(manager, path)
        return refresh_configs(f"✅ Imported as `{config_id}`.")

    configs.import_file.upload(do_import, [configs.import_file], config_outputs, api_name="import_config")
    configs.download_btn.click(lambda cid: configs_tab.download(manager, cid), [configs.picker],
                               [configs.download_btn], api_name="download_config")
