"""Gradio Blocks studio: one module per tab, each `build(...)` returns its components."""
