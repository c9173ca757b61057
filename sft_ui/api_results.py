"""REST routes for trying and shipping a result: streaming chat and exports."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Header
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from .api import ERROR_RESPONSES, ApiError
from .exports import ExportError, ExportManager
from .inference import InferenceClient, InferenceError
from .jobs import JobManager
from .results import ResultError, resolve_result


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=100_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=200)
    result: str | None = Field(None, description="'final' (default) or 'checkpoint-N'")
    use_base: bool = Field(False, description="answer with the base model instead (adapter disabled)")
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_new_tokens: int = Field(128, ge=1, le=4096, description="capped by the model's context length")
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["adapter_zip", "merge", "push"]
    result: str | None = None
    repo_id: str | None = Field(None, description="for push: 'user-or-org/name'")
    private: bool = True
    merged: bool = Field(False, description="for push: push the merged model instead of the adapter")


def _job_dir(manager: JobManager, job_id: str) -> Path:
    return Path(manager.get(job_id)["job_dir"])  # JobNotFound -> 404


async def _chat_frames(inference: InferenceClient, job_dir: Path, result: str | None, messages: list[dict[str, str]],
                       params: dict[str, Any], use_base: bool) -> AsyncIterator[str]:
    """SSE frames of a generation that runs in its own thread.

    A client that hangs up cancels this coroutine; the `finally` tells the thread, which then closes
    the generation (cancelling it in the worker and releasing the one-at-a-time lock) on its own.
    """
    loop = asyncio.get_running_loop()
    frames: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    hang_up = threading.Event()

    def put(kind: str, text: str) -> None:
        try:
            loop.call_soon_threadsafe(frames.put_nowait, (kind, text))
        except RuntimeError:  # the event loop is gone (server shutting down)
            hang_up.set()

    def pump() -> None:
        pieces = inference.generate(job_dir, result, messages, params, use_base)
        try:
            for piece in pieces:
                if hang_up.is_set():
                    return
                put("token", piece)
            put("done", "")
        except InferenceError as exc:
            put("error", str(exc))
        finally:
            pieces.close()

    threading.Thread(target=pump, name="sft-ui-chat", daemon=True).start()
    try:
        while True:
            kind, text = await frames.get()
            if kind == "token":
                yield f"event: token\ndata: {json.dumps({'text': text})}\n\n"
            elif kind == "done":
                yield "event: done\ndata: {}\n\n"
                return
            else:
                yield f"event: error\ndata: {json.dumps({'detail': text})}\n\n"
                return
    finally:
        hang_up.set()


def build_results_router(manager: JobManager, inference: InferenceClient, exports: ExportManager) -> APIRouter:
    router = APIRouter(prefix="/api/sft", responses=ERROR_RESPONSES)

    @router.post("/jobs/{job_id}/chat", summary="Chat with a job's result (Server-Sent Events of text pieces)")
    def chat(job_id: str, body: ChatRequest) -> StreamingResponse:
        job_dir = _job_dir(manager, job_id)
        try:
            resolve_result(job_dir, body.result)
        except ResultError as exc:
            raise ApiError(409, str(exc)) from None
        params = {"temperature": body.temperature, "top_p": body.top_p, "max_new_tokens": body.max_new_tokens,
                  "seed": body.seed}
        messages = [m.model_dump() for m in body.messages]

        frames = _chat_frames(inference, job_dir, body.result, messages, params, body.use_base)
        return StreamingResponse(frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.post("/jobs/{job_id}/export", status_code=202, summary="Export a result: zip, merge, or push")
    def export(job_id: str, body: ExportRequest, x_hf_token: str | None = Header(None)) -> dict[str, Any]:
        job_dir = _job_dir(manager, job_id)
        try:
            if body.kind == "adapter_zip":
                return exports.adapter_zip(job_id, job_dir, body.result).view()
            if body.kind == "push" and not body.repo_id:
                raise ExportError("repo_id is required for a push")
            found = exports.start(job_id, job_dir, body.result, merge=body.kind == "merge" or body.merged,
                                  repo_id=body.repo_id if body.kind == "push" else None, private=body.private,
                                  token=x_hf_token)
            return found.view()
        except ExportError as exc:
            raise ApiError(409 if "no result" in str(exc) else 422, str(exc)) from None

    @router.get("/exports/{export_id}", summary="Status of an export")
    def export_status(export_id: str) -> dict[str, Any]:
        try:
            return exports.get(export_id).view()
        except KeyError:
            raise ApiError(404, f"export {export_id!r} not found") from None

    @router.get("/exports/{export_id}/download", summary="Download an adapter zip")
    def export_download(export_id: str) -> FileResponse:
        try:
            found = exports.get(export_id)
        except KeyError:
            raise ApiError(404, f"export {export_id!r} not found") from None
        if found.kind != "adapter_zip" or not found.out.is_file():
            raise ApiError(409, "only a finished adapter_zip export can be downloaded; merged models stay on disk "
                                f"at {found.out}")
        return FileResponse(found.out, filename=found.out.name, media_type="application/zip")

    return router
