"""The inference worker: a long-lived process that loads a job's result once and streams tokens.

Run as `python -m sft_ui.infer`; it speaks JSON lines on stdin/stdout (see `protocol.py` on the
server side). Only this process (and the training worker) imports torch.
"""
