"""A TrainerCallback that turns trainer progress into `events.jsonl` lines and honours a stop request."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..events import EventWriter

log = logging.getLogger("sft_ui.worker")

_SUMMARY_KEYS = ("train_runtime", "train_loss", "train_samples_per_second", "train_steps_per_second")


class EventCallback(TrainerCallback):
    """Writes start/log/eval/checkpoint events; on a stop request, saves a checkpoint and ends training."""

    def __init__(self, events: EventWriter, stop: threading.Event, start_info: dict[str, Any]):
        self.events = events
        self.stop = stop
        self.start_info = start_info
        self.stopped = False
        self.summary: dict[str, Any] = {}
        self.last_metrics: dict[str, Any] = {}
        self._t0 = time.monotonic()
        self._first_step = 0
        self._last_tokens: tuple[float, float] | None = None  # (time, tokens) at the previous log

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self._t0 = time.monotonic()
        self._first_step = state.global_step
        self.events.emit("start", total_steps=state.max_steps, resumed_from_step=state.global_step or None,
                         **self.start_info)
        log.info("training: %d steps on %s (%s trainable parameters)", state.max_steps,
                 self.start_info.get("device"), f"{self.start_info.get('trainable_params', 0):,}")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.stop.is_set() and not self.stopped:
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
            log.info("stop requested: saving a checkpoint at step %d", state.global_step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        path = f"{args.output_dir}/checkpoint-{state.global_step}"
        self.events.emit("checkpoint", step=state.global_step, path=path)
        log.info("checkpoint saved: %s", path)

    def _eta(self, state: TrainerState) -> tuple[float, float | None]:
        elapsed = time.monotonic() - self._t0
        done = state.global_step - self._first_step
        if done <= 0 or not state.max_steps:
            return elapsed, None
        return elapsed, elapsed / done * max(0, state.max_steps - state.global_step)

    def _throughput(self, logs: dict[str, Any]) -> tuple[float | None, float | None]:
        tokens = logs.get("num_tokens")
        if tokens is None:
            return None, None
        now = time.monotonic()
        prev_time, prev_tokens = self._last_tokens or (self._t0, 0.0)
        self._last_tokens = (now, float(tokens))
        delta = float(tokens) - prev_tokens
        if delta <= 0 or now <= prev_time:  # TRL restarts num_tokens at 0 on resume
            return float(tokens), None
        return float(tokens), delta / (now - prev_time)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = dict(logs or {})
        if any(k in logs for k in _SUMMARY_KEYS):
            self.summary.update(logs)
            return
        elapsed, eta = self._eta(state)
        if any(k.startswith("eval_") for k in logs):
            self.events.emit("eval", step=state.global_step, **logs)
            log.info("eval step %d: loss %s", state.global_step, logs.get("eval_loss"))
            return
        tokens, tps = self._throughput(logs)
        point = {
            "step": state.global_step, "total_steps": state.max_steps, "loss": logs.pop("loss", None),
            "learning_rate": logs.pop("learning_rate", None), "grad_norm": logs.pop("grad_norm", None),
            "epoch": logs.pop("epoch", state.epoch), "tokens_seen": tokens, "tokens_per_s": tps,
            "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 1),
        }
        logs.pop("num_tokens", None)
        point.update(logs)
        self.last_metrics = point
        self.events.emit("log", **point)
        log.info("step %d/%d loss %s lr %s%s", state.global_step, state.max_steps, _fmt(point["loss"]),
                 _fmt(point["learning_rate"]), f" {tps:,.0f} tok/s" if tps else "")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
