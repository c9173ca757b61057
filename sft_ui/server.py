"""Builds the one server process: REST API under /api/sft and the Gradio studio at /, on one port.

No torch, transformers, trl or peft is imported here or by anything this module imports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from fastapi import FastAPI

from . import __version__
from .api import build_router, install_error_handlers
from .api_results import build_results_router
from .auth import BasicAuthMiddleware, parse_users
from .exports import ExportManager
from .inference import InferenceClient
from .jobs import JobManager
from .settings import Settings, load_settings
from .system import gpus

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
UI_SESSION_CAPACITY = 200


def create_app(settings: Settings, manager: JobManager, with_ui: bool = True,
               inference: InferenceClient | None = None, exports: ExportManager | None = None) -> FastAPI:
    """The FastAPI app with the API routes and (optionally) the Gradio UI mounted at /."""
    inference = inference or InferenceClient(settings.workspace)
    exports = exports or ExportManager(settings.workspace)
    app = FastAPI(title="sft_ui", version=__version__, description="Supervised fine-tuning studio (TRL) REST API")
    app.state.inference = inference
    install_error_handlers(app)
    app.include_router(build_router(manager))
    app.include_router(build_results_router(manager, inference, exports))
    users = parse_users(settings.auth)
    if users:
        app.add_middleware(BasicAuthMiddleware, users=users)
    if with_ui:
        import gradio as gr

        from .ui.app import CSS, build_ui

        blocks = build_ui(manager, settings, inference, exports)
        blocks.queue(default_concurrency_limit=4, max_size=256)
        blocks.state_session_capacity = UI_SESSION_CAPACITY  # each page load keeps state; bound the memory
        app = gr.mount_gradio_app(app, blocks, path="/", max_file_size=f"{settings.max_upload_mb}mb",
                                  ssr_mode=False, show_error=True, enable_monitoring=False, css=CSS,
                                  auth=list(users.items()) or None)
    return app


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="Serve the sft_ui studio and REST API.")
    parser.add_argument("--host", help="bind address (default 127.0.0.1 or GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, help="port (default 7860, or PORT / GRADIO_SERVER_PORT)")
    parser.add_argument("--workspace", help="folder for the database, jobs and models (default ./workspace)")
    parser.add_argument("--max-concurrent", type=int, help="jobs that train at once (default 1)")
    parser.add_argument("--allow-remote-code", action="store_true", help="permit trust_remote_code in configs")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without SFT_UI_AUTH")
    parser.add_argument("--no-ui", action="store_true", help="serve the REST API only")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    return settings.with_overrides(
        host=args.host, port=args.port, max_concurrent=args.max_concurrent,
        workspace=Path(args.workspace).expanduser().resolve() if args.workspace else None,
        allow_remote_code=True if args.allow_remote_code else None,
    )


def serve_main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        parse_users(settings.auth)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if settings.host not in LOOPBACK and not settings.auth:
        sys.stderr.write(f"warning: binding to {settings.host} exposes training (which runs code) to the network "
                         "without a password. Set SFT_UI_AUTH=user:password, or pass --insecure if you mean it.\n")
        if not (args.insecure or os.environ.get("SPACE_ID")):  # a Space is public by design
            return 2
    import uvicorn

    settings.workspace.mkdir(parents=True, exist_ok=True)
    manager = JobManager(settings, gpus=[g["index"] for g in gpus()])
    manager.start()
    app = create_app(settings, manager, with_ui=not args.no_ui)
    log.info("sft_ui %s: http://%s:%d  (workspace %s)", __version__, settings.host, settings.port, settings.workspace)
    try:
        uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=2)
    finally:
        manager.close()
        app.state.inference.shutdown()
    return 0
