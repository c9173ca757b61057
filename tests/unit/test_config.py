"""JobConfig: defaults, bounds, choices, messages, (de)serialisation and conversion to TRL / PEFT kwargs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft_ui.config import (
    GROUPS,
    ConfigError,
    FieldError,
    JobConfig,
    apply_overrides,
    field_specs,
    load_json,
    load_yaml,
    lora_kwargs,
    model_init_kwargs,
    parse_config,
    parse_set_option,
    resolve_precision,
    sft_kwargs,
)

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs").glob("*.yaml"))
SPECS = {spec.name: spec for spec in field_specs()}


def config_error(data: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value


def _base_for(name: str) -> dict[str, Any]:
    """A valid starting point for testing `name`: eval_steps only validates when rows are held out."""
    return {"eval_fraction": 0.25} if name == "eval_steps" else {}


# ---- defaults and field metadata -----------------------------------------------------------------------
def test_defaults_construct_and_parse_empty() -> None:
    cfg = JobConfig()
    assert cfg.method == "lora"
    assert cfg.dataset_name == "sample:chat"
    assert parse_config({}) == cfg
    assert parse_config(None) == cfg


def test_every_field_has_a_spec_with_description_and_group() -> None:
    assert list(SPECS) == list(JobConfig.model_fields)
    for spec in SPECS.values():
        assert spec.description.strip(), f"{spec.name} has no description"
        assert spec.group in GROUPS, f"{spec.name} has group {spec.group!r}"
        assert spec.kind in ("bool", "int", "float", "str", "choice", "list", "mapping")
        assert spec.default == JobConfig.model_fields[spec.name].get_default(call_default_factory=True)
        if spec.kind == "choice":
            assert spec.default in spec.choices or (spec.optional and spec.default is None)


def test_field_spec_kinds() -> None:
    assert SPECS["learning_rate"].kind == "float"
    assert SPECS["lora_r"].kind == "int"
    assert SPECS["packing"].kind == "bool"
    assert SPECS["lora_target_modules"].kind == "list"
    assert SPECS["column_mapping"].kind == "mapping"
    assert SPECS["method"].kind == "choice" and SPECS["method"].choices == ("full", "lora", "qlora")
    assert SPECS["max_samples"].optional and SPECS["max_samples"].kind == "int"
    assert SPECS["learning_rate"].rule == "> 0 and <= 1"


# ---- numeric bounds, driven by the pydantic metadata ------------------------------------------------------
_SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _numeric_bounds() -> list[tuple[str, str, Any]]:
    found = []
    for name, info in JobConfig.model_fields.items():
        for meta in info.metadata:
            for attr in _SYMBOLS:
                value = getattr(meta, attr, None)
                if value is not None:
                    found.append((name, attr, value))
    return found


NUMERIC_BOUNDS = _numeric_bounds()


def _outside_and_inside(kind: str, attr: str, bound: Any) -> tuple[Any, Any]:
    """(a value just outside the bound, a value just inside it)."""
    lower = attr in ("gt", "ge")
    if kind == "int":
        step = -1 if lower else 1
        outside = bound if attr in ("gt", "lt") else bound + step
        inside = bound - step if attr in ("gt", "lt") else bound
        return outside, inside
    bound = float(bound)
    away = -math.inf if lower else math.inf
    outside = bound if attr in ("gt", "lt") else math.nextafter(bound, away)
    inside = math.nextafter(bound, -away) if attr in ("gt", "lt") else bound
    return outside, inside


def test_bounds_are_discovered() -> None:
    names = {name for name, _, _ in NUMERIC_BOUNDS}
    assert {"learning_rate", "lora_r", "eval_fraction", "max_steps", "seed", "eval_steps"} <= names
    for name in names:
        assert SPECS[name].rule, f"{name} has bounds but no rule"
        assert SPECS[name].kind in ("int", "float")


@pytest.mark.parametrize(("name", "attr", "bound"), NUMERIC_BOUNDS, ids=[f"{n}-{a}" for n, a, _ in NUMERIC_BOUNDS])
def test_numeric_bound_enforced(name: str, attr: str, bound: Any) -> None:
    spec = SPECS[name]
    outside, inside = _outside_and_inside(spec.kind, attr, bound)
    formatted = f"{_SYMBOLS[attr]} {bound:g}" if isinstance(bound, float) else f"{_SYMBOLS[attr]} {bound}"
    assert formatted in spec.rule

    err = config_error({**_base_for(name), name: outside})
    assert f"{name} must be {spec.rule}" in str(err)
    assert [e.field for e in err.errors] == [name]

    cfg = parse_config({**_base_for(name), name: inside})
    assert getattr(cfg, name) == inside


def test_learning_rate_message_exact() -> None:
    assert "learning_rate must be > 0 and <= 1" in str(config_error({"learning_rate": 0}))
    assert "learning_rate must be > 0 and <= 1" in str(config_error({"learning_rate": 1.5}))
    assert "(got 1.5)" in str(config_error({"learning_rate": 1.5}))


def _length_bounds() -> list[tuple[str, str, int]]:
    found = []
    for name, info in JobConfig.model_fields.items():
        for meta in info.metadata:
            for attr in ("min_length", "max_length"):
                value = getattr(meta, attr, None)
                if value is not None:
                    found.append((name, attr, value))
    return found


LENGTH_BOUNDS = _length_bounds()


@pytest.mark.parametrize(("name", "attr", "bound"), LENGTH_BOUNDS, ids=[f"{n}-{a}" for n, a, _ in LENGTH_BOUNDS])
def test_length_bound_enforced(name: str, attr: str, bound: int) -> None:
    spec = SPECS[name]
    item = "q_proj" if spec.kind == "list" else "x"

    def make(count: int) -> Any:
        return [item] * count if spec.kind == "list" else item * count

    outside, inside = (bound - 1, bound) if attr == "min_length" else (bound + 1, bound)
    err = config_error({name: make(outside)})
    assert f"{name} must be {spec.rule}" in str(err)
    assert getattr(parse_config({name: make(inside)}), name) == make(inside)


# ---- choices ---------------------------------------------------------------------------------------------
CHOICE_SPECS = [spec for spec in SPECS.values() if spec.kind == "choice"]


@pytest.mark.parametrize("spec", CHOICE_SPECS, ids=[s.name for s in CHOICE_SPECS])
def test_choice_field(spec: Any) -> None:
    err = config_error({spec.name: "definitely-not-a-choice"})
    assert f"{spec.name} must be one of" in str(err)
    assert "definitely-not-a-choice" in str(err)
    for choice in spec.choices:
        assert str(choice) in str(err)
        assert getattr(parse_config({spec.name: choice}), spec.name) == choice
    if spec.optional:
        assert getattr(parse_config({spec.name: None}), spec.name) is None


# ---- messages --------------------------------------------------------------------------------------------
def test_unknown_key_suggests_the_near_name() -> None:
    err = config_error({"learning_rat": 0.1})
    assert str(err) == "unknown key 'learning_rat' (did you mean 'learning_rate'?)"
    assert err.errors == [FieldError("learning_rat", "unknown key 'learning_rat' (did you mean 'learning_rate'?)")]


def test_unknown_key_without_a_near_name() -> None:
    assert str(config_error({"zzzzqqq": 1})) == "unknown key 'zzzzqqq'"


def test_type_errors_name_the_field() -> None:
    err = config_error({"packing": "maybe"})
    assert err.errors[0].field == "packing"
    assert "packing must be true or false" in str(err) and "maybe" in str(err)

    err = config_error({"lora_r": "abc"})
    assert err.errors[0].field == "lora_r"
    assert "lora_r must be an integer" in str(err) and "'abc'" in str(err)

    assert "learning_rate must be a number" in str(config_error({"learning_rate": "fast"}))
    assert "lora_target_modules must be a list of strings" in str(config_error({"lora_target_modules": "q_proj"}))
    assert "column_mapping must be a mapping" in str(config_error({"column_mapping": ["a"]}))


def test_every_problem_is_reported() -> None:
    err = config_error({"lora_r": 0, "method": "nope", "learning_rat": 1})
    assert {e.field for e in err.errors} == {"lora_r", "method", "learning_rat"}
    assert str(err).count("; ") == 2


def test_non_mapping_config_rejected() -> None:
    for data in ([1, 2], "lora", 3):
        assert "config must be a mapping" in str(config_error(data))


def test_cross_field_eval_steps_needs_eval_fraction() -> None:
    err = config_error({"eval_steps": 5})
    assert err.errors[0].field == "eval_steps"
    assert "eval_steps: needs eval_fraction > 0" in str(err)
    assert parse_config({"eval_steps": 5, "eval_fraction": 0.1}).eval_steps == 5


def test_cross_field_column_mapping_role() -> None:
    err = config_error({"column_mapping": {"question": "q"}})
    assert err.errors[0].field == "column_mapping"
    assert "unknown role 'question'" in str(err)
    assert "column names must not be empty" in str(config_error({"column_mapping": {"prompt": "  "}}))
    cfg = parse_config({"column_mapping": {"instruction": "question", "output": "answer"}})
    assert cfg.column_mapping == {"instruction": "question", "output": "answer"}


def test_cross_field_fp16_with_full() -> None:
    err = config_error({"method": "full", "precision": "fp16"})
    assert err.errors[0].field == "precision"
    assert "fp16" in str(err) and "full" in str(err)
    assert parse_config({"method": "lora", "precision": "fp16"}).precision == "fp16"
    assert parse_config({"method": "full", "precision": "bf16"}).precision == "bf16"


def test_empty_module_names_rejected() -> None:
    assert "lora_target_modules" in str(config_error({"lora_target_modules": [" "]}))
    assert "lora_target_modules" in str(config_error({"lora_modules_to_save": [""]}))


def test_torch_dtype_alias() -> None:
    assert parse_config({"torch_dtype": "bfloat16"}).dtype == "bfloat16"
    assert load_yaml("torch_dtype: float16\n").dtype == "float16"
    assert "dtype must be one of" in str(config_error({"torch_dtype": "int3"}))
    assert "torch_dtype" not in JobConfig(dtype="float32").to_dict()


def test_validate_assignment() -> None:
    cfg = JobConfig()
    with pytest.raises(ValueError):
        cfg.lora_r = 0


# ---- YAML / JSON ----------------------------------------------------------------------------------------
ROUND_TRIP_CASES = [None, *PRESETS]


@pytest.mark.parametrize("preset", ROUND_TRIP_CASES, ids=["default"] + [p.name for p in PRESETS])
def test_yaml_and_json_round_trip(preset: Path | None) -> None:
    if preset is None:
        cfg = JobConfig()
    else:
        text = preset.read_text(encoding="utf-8")
        cfg = load_yaml(text)
        raw = yaml.safe_load(text)
        for key, value in raw.items():  # every key in the file really landed in the config
            assert getattr(cfg, key) == value, key

    text = cfg.to_yaml()
    again = load_yaml(text)
    assert again == cfg
    assert again.to_yaml() == text

    changed = cfg.to_yaml(only_changed=True)
    assert load_yaml(changed) == cfg

    js = cfg.to_json()
    assert load_json(js) == cfg
    assert load_json(js).to_json() == js
    assert json.loads(js) == cfg.to_dict()


def test_presets_exist() -> None:
    assert len(PRESETS) >= 2


def test_round_trip_of_non_default_values() -> None:
    cfg = JobConfig(
        name="ünïcode: run #1", lora_target_modules=["q_proj", "v_proj"], lora_modules_to_save=["lm_head"],
        column_mapping={"instruction": "q", "output": "a"}, eval_fraction=0.1, eval_steps=7, max_samples=3,
        attn_implementation="sdpa", learning_rate=1e-5, save_total_limit=None,
    )
    assert load_yaml(cfg.to_yaml()) == cfg
    assert load_json(cfg.to_json()) == cfg
    assert load_yaml(cfg.to_yaml(only_changed=True)) == cfg


def test_only_changed_keeps_name_and_changes() -> None:
    data = yaml.safe_load(JobConfig(lora_r=4).to_yaml(only_changed=True))
    assert data == {"name": "", "lora_r": 4}


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml("name: ok\nlora_r: 8\nmethod: lora: full\n")
    assert "invalid YAML" in str(info.value)
    assert "line 3" in str(info.value)


def test_yaml_top_level_list_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml("- lora_r: 8\n- method: full\n")
    assert "config must be a mapping" in str(info.value)


def test_empty_yaml_is_the_default() -> None:
    assert load_yaml("") == JobConfig()
    assert load_yaml("# just a comment\n") == JobConfig()


def test_yaml_value_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="lora_r must be"):
        load_yaml("lora_r: 0\n")


def test_invalid_json_names_the_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_json('{\n  "lora_r": 8,\n  "method": }\n')
    assert "invalid JSON" in str(info.value) and "line 3" in str(info.value)
    with pytest.raises(ConfigError, match="config must be a mapping"):
        load_json("[1, 2]")


# ---- CLI --set and overrides -------------------------------------------------------------------------------
def test_parse_set_option_types() -> None:
    assert parse_set_option("max_steps=5") == ("max_steps", 5)
    assert isinstance(parse_set_option("max_steps=5")[1], int)
    assert parse_set_option("packing=true") == ("packing", True)
    assert parse_set_option("learning_rate=0.001") == ("learning_rate", 0.001)
    assert parse_set_option("lora_target_modules=[q_proj,v_proj]") == ("lora_target_modules", ["q_proj", "v_proj"])
    assert parse_set_option(" name = my run") == ("name", "my run")
    assert parse_set_option("max_samples=") == ("max_samples", None)
    assert parse_set_option("dataset_name=a=b.jsonl") == ("dataset_name", "a=b.jsonl")


def test_parse_set_option_unparsable_yaml_kept_as_text() -> None:
    assert parse_set_option("name=[unclosed") == ("name", "[unclosed")


@pytest.mark.parametrize("text", ["max_steps", "", "=5"])
def test_parse_set_option_needs_key_and_equals(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_set_option(text)
    assert "key=value" in str(info.value)
    assert info.value.errors[0].field == "--set"


def test_apply_overrides() -> None:
    base = JobConfig(lora_r=4)
    new = apply_overrides(base, dict([parse_set_option("max_steps=5"), parse_set_option("packing=true")]))
    assert (new.max_steps, new.packing, new.lora_r) == (5, True, 4)
    assert base.max_steps == -1  # the original is untouched


def test_apply_overrides_validates() -> None:
    with pytest.raises(ConfigError, match="lora_r must be"):
        apply_overrides(JobConfig(), {"lora_r": 0})
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        apply_overrides(JobConfig(), {"max_step": 5})
    with pytest.raises(ConfigError, match="eval_steps"):
        apply_overrides(JobConfig(), {"eval_steps": 5})
    with pytest.raises(ConfigError, match="precision"):
        apply_overrides(JobConfig(precision="fp16"), {"method": "full"})


# ---- TRL / PEFT kwargs ---------------------------------------------------------------------------------------
def test_resolve_precision() -> None:
    auto = JobConfig()
    assert resolve_precision(auto, "cpu", bf16_supported=True) == "fp32"
    assert resolve_precision(auto, "cpu", bf16_supported=False) == "fp32"
    assert resolve_precision(auto, "cuda", bf16_supported=True) == "bf16"
    assert resolve_precision(auto, "cuda", bf16_supported=False) == "fp32"
    assert resolve_precision(JobConfig(precision="bf16"), "cpu", bf16_supported=False) == "bf16"
    assert resolve_precision(JobConfig(precision="fp32"), "cuda", bf16_supported=True) == "fp32"


def test_sft_kwargs_precision_flags() -> None:
    kw = sft_kwargs(JobConfig(), "out", device="cpu", bf16_supported=True)
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (False, False, True)
    kw = sft_kwargs(JobConfig(), "out", device="cuda", bf16_supported=True)
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (True, False, False)
    kw = sft_kwargs(JobConfig(precision="fp16"), "out", device="cuda", bf16_supported=True)
    assert (kw["bf16"], kw["fp16"]) == (False, True)
    kw = sft_kwargs(JobConfig(precision="bf16"), "out", device="cpu")
    assert (kw["bf16"], kw["fp16"]) == (True, False)


SFT_CASES = {
    "default-lora": {},
    "full": {"method": "full", "activation_checkpointing": True},
    "eval": {"eval_fraction": 0.1, "eval_steps": 3},
    "eval-default-steps": {"eval_fraction": 0.2, "logging_steps": 4},
    "explicit-bf16": {"precision": "bf16"},
    "warmup-packing": {"warmup_ratio": 0.1, "packing": True, "max_steps": 10, "lr_scheduler_type": "cosine"},
}


@pytest.fixture(scope="module")
def trl_module() -> Any:
    import trl

    return trl


@pytest.mark.parametrize("overrides", SFT_CASES.values(), ids=list(SFT_CASES))
def test_sft_kwargs_accepted_by_trl(overrides: dict[str, Any], tmp_path: Path, trl_module: Any) -> None:
    cfg = parse_config(overrides)
    kw = sft_kwargs(cfg, str(tmp_path), device="cpu", bf16_supported=False)
    args = trl_module.SFTConfig(**kw)
    assert args.output_dir == str(tmp_path)
    assert args.learning_rate == cfg.learning_rate
    assert args.max_steps == cfg.max_steps
    assert args.max_length == cfg.max_length
    assert args.packing == cfg.packing
    assert args.per_device_train_batch_size == cfg.per_device_train_batch_size
    assert args.gradient_accumulation_steps == cfg.gradient_accumulation_steps
    assert args.seed == cfg.seed
    assert args.save_steps == cfg.save_steps
    assert args.bf16 is (cfg.precision == "bf16")
    assert not args.fp16
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == cfg.lr_scheduler_type
    eval_strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
    if cfg.eval_fraction > 0:
        assert eval_strategy == "steps"
        assert args.eval_steps == (cfg.eval_steps or cfg.logging_steps)
    else:
        assert eval_strategy == "no"


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_accepted_by_trl_and_peft(preset: Path, tmp_path: Path, trl_module: Any) -> None:
    from peft import LoraConfig

    cfg = load_yaml(preset.read_text(encoding="utf-8"))
    trl_module.SFTConfig(**sft_kwargs(cfg, str(tmp_path)))
    kw = lora_kwargs(cfg)
    if cfg.method == "full":
        assert kw is None
    else:
        assert LoraConfig(**kw).r == cfg.lora_r


def test_lora_kwargs_accepted_by_peft() -> None:
    from peft import LoraConfig

    kw = lora_kwargs(JobConfig())
    assert kw is not None
    assert kw["target_modules"] == "all-linear"
    lc = LoraConfig(**kw)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, lc.target_modules) == (8, 16, 0.05, "all-linear")
    assert lc.modules_to_save is None

    cfg = JobConfig(method="qlora", lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"],
                    lora_modules_to_save=["lm_head"])
    kw = lora_kwargs(cfg)
    assert kw is not None and kw["target_modules"] == ["q_proj", "v_proj"]
    lc = LoraConfig(**kw)
    assert set(lc.target_modules) == {"q_proj", "v_proj"}
    assert list(lc.modules_to_save) == ["lm_head"]
    assert lc.r == 4 and lc.lora_alpha == 8


def test_lora_kwargs_full_is_none() -> None:
    assert lora_kwargs(JobConfig(method="full")) is None


def test_model_init_kwargs() -> None:
    assert model_init_kwargs(JobConfig()) == {"trust_remote_code": False, "dtype": "auto"}
    kw = model_init_kwargs(JobConfig(dtype="bfloat16", attn_implementation="sdpa", trust_remote_code=True))
    assert kw == {"trust_remote_code": True, "dtype": "bfloat16", "attn_implementation": "sdpa"}


def test_config_module_does_not_import_torch() -> None:
    code = "import sys, sft_ui.config; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---- property: parse_config never fails with anything but ConfigError ---------------------------------------
_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from([*JobConfig.model_fields, "torch_dtype", "learning_rat"]) | st.text(max_size=12)
_field_values = _json_values | st.sampled_from(
    [choice for spec in CHOICE_SPECS for choice in spec.choices] + [0, -1, 1, 0.5, 1e-9, "all-linear", ["q_proj"]]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _field_values, max_size=8) | _json_values)
def test_parse_config_only_raises_config_error(data: Any) -> None:
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        assert exc.errors, "a ConfigError must name at least one field"
        assert all(isinstance(e, FieldError) and e.message for e in exc.errors)
        return
    assert isinstance(cfg, JobConfig)
    assert load_yaml(cfg.to_yaml()) == cfg
