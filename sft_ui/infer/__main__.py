"""`python -m sft_ui.infer`: JSON lines in on stdin, JSON lines out on stdout, one request at a time.

Requests: {"id", "op": "load", "job_dir", "result", "workspace"} | {"id", "op": "generate", "messages",
"params", "use_base"} | {"id", "op": "cancel"} | {"op": "shutdown"}. Replies carry the request id:
"loaded", "token" (text), "done" (token count, seconds, cancelled) or "error" (message). A reader
thread takes cancels while a generation runs. The process exits when stdin closes.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sft_ui.infer")
_out_lock = threading.Lock()


def send(message: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


class _Sender:
    """Sends each text piece of one request as a 'token' line and counts them."""

    def __init__(self, rid: str):
        self.rid, self.count = rid, 0

    def __call__(self, piece: str) -> None:
        self.count += 1
        send({"id": self.rid, "type": "token", "text": piece})


def _reader(requests: queue.Queue[dict[str, Any] | None], cancels: dict[str, threading.Event]) -> None:
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("op") == "cancel":
            cancels.setdefault(str(msg.get("id")), threading.Event()).set()
        else:
            requests.put(msg)
    requests.put(None)  # stdin closed: the server went away


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from ..results import resolve_result
    from .model import LoadedModel  # heavy imports after the pipe is up

    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancels: dict[str, threading.Event] = {}
    threading.Thread(target=_reader, args=(requests, cancels), daemon=True).start()
    send({"type": "ready"})
    loaded: LoadedModel | None = None
    while (msg := requests.get()) is not None:
        rid, op = str(msg.get("id", "")), msg.get("op")
        try:
            if op == "shutdown":
                break
            if op == "load":
                job_dir = Path(msg["job_dir"])
                key = (str(job_dir.resolve()), resolve_result(job_dir, msg.get("result") or None).name)
                if loaded is None or loaded.key != key or msg.get("reload"):
                    loaded = None  # free the old model before loading the next
                    loaded = LoadedModel(Path(msg["job_dir"]), msg.get("result"), Path(msg["workspace"]))
                send({"id": rid, "type": "loaded", "info": loaded.info()})
            elif op == "generate":
                if loaded is None:
                    raise RuntimeError("no model loaded")
                cancel = cancels.setdefault(rid, threading.Event())
                start, sent = time.perf_counter(), _Sender(rid)
                cancelled = loaded.generate(msg["messages"], msg.get("params") or {}, bool(msg.get("use_base")),
                                            cancel, sent)
                send({"id": rid, "type": "done", "pieces": sent.count,
                      "seconds": round(time.perf_counter() - start, 4), "cancelled": cancelled})
                cancels.pop(rid, None)
            else:
                raise ValueError(f"unknown op {op!r}")
        except Exception as exc:  # reported to the caller; the process stays up for the next request
            log.exception("request %s failed", rid)
            send({"id": rid, "type": "error", "message": f"{type(exc).__name__}: {str(exc)[:500]}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
