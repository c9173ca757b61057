"""Chat latency of our inference worker against plain `model.generate` in one process.

The same model (the embedded base + a trained LoRA adapter, float32 on CPU), the same chat-templated prompt and
the same greedy parameters, measured two ways, alternating which goes first every round:

  A  worker   `InferenceClient.generate(...)`: the server's path (JSON lines to `python -m sft_ui.infer`, a
              reader thread, one reply line per text piece). The model is loaded and warmed before timing.
  B  direct   `PeftModel.generate(...)` with a `TextIteratorStreamer` in a thread of this process, as the
              transformers docs show it; also loaded and warmed before timing.

Per request: time to the first text piece (from the call), tokens/s over the whole request, and the text. Tokens
are counted the same way for both: the generated text, tokenized again without special tokens. The summary gives
medians and the worker/direct ratios; targets: tokens/s ratio >= 0.95 and first-token difference <= 100 ms
(PASS/MISS; the exit code is 0 either way, non-zero only on a crash).

    python bench/chat_latency.py [--rounds 5] [--max-new-tokens 64] [--job-dir JOB_DIR [--workspace WS]] [--keep]

Without --job-dir a tiny LoRA job (the tiny-lora preset, --steps steps) is trained first in a temp workspace.
Timings on a small shared machine swing when other processes run: before each request the bench waits up to
--settle seconds for the CPU to go quiet, measures the CPU others used during the request and marks noisy
requests with '*'.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sft_ui.config import apply_overrides, load_yaml  # noqa: E402
from sft_ui.inference import InferenceClient  # noqa: E402
from sft_ui.jobdirs import create_job_dir, new_job_id  # noqa: E402
from sft_ui.launchers.local import worker_env  # noqa: E402
from sft_ui.results import base_model_path, resolve_result  # noqa: E402

TPS_TARGET = 0.95  # worker/direct tokens per second, at least
TTFT_TARGET_MS = 100.0  # worker minus direct time to first token, at most
BUSY_LIMIT = 0.25  # cores used by other processes during a request, above which it is marked noisy
PROMPT = "What is the plural of hero?"


@dataclass
class Sample:
    variant: str
    rnd: int
    ttft_s: float
    total_s: float
    tokens: int
    text: str
    others: float  # cores used by other processes meanwhile

    @property
    def tps(self) -> float:
        return self.tokens / self.total_s if self.total_s > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.others > BUSY_LIMIT


# ---- the machine --------------------------------------------------------------------------------------------------
def _ours() -> list[psutil.Process]:
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _our_cpu_s(procs: list[psutil.Process]) -> dict[int, float]:
    found = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            found[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    return found


def _busy_s() -> float:
    """CPU seconds the whole machine spent on anything but idling (steal included), all cores together."""
    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal", "guest"))


class Noise:
    """Cores used by everything else (short-lived processes and the host's steal included) during a request:
    machine-wide busy time minus the CPU time of this process and its children (the inference worker)."""

    def __init__(self) -> None:
        self.procs = _ours()
        self.mine = _our_cpu_s(self.procs)
        self.busy = _busy_s()
        self.wall = time.monotonic()

    def others(self) -> float:
        mine = sum(max(0.0, cpu - self.mine.get(pid, 0.0)) for pid, cpu in _our_cpu_s(self.procs).items())
        return max(0.0, _busy_s() - self.busy - mine) / max(time.monotonic() - self.wall, 1e-6)


def settle(limit_s: float, quiet_pct: float = 15.0) -> None:
    """Wait (at most limit_s) until the machine is mostly idle."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and psutil.cpu_percent(interval=0.5) > quiet_pct:
        pass


# ---- preparing a job ----------------------------------------------------------------------------------------------
def train_tiny_job(workspace: Path, steps: int) -> Path:
    config = apply_overrides(load_yaml((ROOT / "configs" / "tiny-lora.yaml").read_text(encoding="utf-8")),
                             {"max_steps": steps, "save_steps": steps + 1000, "seed": 42})
    job_dir = create_job_dir(workspace / "jobs", new_job_id(), config)
    env = worker_env(workspace, {"HF_HUB_OFFLINE": "1"})
    started = time.monotonic()
    with (job_dir / "train.log").open("ab") as log_fh:
        code = subprocess.call([sys.executable, "-m", "sft_ui.worker", str(job_dir)], cwd=str(ROOT), env=env,
                               stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT)
    if code != 0 or not (job_dir / "final").is_dir():
        tail = (job_dir / "train.log").read_text(errors="replace")[-3000:]
        raise SystemExit(f"training the tiny job failed (exit {code}):\n{tail}")
    print(f"trained {job_dir.name} ({steps} steps) in {time.monotonic() - started:.1f} s")
    return job_dir


# ---- B: direct generate in this process ---------------------------------------------------------------------------
class Direct:
    """The same model the worker loads (base + adapter via PeftModel), generating in a thread of this process."""

    def __init__(self, job_dir: Path, workspace: Path):
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        result = resolve_result(job_dir, None)
        base_path = base_model_path(job_dir, workspace)
        self.tokenizer = AutoTokenizer.from_pretrained(result, local_files_only=True)
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32,
                                                    local_files_only=Path(base_path).is_dir())
        self.model = PeftModel.from_pretrained(base, str(result), is_trainable=False).eval()

    def stream(self, messages: list[dict[str, str]], max_new_tokens: int) -> Any:
        from transformers import TextIteratorStreamer

        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)["input_ids"]
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        kwargs = {"input_ids": ids, "attention_mask": self.torch.ones_like(ids), "streamer": streamer,
                  "max_new_tokens": max_new_tokens, "do_sample": False,
                  "pad_token_id": self.tokenizer.pad_token_id or self.tokenizer.eos_token_id}

        def run() -> None:
            with self.torch.inference_mode():
                self.model.generate(**kwargs)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()


# ---- measuring ------------------------------------------------------------------------------------------------------
def measure(variant: str, rnd: int, pieces_of: Any, count: Any, settle_s: float) -> Sample:
    settle(settle_s)
    noise = Noise()
    start = time.perf_counter()
    first: float | None = None
    text = ""
    for piece in pieces_of():
        if first is None:
            first = time.perf_counter()
        text += piece
    end = time.perf_counter()
    others = noise.others()
    return Sample(variant, rnd, (first or end) - start, end - start, count(text), text, others)


def fmt(s: Sample) -> str:
    mark = "*" if s.noisy else " "
    return (f"  {s.rnd:>5} {s.variant:<7} {s.ttft_s * 1000:9.1f} {s.total_s * 1000:9.1f} {s.tokens:7d} "
            f"{s.tps:9.1f} {s.others:7.2f}{mark}")


def medians(samples: list[Sample]) -> dict[str, dict[str, float]]:
    med: dict[str, dict[str, float]] = {}
    for variant in ("worker", "direct"):
        mine = [s for s in samples if s.variant == variant]
        med[variant] = {"n": len(mine), "ttft_ms": statistics.median(s.ttft_s for s in mine) * 1000,
                        "total_ms": statistics.median(s.total_s for s in mine) * 1000,
                        "tokens": statistics.median(s.tokens for s in mine),
                        "tps": statistics.median(s.tps for s in mine)}
    return med


def report(samples: list[Sample]) -> None:
    print()
    print("  round variant  ttft ms  total ms  tokens  tokens/s  others")
    for s in samples:
        print(fmt(s))
    quiet = [s for s in samples if not s.noisy]
    use_quiet = all(sum(s.variant == v for s in quiet) >= 3 for v in ("worker", "direct")) and len(quiet) < len(samples)
    med = medians(quiet if use_quiet else samples)
    print()
    print(f"  medians   n  ttft ms  total ms  tokens  tokens/s{'   (quiet requests only)' if use_quiet else ''}")
    for variant, m in med.items():
        print(f"  {variant:<7} {m['n']:3.0f} {m['ttft_ms']:8.1f} {m['total_ms']:9.1f} {m['tokens']:7.0f} "
              f"{m['tps']:9.1f}")
    ratio = med["worker"]["tps"] / med["direct"]["tps"] if med["direct"]["tps"] else 0.0
    diff = med["worker"]["ttft_ms"] - med["direct"]["ttft_ms"]
    print()
    print(f"  throughput ratio worker/direct: {ratio:.3f} (target >= {TPS_TARGET}) "
          f"{'PASS' if ratio >= TPS_TARGET else 'MISS'}")
    print(f"  first-token difference worker-direct: {diff:+.1f} ms (target <= {TTFT_TARGET_MS:.0f} ms) "
          f"{'PASS' if diff <= TTFT_TARGET_MS else 'MISS'}")
    same = {s.text for s in samples}
    print(f"  same greedy text from both: {'yes' if len(same) == 1 else f'no ({len(same)} variants)'}")
    noisy = len(samples) - len(quiet)
    if noisy:
        print(f"  {noisy} of {len(samples)} requests ran while everything else used > {BUSY_LIMIT} cores (*)"
              + ("; the medians use the quiet ones" if use_quiet else ": trust the numbers less"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat latency: the sft_ui inference worker against direct generate.")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each times both variants once (default 5)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per answer (default 64)")
    parser.add_argument("--job-dir", type=Path, help="a trained job to use (default: train a tiny one first)")
    parser.add_argument("--workspace", type=Path, help="the job's workspace (default: two folders above --job-dir)")
    parser.add_argument("--steps", type=int, default=30, help="steps of the tiny job trained first (default 30)")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--settle", type=float, default=10.0,
                        help="seconds to wait at most for an idle CPU before each request (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args(argv)

    tmp: Path | None = None
    if args.job_dir:
        job_dir = args.job_dir.resolve()
        workspace = (args.workspace or job_dir.parents[1]).resolve()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="sft_ui_chat_latency_"))
        workspace = tmp / "workspace"
        subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                        "from sft_ui.embedded import ensure_embedded_model as e; e(Path(sys.argv[1]))",
                        str(workspace / "models")], check=True, cwd=str(ROOT), env=worker_env(workspace))
        job_dir = train_tiny_job(workspace, args.steps)

    messages = [{"role": "user", "content": args.prompt}]
    params = {"temperature": 0.0, "max_new_tokens": args.max_new_tokens}
    client = InferenceClient(workspace)
    try:
        print(f"job {job_dir}  |  {args.rounds} rounds x 2 variants, {args.max_new_tokens} new tokens, greedy, "
              f"{os.cpu_count()} CPUs, torch threads: worker and direct both default")
        started = time.perf_counter()
        info = client.load(job_dir, None)
        print(f"worker: loaded {info['result']} (adapter={info['adapter']}) on {info['device']} in "
              f"{time.perf_counter() - started:.1f} s (process start + imports + load)")
        started = time.perf_counter()
        direct = Direct(job_dir, workspace)
        print(f"direct: loaded in {time.perf_counter() - started:.1f} s (imports + load)")
        count = lambda text: len(direct.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731

        def worker_pieces() -> Any:
            return client.generate(job_dir, None, messages, params)

        def direct_pieces() -> Any:
            return direct.stream(messages, args.max_new_tokens)

        for _ in range(2):  # warm-up: first-call allocations, lazy inits on both sides
            "".join(worker_pieces()), "".join(direct_pieces())

        samples: list[Sample] = []
        for rnd in range(1, args.rounds + 1):
            order = [("worker", worker_pieces), ("direct", direct_pieces)]
            for variant, fn in order if rnd % 2 else order[::-1]:
                samples.append(measure(variant, rnd, fn, count, args.settle))
        report(samples)
    finally:
        client.shutdown()
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
