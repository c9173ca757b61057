"""sft_ui: a browser studio for supervised fine-tuning with TRL."""

__version__ = "0.1.0"
