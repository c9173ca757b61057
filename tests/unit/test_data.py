"""Reading training data: formats, samples, column mapping, row-level errors and laziness."""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft_ui.config import DATASET_FORMATS
from sft_ui.data import (
    MAX_ROW_ERRORS,
    ROLES,
    SAMPLES_DIR,
    DatasetError,
    convert_row,
    detect_format,
    load_rows,
    preview,
    raw_rows,
    resolve_local,
)

CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def dataset_error(*args: Any, **kwargs: Any) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_rows(*args, **kwargs)
    return info.value


def chat(i: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


# ---- each format ---------------------------------------------------------------------------------------------
def test_messages_jsonl(tmp_path: Path) -> None:
    rows = [chat(i) for i in range(3)]
    rows[1]["messages"].insert(0, {"role": "system", "content": "be brief", "extra": "dropped"})
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    fmt, out = load_rows(str(path))
    assert fmt == "messages"
    assert out[0] == chat(0)
    assert out[1]["messages"][0] == {"role": "system", "content": "be brief"}
    assert len(out) == 3
    pv = preview(str(path), n=2)
    assert (pv.format, pv.source, pv.columns, len(pv.rows), pv.errors) == ("messages", "chat.jsonl", ["messages"], 2,
                                                                           [])


def test_sharegpt_json_array(tmp_path: Path) -> None:
    rows = [
        {"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "hi"},
                           {"from": "gpt", "value": "hello"}]},
        {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
    ]
    path = tmp_path / "share.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    fmt, out = load_rows(str(path))
    assert fmt == "sharegpt"
    assert out[0] == {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "hello"}]}
    assert out[1] == {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}


def test_json_with_one_object_per_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lines.json", [chat(0), chat(1)])
    assert load_rows(str(path)) == ("messages", [chat(0), chat(1)])


def test_alpaca_csv_with_and_without_input(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "alpaca.csv", ["instruction", "input", "output"], [
        ["Translate to French", "cat", "chat"],
        ["Say hi", "", "hi"],
        ["Sum, please", "1, 2\nand 3", "6"],
    ])
    fmt, out = load_rows(str(path))
    assert fmt == "alpaca"
    assert out[0] == {"messages": [{"role": "user", "content": "Translate to French\n\ncat"},
                                   {"role": "assistant", "content": "chat"}]}
    assert out[1] == {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]}
    assert out[2]["messages"][0]["content"] == "Sum, please\n\n1, 2\nand 3"
    assert preview(str(path)).columns == ["instruction", "input", "output"]


def test_alpaca_system_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "i", "output": "o", "system": "s"}])
    assert load_rows(str(path))[1][0]["messages"] == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "i"}, {"role": "assistant", "content": "o"}
    ]


def test_prompt_completion_parquet(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "pc.parquet"
    pd.DataFrame({"prompt": ["The sky is", "2+2="], "completion": [" blue.", "4"]}).to_parquet(path)
    fmt, out = load_rows(str(path))
    assert fmt == "prompt_completion"
    assert out == [{"prompt": "The sky is", "completion": " blue."}, {"prompt": "2+2=", "completion": "4"}]


def test_conversational_prompt_completion(tmp_path: Path) -> None:
    row = {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "yo"}]}
    path = write_jsonl(tmp_path / "pc.jsonl", [row])
    assert load_rows(str(path)) == ("prompt_completion", [row])


def test_text_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "hello world"}, {"text": "second"}])
    assert load_rows(str(path)) == ("text", [{"text": "hello world"}, {"text": "second"}])


def test_blank_lines_in_jsonl_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps({"text": "a"}) + "\n\n   \n" + json.dumps({"text": "b"}) + "\n", encoding="utf-8")
    assert [n for n, _ in raw_rows(str(path))] == [1, 4]
    assert load_rows(str(path))[1] == [{"text": "a"}, {"text": "b"}]


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "both.jsonl", [{"text": "plain", "prompt": "p", "completion": "c"}])
    assert load_rows(str(path))[0] == "prompt_completion"
    assert load_rows(str(path), fmt="text") == ("text", [{"text": "plain"}])


def test_saved_dataset_folder(tmp_path: Path) -> None:
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_list([chat(0), chat(1)]).save_to_disk(str(folder))
    assert load_rows(str(folder)) == ("messages", [chat(0), chat(1)])


def test_saved_dataset_dict_splits(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved_dict"
    DatasetDict({"train": Dataset.from_list([{"text": "t1"}, {"text": "t2"}]),
                 "test": Dataset.from_list([{"text": "e1"}])}).save_to_disk(str(folder))
    assert load_rows(str(folder)) == ("text", [{"text": "t1"}, {"text": "t2"}])
    assert load_rows(str(folder), split="test") == ("text", [{"text": "e1"}])
    err = dataset_error(str(folder), split="validation")
    assert "saved_dict" in str(err)
    assert "dataset_train_split 'validation' not found" in str(err)
    assert "train" in str(err) and "test" in str(err)


def test_folder_that_is_not_a_saved_dataset(tmp_path: Path) -> None:
    folder = tmp_path / "plain_folder"
    folder.mkdir()
    (folder / "x.jsonl").write_text("{}\n", encoding="utf-8")
    err = dataset_error(str(folder))
    assert "plain_folder" in str(err) and "save_to_disk" in str(err)


# ---- shipped samples ------------------------------------------------------------------------------------------
def test_sample_chat() -> None:
    fmt, rows = load_rows("sample:chat")
    assert fmt == "messages"
    assert len(rows) >= 300
    assert all(any(t["role"] == "assistant" for t in r["messages"]) for r in rows)
    assert preview("sample:chat").source == "sample:chat"


def test_sample_alpaca() -> None:
    pv = preview("sample:alpaca")
    assert pv.format == "alpaca"
    assert pv.errors == []
    fmt, rows = load_rows("sample:alpaca")
    assert fmt == "alpaca" and len(rows) > 0


def test_sample_paths_resolve() -> None:
    assert resolve_local("sample:chat") == SAMPLES_DIR / "chat.jsonl"
    assert (SAMPLES_DIR / "chat.jsonl").is_file()


def test_unknown_sample() -> None:
    with pytest.raises(DatasetError) as info:
        resolve_local("sample:nope")
    assert "sample:nope" in str(info.value) and "unknown sample" in str(info.value)
    assert "sample:chat" in str(info.value)
    err = dataset_error("sample:nope")
    assert "unknown sample" in str(err)


def test_resolve_local_hub_id_and_paths(tmp_path: Path) -> None:
    assert resolve_local("someone/some-dataset") is None
    existing = write_jsonl(tmp_path / "x.jsonl", [{"text": "a"}])
    assert resolve_local(str(existing)) == existing.resolve()
    with pytest.raises(DatasetError, match="not found"):
        resolve_local("./nowhere/data")
    with pytest.raises(DatasetError, match="NUL"):
        resolve_local("bad\x00name.jsonl")


# ---- column mapping -------------------------------------------------------------------------------------------
def test_column_mapping_alpaca(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["Capital of France?", "Paris"], ["1+1?", "2"]])
    with pytest.raises(DatasetError, match="cannot detect the format"):
        load_rows(str(path))
    fmt, rows = load_rows(str(path), mapping={"instruction": "question", "output": "answer"})
    assert fmt == "alpaca"
    assert rows[0] == {"messages": [{"role": "user", "content": "Capital of France?"},
                                    {"role": "assistant", "content": "Paris"}]}
    pv = preview(str(path), mapping={"instruction": "question", "output": "answer"})
    assert pv.format == "alpaca" and pv.columns == ["question", "answer"] and len(pv.rows) == 2


def test_column_mapping_missing_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["q", "a"]])
    for call in (load_rows, preview):
        with pytest.raises(DatasetError) as info:
            call(str(path), mapping={"instruction": "prompt_text", "output": "answer"})
        msg = str(info.value)
        assert "qa.csv" in msg
        assert "'prompt_text'" in msg and "not found" in msg
        assert "question, answer" in msg


# ---- malformed input: the file, the row and the problem ---------------------------------------------------------
def test_bad_json_line_17(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "broken.jsonl", [chat(i) for i in range(16)])
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"messages": [{"role": "user", "content": "x"}\n')
        fh.write(json.dumps(chat(99)) + "\n")
    err = dataset_error(str(path))
    assert "broken.jsonl row 17" in str(err)
    assert "invalid JSON" in str(err)
    assert err.row == 17 and err.source == "broken.jsonl"
    with pytest.raises(DatasetError, match="row 17"):
        preview(str(path), n=5, scan_rows=50)
    assert len(preview(str(path), n=5, scan_rows=10).rows) == 5  # the bad line was never reached


def test_bad_json_array(tmp_path: Path) -> None:
    path = tmp_path / "arr.json"
    path.write_text('[{"text": "a"},\n {"text": }]', encoding="utf-8")
    err = dataset_error(str(path))
    assert "arr.json" in str(err) and "invalid JSON" in str(err) and "line 2" in str(err)


def test_row_without_messages(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "m.jsonl", [chat(0), {"text": "oops"}, chat(2)])
    err = dataset_error(str(path))
    assert "m.jsonl row 2" in str(err) and "missing 'messages'" in str(err)
    assert err.errors == ["m.jsonl row 2: missing 'messages'"]


def test_unknown_role(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "boop"}]}
    path = write_jsonl(tmp_path / "roles.jsonl", [chat(0), chat(1), bad])
    err = dataset_error(str(path))
    assert "roles.jsonl row 3" in str(err)
    assert "'robot'" in str(err) and "not one of" in str(err)


@pytest.mark.parametrize(("row", "problem"), [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user"}]}, "'role' and 'content'"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}, "content must be text"),
    ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant turn"),
])
def test_bad_messages(row: dict[str, Any], problem: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [chat(0), row])
    err = dataset_error(str(path))
    assert "bad.jsonl row 2" in str(err) and problem in str(err)


def test_bad_sharegpt_speaker(tmp_path: Path) -> None:
    rows = [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
            {"conversations": [{"from": "alien", "value": "a"}, {"from": "gpt", "value": "b"}]}]
    path = write_jsonl(tmp_path / "sg.jsonl", rows)
    err = dataset_error(str(path))
    assert "sg.jsonl row 2" in str(err) and "'alien'" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    err = dataset_error(str(path))
    assert "empty.jsonl" in str(err) and "empty" in err.problem


def test_blank_only_file(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text("\n\n  \n", encoding="utf-8")
    err = dataset_error(str(path))
    assert "blank.jsonl" in str(err) and "no rows" in str(err)


def test_header_only_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "hdr.csv", ["instruction", "output"], [])
    assert "hdr.csv" in str(dataset_error(str(path)))


def test_non_utf8_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "latin.jsonl", [{"text": "ok"}, {"text": "ok"}])
    with path.open("ab") as fh:
        fh.write('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    err = dataset_error(str(path))
    assert "latin.jsonl row 3" in str(err) and "UTF-8" in str(err)


def test_non_utf8_csv(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("text\ncaf\u00e9\n".encode("latin-1"))
    err = dataset_error(str(path))
    assert "latin.csv" in str(err) and "UTF-8" in str(err)


def test_csv_row_with_extra_values(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("text\nok\na,b\n", encoding="utf-8")
    err = dataset_error(str(path))
    assert "wide.csv row 2" in str(err) and "more values than header columns" in str(err)


def test_damaged_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"this is not parquet at all")
    err = dataset_error(str(path))
    assert "bad.parquet" in str(err) and "Parquet" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    err = dataset_error(str(path))
    assert "nope.jsonl" in str(err) and "not found" in str(err)
    with pytest.raises(DatasetError, match="not found"):
        preview(str(path))


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n", encoding="utf-8")
    err = dataset_error(str(path))
    assert "notes.txt" in str(err) and "unsupported" in str(err)
    assert ".jsonl" in str(err)


def test_undetectable_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": 2}])
    err = dataset_error(str(path))
    assert "odd.jsonl" in str(err) and "cannot detect the format" in str(err)
    assert "'bar'" in str(err) and "'foo'" in str(err)
    with pytest.raises(ValueError, match="cannot detect the format"):
        detect_format(["foo", "bar"])


def test_row_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "list.jsonl", [[1, 2]])
    err = dataset_error(str(path))
    assert "list.jsonl row 1" in str(err) and "must be an object" in str(err)


def test_detect_format_table() -> None:
    assert detect_format(["messages", "id"]) == "messages"
    assert detect_format(["conversations"], {"conversations": [{"from": "human", "value": "x"}]}) == "sharegpt"
    assert detect_format(["conversations"]) == "sharegpt"
    assert detect_format(["instruction", "input", "output"]) == "alpaca"
    assert detect_format(["prompt", "completion"]) == "prompt_completion"
    assert detect_format(["text", "meta"]) == "text"
    assert detect_format(["instruction", "output", "text"]) == "alpaca"


# ---- preview and load_rows: collecting errors -----------------------------------------------------------------------
BAD_ROWS = (3, 6, 9)


def _ten_rows_three_bad(tmp_path: Path) -> Path:
    rows: list[Any] = []
    for i in range(1, 11):
        if i in BAD_ROWS:
            rows.append({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})
        else:
            rows.append(chat(i))
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def test_preview_collects_row_errors(tmp_path: Path) -> None:
    path = _ten_rows_three_bad(tmp_path)
    pv = preview(str(path), n=4)
    assert pv.format == "messages"
    assert len(pv.rows) == 4
    assert pv.rows[:2] == [chat(1), chat(2)]
    assert pv.rows[2] == chat(4)  # row 3 is bad and skipped
    assert len(pv.errors) == 3
    for error, rowno in zip(pv.errors, BAD_ROWS, strict=True):
        assert error.startswith(f"mixed.jsonl row {rowno}: ")
        assert "not one of" in error
    assert pv.scanned == 10


def test_load_rows_lists_bad_rows(tmp_path: Path) -> None:
    path = _ten_rows_three_bad(tmp_path)
    err = dataset_error(str(path))
    assert err.row == 3
    assert "mixed.jsonl row 3" in str(err) and "(3 bad rows)" in str(err)
    assert [e.split(":")[0] for e in err.errors] == [f"mixed.jsonl row {r}" for r in BAD_ROWS]


def test_row_errors_are_capped(tmp_path: Path) -> None:
    rows = [chat(0)] + [{"messages": "nope"}] * (MAX_ROW_ERRORS + 10)
    path = write_jsonl(tmp_path / "many.jsonl", rows)
    err = dataset_error(str(path))
    assert len(err.errors) == MAX_ROW_ERRORS
    assert f"({MAX_ROW_ERRORS}+ bad rows)" in str(err)
    assert len(preview(str(path)).errors) == MAX_ROW_ERRORS


def test_no_usable_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "ws.jsonl", [{"text": "ok"}])
    assert load_rows(str(path)) == ("text", [{"text": "ok"}])
    path = write_jsonl(tmp_path / "only_bad.jsonl", [{"text": "   "}])
    err = dataset_error(str(path))
    assert "only_bad.jsonl row 1" in str(err) and "'text' is empty" in str(err)


def test_preview_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    path.write_text((json.dumps(chat(0)) + "\n") * 200_000, encoding="utf-8")
    pv = preview(str(path), n=5, scan_rows=20)
    assert len(pv.rows) == 5
    assert pv.scanned <= 20
    assert pv.format == "messages"


def test_preview_n_larger_than_scan(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": str(i)} for i in range(50)])
    pv = preview(str(path), n=30, scan_rows=10)
    assert len(pv.rows) == 30 and pv.scanned == 30


def test_max_samples_caps_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": str(i)} for i in range(50)])
    fmt, rows = load_rows(str(path), max_samples=7)
    assert fmt == "text"
    assert rows == [{"text": str(i)} for i in range(7)]
    assert len(load_rows("sample:chat", max_samples=3)[1]) == 3
    assert len(load_rows(str(path), max_samples=500)[1]) == 50


# ---- regressions (bugs found and fixed) ---------------------------------------------------------------------------
def test_conversations_column_with_role_content(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "conv.jsonl", [{"conversations": CHAT}])
    assert load_rows(str(path)) == ("messages", [{"messages": CHAT}])


def test_json_array_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(codecs.BOM_UTF8 + json.dumps([{"messages": CHAT}]).encode("utf-8"))
    assert load_rows(str(path)) == ("messages", [{"messages": CHAT}])


def test_csv_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"instruction,output\nhi,yo\n")
    assert load_rows(str(path))[0] == "alpaca"


def test_jsonl_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(codecs.BOM_UTF8 + (json.dumps({"text": "a"}) + "\n").encode("utf-8"))
    assert load_rows(str(path)) == ("text", [{"text": "a"}])


def test_sharegpt_null_value_rejected() -> None:
    with pytest.raises(ValueError, match="text"):
        convert_row({"conversations": [{"from": "human", "value": None}, {"from": "gpt", "value": "x"}]}, "sharegpt")


# ---- property: convert_row only ever returns a dict or raises ValueError ---------------------------------------
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_role_values = st.sampled_from([*ROLES, "human", "gpt", "robot", "GPT", ""]) | _scalars
_turn = st.fixed_dictionaries(
    {},
    optional={"role": _role_values, "content": _scalars, "from": _role_values, "value": _scalars},
)
_values = st.recursive(
    _scalars | _turn,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
) | st.lists(_turn, min_size=1, max_size=4)
_columns = st.sampled_from(
    ["messages", "conversations", "prompt", "completion", "text", "instruction", "input", "output", "system"]
) | st.text(max_size=6)
_rows = st.dictionaries(_columns, _values, max_size=5) | _values


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=_rows, fmt=st.sampled_from([*DATASET_FORMATS, "bogus"]))
def test_convert_row_returns_dict_or_value_error(row: Any, fmt: str) -> None:
    try:
        out = convert_row(row, fmt)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(out, dict)
    assert fmt in ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
    for key in ("messages", "completion"):
        if isinstance(out.get(key), list):
            assert out[key], f"empty {key}"
            for turn in out[key]:
                assert set(turn) == {"role", "content"}
                assert turn["role"] in ROLES and isinstance(turn["content"], str)
    if fmt == "text":
        assert isinstance(out["text"], str) and out["text"].strip()
