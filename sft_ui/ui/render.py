"""Pure rendering helpers for the studio: job tables, badges, progress bars, plot frames, config diffs."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

import pandas as pd

# a Delete button arms on the first click (red, "Confirm delete") and deletes on the second
DELETE_LOOK = {"value": "Delete", "variant": "secondary"}
CONFIRM_DELETE_LOOK = {"value": "Confirm delete", "variant": "stop"}
JOB_COLUMNS = ["job_id", "name", "status", "progress", "loss", "elapsed", "eta", "created"]
STATUS_COLOURS = {
    "queued": "#6b7280", "running": "#2563eb", "stopping": "#d97706", "succeeded": "#16a34a",
    "failed": "#dc2626", "stopped": "#7c3aed", "interrupted": "#ea580c",
}


def badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#6b7280")
    return (f'<span class="sft-badge" style="background:{colour};color:#fff;border-radius:8px;'
            f'padding:1px 8px;font-size:0.85em">{html.escape(status)}</span>')


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def elapsed(job: dict[str, Any], now: datetime | None = None) -> str:
    start = _parse(job.get("started_at"))
    if start is None:
        return ""
    end = _parse(job.get("finished_at")) or now or datetime.now(timezone.utc)
    return duration((end - start).total_seconds())


def progress_text(job: dict[str, Any]) -> str:
    p = job.get("progress") or {}
    total = p.get("total_steps")
    if not total:
        return f"{p.get('step', 0)}" if p.get("step") else ""
    return f"{p.get('step', 0)}/{total} ({p.get('percent', 0):.0f}%)"


def _loss(job: dict[str, Any]) -> str:
    latest = job.get("latest") or {}
    loss = latest.get("loss")
    return f"{loss:.4f}" if isinstance(loss, (int, float)) else ""


def jobs_frame(jobs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for job in jobs:
        eta = (job.get("progress") or {}).get("eta_s")
        rows.append([job["job_id"], job["name"], badge(job["status"]), progress_text(job), _loss(job), elapsed(job),
                     duration(eta) if job["status"] == "running" else "", (job.get("created_at") or "")[:19]
                     .replace("T", " ")])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def progress_html(job: dict[str, Any] | None) -> str:
    if not job:
        return "<div class='sft-progress-empty'>Select a job in the table.</div>"
    p = job.get("progress") or {}
    pct = float(p.get("percent") or 0.0)
    eta = p.get("eta_s")
    eta_text = f" · ETA {duration(eta)}" if eta and job["status"] == "running" else ""
    return (
        f"<div class='sft-progress'><div style='display:flex;justify-content:space-between'>"
        f"<span>{badge(job['status'])} <b>{html.escape(job['name'])}</b> · attempt {job.get('attempt', 0)}</span>"
        f"<span>{html.escape(progress_text(job))}{eta_text}</span></div>"
        f"<div style='background:#e5e7eb;border-radius:6px;height:12px;margin-top:6px'>"
        f"<div style='background:{STATUS_COLOURS.get(job['status'], '#2563eb')};width:{pct:.1f}%;height:12px;"
        f"border-radius:6px'></div></div></div>"
    )


def job_summary_md(job: dict[str, Any] | None) -> str:
    if not job:
        return ""
    info = job.get("info") or {}
    lines = [f"**{job['job_id']}** · created {job.get('created_at') or ''} · started {job.get('started_at') or '-'}"
             f" · finished {job.get('finished_at') or '-'} · elapsed {elapsed(job) or '-'}"]
    if info:
        lines.append(f"device `{info.get('device')}` · precision `{info.get('precision')}` · method "
                     f"`{info.get('method')}` · trainable params {info.get('trainable_params', 0):,} of "
                     f"{info.get('total_params', 0):,} · {info.get('train_rows', '?')} train rows")
    if job.get("checkpoints"):
        lines.append("checkpoints: " + ", ".join(str(c) for c in job["checkpoints"]))
    if job.get("final_dir"):
        lines.append(f"result: `{job['final_dir']}`")
    if job.get("error"):
        lines.append(f"**Error ({job.get('error_kind') or 'failed'}):**\n```\n{job['error']}\n```")
    return "\n\n".join(lines)


def metrics_frames(points: list[dict[str, Any]], max_points: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(loss frame with series train/eval, learning-rate frame), thinned to at most max_points each."""
    loss_rows, lr_rows = [], []
    for p in points:
        if p.get("kind") == "eval" and isinstance(p.get("eval_loss"), (int, float)):
            loss_rows.append((p["step"], p["eval_loss"], "eval loss"))
        elif p.get("kind") == "train":
            if isinstance(p.get("loss"), (int, float)):
                loss_rows.append((p["step"], p["loss"], "train loss"))
            if isinstance(p.get("learning_rate"), (int, float)):
                lr_rows.append((p["step"], p["learning_rate"]))
    loss = pd.DataFrame(_thin(loss_rows, max_points), columns=["step", "loss", "curve"])
    lr = pd.DataFrame(_thin(lr_rows, max_points), columns=["step", "learning_rate"])
    # typed even when empty: the plot reads dtypes to pick a numeric (not categorical) axis
    return (loss.astype({"step": "int64", "loss": "float64", "curve": "object"}),
            lr.astype({"step": "int64", "learning_rate": "float64"}))


def series_frames(rows: list[tuple[int, str, float | None, float | None]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Like metrics_frames, from (step, kind, loss, learning_rate) rows already thinned by the store."""
    points = [{"kind": kind, "step": step, "loss": loss, "eval_loss": loss, "learning_rate": lr}
              for step, kind, loss, lr in rows]
    return metrics_frames(points)


def _thin(rows: list[Any], max_points: int) -> list[Any]:
    if len(rows) <= max_points:
        return rows
    stride = -(-len(rows) // max_points)
    return rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])


def compare_frame(series: dict[str, list[dict[str, Any]]], max_points: int = 2000) -> pd.DataFrame:
    """Train loss of several jobs, one colour per job label."""
    rows = []
    for label, points in series.items():
        pts = [(p["step"], p["loss"], label) for p in points
               if p.get("kind") == "train" and isinstance(p.get("loss"), (int, float))]
        rows.extend(_thin(pts, max_points))
    frame = pd.DataFrame(rows, columns=["step", "loss", "job"])
    return frame.astype({"step": "int64", "loss": "float64", "job": "object"})


def config_diff(configs: dict[str, dict[str, Any]], only_differences: bool = True) -> pd.DataFrame:
    """Fields as rows, jobs as columns; differing values are marked with a leading '≠ '."""
    labels = list(configs)
    keys: list[str] = []
    for cfg in configs.values():
        keys.extend(k for k in cfg if k not in keys)
    rows = []
    for key in keys:
        values = [configs[label].get(key) for label in labels]
        differs = len({repr(v) for v in values}) > 1
        if only_differences and not differs:
            continue
        rows.append([("≠ " if differs else "") + key, *[_cell(v) for v in values]])
    return pd.DataFrame(rows, columns=["field", *labels])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return str(value)
    return str(value)


def preview_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Converted rows as the trainer will see them, one readable cell per row."""
    out = []
    for i, row in enumerate(rows, start=1):
        if "messages" in row:
            text = "\n".join(f"[{m['role']}] {m['content']}" for m in row["messages"])
        elif "prompt" in row:
            text = f"[prompt] {row['prompt']}\n[completion] {row['completion']}"
        else:
            text = str(row.get("text", row))
        out.append([i, text])
    return pd.DataFrame(out, columns=["#", "row as trained"])
