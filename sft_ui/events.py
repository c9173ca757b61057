"""The files a training worker leaves in its job directory, and how to write and tail them.

The worker never talks to the server: it appends one flushed JSON object per line to `events.jsonl`
and writes `exit.json` when it ends. Readers tail by byte offset and tolerate a partial last line, so
a reader can start, stop and restart at any moment (including after a server restart). Torch-free.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
EXIT_FILE = "exit.json"
FINAL_DIR = "final"
CHECKPOINT_PREFIX = "checkpoint-"

# Worker exit codes. A requested stop is a clean exit (0); the end event and exit.json say 'stopped'.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class EventWriter:
    """Appends events; each line is written whole and flushed so tailers see it at once."""

    def __init__(self, path: Path, attempt: int = 1):
        self.path = path
        self.attempt = attempt
        self._fh = path.open("a", encoding="utf-8")
        if self._fh.tell() > 0 and not _ends_with_newline(path):
            self._fh.write("\n")  # end a line torn by a killed writer, so our first event stands alone

    def emit(self, event_type: str, /, **fields: Any) -> dict[str, Any]:
        event = _clean({"type": event_type, "time": round(time.time(), 3), "attempt": self.attempt, **fields})
        self._fh.write(json.dumps(event, separators=(",", ":"), default=str) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


@dataclass
class EventTailer:
    """Reads events appended since the last call, by byte offset; skips corrupt lines with a warning."""

    path: Path
    offset: int = 0
    skipped: int = 0
    _warned: set[int] = field(default_factory=set)

    def read_new(self, max_bytes: int = 8 * 1024 * 1024) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(max_bytes)
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            if len(chunk) >= max_bytes:  # one enormous line: skip it rather than stall forever
                self.offset += len(chunk)
                self.skipped += 1
            return []
        events = []
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "type" not in event:
                    raise ValueError("not an event object")
                events.append(event)
            except (ValueError, UnicodeDecodeError):
                self.skipped += 1
                log.warning("%s: skipped a corrupt event line at byte %d", self.path, self.offset)
        self.offset += end + 1
        return events


def write_exit(job_dir: Path, exit_code: int, status: str) -> None:
    """Atomically record how the worker ended, so a restarted server can learn it later."""
    tmp = job_dir / (EXIT_FILE + ".tmp")
    try:
        tmp.write_text(json.dumps({"exit_code": exit_code, "status": status, "pid": os.getpid(),
                                   "time": round(time.time(), 3)}), encoding="utf-8")
        os.replace(tmp, job_dir / EXIT_FILE)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_exit(job_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((job_dir / EXIT_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def checkpoints(job_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first (by step number)."""
    found = []
    for p in job_dir.glob(CHECKPOINT_PREFIX + "*"):
        suffix = p.name[len(CHECKPOINT_PREFIX):]
        if p.is_dir() and suffix.isdigit() and (p / "trainer_state.json").exists():
            found.append((int(suffix), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(job_dir: Path) -> Path | None:
    found = checkpoints(job_dir)
    return found[-1] if found else None


def tail_text(path: Path, max_lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a text file (for failure summaries), decoded leniently."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-max_lines:])
