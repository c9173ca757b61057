"""System tab: CPU, memory, GPUs and workspace disk, refreshed while the tab is open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..settings import Settings
from ..system import system_info


@dataclass
class SystemTab:
    view: gr.Markdown
    refresh: gr.Button


def render(info: dict[str, Any], settings: Settings) -> str:
    cpu, mem, disk = info["cpu"], info["memory"], info["disk"]
    lines = [
        "| resource | now |", "|---|---|",
        f"| CPU | {cpu['count']} cores, {cpu['percent']:.0f}% busy |",
        f"| Memory | {mem['used_mb']:,} of {mem['total_mb']:,} MB used ({mem['percent']:.0f}%) |",
        f"| Workspace disk | {disk['free_gb']} GB free of {disk['total_gb']} GB (`{disk['path']}`) |",
    ]
    for gpu in info["gpus"]:
        lines.append(f"| GPU {gpu['index']} | {gpu['name']}: {gpu['memory_used_mib'] or 0:,.0f} of "
                     f"{gpu['memory_total_mib'] or 0:,.0f} MiB used |")
    if not info["gpus"]:
        lines.append("| GPU | none found: training runs on the CPU (fine for the embedded demo model) |")
    lines.append(f"\nConcurrency limit: {settings.max_concurrent} job(s) at once"
                 f"{' · demo mode: steps capped at ' + str(settings.demo_max_steps) if settings.demo else ''}.")
    return "\n".join(lines)


def build(settings: Settings) -> SystemTab:
    view = gr.Markdown(render(system_info(settings.workspace, with_gpus=False), settings), elem_id="system-info")
    refresh = gr.Button("Refresh", size="sm")
    return SystemTab(view, refresh)


def wire(tab: SystemTab, settings: Settings, timer: gr.Timer) -> None:
    def update() -> str:
        return render(system_info(settings.workspace), settings)

    tab.refresh.click(update, None, [tab.view], api_name="system_info")
    timer.tick(update, None, [tab.view], show_progress="hidden", api_visibility="private", concurrency_limit=None)
