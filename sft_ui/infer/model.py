"""Loading a job's result (full model, or base + LoRA adapter) and streaming generation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer

from ..results import base_model_path, is_adapter, resolve_result

log = logging.getLogger("sft_ui.infer")


def _device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


class LoadedModel:
    """A job's result, warm in memory. For an adapter, the base answer comes from disabling it."""

    def __init__(self, job_dir: Path, result: str | None, workspace: Path):
        self.job_dir, self.path = job_dir, resolve_result(job_dir, result)
        self.device = _device()
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        self.adapter = is_adapter(self.path)
        self.base_path = base_model_path(job_dir, workspace)
        local = Path(self.base_path).is_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        if self.adapter:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=dtype, local_files_only=local)
            self.model = PeftModel.from_pretrained(base, str(self.path), is_trainable=False)
            self.base_model = None
        else:
            self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, local_files_only=True)
            self.base_model = None  # loaded on the first "compare with base" request
        self.model.to(self.device).eval()
        self.key = (str(job_dir.resolve()), self.path.name)

    def info(self) -> dict[str, Any]:
        return {"job_dir": str(self.job_dir), "result": self.path.name, "adapter": self.adapter,
                "base_model": self.base_path, "device": self.device,
                "has_chat_template": bool(getattr(self.tokenizer, "chat_template", None))}

    def _base(self) -> Any:
        if self.adapter:
            return self.model
        if self.base_model is None:
            local = Path(self.base_path).is_dir()
            self.base_model = AutoModelForCausalLM.from_pretrained(self.base_path, local_files_only=local)
            self.base_model.to(self.device).eval()
        return self.base_model

    def prompt_ids(self, messages: list[dict[str, str]]) -> Any:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"]
        else:  # a base model without a template: plain concatenation
            text = "\n".join(m["content"] for m in messages) + "\n"
            ids = self.tokenizer(text, return_tensors="pt")["input_ids"]
        return ids.to(self.device)

    def generate(self, messages: list[dict[str, str]], params: dict[str, Any], use_base: bool,
                 cancel: threading.Event, on_text: Callable[[str], None]) -> bool:
        """Generate in this thread, handing each finished piece of text to `on_text` as it appears.

        Returns True when `cancel` ended it early. No extra thread or queue: with a tiny model a token
        costs ~1 ms, so per-token hand-offs between threads would be a visible share of the time.
        """
        ids = self.prompt_ids(messages)
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        max_new = int(params.get("max_new_tokens", 128))
        if limit:
            max_new = max(1, min(max_new, limit - int(ids.shape[-1])))
        temperature = float(params.get("temperature", 0.7))
        kwargs: dict[str, Any] = {
            "input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": max_new,
            "streamer": _CallbackStreamer(self.tokenizer, on_text, cancel), "do_sample": temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(params.get("top_p", 0.9)))
        if params.get("seed") is not None:
            torch.manual_seed(int(params["seed"]))
        try:
            with torch.inference_mode():
                if use_base and self.adapter:
                    with self.model.disable_adapter():
                        self.model.generate(**kwargs)
                else:
                    (self._base() if use_base else self.model).generate(**kwargs)
        except _Cancelled:
            return True
        return False


class _Cancelled(Exception):
    pass


class _CallbackStreamer(TextStreamer):
    """Decodes tokens to text pieces (handling partial characters like TextStreamer) and stops on cancel."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None], cancel: threading.Event):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text, self.cancel = on_text, cancel

    def put(self, value: Any) -> None:
        if self.cancel.is_set():
            raise _Cancelled()
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)
