"""Server and worker settings from environment variables (and CLI flags that override them).

One `Settings` object is built at start and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

STOP_GRACE_S_DEFAULT = 30.0


def _env_int(env: dict[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None


def _env_float(env: dict[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None


def default_workspace(env: dict[str, str] | None = None) -> Path:
    """`SFT_UI_WORKSPACE`, else `/data/sft_ui` on a Space with persistent storage, else `./workspace`."""
    env = dict(os.environ) if env is None else env
    if env.get("SFT_UI_WORKSPACE"):
        return Path(env["SFT_UI_WORKSPACE"]).expanduser().resolve()
    if env.get("SPACE_ID") and Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/sft_ui")
    return Path("workspace").resolve()


@dataclass(frozen=True)
class Settings:
    workspace: Path
    host: str = "127.0.0.1"
    port: int = 7860
    max_concurrent: int = 1
    stop_grace_s: float = STOP_GRACE_S_DEFAULT
    poll_interval_s: float = 0.25
    demo: bool = False
    demo_max_steps: int = 200
    max_upload_mb: int = 100
    allow_remote_code: bool = False
    auth: str | None = None
    data_dirs: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def db_path(self) -> Path:
        return self.workspace / "sft_ui.db"

    @property
    def jobs_dir(self) -> Path:
        return self.workspace / "jobs"

    @property
    def models_dir(self) -> Path:
        return self.workspace / "models"

    @property
    def uploads_dir(self) -> Path:
        return self.workspace / "uploads"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _auth_spec(env: dict[str, str]) -> str | None:
    """SFT_UI_AUTH, or the contents of SFT_UI_AUTH_FILE (one user:password per line)."""
    if env.get("SFT_UI_AUTH_FILE"):
        try:
            return Path(env["SFT_UI_AUTH_FILE"]).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ValueError(f"SFT_UI_AUTH_FILE cannot be read: {exc.strerror}") from None
    return env.get("SFT_UI_AUTH") or None


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Settings from the environment; raises ValueError naming a malformed variable."""
    env = dict(os.environ) if env is None else env
    demo = env.get("SFT_UI_DEMO", "").lower() in ("1", "true", "yes")
    port = _env_int(env, "PORT", 0) or _env_int(env, "GRADIO_SERVER_PORT", 7860)
    data_dirs = tuple(Path(p).expanduser().resolve() for p in env.get("SFT_UI_DATA_DIRS", "").split(os.pathsep) if p)
    settings = Settings(
        workspace=default_workspace(env),
        host=env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=port,
        max_concurrent=max(1, _env_int(env, "SFT_UI_MAX_CONCURRENT", 1)),
        stop_grace_s=max(0.0, _env_float(env, "SFT_UI_STOP_GRACE_S", STOP_GRACE_S_DEFAULT)),
        demo=demo,
        max_upload_mb=max(1, _env_int(env, "SFT_UI_MAX_UPLOAD_MB", 100)),
        allow_remote_code=env.get("SFT_UI_ALLOW_REMOTE_CODE", "").lower() in ("1", "true", "yes"),
        auth=_auth_spec(env),
        data_dirs=data_dirs,
    )
    if demo:
        settings = replace(settings, max_concurrent=1)
    return settings
