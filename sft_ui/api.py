"""REST API under /api/sft: thin routes that parse, call the JobManager, and map errors to status codes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from . import __version__, catalog
from .config import ConfigError, JobConfig, apply_overrides, parse_config
from .data import DatasetError
from .jobs import JobManager
from .status import InvalidTransition, JobNotFound, JobStatus
from .system import system_info

STREAM_POLL_S = 0.25


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    config: dict[str, Any] | None = Field(None, description="A full or partial JobConfig (flat keys).")
    config_id: str | None = Field(None, description="A saved config id or a preset id such as 'tiny-lora'.")
    overrides: dict[str, Any] | None = Field(None, description="Fields that replace those of the config.")


class SaveConfigRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=120)
    config: dict[str, Any]


class FieldErrorOut(BaseModel):
    field: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer: a sentence a person can act on, plus per-field errors for a 422."""

    detail: str
    errors: list[FieldErrorOut] | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in (
        (400, "malformed request body"), (403, "not allowed (e.g. a read-only preset)"), (404, "not found"),
        (409, "conflicts with the job's state"), (422, "invalid input, with the fields to fix"))
}


class ApiError(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def _config_errors(exc: ConfigError) -> JSONResponse:
    errors = [{"field": e.field, "message": e.message} for e in exc.errors]
    return JSONResponse(status_code=422, content={"detail": str(exc) or "invalid config", "errors": errors})


def install_error_handlers(app: FastAPI) -> None:
    """Every error is JSON {"detail": ...} a person can act on; never a traceback."""

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, exc: JobNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(InvalidTransition)
    async def _conflict(request: Request, exc: InvalidTransition) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(ConfigError)
    async def _config(request: Request, exc: ConfigError) -> JSONResponse:
        return _config_errors(exc)

    @app.exception_handler(DatasetError)
    async def _dataset(request: Request, exc: DatasetError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc), "errors": [
            {"field": "dataset_name", "message": m} for m in (exc.errors or [str(exc)])]})

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    @app.exception_handler(RequestValidationError)
    async def _request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body",
                   "message": e.get("msg", "")} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
        return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


def _resolve_config(manager: JobManager, body: TrainRequest) -> JobConfig:
    if (body.config is None) == (body.config_id is None):
        raise ApiError(422, "give exactly one of 'config' or 'config_id'")
    if body.config is not None:
        config = parse_config(body.config)
    else:
        stored = _find_config(manager, str(body.config_id))
        config = parse_config(stored["config"])
    return apply_overrides(config, body.overrides) if body.overrides else config


def _find_config(manager: JobManager, config_id: str) -> dict[str, Any]:
    try:
        return catalog.find_config(manager.store, config_id)
    except catalog.ConfigNotFound as exc:
        raise ApiError(404, str(exc)) from None


def build_router(manager: JobManager) -> APIRouter:
    router = APIRouter(prefix="/api/sft", responses=ERROR_RESPONSES)

    @router.post("/train", status_code=201, summary="Queue a training job")
    def train(body: TrainRequest) -> dict[str, Any]:
        return manager.submit(_resolve_config(manager, body))

    @router.get("/jobs", summary="List jobs, newest first")
    def list_jobs(status: JobStatus | None = None, limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0, le=10_000_000)) -> dict[str, Any]:
        jobs, total = manager.list(status.value if status else None, limit, offset)
        return {"jobs": jobs, "total": total}

    @router.get("/jobs/{job_id}", summary="One job")
    def get_job(job_id: str) -> dict[str, Any]:
        return manager.get(job_id)

    @router.post("/jobs/{job_id}/stop", summary="Stop a job (idempotent)")
    def stop_job(job_id: str) -> dict[str, Any]:
        job, message = manager.stop(job_id)
        return {**job, "message": message}

    @router.post("/jobs/{job_id}/resume", summary="Resume a stopped, failed or interrupted job")
    def resume_job(job_id: str) -> dict[str, Any]:
        return manager.resume(job_id)

    @router.delete("/jobs/{job_id}", summary="Delete a finished job and its files")
    def delete_job(job_id: str) -> dict[str, Any]:
        manager.delete(job_id)
        return {"job_id": job_id, "deleted": True}

    @router.get("/jobs/{job_id}/logs", summary="Log text from a byte offset")
    def job_logs(job_id: str, offset: int = Query(0, ge=0), max_bytes: int = Query(262144, ge=1, le=4_194_304)
                 ) -> dict[str, Any]:
        return manager.read_log(job_id, offset, max_bytes)

    @router.get("/jobs/{job_id}/metrics", summary="Metric points after a step")
    def job_metrics(job_id: str, since_step: int = Query(-1, ge=-1),
                    limit: int = Query(5000, ge=1, le=100_000)) -> Response:
        """`{"points": [...], "next_since_step"}`: the stored JSON is passed on as is (no parse/re-encode)."""
        manager.get(job_id)  # 404 for an unknown job
        rows = manager.store.metrics_json(job_id, since_step, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        if more and rows and any(step != rows[-1][0] for step, _ in rows):
            rows = [r for r in rows if r[0] != rows[-1][0]]  # never split one step's points across pages
        next_step = rows[-1][0] if more and rows else None
        body = '{"points":[' + ",".join(text for _, text in rows) + '],"next_since_step":' + json.dumps(next_step) + "}"
        return Response(body, media_type="application/json")

    @router.get("/jobs/{job_id}/stream", summary="Server-Sent Events: log text and metric points")
    async def job_stream(job_id: str, request: Request) -> StreamingResponse:
        manager.get(job_id)  # 404 before the stream starts
        log_offset, step = _parse_event_id(request.headers.get("last-event-id", ""))
        return StreamingResponse(_sse(manager, job_id, log_offset, step, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.post("/configs", status_code=201, summary="Save a named config")
    def save_config(body: SaveConfigRequest, overwrite: bool = False) -> dict[str, Any]:
        config = parse_config(body.config)
        try:
            config_id = catalog.save_config(manager.store, body.name, config, overwrite)
        except catalog.ReadOnlyConfig as exc:
            raise ApiError(409, str(exc)) from None
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        except FileExistsError:
            raise ApiError(409, f"a config named '{body.name}' exists; use ?overwrite=true to replace it") from None
        manager.touch()
        return {"config_id": config_id, "name": body.name}

    @router.get("/configs", summary="Saved configs and built-in presets")
    def list_configs() -> dict[str, Any]:
        return {"configs": catalog.all_configs(manager.store)}

    @router.get("/configs/{config_id}", summary="One config")
    def get_config(config_id: str) -> dict[str, Any]:
        return _find_config(manager, config_id)

    @router.delete("/configs/{config_id}", summary="Delete a saved config")
    def delete_config(config_id: str) -> dict[str, Any]:
        try:
            catalog.delete_config(manager.store, config_id)
        except catalog.ReadOnlyConfig as exc:
            raise ApiError(403, str(exc)) from None
        except catalog.ConfigNotFound as exc:
            raise ApiError(404, str(exc)) from None
        manager.touch()
        return {"config_id": config_id, "deleted": True}

    @router.get("/health", summary="Liveness and queue counts")
    def health() -> dict[str, Any]:
        counts = manager.counts()
        return {"status": "ok", "version": __version__, "running": counts.get("running", 0) + counts.get(
            "stopping", 0), "queued": counts.get("queued", 0)}

    @router.get("/system", summary="CPU, memory, disk and GPUs")
    def system() -> dict[str, Any]:
        return system_info(manager.settings.workspace)

    @router.get("/schema", summary="JobConfig JSON schema (field types, bounds, help)")
    def schema() -> dict[str, Any]:
        return JobConfig.model_json_schema()

    return router


def _parse_event_id(text: str) -> tuple[int, int]:
    try:
        a, b = text.split(":")
        return max(0, int(a)), max(-1, int(b))
    except ValueError:
        return 0, -1


def _frame(event: Literal["log", "metric", "status", "end"], data: dict[str, Any], event_id: str) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data)}\n\n"


async def _sse(manager: JobManager, job_id: str, log_offset: int, step: int, request: Request) -> AsyncIterator[str]:
    """Log chunks and metric points as they arrive; event ids 'LOGOFFSET:STEP' let a reconnect resume."""
    last_status = None
    while True:
        try:
            job = manager.get(job_id)
        except JobNotFound:
            yield _frame("end", {"status": "deleted"}, f"{log_offset}:{step}")
            return
        chunk = manager.read_log(job_id, log_offset)
        points = [p for p in manager.metrics(job_id, step) if p.get("kind") == "train"]
        if chunk["text"]:
            log_offset = chunk["next_offset"]
            yield _frame("log", {"text": chunk["text"]}, f"{log_offset}:{step}")
        for point in points:
            step = max(step, int(point["step"]))
            yield _frame("metric", point, f"{log_offset}:{step}")
        if job["status"] != last_status:
            last_status = job["status"]
            yield _frame("status", {"status": job["status"], "progress": job["progress"]}, f"{log_offset}:{step}")
        if chunk["complete"] and JobStatus(job["status"]).is_terminal():
            yield _frame("end", {"status": job["status"]}, f"{log_offset}:{step}")
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(STREAM_POLL_S)
