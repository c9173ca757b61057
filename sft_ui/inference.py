"""Server-side client of the inference worker (`python -m sft_ui.infer`): torch stays out of the server.

One worker process at a time keeps one model warm; it is started on demand, switched when another
job or checkpoint is picked, and shut down after an idle timeout. A reader thread always drains its
stdout, so the worker never blocks on a full pipe. Generations run one at a time.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .launchers.local import worker_env

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 180.0
LOAD_TIMEOUT_S = 600.0
TOKEN_TIMEOUT_S = 300.0
IDLE_TIMEOUT_S = 600.0


class InferenceError(RuntimeError):
    """The model could not be loaded or generation failed; the message says why."""


class InferenceClient:
    def __init__(self, workspace: Path, idle_timeout_s: float = IDLE_TIMEOUT_S):
        self.workspace = workspace
        self.idle_timeout_s = idle_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._busy = threading.Lock()
        self._state = threading.Lock()
        self._loaded: tuple[str, str | None] | None = None
        self._last_used = time.monotonic()
        self._closed = False
        threading.Thread(target=self._idle_watch, name="sft-ui-infer-idle", daemon=True).start()

    # ---- process --------------------------------------------------------------------------------------
    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        log_path = self.workspace / "inference.log"
        self.workspace.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log_fh:
            self._proc = subprocess.Popen([sys.executable, "-m", "sft_ui.infer"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=log_fh, env=worker_env(self.workspace),
                                          start_new_session=True, close_fds=True)
        self._loaded = None
        ready: queue.Queue[dict[str, Any]] = queue.Queue()
        self._replies["ready"] = ready
        assert self._proc.stdout is not None
        threading.Thread(target=self._read, args=(self._proc.stdout,), name="sft-ui-infer-reader",
                         daemon=True).start()
        self._wait(ready, READY_TIMEOUT_S, "the inference worker did not start")

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            rid = "ready" if msg.get("type") == "ready" else str(msg.get("id", ""))
            target = self._replies.get(rid)
            if target is not None:
                target.put(msg)
        for target in list(self._replies.values()):  # the worker died: wake everyone who waits
            target.put({"type": "error", "message": "the inference worker exited (see workspace/inference.log)"})

    def _send(self, message: dict[str, Any]) -> None:
        if not self._alive() or self._proc is None or self._proc.stdin is None:
            raise InferenceError("the inference worker is not running")
        try:
            self._proc.stdin.write((json.dumps(message) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise InferenceError("the inference worker exited (see workspace/inference.log)") from None

    @staticmethod
    def _wait(replies: queue.Queue[dict[str, Any]], timeout_s: float, what: str) -> dict[str, Any]:
        try:
            msg = replies.get(timeout=timeout_s)
        except queue.Empty:
            raise InferenceError(f"{what} within {timeout_s:.0f} s") from None
        if msg.get("type") == "error":
            raise InferenceError(str(msg.get("message")))
        return msg

    def close(self) -> None:
        """Stop the worker (the next request starts a new one)."""
        with self._state:
            proc, self._proc, self._loaded = self._proc, None, None
        if proc is not None and proc.poll() is None:
            try:
                if proc.stdin:
                    proc.stdin.close()  # the worker exits when stdin closes
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=10)

    def shutdown(self) -> None:
        self._closed = True
        self.close()

    def _idle_watch(self) -> None:
        while not self._closed:
            time.sleep(5.0)
            idle = time.monotonic() - self._last_used
            if self._alive() and idle > self.idle_timeout_s and not self._busy.locked():
                log.info("unloading the chat model after %.0f s idle", idle)
                self.close()

    # ---- requests ---------------------------------------------------------------------------------------
    def _request(self, message: dict[str, Any]) -> tuple[str, queue.Queue[dict[str, Any]]]:
        rid = f"r{next(self._ids)}"
        replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._replies[rid] = replies
        self._send({**message, "id": rid})
        return rid, replies

    def _load(self, job_dir: Path, result: str | None) -> dict[str, Any]:
        if not self._alive():
            self._start()
        rid, replies = self._request({"op": "load", "job_dir": str(job_dir), "result": result,
                                      "workspace": str(self.workspace)})
        try:
            msg = self._wait(replies, LOAD_TIMEOUT_S, "the model did not load")
        finally:
            self._replies.pop(rid, None)
        self._loaded = (str(job_dir), result)
        return dict(msg.get("info") or {})

    def load(self, job_dir: Path, result: str | None = None) -> dict[str, Any]:
        with self._busy:
            self._last_used = time.monotonic()
            return self._load(job_dir, result)

    def generate(self, job_dir: Path, result: str | None, messages: list[dict[str, str]],
                 params: dict[str, Any] | None = None, use_base: bool = False) -> Iterator[str]:
        """Text pieces as the model produces them. Closing the iterator cancels the generation."""
        with self._busy:
            self._last_used = time.monotonic()
            self._load(job_dir, result)
            rid, replies = self._request({"op": "generate", "messages": messages, "params": params or {},
                                          "use_base": use_base})
            finished = False
            try:
                while True:
                    msg = self._wait(replies, TOKEN_TIMEOUT_S, "no token arrived")
                    if msg.get("type") == "done":
                        finished = True
                        return
                    yield str(msg.get("text", ""))
            except InferenceError:
                finished = True
                raise
            finally:
                if not finished:  # the consumer stopped early: cancel, then drain to the end
                    self._cancel_and_drain(rid, replies)
                self._replies.pop(rid, None)
                self._last_used = time.monotonic()

    def _cancel_and_drain(self, rid: str, replies: queue.Queue[dict[str, Any]]) -> None:
        try:
            self._send({"op": "cancel", "id": rid})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                msg = replies.get(timeout=max(0.1, deadline - time.monotonic()))
                if msg.get("type") in ("done", "error"):
                    return
        except (InferenceError, queue.Empty):
            self.close()  # a worker that won't stop is replaced on the next request
