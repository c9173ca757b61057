"""Exports of a job's result: adapter zip (in-process, no torch), merge and Hub push (background process).

Each export is a folder under WORKSPACE/exports with a status file the export worker keeps current,
so the UI and API poll it like a training job. Export processes run in their own session and outlive a
server restart; the restarted server finds every export again from those files (and a pid file guarded
by the process start time, so one that died with the machine is reported failed, not running forever).
A Hub token is handed to the export process through its environment for that one call; it is never
written anywhere or put on a command line.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .launchers.local import WorkerHandle, handle_alive, handle_for, worker_env
from .results import ResultError, resolve_result

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
ZIP_SUFFIXES = (".json", ".safetensors", ".jinja", ".md", ".txt", ".model")
EXPORT_FILE = re.compile(r"^(?P<job>.+)-(?P<kind>adapter_zip|merge|push)-(?P<id>exp-[0-9a-f]{8})(?P<suffix>\.zip)?"
                         r"\.(?:status|pid)\.json$")
TERMINAL = ("succeeded", "failed")


class ExportError(ValueError):
    pass


@dataclass
class Export:
    export_id: str
    job_id: str
    kind: str  # adapter_zip | merge | push
    out: Path
    created: float = field(default_factory=time.time)
    proc: subprocess.Popen[bytes] | None = None  # ours; None for one found again after a restart
    handle: WorkerHandle | None = None

    @property
    def pid_file(self) -> Path:
        return self.out.parent / f"{self.out.name}.pid.json"

    def _process_gone(self) -> bool:
        """The export process has ended (a child of ours, or one started before a restart)."""
        if self.proc is not None:
            return self.proc.poll() is not None
        if self.handle is None:
            return False  # an in-process export (adapter zip) writes its final status itself
        return not handle_alive(self.handle)

    def view(self) -> dict[str, Any]:
        status_file = self.out.parent / f"{self.out.name}.status.json"
        state: dict[str, Any] = {"status": "queued", "message": "starting", "progress": 0.0}
        if status_file.is_file():
            try:
                state = json.loads(status_file.read_text(encoding="utf-8"))
            except ValueError:
                pass
        if state.get("status") not in TERMINAL and self._process_gone():
            code = self.proc.returncode if self.proc is not None else None
            state = {"status": "failed", "message": f"export process exited with code {code}" if code is not None
                     else "export process ended without finishing (stopped while the server was down?)"}
        return {"export_id": self.export_id, "job_id": self.job_id, "kind": self.kind, "path": str(self.out),
                **{k: v for k, v in state.items() if k != "time"}}


class ExportManager:
    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.root = workspace / "exports"
        self._exports: dict[str, Export] = {}
        self._lock = threading.Lock()
        self._find_existing()

    def _find_existing(self) -> None:
        """Every export under the workspace, from its status and pid files: the list survives a restart."""
        if not self.root.is_dir():
            return
        for path in self.root.iterdir():
            found = EXPORT_FILE.match(path.name)
            if found is None or found["id"] in self._exports:
                continue
            try:
                created = path.stat().st_mtime
            except OSError:
                continue
            out = self.root / f"{found['job']}-{found['kind']}-{found['id']}{found['suffix'] or ''}"
            export = Export(found["id"], found["job"], found["kind"], out, created=created)
            try:
                pid = json.loads(export.pid_file.read_text(encoding="utf-8"))
                export.handle = WorkerHandle(int(pid["pid"]), float(pid["start_time"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
            self._exports[export.export_id] = export

    def get(self, export_id: str) -> Export:
        found = self._exports.get(export_id)
        if found is None:
            raise KeyError(export_id)
        return found

    def list_for(self, job_id: str) -> list[dict[str, Any]]:
        return [e.view() for e in sorted(self._exports.values(), key=lambda e: e.created) if e.job_id == job_id]

    def _new(self, job_id: str, kind: str, suffix: str = "") -> Export:
        export_id = f"exp-{secrets.token_hex(4)}"
        self.root.mkdir(parents=True, exist_ok=True)
        export = Export(export_id, job_id, kind, self.root / f"{job_id}-{kind}-{export_id}{suffix}")
        with self._lock:
            self._exports[export_id] = export
        return export

    def adapter_zip(self, job_id: str, job_dir: Path, result: str | None) -> Export:
        """Zip the adapter (or model) files of a result; quick, so done at once."""
        try:
            folder = resolve_result(job_dir, result)
        except ResultError as exc:
            raise ExportError(str(exc)) from None
        export = self._new(job_id, "adapter_zip", ".zip")
        tmp = export.out.with_suffix(".partial")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix in ZIP_SUFFIXES:
                    zf.write(path, arcname=f"{job_id}-{folder.name}/{path.name}")
        tmp.replace(export.out)
        (export.out.parent / f"{export.out.name}.status.json").write_text(json.dumps(
            {"status": "succeeded", "message": f"zipped {folder.name}", "progress": 1.0}))
        return export

    def start(self, job_id: str, job_dir: Path, result: str | None, merge: bool, repo_id: str | None = None,
              private: bool = True, token: str | None = None) -> Export:
        """Merge and/or push in a background process; returns at once."""
        try:
            resolve_result(job_dir, result)
        except ResultError as exc:
            raise ExportError(str(exc)) from None
        if repo_id is not None and not REPO_ID.match(repo_id):
            raise ExportError("repo_id must look like 'user-or-org/model-name'")
        if not merge and repo_id is None:
            raise ExportError("nothing to do: ask for a merge, a push, or both")
        export = self._new(job_id, "push" if repo_id else "merge")
        argv = [sys.executable, "-m", "sft_ui.worker.export", str(job_dir), "--out", str(export.out),
                "--workspace", str(self.workspace)]
        argv += (["--result", result] if result else []) + (["--merge"] if merge else [])
        argv += (["--push", repo_id] + (["--private"] if private else [])) if repo_id else []
        env = worker_env(self.workspace)  # carries the server's own HF_TOKEN, if it has one
        if token:
            env["HF_TOKEN"] = token  # typed for this call: this process only, never stored
        if repo_id is None:
            env.pop("HF_TOKEN", None)
            env.pop("HUGGING_FACE_HUB_TOKEN", None)
        log_path = export.out.parent / f"{export.out.name}.log"
        with log_path.open("ab") as log_fh:
            export.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                                           env=env, start_new_session=True, close_fds=True)
        export.handle = handle_for(export.proc.pid)
        export.pid_file.write_text(json.dumps({"pid": export.handle.pid, "start_time": export.handle.start_time}))
        return export

    def wait(self, export_id: str, timeout_s: float) -> dict[str, Any]:
        export = self.get(export_id)
        if export.proc is not None:
            try:
                export.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            return export.view()
        deadline = time.monotonic() + timeout_s  # not our child (found after a restart): poll its files
        while (view := export.view())["status"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
        return view
