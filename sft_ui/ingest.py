"""Turn worker events into store updates: metric points plus the job fields they change."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# Fields of a log event that are progress, not metrics worth plotting.
_PROGRESS_KEYS = ("type", "total_steps", "eta_s")


@dataclass
class Digest:
    points: list[dict[str, Any]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    ended: bool = False


def digest(events: list[dict[str, Any]]) -> Digest:
    """Fold a batch of events, in order, into points to insert and job columns to set."""
    out = Digest()
    for ev in events:
        kind = ev.get("type")
        if kind == "start":
            info = {k: v for k, v in ev.items() if k not in ("type",)}
            out.fields["info_json"] = json.dumps(info)
            out.fields["total_steps"] = ev.get("total_steps")
            if ev.get("resumed_from_step") is not None:
                out.fields["step"] = int(ev["resumed_from_step"])
        elif kind == "log" and isinstance(ev.get("step"), int):
            point = {k: v for k, v in ev.items() if k not in _PROGRESS_KEYS}
            point["kind"] = "train"
            out.points.append(point)
            out.fields.update(step=ev["step"], eta_s=ev.get("eta_s"), latest_json=json.dumps(point))
            if ev.get("total_steps"):
                out.fields["total_steps"] = ev["total_steps"]
        elif kind == "eval" and isinstance(ev.get("step"), int):
            point = {k: v for k, v in ev.items() if k != "type"}
            point["kind"] = "eval"
            out.points.append(point)
        elif kind == "error":
            out.fields["error"] = str(ev.get("message") or "training failed")[:4000]
            out.fields["error_kind"] = str(ev.get("kind") or "runtime")
        elif kind == "end":
            out.fields["end_status"] = str(ev.get("status") or "failed")
            if isinstance(ev.get("step"), int):
                out.fields["step"] = ev["step"]
            if ev.get("status") == "succeeded":
                out.fields["eta_s"] = 0
            out.ended = True
    return out
