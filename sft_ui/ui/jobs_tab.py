"""Jobs tab: live table with pagination, and the selected job's progress, log, charts and actions.

All state comes from the store (through the manager); each browser session keeps only what it is
looking at (page, filter, selected job, log offset). One timer tick reads the manager's revision and
renders only what changed; the log reads only new bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from ..events import LOG_FILE
from ..jobs import JobManager
from ..status import JobNotFound, JobStatus
from .render import (
    CONFIRM_DELETE_LOOK,
    DELETE_LOOK,
    JOB_COLUMNS,
    job_summary_md,
    jobs_frame,
    progress_html,
    series_frames,
)

PAGE_SIZE = 50
MAX_LOG_LINES = 3000
MAX_PLOT_POINTS = 2000
LOG_FIRST_READ_BYTES = 256 * 1024
STATUS_FILTERS = ["all", *[s.value for s in JobStatus]]


def new_session() -> dict[str, Any]:
    return {"rev": -1, "job": None, "log_offset": 0, "log": "", "page": 0, "filter": "all"}


@dataclass
class JobsTab:
    state: gr.State
    status_filter: gr.Dropdown
    prev_btn: gr.Button
    next_btn: gr.Button
    page_info: gr.Markdown
    table: gr.Dataframe
    picker: gr.Dropdown
    progress: gr.HTML
    stop_btn: gr.Button
    resume_btn: gr.Button
    delete_btn: gr.Button
    clone_btn: gr.Button
    summary: gr.Markdown
    log: gr.Textbox
    loss_plot: gr.LinePlot
    lr_plot: gr.LinePlot
    config_view: gr.Code

    @property
    def list_outputs(self) -> list[Any]:
        return [self.table, self.page_info, self.picker]

    @property
    def detail_outputs(self) -> list[Any]:
        return [self.progress, self.stop_btn, self.resume_btn, self.delete_btn, self.clone_btn, self.summary,
                self.loss_plot, self.lr_plot, self.config_view]


def build() -> JobsTab:
    state = gr.State(new_session())
    with gr.Row():
        status_filter = gr.Dropdown(STATUS_FILTERS, value="all", label="Status", scale=1, elem_id="status-filter")
        prev_btn = gr.Button("◀ Newer", size="sm", scale=0)
        next_btn = gr.Button("Older ▶", size="sm", scale=0)
        page_info = gr.Markdown(elem_id="page-info")
    table = gr.Dataframe(headers=JOB_COLUMNS, datatype=["str", "str", "html", "str", "str", "str", "str", "str"],
                         interactive=False, label="Jobs (click a row to open it)", max_height=360,
                         elem_id="jobs-table")
    picker = gr.Dropdown(choices=[], label="Selected job", elem_id="job-picker", allow_custom_value=True)
    progress = gr.HTML(progress_html(None), elem_id="job-progress")
    with gr.Row():
        stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-btn")
        resume_btn = gr.Button("Resume", interactive=False, elem_id="resume-btn")
        delete_btn = gr.Button(**DELETE_LOOK, interactive=False, elem_id="delete-btn")
        clone_btn = gr.Button("Clone to form", interactive=False, elem_id="clone-btn")
    summary = gr.Markdown(elem_id="job-summary")
    log = gr.Textbox(label="Log (live)", lines=16, max_lines=16, autoscroll=True, interactive=False,
                     elem_id="job-log", buttons=["copy"])
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="curve", title="Loss", height=260, elem_id="loss-plot",
                                 color_map={"train loss": "#2563eb", "eval loss": "#dc2626"})
        lr_plot = gr.LinePlot(x="step", y="learning_rate", title="Learning rate", height=260, elem_id="lr-plot")
    with gr.Accordion("Config", open=False):
        config_view = gr.Code(language="yaml", interactive=False, elem_id="job-config")
    return JobsTab(state, status_filter, prev_btn, next_btn, page_info, table, picker, progress, stop_btn,
                   resume_btn, delete_btn, clone_btn, summary, log, loss_plot, lr_plot, config_view)


# ---- plain functions (testable without a browser) ---------------------------------------------------------
def list_view(manager: JobManager, session: dict[str, Any]) -> tuple[Any, str, Any]:
    status = None if session["filter"] == "all" else session["filter"]
    jobs, total = manager.list(status, PAGE_SIZE, session["page"] * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    info = f"{total} job{'s' if total != 1 else ''} · page {session['page'] + 1} of {pages}"
    choices = [(f"{j['name']} · {j['job_id']} · {j['status']}", j["job_id"]) for j in jobs]
    if session["job"] and session["job"] not in [c[1] for c in choices]:
        choices.append((session["job"], session["job"]))
    return jobs_frame(jobs), info, gr.update(choices=choices, value=session["job"])


def detail_view(manager: JobManager, job_id: str | None) -> list[Any]:
    job = None
    if job_id:
        try:
            job = manager.get(job_id)
        except JobNotFound:
            job = None
    if job is None:
        off = gr.update(interactive=False)
        return [progress_html(None), off, off, gr.update(interactive=False, **DELETE_LOOK), off, "", None, None, ""]
    status = JobStatus(job["status"])
    loss, lr = series_frames(manager.store.metric_series(job["job_id"], MAX_PLOT_POINTS))
    # an empty frame would fix the colour legend's domain in the browser: send nothing until points exist
    return [
        progress_html(job),
        gr.update(interactive=status in (JobStatus.QUEUED, JobStatus.RUNNING)),
        gr.update(interactive=bool(job["resumable"])),
        gr.update(interactive=status.is_terminal() or status == JobStatus.QUEUED, **DELETE_LOOK),
        gr.update(interactive=True),
        job_summary_md(job), loss if len(loss) else None, lr if len(lr) else None,
        yaml.safe_dump(job["config"], sort_keys=False),
    ]


def detail_key(manager: JobManager, job_id: str | None) -> tuple[Any, ...] | None:
    """What the detail view shows depends only on these; unchanged means nothing to re-render."""
    if not job_id:
        return None
    try:
        row = manager.store.get_job(job_id)
    except JobNotFound:
        return ("gone", job_id)
    return (job_id, row["status"], row["step"], row["attempt"], row["end_status"], row["total_steps"])


def read_new_log(manager: JobManager, session: dict[str, Any]) -> str | None:
    """Append the log bytes written since the last read; None when nothing is new."""
    if not session["job"]:
        return None
    try:
        chunk = manager.read_log(session["job"], session["log_offset"])
    except JobNotFound:
        return None
    if not chunk["text"]:
        return None
    session["log_offset"] = chunk["next_offset"]
    lines = (session["log"] + chunk["text"]).splitlines(keepends=True)
    session["log"] = "".join(lines[-MAX_LOG_LINES:])
    return session["log"]


def open_job(manager: JobManager, session: dict[str, Any], job_id: str | None) -> str:
    """Select a job: its log view starts from the last part of the file, then follows new bytes."""
    session.update(job=job_id or None, log="", log_offset=0)
    if job_id:
        try:
            job_dir = Path(manager.get(job_id)["job_dir"])
        except JobNotFound:
            session["job"] = None
            return ""
        try:
            size = (job_dir / LOG_FILE).stat().st_size
        except OSError:
            size = 0
        session["log_offset"] = max(0, size - LOG_FIRST_READ_BYTES)
    return read_new_log(manager, session) or ""


# ---- wiring ---------------------------------------------------------------------------------------------------
def wire(tab: JobsTab, manager: JobManager, timer: gr.Timer) -> None:
    def tick(session: dict[str, Any]) -> list[Any]:
        rev = manager.revision
        log_text = read_new_log(manager, session)
        changed = rev != session["rev"]
        session["rev"] = rev
        lists = list(list_view(manager, session)) if changed else [gr.skip()] * 3
        key = detail_key(manager, session["job"]) if changed else session.get("detail")
        details = [gr.skip()] * len(tab.detail_outputs)
        if key != session.get("detail"):  # another job's progress moves the revision too: skip those ticks
            session["detail"] = key
            session.pop("confirm_delete", None)  # the job changed under a pending confirmation: ask again
            details = detail_view(manager, session["job"])
        log_out = log_text if log_text is not None else gr.skip()
        return [session, *lists, *details, log_out]

    outputs = [tab.state, *tab.list_outputs, *tab.detail_outputs, tab.log]
    timer.tick(tick, [tab.state], outputs, show_progress="hidden", api_visibility="private", concurrency_limit=None,
               trigger_mode="always_last")

    def select(session: dict[str, Any], job_id: str | None) -> list[Any]:
        log_text = open_job(manager, session, job_id)
        session.pop("confirm_delete", None)
        session["detail"] = detail_key(manager, session["job"])
        return [session, *list_view(manager, session), *detail_view(manager, session["job"]), log_text]

    def select_row(session: dict[str, Any], evt: gr.SelectData) -> list[Any]:
        row = evt.row_value or []
        return select(session, str(row[0]) if row else None)

    tab.table.select(select_row, [tab.state], outputs, api_visibility="private", show_progress="hidden")
    tab.picker.input(select, [tab.state, tab.picker], outputs, api_name="open_job", show_progress="hidden")

    def paged(session: dict[str, Any], delta: int, status: str) -> list[Any]:
        if status != session["filter"]:
            session.update(filter=status, page=0)
        session["page"] = max(0, session["page"] + delta)
        return [session, *list_view(manager, session)]

    list_outs = [tab.state, *tab.list_outputs]
    tab.prev_btn.click(lambda s, f: paged(s, -1, f), [tab.state, tab.status_filter], list_outs,
                       api_visibility="private")
    tab.next_btn.click(lambda s, f: paged(s, 1, f), [tab.state, tab.status_filter], list_outs,
                       api_visibility="private")
    tab.status_filter.input(lambda s, f: paged(s, 0, f), [tab.state, tab.status_filter], list_outs,
                            api_visibility="private")

    def action(kind: str) -> Any:
        def run(session: dict[str, Any]) -> list[Any]:
            job_id = session["job"]
            if not job_id:
                raise gr.Error("Select a job first.")
            try:
                if kind == "stop":
                    gr.Info(manager.stop(job_id)[1])
                elif kind == "resume":
                    manager.resume(job_id)
                    gr.Info("Resumed: queued again, continues from its latest checkpoint.")
                elif kind == "delete" and session.get("confirm_delete") != job_id:
                    return ask_to_confirm_delete(session, job_id)
                elif kind == "delete":
                    session.pop("confirm_delete", None)
                    manager.delete(job_id)
                    gr.Info(f"Deleted {job_id}.")
                    session.update(job=None, log="", log_offset=0)
            except Exception as exc:  # InvalidTransition / JobNotFound: say why, keep the page alive
                raise gr.Error(str(exc)) from None
            log_out = session["log"] if kind == "delete" else gr.skip()
            return [session, *list_view(manager, session), *detail_view(manager, session["job"]), log_out]
        return run

    def ask_to_confirm_delete(session: dict[str, Any], job_id: str) -> list[Any]:
        """Deleting removes checkpoints and logs for good: the first click only arms the button."""
        session["confirm_delete"] = job_id
        gr.Info(f"Click 'Confirm delete' to remove {job_id} with its checkpoints and logs. This cannot be undone.")
        details = [gr.skip()] * len(tab.detail_outputs)
        details[tab.detail_outputs.index(tab.delete_btn)] = gr.update(**CONFIRM_DELETE_LOOK)
        return [session, *[gr.skip()] * len(tab.list_outputs), *details, gr.skip()]

    tab.stop_btn.click(action("stop"), [tab.state], outputs, api_name="ui_stop_job")
    tab.resume_btn.click(action("resume"), [tab.state], outputs, api_name="ui_resume_job")
    tab.delete_btn.click(action("delete"), [tab.state], outputs, api_name="ui_delete_job")
