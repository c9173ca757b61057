"""Trying and shipping a result: chat through the inference worker, merge / zip / Hub-push exports, the REST routes
of a real server subprocess, and the `chat` / `export` CLI commands. Everything runs on really trained (tiny)
jobs of the embedded model; the Hub is never reachable (push goes to a closed local port).

Every child process runs with OMP_NUM_THREADS=1: on two shared cores, several torch processes each spinning two
OpenMP threads slow one another down several-fold (a 300-step run: 15 s alone, over 3 minutes oversubscribed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from helpers import TINY, Server, kill_processes_mentioning, new_workspace, server_env, tiny_config, wait_for

from sft_ui.config import apply_overrides, load_yaml
from sft_ui.exports import ExportManager
from sft_ui.inference import InferenceClient, InferenceError
from sft_ui.jobdirs import create_job_dir, new_job_id

REPO = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT_S = 240.0
EXPORT_TIMEOUT_S = 240.0
SENTINEL = "hf_SENTINEL_do_not_log_123"
UNREACHABLE_HUB = "http://127.0.0.1:9"  # the discard port: connection refused at once, nothing leaves the machine
PROMPT = "What is the plural of hero?"  # row 1 of sft_ui/samples/chat.jsonl
GREEDY = {"temperature": 0.0, "max_new_tokens": 24}
CANCEL_LIMIT_S = 3.0

# sft_ui/infer/__main__.py main(), op "load": the "already loaded?" check compares against
# `key[1] or loaded.path.name`, so result=None ("the best available", i.e. final) keeps whatever is warm. After a
# chat with checkpoint-N, a chat without a result (the REST default, the CLI default) silently answers with
# checkpoint-N instead of final.
DEFAULT_RESULT_BUG = ("sft_ui/infer/__main__.py main(): load with result=None after checkpoint-N keeps checkpoint-N "
                      "(key[1] or loaded.path.name) instead of resolving to 'final'")

# sft_ui/worker/export.py main(): a push without --merge writes sft_ui's model card only when the result folder has
# no README.md, but PEFT's save_pretrained always leaves one in a LoRA result: the adapter goes to the Hub with PEFT's
# empty template ("Model Card for Model ID"), base_model set to a local temp path, and no dataset.
PUSH_CARD_BUG = ("sft_ui/worker/export.py main(): push-only keeps PEFT's boilerplate final/README.md (local base path, "
                 "no dataset) instead of writing sft_ui's model card")
# sft_ui/api_results.py chat(): the SSE body is a sync generator wrapping InferenceClient.generate, which holds
# InferenceClient._busy from the first piece to the end. When the HTTP client hangs up mid-answer, Starlette stops
# iterating but never closes that generator, so no cancel is sent and _busy is never released: every later chat
# (REST, UI, ...) on that server blocks until a garbage collection happens to free the generator (seen: > 300 s, while
# the abandoned answer itself took 2.7 s). uvicorn 0.55 reports ASGI spec 2.3, so Starlette cancels the body task on
# http.disconnect; the suspended generator then sits in a reference cycle.
DISCONNECT_BUG = ("sft_ui/api_results.py chat(): a client that disconnects mid-stream leaves InferenceClient.generate "
                  "suspended holding _busy; every later chat on the server blocks")
DISCONNECT_NEXT_CHAT_S = 15.0


# ---- helpers ------------------------------------------------------------------------------------------------------
def env_for(workspace: Path) -> dict[str, str]:
    return server_env(workspace, HF_ENDPOINT=UNREACHABLE_HUB, OMP_NUM_THREADS="1")


def train_jobs(workspace: Path, configs: dict[str, Any]) -> dict[str, Path]:
    """Run `python -m sft_ui.worker JOB_DIR` for each config, all at once; every one must succeed."""
    env = env_for(workspace)
    procs: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    for name, config in configs.items():
        job_dir = create_job_dir(workspace / "jobs", new_job_id(), config)
        with (job_dir / "train.log").open("ab") as log_fh:
            procs[name] = job_dir, subprocess.Popen([sys.executable, "-m", "sft_ui.worker", str(job_dir)],
                                                    cwd=str(REPO), env=env, stdin=subprocess.DEVNULL, stdout=log_fh,
                                                    stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for name, (job_dir, proc) in procs.items():
            code = proc.wait(timeout=TRAIN_TIMEOUT_S)
            log = (job_dir / "train.log").read_text(errors="replace")[-3000:]
            assert code == 0 and (job_dir / "final").is_dir(), f"training {name} failed ({code}):\n{log}"
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
    return {name: job_dir for name, (job_dir, _) in procs.items()}


def inference_workers(workspace: Path) -> list[psutil.Process]:
    """Live `python -m sft_ui.infer` processes serving this workspace (their argv does not name it: the env does)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if "sft_ui.infer" in (proc.info["cmdline"] or []) and proc.info["status"] != psutil.STATUS_ZOMBIE \
                    and proc.environ().get("SFT_UI_WORKSPACE") == str(workspace):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def assert_no_inference_worker(workspace: Path, timeout: float = 15.0) -> None:
    left = inference_workers(workspace)
    gone, alive = psutil.wait_procs(left, timeout=timeout)
    for proc in alive:
        proc.kill()
    assert not alive, f"inference workers still running after shutdown: {[p.pid for p in alive]}"


def files_containing(root: Path, needle: str, extra: tuple[Path, ...] = ()) -> list[str]:
    """Every regular file under root (symlinks not followed) plus `extra` whose bytes contain needle."""
    hits = []
    paths = [Path(d) / f for d, _, names in os.walk(root) for f in names] + list(extra)
    for path in paths:
        if path.is_symlink() or not path.is_file():
            continue
        try:
            if needle.encode() in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


def sse_frames(text: str) -> list[tuple[str, Any]]:
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.partition(": ")[::2] for line in block.split("\n"))
        frames.append((fields.get("event", ""), json.loads(fields.get("data", "null"))))
    return frames


def logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


# ---- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def single_threaded_children() -> Iterator[None]:
    """The InferenceClient and ExportManager build their children's env from os.environ: one OpenMP thread each."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Path]:
    workspace = new_workspace(tmp_path_factory.mktemp("chat-export"), models_cache)
    yield workspace
    kill_processes_mentioning(str(workspace))


@pytest.fixture(scope="module")
def jobs(ws: Path) -> dict[str, Path]:
    """lora: 20 steps with checkpoint-10/-20; full: 20 steps full fine-tune; long: 300 steps full fine-tune, lr 1e-3
    (batch 4, max_length 64: loss ~7.6 -> ~2); empty: a job directory that never trained."""
    lora = tiny_config(max_steps=20, save_steps=10)
    full = tiny_config(method="full", learning_rate=1e-3, max_steps=20)
    long = apply_overrides(load_yaml((REPO / "configs" / "tiny-full.yaml").read_text()),
                           {"max_steps": 300, "learning_rate": 1e-3, "save_steps": 1000, "logging_steps": 50,
                            "per_device_train_batch_size": 4, "max_length": 64})
    trained = train_jobs(ws, {"lora": lora, "full": full, "long": long})
    trained["empty"] = create_job_dir(ws / "jobs", new_job_id(), lora)
    return trained


@pytest.fixture(scope="module")
def client(ws: Path, jobs: dict[str, Path]) -> Iterator[InferenceClient]:
    inference = InferenceClient(ws)
    try:
        yield inference
    finally:
        inference.shutdown()
        assert_no_inference_worker(ws)


@pytest.fixture(scope="module")
def merged(ws: Path, jobs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Merge exports of the LoRA and the full job, run side by side through the ExportManager.

    The server "restarts" while they run: a second ExportManager on the same workspace finds both again
    and follows them to the end, as a restarted server would."""
    manager = ExportManager(ws)
    started = {name: manager.start(jobs[name].name, jobs[name], None, merge=True) for name in ("lora", "full")}
    restarted = ExportManager(ws)
    views = {name: restarted.wait(export.export_id, EXPORT_TIMEOUT_S) for name, export in started.items()}
    for name, export in started.items():
        assert manager.wait(export.export_id, 1) == views[name]  # the same view from its own parent
    for export in started.values():
        if export.proc is not None and export.proc.poll() is None:
            export.proc.kill()
            export.proc.wait(timeout=30)
    return views


# ---- chat through the inference worker ----------------------------------------------------------------------------
def test_chat_streams_pieces_with_the_chat_template(client: InferenceClient, jobs: dict[str, Path]) -> None:
    info = client.load(jobs["lora"], None)
    assert info["result"] == "final" and info["adapter"] is True and info["has_chat_template"] is True
    pieces = list(client.generate(jobs["lora"], None, [{"role": "user", "content": PROMPT}], GREEDY))
    assert len(pieces) > 1, f"expected several streamed pieces, got {pieces!r}"
    assert "".join(pieces).strip(), "the answer is empty"

    from transformers import AutoTokenizer

    from sft_ui.infer.model import LoadedModel

    tokenizer = AutoTokenizer.from_pretrained(jobs["lora"] / "final", local_files_only=True)
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                         tokenize=False)
    assert "<|im_start|>assistant" in text and text.endswith("<|im_start|>assistant\n")
    # the worker's own prompt formatting: exactly the template, ending in the generation prompt
    fake = LoadedModel.__new__(LoadedModel)
    fake.tokenizer, fake.device = tokenizer, "cpu"
    ids = fake.prompt_ids([{"role": "user", "content": PROMPT}])
    assert tokenizer.decode(ids[0]) == text


def test_greedy_generation_is_deterministic(client: InferenceClient, jobs: dict[str, Path]) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    first = "".join(client.generate(jobs["lora"], None, messages, GREEDY))
    second = "".join(client.generate(jobs["lora"], None, messages, GREEDY))
    assert first and first == second


def test_cancel_returns_promptly_and_the_next_generation_works(client: InferenceClient,
                                                               jobs: dict[str, Path]) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    # the untrained base never says <|im_end|>: without the cancel this would run for 2000 tokens (many seconds)
    stream = client.generate(jobs["lora"], None, messages, {"temperature": 0.0, "max_new_tokens": 2000},
                             use_base=True)
    first = next(stream)
    assert isinstance(first, str)
    start = time.monotonic()
    stream.close()
    took = time.monotonic() - start
    assert took < CANCEL_LIMIT_S, f"cancelling took {took:.1f} s"
    after = list(client.generate(jobs["lora"], None, messages, GREEDY))
    assert after and "".join(after).strip()


def test_a_job_without_a_result_is_a_clear_error(client: InferenceClient, jobs: dict[str, Path]) -> None:
    with pytest.raises(InferenceError, match="no result yet"):
        client.load(jobs["empty"], None)
    with pytest.raises(InferenceError, match="no result yet"):
        list(client.generate(jobs["empty"], None, [{"role": "user", "content": "hi"}], GREEDY))
    with pytest.raises(InferenceError, match="unknown result 'checkpoint-999'"):
        client.load(jobs["lora"], "checkpoint-999")
    assert client.load(jobs["lora"], None)["result"] == "final"  # the worker survived the errors


def test_switching_result_reloads(client: InferenceClient, jobs: dict[str, Path]) -> None:
    assert client.load(jobs["lora"], "final")["result"] == "final"
    assert client.load(jobs["lora"], "checkpoint-10")["result"] == "checkpoint-10"
    answer = "".join(client.generate(jobs["lora"], "checkpoint-10", [{"role": "user", "content": PROMPT}], GREEDY))
    assert answer.strip()
    assert client.load(jobs["lora"], "final")["result"] == "final"
    assert client.load(jobs["full"], None)["adapter"] is False  # another job: a full model


def test_default_result_after_a_checkpoint_is_final(client: InferenceClient, jobs: dict[str, Path]) -> None:
    assert client.load(jobs["lora"], "checkpoint-10")["result"] == "checkpoint-10"
    assert client.load(jobs["lora"], None)["result"] == "final"


def test_base_and_fine_tuned_answers_differ_after_a_longer_run(client: InferenceClient,
                                                               jobs: dict[str, Path]) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    tuned = "".join(client.generate(jobs["long"], None, messages, GREEDY))
    base = "".join(client.generate(jobs["long"], None, messages, GREEDY, use_base=True))
    assert tuned.strip() and tuned != base, (tuned, base)
    assert "".join(client.generate(jobs["long"], None, messages, GREEDY)) == tuned  # the base model did not leak


# ---- exports --------------------------------------------------------------------------------------------------------
def test_merged_lora_loads_plainly_and_matches_base_plus_adapter(merged: dict[str, dict[str, Any]],
                                                                 jobs: dict[str, Path], ws: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    view = merged["lora"]
    assert view["status"] == "succeeded", view
    out = Path(view["path"])
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert not any(n.endswith(".partial") for n in os.listdir(out.parent)), os.listdir(out.parent)
    card = (out / "README.md").read_text()
    assert "embedded:tiny-llama" in card and "sample:chat" in card

    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    plain = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    base = AutoModelForCausalLM.from_pretrained(ws / "models" / "embedded-tiny-llama-v1", dtype=torch.float32,
                                                local_files_only=True)
    adapted = PeftModel.from_pretrained(base, str(jobs["lora"] / "final")).eval()
    diff = (logits(plain, ids) - logits(adapted, ids)).abs().max().item()
    assert diff < 1e-4, f"merged logits differ from base+adapter by {diff}"
    with adapted.disable_adapter():  # the adapter changed something: the check above is not vacuous
        assert (logits(adapted, ids) - logits(plain, ids)).abs().max().item() > 1e-4


def test_full_fine_tune_export(merged: dict[str, dict[str, Any]], jobs: dict[str, Path]) -> None:
    from transformers import AutoModelForCausalLM

    view = merged["full"]
    assert view["status"] == "succeeded", view
    out = Path(view["path"])
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "embedded:tiny-llama" in (out / "README.md").read_text()
    ids = __import__("torch").tensor([[1, 5, 17, 42, 99, 7]])
    exported = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    trained = AutoModelForCausalLM.from_pretrained(jobs["full"] / "final", local_files_only=True).eval()
    assert (logits(exported, ids) - logits(trained, ids)).abs().max().item() < 1e-5


def test_adapter_zip_holds_the_adapter(ws: Path, jobs: dict[str, Path]) -> None:
    export = ExportManager(ws).adapter_zip(jobs["lora"].name, jobs["lora"], None)
    assert export.view()["status"] == "succeeded"
    assert export.view() in ExportManager(ws).list_for(jobs["lora"].name)  # still listed after a restart
    with zipfile.ZipFile(export.out) as zf:
        names = {Path(n).name for n in zf.namelist()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    with pytest.raises(ValueError, match="no result yet"):
        ExportManager(ws).adapter_zip(jobs["empty"].name, jobs["empty"], None)


def test_push_without_network_fails_cleanly_and_never_writes_the_token(ws: Path, jobs: dict[str, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", UNREACHABLE_HUB)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    manager = ExportManager(ws)
    export = manager.start(jobs["lora"].name, jobs["lora"], None, merge=True, repo_id="someone/some-model",
                           private=True, token=SENTINEL)
    assert export.proc is not None
    assert SENTINEL not in " ".join(map(str, export.proc.args))
    try:
        cmdline = " ".join(psutil.Process(export.proc.pid).cmdline())
        assert SENTINEL not in cmdline
    except psutil.NoSuchProcess:
        pass
    view = manager.wait(export.export_id, EXPORT_TIMEOUT_S)
    assert export.proc.returncode == 1, view
    assert view["status"] == "failed" and "could not push to the Hugging Face Hub" in view["message"], view
    assert SENTINEL not in json.dumps(view)
    out = Path(view["path"])
    assert (out / "model.safetensors").is_file()  # the merge finished before the push was tried
    assert not [n for n in os.listdir(out.parent) if n.endswith(".partial")]
    assert files_containing(ws, SENTINEL) == []


# ---- REST API of a real server --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[dict[str, Any]]:
    """A real `python app.py --no-ui` with one trained job ('trained') and one stopped before it started ('empty')."""
    root = tmp_path_factory.mktemp("chat-export-api")
    workspace = new_workspace(root, models_cache)
    server = Server(workspace, env_for(workspace), root / "server.log")
    children: list[psutil.Process] = []
    try:
        server.start()
        assert server.proc is not None
        with server.client() as http:
            trained = http.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {
                **TINY, "max_steps": 15}}).json()["job_id"]
            empty = http.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {**TINY, "max_steps": 15}})
            empty_id = empty.json()["job_id"]
            assert http.post(f"/api/sft/jobs/{empty_id}/stop").status_code == 200
            wait_for(lambda: http.get(f"/api/sft/jobs/{trained}").json()["status"] in ("succeeded", "failed"),
                     TRAIN_TIMEOUT_S, 0.3, "the API job to finish")
            job = http.get(f"/api/sft/jobs/{trained}").json()
            assert job["status"] == "succeeded", job
            assert http.get(f"/api/sft/jobs/{empty_id}").json()["status"] == "stopped"
        yield {"server": server, "workspace": workspace, "trained": trained, "empty": empty_id, "root": root}
    finally:
        if server.proc is not None and server.proc.poll() is None:
            try:
                children = psutil.Process(server.proc.pid).children(recursive=True)
            except psutil.Error:
                children = []
            server.proc.send_signal(signal.SIGTERM)  # a clean stop shuts the inference worker down
            try:
                server.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        server.kill()
        gone, alive = psutil.wait_procs(children, timeout=15)
        for proc in alive:
            proc.kill()
        kill_processes_mentioning(str(workspace))
        assert not alive, f"server children left running: {[p.pid for p in alive]}"
        assert_no_inference_worker(workspace)


def test_api_chat_streams_token_frames_then_done(api: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": PROMPT}], **GREEDY}
    with api["server"].client(timeout=120) as http:
        response = http.post(f"/api/sft/jobs/{api['trained']}/chat", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = sse_frames(response.text)
    kinds = [k for k, _ in frames]
    assert kinds.count("token") >= 2 and kinds[-1] == "done" and set(kinds) == {"token", "done"}, kinds
    assert "".join(d["text"] for k, d in frames if k == "token").strip()


def test_api_chat_errors(api: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 4}
    with api["server"].client() as http:
        unknown = http.post("/api/sft/jobs/20260101-000000-abcdef/chat", json=body)
        assert unknown.status_code == 404 and "detail" in unknown.json()
        no_result = http.post(f"/api/sft/jobs/{api['empty']}/chat", json=body)
        assert no_result.status_code == 409 and "no result" in no_result.json()["detail"]
        bad = http.post(f"/api/sft/jobs/{api['trained']}/chat", json={**body, "temperature": -1})
        assert bad.status_code == 422 and "temperature" in bad.json()["detail"]
        bad_result = http.post(f"/api/sft/jobs/{api['trained']}/chat", json={**body, "result": "checkpoint-999"})
        assert bad_result.status_code == 409 and "checkpoint-999" in bad_result.json()["detail"]


def test_api_adapter_zip_export_and_download(api: dict[str, Any]) -> None:
    with api["server"].client() as http:
        started = http.post(f"/api/sft/jobs/{api['trained']}/export", json={"kind": "adapter_zip"})
        assert started.status_code == 202 and started.json()["status"] == "succeeded", started.text
        export_id = started.json()["export_id"]
        assert http.get(f"/api/sft/exports/{export_id}").json()["status"] == "succeeded"
        download = http.get(f"/api/sft/exports/{export_id}/download")
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    archive = api["root"] / "download.zip"
    archive.write_bytes(download.content)
    with zipfile.ZipFile(archive) as zf:
        names = {Path(n).name for n in zf.namelist()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names


def test_api_merge_export_polls_to_succeeded(api: dict[str, Any]) -> None:
    with api["server"].client() as http:
        started = http.post(f"/api/sft/jobs/{api['trained']}/export", json={"kind": "merge"})
        assert started.status_code == 202, started.text
        export_id = started.json()["export_id"]
        view = wait_for(lambda: (v := http.get(f"/api/sft/exports/{export_id}").json())["status"] in (
            "succeeded", "failed") and v, EXPORT_TIMEOUT_S, 0.5, "the merge export")
        assert view["status"] == "succeeded", view
        assert (Path(view["path"]) / "model.safetensors").is_file()
        assert http.get(f"/api/sft/exports/{export_id}/download").status_code == 409  # merged models stay on disk
        assert http.get("/api/sft/exports/exp-00000000").status_code == 404


@pytest.fixture(scope="module")
def api_push(api: dict[str, Any]) -> dict[str, Any]:
    """Push-only exports of the API job with X-HF-Token: a sentinel (no network): every response text is kept."""
    texts: list[str] = []
    with api["server"].client() as http:
        missing = http.post(f"/api/sft/jobs/{api['trained']}/export", json={"kind": "push"},
                            headers={"X-HF-Token": SENTINEL})
        bad = http.post(f"/api/sft/jobs/{api['trained']}/export", json={"kind": "push", "repo_id": "no slash"},
                        headers={"X-HF-Token": SENTINEL})
        started = http.post(f"/api/sft/jobs/{api['trained']}/export",
                            json={"kind": "push", "repo_id": "someone/some-model"}, headers={"X-HF-Token": SENTINEL})
        texts += [missing.text, bad.text, started.text]
        assert started.status_code == 202, started.text
        export_id = started.json()["export_id"]

        def finished() -> dict[str, Any] | None:
            response = http.get(f"/api/sft/exports/{export_id}")
            texts.append(response.text)
            view = response.json()
            return view if view["status"] in ("succeeded", "failed") else None

        view = wait_for(finished, EXPORT_TIMEOUT_S, 0.5, "the push export")
        job = http.get(f"/api/sft/jobs/{api['trained']}")
        texts.append(job.text)
    return {"missing": missing, "bad": bad, "view": view, "texts": texts, "job_dir": Path(job.json()["job_dir"])}


def test_api_push_needs_a_repo_and_never_leaks_the_token(api: dict[str, Any], api_push: dict[str, Any]) -> None:
    assert api_push["missing"].status_code == 422 and "repo_id" in api_push["missing"].json()["detail"]
    assert api_push["bad"].status_code == 422 and "repo_id" in api_push["bad"].json()["detail"]
    view = api_push["view"]
    assert view["status"] == "failed" and "could not push to the Hugging Face Hub" in view["message"], view
    assert not [t for t in api_push["texts"] if SENTINEL in t]
    assert files_containing(api["workspace"], SENTINEL, (api["root"] / "server.log",)) == []


def test_pushed_adapter_carries_the_sft_ui_model_card(api_push: dict[str, Any]) -> None:
    card = (api_push["job_dir"] / "final" / "README.md").read_text()  # the folder a push-only export uploads
    assert "sample:chat" in card and "embedded:tiny-llama" in card, card[:600]


def test_api_chat_client_disconnect_frees_the_model(api: dict[str, Any]) -> None:
    """Runs last against this server: when it fails, the server's chat stays blocked until it is shut down."""
    # the untrained base never stops by itself: 2000 tokens take well over DISCONNECT_NEXT_CHAT_S (a short answer
    # would be sent in full before the server notices the hang-up)
    long = {"messages": [{"role": "user", "content": PROMPT}], "temperature": 0.0, "max_new_tokens": 2000,
            "use_base": True}
    with api["server"].client(timeout=120, check_tracebacks=False) as http, \
            http.stream("POST", f"/api/sft/jobs/{api['trained']}/chat", json=long) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # one piece arrived: hang up (the traceback hook would have read the whole body first)
    with api["server"].client(timeout=DISCONNECT_NEXT_CHAT_S) as http:
        try:
            after = http.post(f"/api/sft/jobs/{api['trained']}/chat", json={
                "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0, "max_new_tokens": 4})
        except httpx.ReadTimeout:
            pytest.fail(f"the next chat did not answer within {DISCONNECT_NEXT_CHAT_S:.0f} s after a client hung up")
    assert after.status_code == 200 and "event: done" in after.text


# ---- CLI ------------------------------------------------------------------------------------------------------------
def test_cli_chat(ws: Path, jobs: dict[str, Path]) -> None:
    before = {p.pid for p in inference_workers(ws)}  # the module's own client may hold one
    run = subprocess.run([sys.executable, "-m", "sft_ui", "chat", jobs["lora"].name, "--workspace", str(ws),
                          "--max-new-tokens", "8", "--temperature", "0"], input="hello\n\n", capture_output=True,
                         text=True, cwd=str(REPO), env=env_for(ws), timeout=TRAIN_TIMEOUT_S)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "model>" in run.stdout and "loaded final" in run.stdout, run.stdout
    assert not [p.pid for p in inference_workers(ws) if p.pid not in before], "the CLI left its inference worker"


def test_cli_chat_unknown_job(ws: Path, jobs: dict[str, Path]) -> None:
    run = subprocess.run([sys.executable, "-m", "sft_ui", "chat", "20260101-000000-abcdef", "--workspace", str(ws)],
                         input="", capture_output=True, text=True, cwd=str(REPO), env=env_for(ws), timeout=60)
    assert run.returncode != 0 and "no job" in run.stderr


def test_cli_export_merge(ws: Path, jobs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    run = subprocess.run([sys.executable, "-m", "sft_ui", "export", jobs["lora"].name, "--merge", "--out", str(out),
                          "--workspace", str(ws)], capture_output=True, text=True, cwd=str(REPO), env=env_for(ws),
                         timeout=EXPORT_TIMEOUT_S)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert f"merged model: {out}" in run.stdout
