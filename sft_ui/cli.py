"""`python -m sft_ui serve | train CONFIG | validate CONFIG`: the headless face of sft_ui.

`train` runs one job in the foreground through the same worker the server uses, shows a progress bar
from its events, and turns Ctrl-C into a clean stop with a checkpoint. No torch is imported here.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .config import ConfigError, FieldError, JobConfig, apply_overrides, load_yaml, parse_set_option
from .events import EVENTS_FILE, EXIT_BAD_INPUT, EXIT_FAILED, LOG_FILE, EventTailer, tail_text
from .jobdirs import create_job_dir, new_job_id
from .launchers.local import LocalLauncher
from .settings import load_settings

BAR_WIDTH = 30


def _read_config(path: Path, sets: list[str]) -> JobConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([FieldError("config", f"cannot read {path}: {exc.strerror}")]) from None
    config = load_yaml(text)
    overrides = dict(parse_set_option(item) for item in sets)
    return apply_overrides(config, overrides) if overrides else config


class ProgressPrinter:
    """A one-line bar on a terminal; a line per few seconds when output goes to a file."""

    def __init__(self, out: TextIO):
        self.out = out
        self.tty = out.isatty()
        self._last_print = 0.0

    def event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "start":
            self._line(f"training on {ev.get('device')} ({ev.get('trainable_params', 0):,} trainable parameters, "
                       f"{ev.get('total_steps')} steps)")
        elif kind == "log":
            self._progress(ev)
        elif kind == "eval":
            self._line(f"eval at step {ev.get('step')}: loss {ev.get('eval_loss')}")
        elif kind == "checkpoint":
            self._line(f"checkpoint: {ev.get('path')}")
        elif kind == "error":
            self._line(f"error ({ev.get('kind')}): {ev.get('message')}")

    def _progress(self, ev: dict[str, Any]) -> None:
        step, total = int(ev.get("step") or 0), int(ev.get("total_steps") or 0)
        frac = step / total if total else 0.0
        bar = "#" * int(frac * BAR_WIDTH) + "." * (BAR_WIDTH - int(frac * BAR_WIDTH))
        loss = ev.get("loss")
        eta = ev.get("eta_s")
        text = (f"[{bar}] {step}/{total} {frac:4.0%} loss {loss:.4f}" if isinstance(loss, float)
                else f"[{bar}] {step}/{total}") + (f" eta {eta:.0f}s" if isinstance(eta, (int, float)) else "")
        if self.tty:
            self.out.write("\r" + text)
            self.out.flush()
        elif time.monotonic() - self._last_print > 2.0 or step == total:
            self._last_print = time.monotonic()
            self._line(text)

    def _line(self, text: str) -> None:
        self.out.write(("\n" if self.tty else "") + text + "\n")
        self.out.flush()


def _attempts_so_far(job_dir: Path) -> int:
    """The highest attempt number recorded in the job's events (0 for a new job)."""
    tailer = EventTailer(job_dir / EVENTS_FILE)
    highest = 0
    while events := tailer.read_new():
        highest = max([highest, *(int(e.get("attempt") or 0) for e in events)])
    return highest


def run_foreground(job_dir: Path, workspace: Path, resume: bool, grace_s: float, out: TextIO) -> int:
    launcher = LocalLauncher(workspace)
    handle = launcher.start(job_dir, resume=resume, attempt=_attempts_so_far(job_dir) + 1)
    tailer = EventTailer(job_dir / EVENTS_FILE, offset=_size(job_dir / EVENTS_FILE))
    printer = ProgressPrinter(out)
    end: dict[str, Any] = {}
    try:
        while True:
            alive = launcher.is_alive(handle)
            for ev in tailer.read_new():
                printer.event(ev)
                if ev.get("type") == "end":
                    end = ev
            if not alive:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the stop
        out.write("\nstopping: finishing the current step and saving a checkpoint (Ctrl-C again is ignored)\n")
        launcher.stop_and_wait(handle, grace_s)
        for ev in tailer.read_new():
            if ev.get("type") == "end":
                end = ev
    code = launcher.exit_code(handle, job_dir)
    status = end.get("status", "failed")
    if status == "succeeded":
        out.write(f"\nsucceeded: result in {end.get('final_dir')}\n")
    elif status == "stopped":
        at = f" at step {end['step']}" if end.get("step") else " before training started"
        out.write(f"\nstopped{at}; resume with: python -m sft_ui train --resume {job_dir}\n")
    else:
        out.write(f"\nfailed (exit code {code}); last lines of {job_dir / LOG_FILE}:\n"
                  f"{tail_text(job_dir / LOG_FILE, 15)}\n")
    return 0 if status in ("succeeded", "stopped") else (code or EXIT_FAILED)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def cmd_train(args: argparse.Namespace) -> int:
    settings = load_settings()
    workspace = Path(args.workspace).resolve() if args.workspace else settings.workspace
    if args.resume:
        job_dir = Path(args.resume).resolve()
        if not (job_dir / "config.yaml").is_file():
            sys.stderr.write(f"error: {job_dir} is not a job directory (no config.yaml)\n")
            return EXIT_BAD_INPUT
    else:
        if not args.config:
            sys.stderr.write("error: give a CONFIG file or --resume JOB_DIR\n")
            return EXIT_BAD_INPUT
        try:
            config = _read_config(Path(args.config), args.set)
        except ConfigError as exc:
            sys.stderr.write("error: invalid config:\n" + "".join(f"  - {e.message}\n" for e in exc.errors))
            return EXIT_BAD_INPUT
        job_dir = create_job_dir(workspace / "runs", new_job_id(), config)
    sys.stdout.write(f"job directory: {job_dir}\n")
    return run_foreground(job_dir, workspace, bool(args.resume), settings.stop_grace_s, sys.stdout)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        config = _read_config(Path(args.config), args.set)
    except ConfigError as exc:
        sys.stderr.write("invalid config:\n" + "".join(f"  - {e.message}\n" for e in exc.errors))
        return EXIT_BAD_INPUT
    sys.stdout.write(config.to_yaml())
    return 0


def find_job_dir(workspace: Path, job: str) -> Path | None:
    """A job id (server jobs or CLI runs) or a job directory path."""
    for candidate in (workspace / "jobs" / job, workspace / "runs" / job, Path(job)):
        if (candidate / "config.yaml").is_file():
            return candidate.resolve()
    return None


def _job_args(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(workspace, job dir or None after printing why) for commands that take a JOB argument."""
    workspace = Path(args.workspace).resolve() if args.workspace else load_settings().workspace
    job_dir = find_job_dir(workspace, args.job)
    if job_dir is None:
        sys.stderr.write(f"error: no job {args.job!r} in {workspace} (give a job id or a job directory)\n")
    return workspace, job_dir


def cmd_chat(args: argparse.Namespace) -> int:
    from .inference import InferenceClient, InferenceError

    workspace, job_dir = _job_args(args)
    if job_dir is None:
        return EXIT_BAD_INPUT
    client = InferenceClient(workspace)
    history: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    params = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
    try:
        info = client.load(job_dir, args.result)
        sys.stdout.write(f"loaded {info['result']} of {job_dir.name} on {info['device']}; empty line or Ctrl-D "
                         "quits\n")
        while True:
            try:
                prompt = input("you> ").strip()
            except EOFError:
                break
            if not prompt:
                break
            history.append({"role": "user", "content": prompt})
            sys.stdout.write("model> ")
            answer = ""
            for piece in client.generate(job_dir, args.result, history, params):
                answer += piece
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": answer})
    except InferenceError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        sys.stdout.write("\n")
    finally:
        client.shutdown()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import subprocess

    from .launchers.local import worker_env

    workspace, job_dir = _job_args(args)
    if job_dir is None:
        return EXIT_BAD_INPUT
    if not args.merge and not args.push:
        sys.stderr.write("error: nothing to do: give --merge and/or --push REPO_ID\n")
        return EXIT_BAD_INPUT
    out = Path(args.out or workspace / "exports" / f"{job_dir.name}-merged").resolve()
    argv = [sys.executable, "-m", "sft_ui.worker.export", str(job_dir), "--out", str(out), "--workspace",
            str(workspace)] + (["--result", args.result] if args.result else []) + (["--merge"] if args.merge else [])
    argv += (["--push", args.push] + (["--private"] if args.private else [])) if args.push else []
    code = subprocess.call(argv, env=worker_env(workspace))  # the token, if any, stays in HF_TOKEN
    if code == 0 and args.merge:
        sys.stdout.write(f"merged model: {out}\n")
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve_main

    return serve_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sft_ui", description="Supervised fine-tuning studio (TRL).")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one config in the foreground")
    train.add_argument("config", nargs="?", help="YAML config file (see configs/)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    train.add_argument("--workspace", help="workspace folder (default: SFT_UI_WORKSPACE or ./workspace)")
    train.add_argument("--resume", metavar="JOB_DIR", help="continue a stopped run from its latest checkpoint")
    train.set_defaults(func=cmd_train)
    validate = sub.add_parser("validate", help="check a config file and print it with defaults filled in")
    validate.add_argument("config")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    validate.set_defaults(func=cmd_validate)
    chat = sub.add_parser("chat", help="chat with a job's result in the terminal (streaming)")
    chat.add_argument("job", help="job id or job directory")
    chat.add_argument("--result", help="final (default) or checkpoint-N")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--temperature", type=float, default=0.7)
    chat.add_argument("--top-p", type=float, default=0.9)
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--workspace")
    chat.set_defaults(func=cmd_chat)
    export = sub.add_parser("export", help="merge a LoRA result into its base model and/or push it to the Hub")
    export.add_argument("job", help="job id or job directory")
    export.add_argument("--merge", action="store_true", help="save a full merged model (safetensors + tokenizer)")
    export.add_argument("--out", help="folder for the merged model (default WORKSPACE/exports/JOB-merged)")
    export.add_argument("--result", help="final (default) or checkpoint-N")
    export.add_argument("--push", metavar="REPO_ID", help="push to the Hub (token from HF_TOKEN)")
    export.add_argument("--private", action="store_true", help="create the Hub repo as private")
    export.add_argument("--workspace")
    export.set_defaults(func=cmd_export)
    serve = sub.add_parser("serve", help="serve the web studio and REST API (same as python app.py)")
    serve.add_argument("rest", nargs=argparse.REMAINDER, help="options for the server (see --help there)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
