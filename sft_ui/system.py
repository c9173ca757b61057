"""Machine facts for the System view and `/api/sft/system`, without importing torch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

NVIDIA_SMI_TIMEOUT_S = 3.0


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs from nvidia-smi (name, memory used/total in MiB); empty where there are none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            found.append({"index": parts[0], "name": parts[1], "memory_used_mib": _num(parts[2]),
                          "memory_total_mib": _num(parts[3]), "utilization_pct": _num(parts[4]) if len(parts) > 4
                          else None})
    return found


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def system_info(workspace: Path, with_gpus: bool = True) -> dict[str, Any]:
    mem = psutil.virtual_memory()
    disk = shutil.disk_usage(workspace if workspace.exists() else workspace.parent)
    return {
        "cpu": {"count": psutil.cpu_count(), "percent": psutil.cpu_percent(interval=None)},
        "memory": {"total_mb": mem.total // 2**20, "used_mb": (mem.total - mem.available) // 2**20,
                   "percent": mem.percent},
        "disk": {"path": str(workspace), "total_gb": round(disk.total / 2**30, 1),
                 "used_gb": round(disk.used / 2**30, 1), "free_gb": round(disk.free / 2**30, 1)},
        "gpus": gpus() if with_gpus else [],
    }
