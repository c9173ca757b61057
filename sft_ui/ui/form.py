"""The config form: one widget per JobConfig field, grouped in accordions, help text as info."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..config import FieldSpec, JobConfig
from .formdata import EMPTY_CHOICE, SECTIONS, config_to_values, specs, to_widget


@dataclass
class ConfigForm:
    components: dict[str, gr.components.Component]

    @property
    def inputs(self) -> list[gr.components.Component]:
        """Widgets in field_specs() order (what values_to_config expects)."""
        return [self.components[s.name] for s in specs()]

    def updates(self, config: JobConfig) -> list[Any]:
        return config_to_values(config)


def _widget(spec: FieldSpec, value: Any) -> gr.components.Component:
    label = spec.name
    info = spec.description + (f" ({spec.rule})" if spec.rule and spec.kind in ("int", "float") else "")
    value = to_widget(spec, value)
    elem_id = f"field-{spec.name}"
    if spec.kind == "bool":
        return gr.Checkbox(value=value, label=label, info=info, elem_id=elem_id)
    if spec.kind == "choice":
        choices = ([EMPTY_CHOICE] if spec.optional else []) + [str(c) for c in spec.choices]
        return gr.Dropdown(choices=choices, value=value, label=label, info=info, elem_id=elem_id)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, label=label, info=info, precision=0 if spec.kind == "int" else None,
                         elem_id=elem_id)
    placeholder = {"list": "comma separated, e.g. q_proj, v_proj", "mapping": "role=column, e.g. "
                   "instruction=question, output=answer"}.get(spec.kind, "")
    return gr.Textbox(value=value, label=label, info=info, placeholder=placeholder, elem_id=elem_id)


def build_form(config: JobConfig) -> ConfigForm:
    """Lay the form out in the current Blocks context."""
    data = config.to_dict()
    all_specs = specs()
    components: dict[str, gr.components.Component] = {}
    for spec in (s for s in all_specs if s.group == "general"):
        components[spec.name] = _widget(spec, data[spec.name])
    for title, groups, open_ in SECTIONS:
        with gr.Accordion(title, open=open_, elem_id=f"section-{title.split()[0].lower()}"):
            group_specs = [s for s in all_specs if s.group in groups]
            for start in range(0, len(group_specs), 3):
                with gr.Row():
                    for spec in group_specs[start:start + 3]:
                        components[spec.name] = _widget(spec, data[spec.name])
    return ConfigForm(components)
