"""The web server process never imports torch/transformers/trl/peft (DESIGN.md's first rule)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "trl", "peft")

CODE = """
import sys
from pathlib import Path
from sft_ui.settings import Settings
from sft_ui.jobs import JobManager
from sft_ui.server import create_app
settings = Settings(workspace=Path(sys.argv[1]))
manager = JobManager(settings)
app = create_app(settings, manager, with_ui=True)
from sft_ui import cli, api, data, config  # noqa: F401
heavy = [m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


def test_building_the_server_imports_no_training_library(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "ws")], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert "HEAVY=\n" in out or out.strip().endswith("HEAVY="), out
