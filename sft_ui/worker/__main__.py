"""Entry point: `python -m sft_ui.worker JOB_DIR [--resume] [--attempt N]`."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sft_ui.worker", description="Train one job directory.")
    parser.add_argument("job_dir", type=Path, help="folder holding config.yaml; outputs go there too")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    parser.add_argument("--attempt", type=int, default=1, help="attempt number, recorded in every event")
    args = parser.parse_args(argv)
    from .run import run_job  # after argument parsing: --help stays instant

    code = run_job(args.job_dir.resolve(), resume=args.resume, attempt=args.attempt)
    # Tearing down torch/transformers objects at exit takes ~1 s; the job's files are already final.
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
