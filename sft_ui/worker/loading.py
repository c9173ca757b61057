"""Device, model, tokenizer, dataset and trainer construction for the worker (heavy imports live here)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
from trl import SFTConfig, SFTTrainer

from ..config import EMBEDDED_MODEL, JobConfig, lora_kwargs, model_init_kwargs, sft_kwargs
from ..embedded import ensure_embedded_model
from ..events import EventWriter
from ..settings import default_workspace
from .callback import EventCallback

log = logging.getLogger("sft_ui.worker")


def quiet_libraries() -> None:
    """Progress bars and deprecation chatter would drown the log a person reads."""
    import warnings

    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


class Device:
    def __init__(self, kind: str, name: str, bf16: bool):
        self.kind, self.name, self.bf16 = kind, name, bf16


def detect_device() -> Device:
    """CUDA, then Apple MPS, then CPU; bf16 only where the hardware does it natively."""
    if torch.cuda.is_available():
        return Device("cuda", torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported())
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return Device("mps", "Apple MPS", False)
    return Device("cpu", "CPU", False)


def workspace_for(job_dir: Path) -> Path:
    """The launcher names the workspace in SFT_UI_WORKSPACE; a job run by hand uses WORKSPACE/jobs/ID."""
    if not os.environ.get("SFT_UI_WORKSPACE") and job_dir.parent.name == "jobs":
        return job_dir.parent.parent
    return default_workspace()


def resolve_model_path(config: JobConfig, job_dir: Path) -> str:
    if config.model_name_or_path == EMBEDDED_MODEL:
        return str(ensure_embedded_model(workspace_for(job_dir) / "models"))
    return config.model_name_or_path


def _quantization(config: JobConfig, device: Device) -> dict[str, Any]:
    from .run import WorkerError

    if config.method != "qlora":
        return {}
    if device.kind != "cuda":
        raise WorkerError("qlora", "method qlora needs a CUDA GPU (4-bit bitsandbytes); this machine has "
                                   f"{device.name}. Use method lora instead.")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise WorkerError("qlora", "method qlora needs the bitsandbytes package: pip install bitsandbytes") from None
    compute = torch.bfloat16 if device.bf16 else torch.float16
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True,
    )}


def load_model_and_tokenizer(config: JobConfig, job_dir: Path, device: Device) -> tuple[Any, Any, str]:
    from .run import WorkerError

    quiet_libraries()
    path = resolve_model_path(config, job_dir)
    local_only = Path(path).is_dir()
    kwargs = {**model_init_kwargs(config), **_quantization(config, device)}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code,
                                                  local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, **kwargs)
    except (OSError, ValueError) as exc:
        where = "folder" if local_only else "Hub id (needs network access, and HF_TOKEN for gated models)"
        raise WorkerError("model", f"model_name_or_path: could not load '{config.model_name_or_path}' as a "
                                   f"model {where}: {str(exc).splitlines()[0][:300]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, path


def make_datasets(rows: list[dict[str, Any]], config: JobConfig) -> tuple[Dataset, Dataset | None]:
    dataset = Dataset.from_list(rows)
    if config.eval_fraction <= 0:
        return dataset, None
    if len(dataset) < 2:
        from .run import WorkerError

        raise WorkerError("dataset", "eval_fraction: the dataset has too few rows to hold any out")
    n_eval = max(1, round(len(dataset) * config.eval_fraction))
    split = dataset.train_test_split(test_size=n_eval, seed=config.seed)
    return split["train"], split["test"]


def make_trainer(config: JobConfig, job_dir: Path, device: Device, model: Any, tokenizer: Any, train_ds: Dataset,
                 eval_ds: Dataset | None, events: EventWriter, stop: threading.Event,
                 info: dict[str, Any]) -> tuple[SFTTrainer, EventCallback]:
    from peft import LoraConfig

    args = SFTConfig(**sft_kwargs(config, str(job_dir), device.kind, device.bf16),
                     dataset_num_proc=None)
    peft_kwargs = lora_kwargs(config)
    callback = EventCallback(events, stop, {})
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tokenizer,
        peft_config=LoraConfig(**peft_kwargs) if peft_kwargs else None, callbacks=[callback],
    )
    trainer.remove_callback(PrinterCallback)  # the callback writes concise lines instead of dict dumps
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    callback.start_info = {
        "device": device.kind, "device_name": device.name, "precision": "bf16" if args.bf16 else (
            "fp16" if args.fp16 else "fp32"), "method": config.method, "trainable_params": trainable,
        "total_params": total, "pid": os.getpid(), **info,
    }
    return trainer, callback
