"""The studio's logic without a browser or a server: form <-> config, render helpers, Jobs/Train tab functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import pytest

from sft_ui.config import ConfigError, JobConfig, field_specs, load_yaml
from sft_ui.jobs import JobManager
from sft_ui.presets import PRESETS_DIR
from sft_ui.settings import Settings
from sft_ui.ui import jobs_tab, train_tab
from sft_ui.ui.formdata import EMPTY_CHOICE, config_to_values, values_to_config
from sft_ui.ui.render import (
    JOB_COLUMNS,
    STATUS_COLOURS,
    badge,
    config_diff,
    jobs_frame,
    metrics_frames,
    preview_frame,
    progress_html,
)

FIELD_NAMES = [s.name for s in field_specs()]


def values_with(config: JobConfig, **changes: Any) -> list[Any]:
    """The form's widget values for `config`, with some widgets set to `changes`."""
    values = config_to_values(config)
    for name, value in changes.items():
        values[FIELD_NAMES.index(name)] = value
    return values


def full_config() -> JobConfig:
    return JobConfig(
        name="everything set", attn_implementation="sdpa", max_samples=10, eval_fraction=0.1, eval_steps=5,
        column_mapping={"instruction": "q", "output": "a"}, lora_target_modules=["q_proj", "v_proj"],
        lora_modules_to_save=["lm_head"], save_total_limit=None, dataset_format="alpaca",
    )


PRESET_FILES = sorted(PRESETS_DIR.glob("*.yaml"))


def config_cases() -> list[Any]:
    cases = [pytest.param(JobConfig(), id="default"), pytest.param(full_config(), id="every-optional-set")]
    cases += [pytest.param(load_yaml(p.read_text(encoding="utf-8")), id=p.stem) for p in PRESET_FILES]
    return cases


# ---- form round trip ---------------------------------------------------------------------------------------------
def test_presets_exist() -> None:
    assert len(PRESET_FILES) >= 3
    assert "tiny-lora" in [p.stem for p in PRESET_FILES]


@pytest.mark.parametrize("config", config_cases())
def test_form_round_trip_is_the_identity_both_ways(config: JobConfig) -> None:
    values = config_to_values(config)
    assert len(values) == len(FIELD_NAMES)
    assert values_to_config(values) == config
    assert config_to_values(values_to_config(values)) == values


def test_widget_values_of_the_full_config() -> None:
    values = dict(zip(FIELD_NAMES, config_to_values(full_config()), strict=True))
    assert values["attn_implementation"] == "sdpa"
    assert values["column_mapping"] == "instruction=q, output=a"
    assert values["lora_target_modules"] == "q_proj, v_proj"
    assert values["save_total_limit"] is None
    assert values["max_samples"] == 10 and values["eval_steps"] == 5
    default = dict(zip(FIELD_NAMES, config_to_values(JobConfig()), strict=True))
    assert default["attn_implementation"] == EMPTY_CHOICE
    assert default["column_mapping"] == "" and default["max_samples"] is None


def test_zero_in_an_optional_count_widget_means_none() -> None:
    base = full_config()
    config = values_to_config(values_with(base, max_samples=0, save_total_limit=0, eval_steps=0))
    assert config.max_samples is None and config.save_total_limit is None and config.eval_steps is None
    # floats from a number widget that hold whole numbers become ints; empty choice -> None
    config = values_with(JobConfig(), max_steps=30.0, attn_implementation=EMPTY_CHOICE, max_samples=None)
    parsed = values_to_config(config)
    assert parsed.max_steps == 30 and isinstance(parsed.max_steps, int)
    assert parsed.attn_implementation is None and parsed.max_samples is None


def test_mapping_text_accepts_colons_and_spaces() -> None:
    config = values_to_config(values_with(JobConfig(), column_mapping=" instruction : q ,output=a, "))
    assert config.column_mapping == {"instruction": "q", "output": "a"}


@pytest.mark.parametrize("text", ["instruction", "instruction=", "=q", "instruction=q, output"])
def test_bad_mapping_text_names_column_mapping(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        values_to_config(values_with(JobConfig(), column_mapping=text))
    assert [e.field for e in info.value.errors] == ["column_mapping"]
    assert "column_mapping" in str(info.value)


def test_invalid_values_are_named_by_field() -> None:
    with pytest.raises(ConfigError) as info:
        values_to_config(values_with(JobConfig(), learning_rate=0, lora_r=0))
    assert {e.field for e in info.value.errors} == {"learning_rate", "lora_r"}


def test_wrong_number_of_values_is_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        values_to_config(config_to_values(JobConfig())[:-1])


# ---- render helpers ----------------------------------------------------------------------------------------------
def job(status: str = "running", step: int = 5, total: int | None = 20, **extra: Any) -> dict[str, Any]:
    percent = round(100.0 * step / total, 1) if total else 0.0
    return {"job_id": f"j-{status}", "name": f"run <{status}>", "status": status, "attempt": 1,
            "created_at": "2025-01-02T03:04:05.123456+00:00", "started_at": "2025-01-02T03:04:05+00:00",
            "finished_at": None, "progress": {"step": step, "total_steps": total, "percent": percent, "eta_s": 75},
            "latest": {"loss": 1.23456}, **extra}


def test_jobs_frame_columns_and_cells() -> None:
    frame = jobs_frame([job("running"), job("succeeded", step=20, finished_at="2025-01-02T03:05:05+00:00")])
    assert list(frame.columns) == JOB_COLUMNS
    assert len(frame) == 2
    running, done = frame.iloc[0], frame.iloc[1]
    assert running["job_id"] == "j-running" and running["name"] == "run <running>"
    assert "running" in running["status"] and STATUS_COLOURS["running"] in running["status"]
    assert running["progress"] == "5/20 (25%)"
    assert running["loss"] == "1.2346"
    assert running["eta"] == "1:15" and done["eta"] == ""  # an ETA only while running
    assert done["elapsed"] == "1:00"
    assert running["created"] == "2025-01-02 03:04:05"
    assert list(jobs_frame([]).columns) == JOB_COLUMNS


@pytest.mark.parametrize("status", list(STATUS_COLOURS))
def test_badge_colour_per_status(status: str) -> None:
    html = badge(status)
    assert f"background:{STATUS_COLOURS[status]}" in html
    assert f">{status}</span>" in html


def test_badge_colours_are_distinct_and_unknown_is_grey() -> None:
    assert len(set(STATUS_COLOURS.values())) == len(STATUS_COLOURS)
    assert "#6b7280" in badge("mystery")
    assert "&lt;b&gt;" in badge("<b>")


def test_progress_html_percent() -> None:
    html = progress_html(job("running", step=5, total=20))
    assert "width:25.0%" in html and "5/20 (25%)" in html and "ETA 1:15" in html
    assert "run &lt;running&gt;" in html  # escaped
    assert "width:0.0%" in progress_html(job("queued", step=0, total=None))
    assert "ETA" not in progress_html(job("stopped", step=5, total=20))
    assert "Select a job" in progress_html(None)


def test_metrics_frames_split_train_and_eval_with_numeric_dtypes() -> None:
    points = [{"kind": "train", "step": s, "loss": 2.0 - s / 10, "learning_rate": 0.01 * s} for s in range(1, 6)]
    points += [{"kind": "eval", "step": 5, "eval_loss": 1.7}, {"kind": "train", "step": 6, "learning_rate": 0.06}]
    loss, lr = metrics_frames(points)
    assert list(loss.columns) == ["step", "loss", "curve"] and list(lr.columns) == ["step", "learning_rate"]
    assert (loss["curve"] == "train loss").sum() == 5
    assert loss[loss["curve"] == "eval loss"][["step", "loss"]].values.tolist() == [[5, 1.7]]
    assert lr["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert pd.api.types.is_integer_dtype(loss["step"]) and pd.api.types.is_float_dtype(loss["loss"])
    assert pd.api.types.is_integer_dtype(lr["step"]) and pd.api.types.is_float_dtype(lr["learning_rate"])


def test_metrics_frames_thin_to_max_points_and_keep_the_last() -> None:
    points = [{"kind": "train", "step": s, "loss": 1.0, "learning_rate": 0.1} for s in range(1, 1001)]
    loss, lr = metrics_frames(points, max_points=100)
    assert len(loss) <= 101 and len(lr) <= 101 and len(loss) >= 50
    assert loss["step"].iloc[0] == 1 and loss["step"].iloc[-1] == 1000 and lr["step"].iloc[-1] == 1000
    assert loss["step"].is_monotonic_increasing


def test_metrics_frames_empty_are_typed() -> None:
    loss, lr = metrics_frames([])
    assert loss.empty and lr.empty
    assert pd.api.types.is_integer_dtype(loss["step"]) and pd.api.types.is_float_dtype(loss["loss"])
    assert pd.api.types.is_float_dtype(lr["learning_rate"])


def test_config_diff_marks_differences_and_hides_equal_fields() -> None:
    a = {"name": "a", "learning_rate": 0.01, "lora_r": 8, "lora_target_modules": ["all-linear"]}
    b = {"name": "b", "learning_rate": 0.02, "lora_r": 8, "lora_target_modules": ["all-linear"]}
    frame = config_diff({"job a": a, "job b": b})
    assert list(frame.columns) == ["field", "job a", "job b"]
    assert frame["field"].tolist() == ["≠ name", "≠ learning_rate"]
    assert frame.iloc[1].tolist() == ["≠ learning_rate", "0.01", "0.02"]
    full = config_diff({"job a": a, "job b": b}, only_differences=False)
    assert full["field"].tolist() == ["≠ name", "≠ learning_rate", "lora_r", "lora_target_modules"]
    assert full.iloc[3].tolist() == ["lora_target_modules", "['all-linear']", "['all-linear']"]


def test_config_diff_field_missing_on_one_side_differs() -> None:
    frame = config_diff({"x": {"seed": 1, "eval_steps": None}, "y": {"seed": 1, "eval_steps": 5}})
    assert frame.values.tolist() == [["≠ eval_steps", "", "5"]]


def test_preview_frame_renders_each_format() -> None:
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"prompt": "2+2", "completion": "4"}, {"text": "plain"}]
    frame = preview_frame(rows)
    assert list(frame.columns) == ["#", "row as trained"]
    assert frame["#"].tolist() == [1, 2, 3]
    assert frame["row as trained"].tolist() == ["[user] hi\n[assistant] yo", "[prompt] 2+2\n[completion] 4", "plain"]
    assert preview_frame([]).empty


# ---- Jobs and Train tab functions on a real JobManager (nothing is launched) ---------------------------------------
@pytest.fixture
def manager(tmp_path: Path) -> JobManager:
    # max_concurrent=0 keeps every submitted job queued: no worker process is ever started
    return JobManager(Settings(workspace=tmp_path / "ws", max_concurrent=0))


def quick(name: str) -> JobConfig:
    return JobConfig(name=name, max_steps=5)


def test_list_view_pages_of_fifty(manager: JobManager) -> None:
    for i in range(120):
        manager.submit(quick(f"job {i:03d}"))
    session = jobs_tab.new_session()
    frame, info, picker = jobs_tab.list_view(manager, session)
    assert info == "120 jobs · page 1 of 3"
    assert len(frame) == 50 and list(frame.columns) == JOB_COLUMNS
    assert frame["name"].iloc[0] == "job 119"  # newest first
    assert len(picker["choices"]) == 50 and picker["value"] is None
    session["page"] = 2
    frame, info, _ = jobs_tab.list_view(manager, session)
    assert info == "120 jobs · page 3 of 3" and len(frame) == 20
    assert frame["name"].iloc[-1] == "job 000"
    session.update(page=0, filter="running")
    frame, info, _ = jobs_tab.list_view(manager, session)
    assert info == "0 jobs · page 1 of 1" and frame.empty


def test_list_view_keeps_the_selected_job_in_the_picker(manager: JobManager) -> None:
    first = manager.submit(quick("first"))
    for i in range(55):
        manager.submit(quick(f"later {i}"))
    session = {**jobs_tab.new_session(), "job": first["job_id"]}
    _, _, picker = jobs_tab.list_view(manager, session)  # page 1 does not hold it
    assert picker["value"] == first["job_id"]
    assert (first["job_id"], first["job_id"]) in picker["choices"]


def test_detail_view_of_a_queued_job(manager: JobManager) -> None:
    job = manager.submit(quick("waiting"))
    progress, stop, resume, delete, clone, summary, loss, lr, config_text = jobs_tab.detail_view(manager, job["job_id"])
    assert "queued" in progress and "waiting" in progress
    assert stop["interactive"] is True and resume["interactive"] is False
    assert delete["interactive"] is True and clone["interactive"] is True
    assert job["job_id"] in summary
    assert loss is None and lr is None  # no points yet
    assert "name: waiting" in config_text and "max_steps: 5" in config_text


def test_detail_view_of_a_stopped_job_and_of_nothing(manager: JobManager) -> None:
    job = manager.submit(quick("halted"))
    manager.stop(job["job_id"])
    _, stop, resume, delete, *_ = jobs_tab.detail_view(manager, job["job_id"])
    assert stop["interactive"] is False and resume["interactive"] is True and delete["interactive"] is True
    for missing in (None, "no-such-job"):
        out = jobs_tab.detail_view(manager, missing)
        assert "Select a job" in out[0]
        assert all(u["interactive"] is False for u in out[1:5])


def test_read_new_log_returns_only_appended_text(manager: JobManager) -> None:
    job = manager.submit(quick("logger"))
    log_path = Path(job["job_dir"]) / "train.log"
    session = jobs_tab.new_session()
    assert jobs_tab.read_new_log(manager, session) is None  # nothing selected
    assert jobs_tab.open_job(manager, session, job["job_id"]) == ""
    assert jobs_tab.read_new_log(manager, session) is None  # no log yet
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write("line 1\nline 2\n")
    assert jobs_tab.read_new_log(manager, session) == "line 1\nline 2\n"
    assert jobs_tab.read_new_log(manager, session) is None  # nothing new
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write("line 3\npartial")
    text = jobs_tab.read_new_log(manager, session)
    assert text == "line 1\nline 2\nline 3\n"  # a running job's half-written line waits
    assert session["log_offset"] == len(b"line 1\nline 2\nline 3\n")
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(" end\n")
    assert jobs_tab.read_new_log(manager, session).endswith("line 3\npartial end\n")


def test_read_new_log_keeps_at_most_max_log_lines(manager: JobManager) -> None:
    job = manager.submit(quick("chatty"))
    log_path = Path(job["job_dir"]) / "train.log"
    session = jobs_tab.new_session()
    jobs_tab.open_job(manager, session, job["job_id"])
    total = jobs_tab.MAX_LOG_LINES + 500
    log_path.write_text("".join(f"step {i}\n" for i in range(total)), encoding="utf-8")
    text = jobs_tab.read_new_log(manager, session)
    lines = text.splitlines()
    assert len(lines) == jobs_tab.MAX_LOG_LINES
    assert lines[0] == "step 500" and lines[-1] == f"step {total - 1}"
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write("one more\n")
    lines = jobs_tab.read_new_log(manager, session).splitlines()
    assert len(lines) == jobs_tab.MAX_LOG_LINES and lines[-1] == "one more" and lines[0] == "step 501"


def test_open_job_starts_from_the_end_of_a_big_log(manager: JobManager) -> None:
    job = manager.submit(quick("big log"))
    log_path = Path(job["job_dir"]) / "train.log"
    line = "x" * 99 + "\n"
    log_path.write_text(line * 5000, encoding="utf-8")  # 500 kB, more than the first read
    session = jobs_tab.new_session()
    text = jobs_tab.open_job(manager, session, job["job_id"])
    assert 0 < len(text.encode()) <= jobs_tab.LOG_FIRST_READ_BYTES
    assert session["log_offset"] == log_path.stat().st_size
    assert jobs_tab.open_job(manager, session, "no-such-job") == "" and session["job"] is None


def test_start_job_with_an_invalid_form_creates_nothing(manager: JobManager) -> None:
    values = values_with(train_tab.initial_config(), learning_rate=0)
    errors, result, job_id = train_tab.start_job(manager, tuple(values))
    assert job_id is None and result == ""
    assert "learning_rate" in errors and "Fix these" in errors
    assert manager.list()[1] == 0
    assert list((manager.settings.jobs_dir).iterdir()) == []


def test_start_job_with_a_bad_mapping_names_it(manager: JobManager) -> None:
    values = values_with(train_tab.initial_config(), column_mapping="nonsense")
    errors, _, job_id = train_tab.start_job(manager, tuple(values))
    assert job_id is None and "column_mapping" in errors
    assert manager.list()[1] == 0


def test_start_job_with_a_valid_form_queues_it(manager: JobManager) -> None:
    values = values_with(train_tab.initial_config(), max_steps=30.0, name="from the form")
    errors, result, job_id = train_tab.start_job(manager, tuple(values))
    assert errors == "" and job_id is not None and job_id in result
    job = manager.get(job_id)
    assert job["status"] == "queued" and job["name"] == "from the form" and job["config"]["max_steps"] == 30


def test_start_job_with_a_broken_dataset_names_the_row(manager: JobManager) -> None:
    manager.settings.uploads_dir.mkdir(parents=True)
    bad = manager.settings.uploads_dir / "bad.jsonl"  # inside the workspace, where uploads live
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
    bad.write_text(good * 2 + good.replace('"user"', '"wizard"'), encoding="utf-8")
    values = values_with(train_tab.initial_config(), dataset_name=str(bad))
    errors, _, job_id = train_tab.start_job(manager, tuple(values))
    assert job_id is None and "row 3" in errors and "dataset" in errors
    assert manager.list()[1] == 0


def test_save_upload_copies_under_a_server_made_name(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    src = tmp_path / "my data.JSONL"
    src.write_text('{"text": "hello"}\n', encoding="utf-8")
    first = Path(train_tab.save_upload(settings, str(src)))
    second = Path(train_tab.save_upload(settings, str(src)))
    assert first.parent == settings.uploads_dir and second.parent == settings.uploads_dir
    assert first != second
    assert first.name.startswith("upload-") and first.suffix == ".jsonl"
    assert "my data" not in first.name
    assert first.read_text(encoding="utf-8") == '{"text": "hello"}\n'
    assert src.exists()  # copied, not moved


@pytest.mark.parametrize("name", ["notes.txt", "no-suffix"])
def test_save_upload_rejects_other_types(tmp_path: Path, name: str) -> None:
    settings = Settings(workspace=tmp_path / "ws")
    src = tmp_path / name
    src.write_text("hello", encoding="utf-8")
    with pytest.raises(gr.Error, match="Unsupported file type"):
        train_tab.save_upload(settings, str(src))
    with pytest.raises(gr.Error, match="No file"):
        train_tab.save_upload(settings, None)
    assert not settings.uploads_dir.exists() or not any(settings.uploads_dir.iterdir())
