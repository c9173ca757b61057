"""Export worker: merge a LoRA result into its base model and/or push a result to the Hugging Face Hub.

Run as `python -m sft_ui.worker.export JOB_DIR --out DIR [--result R] [--merge] [--push REPO_ID
[--private]]`. The Hub token comes only from the HF_TOKEN environment variable, never argv. Progress goes
to OUT/../<name>.status.json; the merged folder is written to a temporary folder and renamed when
complete, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ..results import base_model_path, describe, is_adapter, job_config, resolve_result

log = logging.getLogger("sft_ui.export")
MAX_SHARD_SIZE = "2GB"
# training state is not part of a model, and pickles (training_args.bin) are unsafe to publish
PUSH_IGNORE = ["training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state*", "trainer_state.json", "*.pth"]


class StatusFile:
    def __init__(self, path: Path):
        self.path = path

    def write(self, status: str, message: str, **fields: Any) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"status": status, "message": message, "time": time.time(), **fields}))
        os.replace(tmp, self.path)
        log.info("%s: %s", status, message)


def model_card(job_dir: Path, result: Path, merged: bool) -> str:
    config = job_config(job_dir)
    metrics: dict[str, Any] = {}
    events = job_dir / "events.jsonl"
    if events.is_file():
        for line in events.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("type") == "end" and ev.get("metrics"):
                metrics = ev["metrics"]
    keep = ("loss", "train_loss", "eval_loss", "mean_token_accuracy", "step", "epoch", "train_runtime")
    rows = "\n".join(f"| {k} | {metrics[k]:.4g} |" if isinstance(metrics[k], float) else f"| {k} | {metrics[k]} |"
                     for k in keep if k in metrics)
    return (
        f"---\nlibrary_name: {'transformers' if merged else 'peft'}\ntags: [sft, trl, sft_ui]\n---\n\n"
        f"# {config.name or job_dir.name}\n\nFine-tuned with TRL `SFTTrainer` through sft_ui "
        f"({'LoRA merged into the base weights' if merged else config.method}).\n\n"
        f"- base model: `{config.model_name_or_path}`\n- dataset: `{config.dataset_name}`\n"
        f"- result: `{result.name}`\n\n## Final metrics\n\n| metric | value |\n|---|---|\n{rows}\n\n"
        f"## Training config\n\n```yaml\n{config.to_yaml()}```\n"
    )


def merge(job_dir: Path, result: Path, out: Path, workspace: Path, status: StatusFile) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    status.write("running", "loading the model", progress=0.1)
    tokenizer = AutoTokenizer.from_pretrained(result, local_files_only=True)
    if is_adapter(result):
        from peft import PeftModel

        base_path = base_model_path(job_dir, workspace)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32,
                                                    local_files_only=Path(base_path).is_dir())
        status.write("running", "merging the adapter into the base weights", progress=0.4)
        model = PeftModel.from_pretrained(base, str(result)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(result, local_files_only=True)
    status.write("running", "saving safetensors", progress=0.7)
    model.save_pretrained(tmp, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
    tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(model_card(job_dir, result, merged=True), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def push(folder: Path, repo_id: str, private: bool, status: StatusFile) -> str:
    from huggingface_hub import HfApi

    token = os.environ.get("HF_TOKEN") or None
    status.write("running", f"pushing to the Hub as {repo_id}", progress=0.85)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Upload from sft_ui",
                          ignore_patterns=PUSH_IGNORE)
    except Exception as exc:  # network, auth, permissions: one readable line, never the token
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if token:
            text = text.replace(token, "***")
        raise RuntimeError(f"could not push to the Hugging Face Hub ({type(exc).__name__}: {text})") from None
    return str(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_ui.worker.export")
    parser.add_argument("job_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged model")
    parser.add_argument("--result", default=None, help="final (default) or checkpoint-N")
    parser.add_argument("--merge", action="store_true")
    parser.add_argument("--push", metavar="REPO_ID")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    status = StatusFile(out.parent / f"{out.name}.status.json")
    workspace = args.workspace or Path(os.environ.get("SFT_UI_WORKSPACE", "workspace")).resolve()
    try:
        result = resolve_result(args.job_dir, args.result)
        folder = result
        if args.merge:
            merge(args.job_dir, result, out, workspace, status)
            folder = out
        elif args.push:  # PEFT leaves an empty template card: replace it with what we know
            (result / "README.md").write_text(model_card(args.job_dir, result, merged=False), encoding="utf-8")
        url = push(folder, args.push, args.private, status) if args.push else None
        status.write("succeeded", f"done: {url or folder}", progress=1.0, folder=str(folder), url=url,
                     info=describe(args.job_dir))
        return 0
    except Exception as exc:  # recorded for the UI/API; the exit code says failed
        status.write("failed", str(exc) or type(exc).__name__)
        log.error("export failed: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
