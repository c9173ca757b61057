"""Compare tab: loss curves of several jobs overlaid, and their configs side by side with differences marked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..jobs import JobManager
from ..status import JobNotFound
from .render import compare_frame, config_diff

MAX_COMPARED = 8


@dataclass
class CompareTab:
    jobs: gr.Dropdown
    only_diff: gr.Checkbox
    refresh: gr.Button
    plot: gr.LinePlot
    diff: gr.Dataframe


def build() -> CompareTab:
    with gr.Row():
        jobs = gr.Dropdown(choices=[], multiselect=True, label=f"Jobs to compare (up to {MAX_COMPARED})", scale=4,
                           max_choices=MAX_COMPARED, elem_id="compare-jobs")
        only_diff = gr.Checkbox(True, label="Only fields that differ", scale=1)
        refresh = gr.Button("Compare", scale=0, elem_id="compare-btn")
    plot = gr.LinePlot(x="step", y="loss", color="job", title="Train loss", height=320, elem_id="compare-plot")
    diff = gr.Dataframe(label="Configs side by side (≠ marks a difference)", interactive=False, wrap=True,
                        elem_id="compare-diff")
    return CompareTab(jobs, only_diff, refresh, plot, diff)


def job_choices(manager: JobManager, limit: int = 200) -> list[tuple[str, str]]:
    jobs, _ = manager.list(None, limit, 0)
    return [(f"{j['name']} · {j['job_id']}", j["job_id"]) for j in jobs]


def compare(manager: JobManager, job_ids: list[str], only_differences: bool) -> tuple[Any, Any]:
    series: dict[str, list[dict[str, Any]]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for job_id in (job_ids or [])[:MAX_COMPARED]:
        try:
            job = manager.get(job_id)
        except JobNotFound:
            continue
        label = f"{job['name']} ({job_id[-6:]})"
        series[label] = manager.metrics(job_id)
        configs[label] = job["config"]
    return compare_frame(series), config_diff(configs, only_differences)


def wire(tab: CompareTab, manager: JobManager) -> None:
    def run(job_ids: list[str], only: bool) -> tuple[Any, Any]:
        return compare(manager, job_ids, only)

    for trigger in (tab.refresh.click, tab.jobs.change, tab.only_diff.change):
        trigger(run, [tab.jobs, tab.only_diff], [tab.plot, tab.diff], api_visibility="private")
    tab.jobs.focus(lambda: gr.update(choices=job_choices(manager)), None, [tab.jobs], api_visibility="private",
                   show_progress="hidden")
