"""Chat tab: talk to a job's result with streamed tokens, beside the base model; export the result."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..exports import ExportError, ExportManager
from ..inference import InferenceClient, InferenceError
from ..jobs import JobManager
from ..results import result_choices
from ..status import JobNotFound


@dataclass
class ChatTab:
    job: gr.Dropdown
    result: gr.Dropdown
    system: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_new_tokens: gr.Slider
    compare: gr.Checkbox
    tuned: gr.Chatbot
    base: gr.Chatbot
    prompt: gr.Textbox
    send: gr.Button
    stop: gr.Button
    clear: gr.Button
    export_kind: gr.Radio
    repo_id: gr.Textbox
    private: gr.Checkbox
    token: gr.Textbox
    export_btn: gr.Button
    export_status: gr.Markdown
    export_file: gr.File


def chat_jobs(manager: JobManager, limit: int = 200) -> list[tuple[str, str]]:
    """Jobs that have something to talk to: a final result or a checkpoint."""
    jobs, _ = manager.list(None, limit, 0)
    found = []
    for job in jobs:
        if result_choices(Path(job["job_dir"])):
            found.append((f"{job['name']} · {job['job_id']} · {job['status']}", job["job_id"]))
    return found


def build() -> ChatTab:
    gr.Markdown("Pick a finished (or stopped) job and talk to it. The embedded demo model has random "
                "weights before training: expect gibberish from it, fine-tuned or not.")
    with gr.Row():
        job = gr.Dropdown(choices=[], label="Job", scale=3, elem_id="chat-job")
        result = gr.Dropdown(choices=[], label="Result", info="final or a checkpoint", scale=1, elem_id="chat-result")
        compare = gr.Checkbox(False, label="Compare with base model", scale=1, elem_id="chat-compare")
    with gr.Accordion("Generation settings", open=False):
        system = gr.Textbox(label="System prompt", placeholder="optional", elem_id="chat-system")
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="top_p")
            max_new_tokens = gr.Slider(1, 1024, value=128, step=1, label="max_new_tokens")
    with gr.Row():
        tuned = gr.Chatbot(label="Fine-tuned", height=380, elem_id="chat-tuned")
        base = gr.Chatbot(label="Base model", height=380, visible=False, elem_id="chat-base")
    with gr.Row():
        prompt = gr.Textbox(placeholder="Ask something…", show_label=False, scale=5, elem_id="chat-prompt")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop generating", scale=1, elem_id="chat-stop")
        clear = gr.Button("Clear", scale=0)
    with gr.Accordion("Export this result", open=False):
        export_kind = gr.Radio([("Download adapter (.zip)", "adapter_zip"), ("Merge into a full model", "merge"),
                                ("Push to the Hugging Face Hub", "push")], value="adapter_zip", label="Export",
                               elem_id="export-kind")
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repo id (for push)", placeholder="your-name/my-model")
            private = gr.Checkbox(True, label="private repo")
            token = gr.Textbox(label="HF token (used for this push only; never stored)", type="password",
                               placeholder="empty: use the server's HF_TOKEN")
        export_btn = gr.Button("Export", elem_id="export-btn")
        export_status = gr.Markdown(elem_id="export-status")
        export_file = gr.File(label="Download", visible=False, elem_id="export-file")
    return ChatTab(job, result, system, temperature, top_p, max_new_tokens, compare, tuned, base, prompt, send, stop,
                   clear, export_kind, repo_id, private, token, export_btn, export_status, export_file)


def _messages(system: str, history: list[dict[str, Any]], prompt: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system.strip()}] if system and system.strip() else []
    for turn in history:
        content = turn.get("content")
        if turn.get("role") in ("user", "assistant") and isinstance(content, str):
            msgs.append({"role": turn["role"], "content": content})
    return msgs + [{"role": "user", "content": prompt}]


def stream_reply(manager: JobManager, inference: InferenceClient, job_id: str | None, result: str | None,
                 system: str, params: dict[str, Any], prompt: str, tuned: list[dict[str, Any]],
                 base: list[dict[str, Any]], compare: bool) -> Iterator[tuple[Any, Any, str]]:
    """Yield (tuned history, base history, prompt box) as tokens arrive: fine-tuned first, then base."""
    if not job_id:
        raise gr.Error("Pick a job first.")
    if not prompt or not prompt.strip():
        raise gr.Error("Type a message.")
    try:
        job_dir = Path(manager.get(job_id)["job_dir"])
    except JobNotFound:
        raise gr.Error(f"Job {job_id} no longer exists.") from None
    if not result_choices(job_dir):
        raise gr.Error("This job has no result yet: wait for a checkpoint or for it to finish.")
    targets = [(tuned, False)] + ([(base, True)] if compare else [])
    messages = {id(h): _messages(system, h, prompt) for h, _ in targets}
    for history, _ in targets:
        history.extend([{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}])
    yield tuned, base, ""
    for history, use_base in targets:
        try:
            for piece in inference.generate(job_dir, result or None, messages[id(history)], params, use_base):
                history[-1]["content"] += piece
                yield tuned, base, ""
        except InferenceError as exc:
            history[-1]["content"] = f"⚠️ {exc}"
            yield tuned, base, ""


def run_export(manager: JobManager, exports: ExportManager, job_id: str | None, result: str | None, kind: str,
               repo_id: str, private: bool, token: str) -> Iterator[tuple[str, Any]]:
    """Start an export and report its progress until it ends (the export itself runs in its own process)."""
    if not job_id:
        raise gr.Error("Pick a job first.")
    job_dir = Path(manager.get(job_id)["job_dir"])
    try:
        if kind == "adapter_zip":
            done = exports.adapter_zip(job_id, job_dir, result or None)
            yield f"✅ {done.view()['message']}", gr.update(value=str(done.out), visible=True)
            return
        started = exports.start(job_id, job_dir, result or None, merge=kind == "merge",
                                repo_id=repo_id.strip() if kind == "push" else None, private=private,
                                token=token.strip() or None)
    except ExportError as exc:
        raise gr.Error(str(exc)) from None
    while True:
        view = exports.wait(started.export_id, 1.0)
        status = view.get("status")
        mark = {"succeeded": "✅", "failed": "❌"}.get(str(status), "⏳")
        progress = f" {float(view.get('progress') or 0):.0%}" if status not in ("succeeded", "failed") else ""
        yield f"{mark} {status}{progress}: {view.get('message')} (`{view['path']}`)", gr.update(visible=False)
        if status in ("succeeded", "failed"):
            return


def wire(tab: ChatTab, manager: JobManager, inference: InferenceClient, exports: ExportManager) -> None:
    tab.job.focus(lambda: gr.update(choices=chat_jobs(manager)), None, [tab.job], api_visibility="private",
                  show_progress="hidden")

    def pick_job(job_id: str | None) -> Any:
        if not job_id:
            return gr.update(choices=[], value=None)
        try:
            choices = result_choices(Path(manager.get(job_id)["job_dir"]))
        except JobNotFound:
            choices = []
        return gr.update(choices=choices, value=choices[0] if choices else None)

    tab.job.change(pick_job, [tab.job], [tab.result], api_visibility="private")
    tab.compare.change(lambda on: gr.update(visible=bool(on)), [tab.compare], [tab.base], api_visibility="private")

    def respond(job_id: str | None, result: str | None, system: str, temperature: float, top_p: float,
                max_new: float, prompt: str, tuned: list[dict[str, Any]] | None, base: list[dict[str, Any]] | None,
                compare: bool) -> Iterator[tuple[Any, Any, str]]:
        params = {"temperature": temperature, "top_p": top_p, "max_new_tokens": int(max_new)}
        yield from stream_reply(manager, inference, job_id, result, system, params, prompt, list(tuned or []),
                                list(base or []), compare)

    inputs = [tab.job, tab.result, tab.system, tab.temperature, tab.top_p, tab.max_new_tokens, tab.prompt, tab.tuned,
              tab.base, tab.compare]
    outputs = [tab.tuned, tab.base, tab.prompt]
    send_event = tab.send.click(respond, inputs, outputs, api_name="chat", concurrency_limit=1)
    submit_event = tab.prompt.submit(respond, inputs, outputs, api_visibility="private", concurrency_limit=1)
    tab.stop.click(None, None, None, cancels=[send_event, submit_event], api_visibility="private")
    tab.clear.click(lambda: ([], []), None, [tab.tuned, tab.base], api_visibility="private")

    def export(job_id: str | None, result: str | None, kind: str, repo_id: str, private: bool,
               token: str) -> Iterator[tuple[str, Any]]:
        yield from run_export(manager, exports, job_id, result, kind, repo_id, private, token)

    tab.export_btn.click(export, [tab.job, tab.result, tab.export_kind, tab.repo_id, tab.private, tab.token],
                         [tab.export_status, tab.export_file], api_name="export", concurrency_limit=2)
