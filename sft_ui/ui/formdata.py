"""Form values <-> JobConfig, without Gradio: the form is generated from JobConfig's field metadata.

Widgets hold strings, numbers and booleans; these functions turn a list of widget values (in
`field_specs()` order) into a validated JobConfig and back, so form -> config -> form is the identity.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, FieldError, FieldSpec, JobConfig, field_specs, parse_config

EMPTY_CHOICE = "(auto)"

# Form sections: (title, groups shown in it, open by default)
SECTIONS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("Model", ("model",), True),
    ("Dataset", ("dataset",), True),
    ("Method & LoRA", ("method", "lora"), True),
    ("Training", ("training",), True),
    ("Advanced", ("advanced",), False),
)


def specs() -> list[FieldSpec]:
    return field_specs()


def _list_text(values: list[str]) -> str:
    return ", ".join(values)


def _mapping_text(mapping: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def to_widget(spec: FieldSpec, value: Any) -> Any:
    """A config value as its widget holds it."""
    if spec.kind == "list":
        return _list_text(list(value or []))
    if spec.kind == "mapping":
        return _mapping_text(dict(value or {}))
    if spec.kind == "choice" and value is None:
        return EMPTY_CHOICE
    return value


def _parse_mapping(text: str) -> dict[str, str] | None:
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            key, sep, value = part.partition(":")
        if not sep or not key.strip() or not value.strip():
            return None
        mapping[key.strip()] = value.strip()
    return mapping


def from_widget(spec: FieldSpec, value: Any) -> Any:
    """A widget's value as the config wants it; leaves bad values for JobConfig to reject by name."""
    if spec.kind == "list":
        return [p.strip() for p in str(value or "").split(",") if p.strip()]
    if spec.kind == "mapping":
        parsed = _parse_mapping(str(value or ""))
        if parsed is None:
            raise ConfigError([FieldError(spec.name, f"{spec.name} must look like role=column, role=column")])
        return parsed
    if spec.kind == "choice" and value in (EMPTY_CHOICE, "", None):
        return None if spec.optional else value
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind in ("int", "float") and value in ("", None):
        return None if spec.optional else value
    if spec.kind == "int" and spec.optional and value == 0:
        return None  # number widgets show an empty optional as 0; every optional count here is >= 1
    if spec.kind == "str" and isinstance(value, str):
        return value.strip() if spec.name != "name" else value
    return value


def config_to_values(config: JobConfig) -> list[Any]:
    data = config.to_dict()
    return [to_widget(spec, data[spec.name]) for spec in specs()]


def values_to_dict(values: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    all_specs = specs()
    if len(values) != len(all_specs):
        raise ValueError(f"expected {len(all_specs)} form values, got {len(values)}")
    data: dict[str, Any] = {}
    errors: list[FieldError] = []
    for spec, value in zip(all_specs, values, strict=True):
        try:
            data[spec.name] = from_widget(spec, value)
        except ConfigError as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigError(errors)
    return data


def values_to_config(values: list[Any] | tuple[Any, ...]) -> JobConfig:
    return parse_config(values_to_dict(values))
