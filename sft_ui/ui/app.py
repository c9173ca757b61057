"""The Gradio studio (placeholder until the full UI lands)."""

from __future__ import annotations

import gradio as gr

from ..jobs import JobManager
from ..settings import Settings


def build_ui(manager: JobManager, settings: Settings) -> gr.Blocks:
    with gr.Blocks(title="sft_ui") as blocks:
        gr.Markdown("# sft_ui\nSupervised fine-tuning studio. The REST API is at `/api/sft` (docs at `/docs`).")
    return blocks
