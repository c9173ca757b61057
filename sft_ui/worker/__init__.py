"""The training worker: the only code that imports torch, transformers, trl and peft.

Run as `python -m sft_ui.worker JOB_DIR [--resume] [--attempt N]`. Heavy imports happen inside
`run.train`, after the SIGTERM handler is installed, so a stop during start-up still works.
"""
