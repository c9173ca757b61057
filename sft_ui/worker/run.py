"""One training run: config.yaml -> model, tokenizer, dataset -> TRL `SFTTrainer` -> final/.

Kept short on purpose (like TRL's own `sft.py`): loading lives in `loading.py`, progress in
`callback.py`. SIGTERM sets a flag; the callback finishes the step, saves a checkpoint and stops.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from ..config import ConfigError, FieldError, JobConfig, load_yaml
from ..data import DatasetError, load_rows
from ..events import (
    CONFIG_FILE,
    EVENTS_FILE,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    FINAL_DIR,
    EventWriter,
    latest_checkpoint,
    write_exit,
)

log = logging.getLogger("sft_ui.worker")
STOP = threading.Event()


class WorkerError(Exception):
    """A failure with a message a person can act on (bad model id, qlora without CUDA, ...)."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def _request_stop(signum: int, frame: Any) -> None:
    if not STOP.is_set():
        STOP.set()
        log.info("received signal %d: stopping after the current step", signum)


DISK_FULL_MARKERS = ("no space left", "os error 28", "errno 28", "disk is full", "unexpected pos")
LOW_DISK_BYTES = 64 * 1024 * 1024


def _disk_full(exc: BaseException, job_dir: Path | None) -> bool:
    """ENOSPC anywhere in the chain, a library's own words for it, or a job folder with no room left."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if any(marker in str(seen).lower() for marker in DISK_FULL_MARKERS[:4]):
            return True
        seen = seen.__cause__ or seen.__context__
    if job_dir is not None:
        try:
            return shutil.disk_usage(job_dir).free < LOW_DISK_BYTES and "unexpected pos" in str(exc)
        except OSError:
            return False
    return False


def _classify(exc: BaseException, job_dir: Path | None = None) -> tuple[str, str]:
    """(kind, message) for an unexpected failure."""
    if _disk_full(exc, job_dir):
        return "disk_full", f"no space left on device while writing to {job_dir or 'the job folder'}"
    if type(exc).__name__ == "OutOfMemoryError" or isinstance(exc, MemoryError):
        return "out_of_memory", "out of memory: lower per_device_train_batch_size or max_length, or use lora"
    return "runtime", f"{type(exc).__name__}: {exc}"


def run_job(job_dir: Path, resume: bool = False, attempt: int = 1) -> int:
    """Train the job in `job_dir`; returns the process exit code. Never raises."""
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    events = EventWriter(job_dir / EVENTS_FILE, attempt)
    status, code, end_fields = "failed", EXIT_FAILED, {}
    try:
        config = load_yaml((job_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        status, end_fields = train(job_dir, config, events, resume)
        code = EXIT_OK
    except (ConfigError, DatasetError) as exc:
        kind = "config" if isinstance(exc, ConfigError) else "dataset"
        details = [e.message if isinstance(e, FieldError) else str(e) for e in getattr(exc, "errors", [])[:20]]
        events.emit("error", kind=kind, message=str(exc), details=details)
        log.error("%s error: %s", kind, exc)
        code = EXIT_BAD_INPUT
    except WorkerError as exc:
        events.emit("error", kind=exc.kind, message=str(exc))
        log.error("%s", exc)
        code = EXIT_BAD_INPUT if exc.kind in ("model", "qlora") else EXIT_FAILED
    except BaseException as exc:  # the job must end with an event, whatever happened
        kind, message = _classify(exc, job_dir)
        short_tb = "".join(traceback.format_exception(exc)[-6:])
        try:
            events.emit("error", kind=kind, message=message, traceback=short_tb[-4000:])
        except OSError:
            pass  # the disk may be full: exit.json below is the last word
        log.exception("training failed: %s", message)
    try:
        events.emit("end", status=status, **end_fields)
    except OSError:
        pass
    try:
        write_exit(job_dir, code, status)
    except OSError:
        log.error("could not write the exit file")
    return code


def train(job_dir: Path, config: JobConfig, events: EventWriter, resume: bool) -> tuple[str, dict[str, Any]]:
    """Returns (status, fields for the end event)."""
    fmt, rows = load_rows(config.dataset_name, config.dataset_format, config.column_mapping,
                          config.dataset_train_split, config.max_samples)  # fast, before heavy imports
    log.info("dataset: %d rows, format %s", len(rows), fmt)
    if STOP.is_set():
        return "stopped", {}
    from . import loading  # heavy imports: torch, transformers, trl, peft

    device = loading.detect_device()
    tokenizer, model, model_path = loading.load_model_and_tokenizer(config, job_dir, device)
    train_ds, eval_ds = loading.make_datasets(rows, config)
    trainer, callback = loading.make_trainer(config, job_dir, device, model, tokenizer, train_ds, eval_ds, events,
                                             STOP, {"dataset_format": fmt, "train_rows": len(train_ds),
                                                    "eval_rows": len(eval_ds) if eval_ds else 0})
    checkpoint = latest_checkpoint(job_dir) if resume else None
    if resume and checkpoint is None:
        log.warning("resume asked but no checkpoint found: starting from the beginning")
    if STOP.is_set():
        return "stopped", {}
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    step = trainer.state.global_step
    fields = {"step": step, "metrics": {**callback.last_metrics, **callback.summary}}
    if callback.stopped:
        ckpt = latest_checkpoint(job_dir)
        return "stopped", {**fields, "checkpoint": str(ckpt) if ckpt else None}
    final = job_dir / FINAL_DIR
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    (final / "sft_ui.json").write_text(json.dumps({
        "base_model": config.model_name_or_path, "resolved_base_model": str(model_path), "method": config.method,
        "dataset": config.dataset_name, "steps": step,
    }, indent=2), encoding="utf-8")
    log.info("saved the result to %s", final)
    return "succeeded", {**fields, "final_dir": str(final)}
