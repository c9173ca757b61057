"""`JobConfig`: the one definition of every training parameter.

The form, the CLI `--set` parser, the REST schema and the README reference are all generated from the
field metadata here, so a parameter is defined once. The YAML/JSON form is flat, like a `trl sft`
config, and uses TRL's argument names. This module never imports torch: it produces plain dicts.
"""

from __future__ import annotations

import difflib
import json
import reprlib
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
EMBEDDED_MODEL = "embedded:tiny-llama"
SAMPLE_CHAT = "sample:chat"
MAX_YAML_DEPTH = 64  # a flat config needs 2-3 levels; composing recurses once per level

GROUPS = ("general", "model", "dataset", "method", "lora", "training", "advanced")
DATASET_FORMATS = ("auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text")
COLUMN_ROLES = (
    "messages", "conversations", "prompt", "completion", "text", "instruction", "input", "output", "system"
)
SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
)


def _field(default: Any, group: str, description: str, **kwargs: Any) -> Any:
    """A pydantic Field carrying the form group; the description doubles as UI info text."""
    return Field(default, description=description, json_schema_extra={"group": group}, **kwargs)


class JobConfig(BaseModel):
    """Everything a researcher sets for one SFT run. Output location is the job store's business."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    name: str = _field("", "general", "Human label for the run (shown in the job table).", max_length=120)

    model_name_or_path: str = _field(
        EMBEDDED_MODEL, "model",
        "Local model folder or Hub id; 'embedded:tiny-llama' is the built-in random-init demo model.",
        min_length=1, max_length=512,
    )
    trust_remote_code: bool = _field(
        False, "model", "Run modelling code shipped with the model (only if you trust it).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _field(
        "auto", "model", "Weight dtype when loading the model (TRL's 'dtype', formerly 'torch_dtype').",
    )
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = _field(
        None, "model", "Attention kernel; empty lets transformers choose.",
    )

    dataset_name: str = _field(
        SAMPLE_CHAT, "dataset",
        "Local file (.jsonl/.json/.csv/.parquet), a saved datasets folder, 'sample:chat'/'sample:alpaca', or a Hub id.",
        min_length=1, max_length=1024,
    )
    dataset_train_split: str = _field("train", "dataset", "Split to train on (Hub datasets and saved folders).",
                                      min_length=1, max_length=64)
    dataset_format: Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"] = _field(
        "auto", "dataset", "Row format; 'auto' detects it from the columns.",
    )
    column_mapping: dict[str, str] = _field(
        {}, "dataset", "Map format roles to your column names, e.g. {instruction: question, output: answer}.",
    )
    eval_fraction: float = _field(0.0, "dataset", "Share of rows held out for evaluation; 0 disables eval.",
                                  ge=0.0, lt=0.5)
    max_samples: int | None = _field(None, "dataset", "Use at most this many rows (empty or 0 = all).", ge=1)

    method: Literal["full", "lora", "qlora"] = _field(
        "lora", "method", "full: train all weights; lora: low-rank adapters; qlora: LoRA on a 4-bit model (CUDA only).",
    )
    lora_r: int = _field(8, "lora", "LoRA rank.", ge=1, le=1024)
    lora_alpha: int = _field(16, "lora", "LoRA scaling numerator (effective scale alpha / r).", ge=1, le=4096)
    lora_dropout: float = _field(0.05, "lora", "Dropout on the LoRA path.", ge=0.0, lt=1.0)
    lora_target_modules: list[str] = _field(
        ["all-linear"], "lora", "Modules that get adapters; 'all-linear' targets every linear layer but the head.",
        min_length=1,
    )
    lora_modules_to_save: list[str] = _field(
        [], "lora", "Modules trained fully and saved beside the adapter (e.g. embed_tokens, lm_head).",
    )

    num_train_epochs: float = _field(1.0, "training", "Passes over the training set (ignored when max_steps > 0).",
                                     gt=0.0, le=1000.0)
    max_steps: int = _field(-1, "training", "Total optimizer steps; -1 trains for num_train_epochs.", ge=-1,
                            le=10_000_000)
    learning_rate: float = _field(2e-4, "training", "Peak learning rate.", gt=0.0, le=1.0)
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
        "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
    ] = _field("linear", "training", "Learning-rate schedule after warmup.")
    warmup_ratio: float = _field(0.0, "training", "Share of steps spent warming the learning rate up from 0.",
                                 ge=0.0, lt=1.0)
    weight_decay: float = _field(0.0, "training", "AdamW weight decay.", ge=0.0, le=10.0)
    per_device_train_batch_size: int = _field(8, "training", "Rows per device per step.", ge=1, le=4096)
    gradient_accumulation_steps: int = _field(1, "training", "Steps accumulated per optimizer update.", ge=1,
                                              le=4096)
    max_length: int = _field(1024, "training", "Tokens per row (longer rows are truncated).", ge=8, le=1_048_576)
    packing: bool = _field(False, "training", "Pack several short rows into each max_length sequence.")
    assistant_only_loss: bool = _field(
        False, "training", "Train only on assistant turns (chat data; needs a template with generation marks).",
    )

    activation_checkpointing: bool = _field(False, "advanced", "Recompute activations to save memory (~20% slower).")
    logging_steps: int = _field(1, "advanced", "Log loss and learning rate every N steps.", ge=1, le=1_000_000)
    save_steps: int = _field(100, "advanced", "Save a checkpoint every N steps.", ge=1, le=10_000_000)
    save_total_limit: int | None = _field(2, "advanced", "Keep at most N checkpoints (empty or 0 = keep all).", ge=1,
                                          le=1000)
    eval_steps: int | None = _field(None, "advanced", "Evaluate every N steps (empty or 0 = at logging_steps).", ge=1)
    seed: int = _field(42, "advanced", "Random seed for data order and initialisation.", ge=0, le=2**32 - 1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _field(
        "auto", "advanced", "Compute precision; auto uses bf16 where supported, fp32 on CPU.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_legacy_names(cls, data: Any) -> Any:
        """`torch_dtype` is TRL's former name for `dtype`; accept it so older configs keep working."""
        if isinstance(data, dict) and "torch_dtype" in data and "dtype" not in data:
            data = dict(data)
            data["dtype"] = data.pop("torch_dtype")
        return data

    @model_validator(mode="after")
    def _cross_field_checks(self) -> JobConfig:
        """All checks that involve more than one field, each naming the field to fix."""
        bad = [k for k in self.column_mapping if k not in COLUMN_ROLES]
        if bad:
            raise ValueError(f"column_mapping: unknown role '{bad[0]}' (roles: {', '.join(COLUMN_ROLES)})")
        if any(not v.strip() for v in self.column_mapping.values()):
            raise ValueError("column_mapping: column names must not be empty")
        if self.eval_steps is not None and self.eval_fraction == 0:
            raise ValueError("eval_steps: needs eval_fraction > 0 (no rows are held out for evaluation)")
        if self.method == "full" and self.precision == "fp16":
            raise ValueError("precision: fp16 mixed precision needs a LoRA method; use bf16 or fp32 for full")
        if any(not m.strip() for m in self.lora_target_modules + self.lora_modules_to_save):
            raise ValueError("lora_target_modules: module names must not be empty")
        return self

    # ---- serialisation ---------------------------------------------------------------------------
    def to_dict(self, only_changed: bool = False) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        if only_changed:
            defaults = JobConfig().model_dump(mode="json")
            data = {k: v for k, v in data.items() if v != defaults[k] or k == "name"}
        return data

    def to_yaml(self, only_changed: bool = False) -> str:
        return yaml.dump(self.to_dict(only_changed), Dumper=_YAML_DUMPER, sort_keys=False, allow_unicode=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


# ---- field metadata for forms, CLI and docs ---------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """What a form or a doc needs to know about one field."""

    name: str
    group: str
    description: str
    default: Any
    kind: str  # bool | int | float | str | choice | list | mapping
    choices: tuple[Any, ...] = ()
    optional: bool = False
    rule: str = ""


def _kind_and_choices(annotation: Any) -> tuple[str, tuple[Any, ...], bool]:
    import types
    from typing import get_args, get_origin

    optional = False
    origin = get_origin(annotation)
    if origin in (types.UnionType,) or str(origin) == "typing.Union":
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        annotation = args[0]
        origin = get_origin(annotation)
    if origin is Literal:
        return "choice", get_args(annotation), optional
    if origin is list:
        return "list", (), optional
    if origin is dict:
        return "mapping", (), optional
    return {bool: "bool", int: "int", float: "float"}.get(annotation, "str"), (), optional


def _rule(name: str) -> str:
    """The numeric bounds of a field as a phrase: '> 0 and <= 1'."""
    parts = []
    for meta in JobConfig.model_fields[name].metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            val = getattr(meta, attr, None)
            if val is not None:
                parts.append(f"{sym} {val:g}" if isinstance(val, float) else f"{sym} {val}")
        unit = "item(s)" if _kind_and_choices(JobConfig.model_fields[name].annotation)[0] == "list" else "characters"
        for attr, what in (("min_length", "at least"), ("max_length", "at most")):
            val = getattr(meta, attr, None)
            if val is not None:
                parts.append(f"{what} {val} {unit if unit != 'item(s)' else ('item' if val == 1 else 'items')}")
    return " and ".join(parts)


def field_specs() -> list[FieldSpec]:
    specs = []
    for name, info in JobConfig.model_fields.items():
        kind, choices, optional = _kind_and_choices(info.annotation)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        specs.append(FieldSpec(name, str(extra.get("group", "advanced")), info.description or "",
                               info.get_default(call_default_factory=True), kind, tuple(choices), optional,
                               _rule(name)))
    return specs


# ---- parsing with messages a person can act on -------------------------------------------------------
@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class ConfigError(ValueError):
    """A config that cannot run; `errors` names each field and its rule."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(e.message for e in errors))


_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
    "list": "a list of strings", "mapping": "a mapping of role: column",
}


def _bounded_repr() -> reprlib.Repr:
    r = reprlib.Repr()  # attributes, not keywords: Python 3.10/3.11 accept no arguments here
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset, r.maxstring, r.maxother = 2, 4, 4, 4, 4, 50, 50
    return r


_REPR = _bounded_repr()


def _short(value: Any, limit: int = 60) -> str:
    """A bounded repr: a YAML alias bomb must not cost more to describe than to reject."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(err: dict[str, Any]) -> FieldError:
    loc = [str(p) for p in err.get("loc", ())]
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        key = loc[-1]
        near = difflib.get_close_matches(key, list(JobConfig.model_fields), n=1, cutoff=0.6)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return FieldError(key, f"unknown key '{key}'{hint}")
    if not loc:  # cross-field check: message starts with "field: "
        msg = str(err.get("ctx", {}).get("error", err.get("msg", "")))
        field, _, rest = msg.partition(": ")
        return FieldError(field if rest else "config", msg)
    field = loc[0]
    got = f" (got {_short(err['input'])})" if "input" in err and not isinstance(err["input"], dict) else ""
    if field not in JobConfig.model_fields:
        return FieldError(field, f"{field}: {err.get('msg', 'invalid')}")
    kind_, choices, optional = _kind_and_choices(JobConfig.model_fields[field].annotation)
    if choices:
        listed = ", ".join(str(c) for c in choices) + (" or empty" if optional else "")
        return FieldError(field, f"{field} must be one of: {listed}{got}")
    rule = _rule(field)
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_short", "too_long",
                "string_too_short", "string_too_long"):
        return FieldError(field, f"{field} must be {rule}{got}")
    if kind == "missing":
        return FieldError(field, f"{field} is required")
    word = _TYPE_WORDS.get(kind_, "valid")
    suffix = f" {rule}" if rule and kind_ in ("int", "float") else ""
    return FieldError(field, f"{field} must be {word}{suffix}{got}")


def parse_config(data: Any) -> JobConfig:
    """Validate a mapping into a JobConfig, raising ConfigError with every problem named."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([FieldError("config", "config must be a mapping of field: value")])
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()]) from None


def safe_yaml_load(text: str) -> Any:
    """`yaml.safe_load`, refusing nesting deeper than MAX_YAML_DEPTH before anything is composed.

    Composing recurses once per nesting level, in C with libyaml: PyYAML 6.0.3's bundled libyaml has no
    nesting limit, so `"[" * 100_000` crashes the whole process with a segmentation fault, and the
    pure-Python loader raises RecursionError. The event stream is produced iteratively by both parsers,
    so counting depth on it first is safe on every build.
    """
    depth = 0
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise yaml.MarkedYAMLError(
                    problem=f"nested deeper than {MAX_YAML_DEPTH} levels", problem_mark=event.start_mark
                )
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
    return yaml.load(text, Loader=_YAML_LOADER)


def load_yaml(text: str) -> JobConfig:
    try:
        data = safe_yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError([FieldError("config", f"invalid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
    return parse_config(data)


def load_json(text: str) -> JobConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([FieldError("config", f"invalid JSON: line {exc.lineno}: {exc.msg}")]) from None
    return parse_config(data)


def apply_overrides(config: JobConfig, overrides: dict[str, Any]) -> JobConfig:
    """A new config with `overrides` applied; validated as a whole."""
    overrides = dict(overrides)
    if "torch_dtype" in overrides and "dtype" not in overrides:
        overrides["dtype"] = overrides.pop("torch_dtype")
    return parse_config({**config.to_dict(), **overrides})


def parse_set_option(text: str) -> tuple[str, Any]:
    """`key=value` from the CLI: the value is read as YAML so numbers, booleans and lists work."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError([FieldError("--set", f"--set expects key=value, got {text!r}")])
    spec = next((s for s in field_specs() if s.name == key), None)
    if spec is not None and spec.kind == "str":
        return key, raw.strip()  # a name like 2024 stays text
    try:
        value = safe_yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


# ---- conversion to TRL / PEFT keyword dicts ---------------------------------------------------------
def resolve_precision(config: JobConfig, device: str, bf16_supported: bool) -> str:
    """auto -> bf16 where the device supports it, fp32 otherwise (always fp32 on CPU)."""
    if config.precision != "auto":
        return config.precision
    return "bf16" if device != "cpu" and bf16_supported else "fp32"


def sft_kwargs(config: JobConfig, output_dir: str, device: str = "cpu", bf16_supported: bool = False) -> dict[str, Any]:
    """Keyword arguments for `trl.SFTConfig`, as a plain dict."""
    precision = resolve_precision(config, device, bf16_supported)
    has_eval = config.eval_fraction > 0
    return {
        "output_dir": output_dir,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        "weight_decay": config.weight_decay,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "per_device_eval_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "packing": config.packing,
        "assistant_only_loss": config.assistant_only_loss,
        "activation_checkpointing": config.activation_checkpointing,
        "logging_steps": config.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": (config.eval_steps or config.logging_steps) if has_eval else None,
        "seed": config.seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "use_cpu": device == "cpu",
        "report_to": "none",
        "disable_tqdm": True,
        "dataset_text_field": "text",
    }


def lora_kwargs(config: JobConfig) -> dict[str, Any] | None:
    """Keyword arguments for `peft.LoraConfig`, or None for full fine-tuning."""
    if config.method == "full":
        return None
    targets: str | list[str] = config.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"
    return {
        "r": config.lora_r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": targets,
        "modules_to_save": list(config.lora_modules_to_save) or None,
        "task_type": "CAUSAL_LM",
        "bias": "none",
    }


def model_init_kwargs(config: JobConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": config.trust_remote_code, "dtype": config.dtype}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    return kwargs
