"""Bad input never crashes anything: config parsing, YAML, row conversion and malformed dataset files.

Property tests (hypothesis; 200 examples each in CI, 2000 with --full, no deadline) check that `parse_config`
and `load_yaml` raise nothing but ConfigError (whose errors all have a field and a message) and that
`detect_format`/`convert_row` raise nothing but ValueError/DatasetError. A catalogue of malformed dataset files
is read with `preview` and `load_rows` (a DatasetError naming the file and, where there is one, the row), then
posted to a real server as dataset_name (422 with that message, no job, and the server still answers).

Counts (inputs tried, failures) are printed and written to test-artifacts/reliability/bad_input.txt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import Server, Tally, kill_processes_mentioning, server_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sft_ui.config import DATASET_FORMATS, ConfigError, JobConfig, load_yaml, parse_config, parse_set_option
from sft_ui.data import ROLES, DatasetError, convert_row, detect_format, load_rows, preview

SUITE = "bad_input"
HUGE_BYTES = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def counts(request: pytest.FixtureRequest) -> Iterator[Tally]:
    found = Tally("reliability", SUITE)
    yield found
    found.write(request.config)


def _examples(full_run: bool) -> int:
    return 2000 if full_run else 200


def _settings(full_run: bool) -> settings:
    return settings(max_examples=_examples(full_run), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ---- strategies --------------------------------------------------------------------------------------------------
FIELDS = [*JobConfig.model_fields, "torch_dtype"]
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats() | st.text(max_size=30) | st.sampled_from(["", " ", "auto", "lora", "full", "-1", "0", "1e3",
                                                                      "sample:chat", "embedded:tiny-llama", "true"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
    st.text(max_size=12) | st.sampled_from(FIELDS), inner, max_size=5), max_leaves=25)
CONFIG_DICTS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=20), JSON, max_size=10)
DEFAULTS = JobConfig().to_dict()
NEAR_VALID = st.dictionaries(st.sampled_from(FIELDS), JSON, min_size=1, max_size=4).map(lambda d: {**DEFAULTS, **d})
CONFIG_INPUTS = CONFIG_DICTS | NEAR_VALID | JSON

YAML_TOKENS = ["name: ", "max_steps: ", "learning_rate: ", "- ", ": ", "\n", "  ", "[", "]", "{", "}", ",", "&a ",
               "*a", "!!python/object:os.system ", "!!binary ", "---", "...", "? ", "|", ">", "'", '"', "#",
               "%YAML 1.2", "!!set ", "<<: ", ".nan", ".inf", "0x1F", "1e400", "~", "null", "yes", "2024-01-01", "\t",
               "\x00",
               "\ufeff", "lora_target_modules:", "column_mapping: {messages: ", "dataset_name: "]
YAML_TEXT = (st.text(max_size=200) | st.lists(st.sampled_from(YAML_TOKENS) | st.text(max_size=8), max_size=30)
             .map("".join) | CONFIG_DICTS.map(lambda d: yaml.safe_dump(d, allow_unicode=True)))

COLUMNS = ["messages", "conversations", "instruction", "input", "output", "prompt", "completion", "text", "system",
           "role", "content", "from", "value"]
TURN = st.dictionaries(st.sampled_from(["role", "content", "from", "value"]) | st.text(max_size=6),
                       st.sampled_from([*ROLES, "human", "gpt", "wizard", "", None]) | JSON, max_size=4)
ROW_VALUES = JSON | st.lists(TURN, max_size=4) | st.text(max_size=20)
ROWS = st.dictionaries(st.sampled_from(COLUMNS) | st.text(max_size=10), ROW_VALUES, max_size=6)
FORMATS = st.sampled_from([f for f in DATASET_FORMATS if f != "auto"]) | st.text(max_size=12)


def _check_config_error(exc: ConfigError) -> str | None:
    """None when every error names a field and says what is wrong, else what is missing."""
    if not exc.errors:
        return "ConfigError without errors"
    for e in exc.errors:
        if not isinstance(e.field, str) or not isinstance(e.message, str) or not e.message.strip():
            return f"error without a field or message: {e!r}"
        if not e.field and "unknown key ''" not in e.message:  # an empty key is named as what it is: ''
            return f"error without a field: {e!r}"
    return None


# ---- property tests ------------------------------------------------------------------------------------------------
def test_parse_config_raises_only_config_errors(full_run: bool, counts: Tally) -> None:
    @_settings(full_run)
    @given(data=CONFIG_INPUTS)
    def prop(data: Any) -> None:
        try:
            result = parse_config(data)
        except ConfigError as exc:
            problem = _check_config_error(exc)
            counts.record(f"parse_config({data!r:.200})", problem is None, problem or "")
            assert problem is None, problem
            return
        except Exception as exc:
            counts.record(f"parse_config({data!r:.200})", False, f"{type(exc).__name__}: {exc}")
            raise
        counts.record("parse_config", isinstance(result, JobConfig))
        assert isinstance(result, JobConfig)

    prop()


def test_load_yaml_raises_only_config_errors(full_run: bool, counts: Tally) -> None:
    @_settings(full_run)
    @given(text=YAML_TEXT)
    def prop(text: str) -> None:
        try:
            load_yaml(text)
        except ConfigError as exc:
            problem = _check_config_error(exc)
            counts.record(f"load_yaml({text!r:.200})", problem is None, problem or "")
            assert problem is None, problem
            return
        except Exception as exc:
            counts.record(f"load_yaml({text!r:.200})", False, f"{type(exc).__name__}: {exc}")
            raise
        counts.record("load_yaml", True)

    prop()


def test_detect_format_and_convert_row_raise_only_value_errors(full_run: bool, counts: Tally) -> None:
    @_settings(full_run)
    @given(columns=st.lists(st.sampled_from(COLUMNS) | st.text(max_size=10), max_size=6), first=ROWS,
           row=ROWS | JSON, fmt=FORMATS)
    def prop(columns: list[str], first: dict[str, Any], row: Any, fmt: str) -> None:
        for what, call in ((f"detect_format({columns!r}, {first!r:.200})", lambda: detect_format(columns, first)),
                           (f"detect_format(list(row), row) for {first!r:.200}", lambda: detect_format(list(first),
                                                                                                     first)),
                           (f"convert_row({row!r:.200}, {fmt!r})", lambda: convert_row(row, fmt))):
            try:
                result = call()
            except ValueError as exc:  # DatasetError is a ValueError
                ok = bool(str(exc).strip())
                counts.record(what, ok, "empty message")
                assert ok, what
                continue
            except Exception as exc:
                counts.record(what, False, f"{type(exc).__name__}: {exc}")
                raise
            ok = result in DATASET_FORMATS if isinstance(result, str) else isinstance(result, dict)
            counts.record(what, ok, repr(result)[:200])
            assert ok, (what, result)

    prop()


# ---- deep nesting and alias bombs ------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["[" * 100_000, "a: " + "{b: " * 5000, "- " * 3000 + "x"],
                         ids=["flow-lists", "flow-maps", "block-lists"])
def test_load_yaml_deep_nesting_is_a_config_error(text: str, counts: Tally) -> None:
    """Deeper than any config needs: a ConfigError naming the limit. PyYAML 6.0.3's libyaml has no nesting
    limit and its composer recursed in C until the process died of a segmentation fault (CI, 2026-12-04);
    the pure-Python loader recursed until RecursionError."""
    what = f"load_yaml deep {text[:10]!r}"
    try:
        load_yaml(text)
    except ConfigError as exc:
        named = "nested deeper than 64 levels" in str(exc) or "maximum nesting depth" in str(exc)  # ours or libyaml's
        counts.record(what, named, str(exc))
        assert named, str(exc)
        return
    except Exception as exc:
        counts.record(what, False, f"{type(exc).__name__}")
        raise
    counts.record(what, False, "parsed")
    pytest.fail("a config nested thousands of levels deep was accepted")


def test_set_option_deep_nesting_stays_text() -> None:
    """`--set x=[[[[...` must not crash the CLI either: an unparsable value is kept as text."""
    key, value = parse_set_option("lora_target_modules=" + "[" * 100_000)
    assert key == "lora_target_modules" and isinstance(value, str)


class CountingLeaf(str):
    """A leaf whose repr is counted: how much of an input an error message renders."""

    calls = 0

    def __repr__(self) -> str:
        CountingLeaf.calls += 1
        return "'x'"


def test_config_error_message_does_not_render_the_whole_input(counts: Tally) -> None:
    """Deterministic form of the alias bomb: a shared 5-level structure of 9^5 = 59049 leaves as a string field."""
    leaf: Any = CountingLeaf("x")
    for _ in range(5):
        leaf = [leaf] * 9
    CountingLeaf.calls = 0
    with pytest.raises(ConfigError) as info:
        parse_config({"name": leaf})
    rendered = CountingLeaf.calls
    ok = rendered <= 1000 and len(str(info.value)) < 1000
    counts.record("parse_config alias-bomb-shaped input", ok, f"{rendered} leaves rendered for one message")
    assert ok, f"{rendered} leaves rendered for one error message"


def test_yaml_alias_bomb_small_levels_stay_errors(counts: Tally) -> None:
    """The alias bomb at sizes that are still cheap: load_yaml answers a ConfigError naming the field."""
    for levels in (2, 3, 4):
        lines = ['a0: &a0 "xxxxxxxxxx"'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                            for i in range(1, levels + 1)]
        with pytest.raises(ConfigError) as info:
            load_yaml("\n".join([*lines, f"name: *a{levels}"]))
        ok = any(e.field == "name" for e in info.value.errors)
        counts.record(f"yaml alias bomb {levels} levels", ok, str(info.value)[:200])
        assert ok, info.value.errors


# ---- the catalogue of malformed dataset files ---------------------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    """A malformed file: its bytes, the row the error names (None: the file as a whole) and a phrase of it."""

    name: str
    make: Callable[[Path], None]
    row: int | None
    phrase: str


def _text(content: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(content, encoding="utf-8")


def _bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


def _parquet(columns: dict[str, list[Any]]) -> Callable[[Path], None]:
    return lambda path: pq.write_table(pa.table(columns), path)


def _huge_json(path: Path) -> None:
    """A 50 MB single-line JSON file cut off in the middle of its one string."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write('[{"text": "')
        chunk = "abcdefghij" * 100_000
        for _ in range(HUGE_BYTES // len(chunk)):
            fh.write(chunk)


def _binary(seed: int) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(random.Random(seed).randbytes(8192))


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "data.txt").write_text("not a saved dataset", encoding="utf-8")


CHAT_OK = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})

CATALOGUE = [
    Bad("empty.jsonl", _bytes(b""), None, "empty"),
    Bad("blank_lines.jsonl", _text("\n\n   \n"), None, "no rows found"),
    Bad("not_utf8.jsonl", _bytes(b'{"text": "caf\xe9"}\n'), 1, "not valid UTF-8"),
    Bad("not_utf8_line2.jsonl", _bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n'), 2, "not valid UTF-8"),
    Bad("not_utf8.csv", _bytes(b"text\ncaf\xe9\n"), None, "not valid UTF-8"),
    Bad("garbage.jsonl", _binary(1), None, ""),
    Bad("garbage.json", _binary(2), None, ""),
    Bad("garbage.csv", _binary(3), None, ""),
    Bad("garbage.parquet", _binary(4), None, "not a readable Parquet file"),
    Bad("truncated.json", _text('[{"messages": [{"role": "user", "content": "hi"}'), None, "invalid JSON"),
    Bad("truncated.jsonl", _text(CHAT_OK + '\n{"messages": [{"role": "us'), 2, "invalid JSON"),
    Bad("huge_single_line.json", _huge_json, None, "invalid JSON"),
    Bad("wrong_roles.jsonl", _text(json.dumps({"messages": [{"role": "wizard", "content": "x"},
                                                            {"role": "assistant", "content": "y"}]}) + "\n"),
        1, "is not one of"),
    Bad("no_assistant.jsonl", _text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n"), 1,
        "no assistant turn"),
    Bad("sharegpt_wrong_from.json", _text(json.dumps([{"conversations": [{"from": "alien", "value": "x"}]}])), 1,
        "not human, gpt or system"),
    Bad("missing_columns.jsonl", _text('{"question": "a", "answer": "b"}\n'), None, "cannot detect the format"),
    Bad("missing_column_later.jsonl", _text('{"text": "ok"}\n{"other": "x"}\n'), 2, "missing 'text'"),
    Bad("nested_garbage.jsonl", _text('{"messages": {"a": [1, {"b": null}]}}\n'), 1, "must be a non-empty list"),
    Bad("nested_garbage_items.json", _text('[{"messages": [[1, 2], {"role": null}]}]'), 1,
        "must be an object with 'role' and 'content'"),
    Bad("content_not_text.jsonl", _text(json.dumps({"messages": [{"role": "user", "content": {"x": [1]}},
                                                                 {"role": "assistant", "content": "y"}]}) + "\n"),
        1, "content must be text"),
    Bad("ragged.csv", _text("text,label\nhello,1\nbad,2,3\n"), 2, "more values than header columns"),
    Bad("short_rows.csv", _text("instruction,output\nq\n"), 1, "missing 'output'"),
    Bad("header_only.csv", _text("text\n"), None, "no rows found"),
    Bad("huge_field.csv", _text("text\n" + "x" * 200_000 + "\n"), None, "invalid CSV"),
    Bad("wrong_columns.parquet", _parquet({"foo": [1, 2], "bar": ["a", "b"]}), None, "cannot detect the format"),
    Bad("wrong_types.parquet", _parquet({"text": [1, 2]}), 1, "'text' must be text"),
    Bad("bare_string.json", _text('"just a string"'), 1, "each row must be an object, got str"),
    Bad("bare_number.json", _text("42"), 1, "each row must be an object, got int"),
    Bad("array_of_scalars.json", _text("[1, 2, 3]"), 1, "each row must be an object, got int"),
    Bad("empty_array.json", _text("[]"), None, "no rows found"),
    Bad("null_row.jsonl", _text("null\n"), 1, "each row must be an object"),
    Bad("text_empty.jsonl", _text('{"text": "   "}\n'), 1, "'text' is empty"),
    Bad("not_a_dataset_folder", _folder, None, "not a folder saved with datasets.save_to_disk"),
    Bad("notes.txt", _text("hello\n"), None, "unsupported file type"),
]

# Inputs that used to crash (regression tests below): JSON nested deeper than Python's recursion limit and
# integers longer than Python's 4300-digit limit raise RecursionError / ValueError, not DatasetError.
CRASHING = [
    Bad("deep.json", _text("[" * 100_000), None, "invalid JSON"),
    Bad("deep.jsonl", _text('{"messages": ' + "[" * 100_000 + "\n"), 1, "invalid JSON"),
    Bad("bigint.jsonl", _text('{"text": ' + "1" * 5000 + "}\n"), 1, "invalid JSON"),
    Bad("bigint.json", _text('[{"text": ' + "1" * 5000 + "}]"), None, "invalid JSON"),
]


def _message_ok(message: str, bad: Bad) -> str | None:
    """None when the message names the file, the row (when there is one) and the problem."""
    if bad.name not in message:
        return f"does not name the file {bad.name!r}"
    if bad.row is not None and f"row {bad.row}" not in message:
        return f"does not name row {bad.row}"
    if bad.phrase and bad.phrase not in message:
        return f"does not say {bad.phrase!r}"
    return None


def _read(bad: Bad, path: Path) -> list[str]:
    """Problems with how preview and load_rows answer for `path` (empty: both gave a good DatasetError)."""
    problems = []
    try:
        found = preview(str(path))
        if not found.errors:
            problems.append(f"preview accepted it: {found.rows[:1]}")
        elif (why := _message_ok(found.errors[0], bad)) is not None:
            problems.append(f"preview error {found.errors[0]!r} {why}")
    except DatasetError as exc:
        if (why := _message_ok(str(exc), bad)) is not None:
            problems.append(f"preview DatasetError {str(exc)[:200]!r} {why}")
    except Exception as exc:
        problems.append(f"preview crashed: {type(exc).__name__}: {str(exc)[:200]}")
    try:
        fmt, rows = load_rows(str(path))
        problems.append(f"load_rows accepted it ({fmt}, {len(rows)} rows)")
    except DatasetError as exc:
        if (why := _message_ok(str(exc), bad)) is not None:
            problems.append(f"load_rows DatasetError {str(exc)[:200]!r} {why}")
    except Exception as exc:
        problems.append(f"load_rows crashed: {type(exc).__name__}: {str(exc)[:200]}")
    return problems


@pytest.fixture(scope="module")
def catalogue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalogue written once (the 50 MB file too), inside what becomes the server's workspace."""
    ws = tmp_path_factory.mktemp("bad-input") / "workspace"
    folder = ws / "catalogue"
    folder.mkdir(parents=True)
    for bad in CATALOGUE + CRASHING:
        bad.make(folder / bad.name)
    return folder


@pytest.mark.parametrize("bad", CATALOGUE, ids=[b.name for b in CATALOGUE])
def test_malformed_file_gives_a_dataset_error(bad: Bad, catalogue_dir: Path, counts: Tally) -> None:
    problems = _read(bad, catalogue_dir / bad.name)
    counts.record(f"read {bad.name}", not problems, "; ".join(problems))
    assert not problems, problems


@pytest.mark.parametrize("bad", CRASHING, ids=[b.name for b in CRASHING])
def test_crashing_file_gives_a_dataset_error(bad: Bad, catalogue_dir: Path, counts: Tally) -> None:
    problems = _read(bad, catalogue_dir / bad.name)
    counts.record(f"read {bad.name}", not problems, "; ".join(problems))
    assert not problems, problems


# ---- the same files through the real server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(catalogue_dir: Path) -> Iterator[Server]:
    ws = catalogue_dir.parent
    env = server_env(ws, SFT_UI_MAX_CONCURRENT="1", HF_HUB_OFFLINE="1")
    for key in ("SFT_UI_AUTH", "SFT_UI_AUTH_FILE", "SFT_UI_DATA_DIRS"):
        env.pop(key, None)
    srv = Server(ws, env, ws.parent / "server.log")
    try:
        yield srv.start()
    finally:
        srv.kill()
        kill_processes_mentioning(str(ws.parent))


def _post_each(server: Server, files: list[Bad], folder: Path, counts: Tally, row_in_detail: bool = False
               ) -> list[str]:
    """POST each file as dataset_name: 422 whose detail names the file and the problem, and whose detail (with
    row_in_detail) or errors[] name the row; no job created; health still answers."""
    problems = []
    with server.client(timeout=120, check_tracebacks=False) as client:
        total = client.get("/api/sft/jobs").json()["total"]
        for bad in files:
            # a fresh connection each: uvicorn closes one after an unhandled exception (the 500s of the bugs)
            response = client.post("/api/sft/train", headers={"Connection": "close"}, json={
                "config_id": "tiny-lora", "overrides": {"dataset_name": str(folder / bad.name), "max_steps": 1}})
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                else {"detail": response.text}
            detail = str(body.get("detail", ""))
            why = None
            errors = body.get("errors", []) if isinstance(body.get("errors"), list) else []
            row_text = detail if row_in_detail else " ".join([detail, *(str(e.get("message")) for e in errors)])
            if response.status_code != 422:
                why = f"status {response.status_code}: {response.text[:200]}"
            elif (why := _message_ok(detail, Bad(bad.name, bad.make, None, bad.phrase))) is not None:
                pass
            elif bad.row is not None and f"row {bad.row}" not in row_text:
                why = f"does not name row {bad.row}" + (" in the detail" if row_in_detail else "")
            elif not any(e.get("field") == "dataset_name" for e in errors):
                why = f"errors do not name dataset_name: {errors}"
            elif "Traceback" in response.text:
                why = "a traceback in the answer"
            counts.record(f"POST train {bad.name}", why is None, why or "")
            if why is not None:
                problems.append(f"{bad.name}: {why} (detail {detail[:200]!r})")
        after = client.get("/api/sft/jobs").json()["total"]
        if after != total:
            problems.append(f"jobs were created: {total} -> {after}")
        jobs_dir = folder.parent / "jobs"
        if jobs_dir.is_dir() and any(jobs_dir.iterdir()):
            problems.append(f"job folders were created: {sorted(p.name for p in jobs_dir.iterdir())}")
        health = client.get("/api/sft/health")
        counts.record("health after the catalogue", health.status_code == 200, str(health.status_code))
        if health.status_code != 200:
            problems.append(f"health answered {health.status_code}")
    return problems


def test_server_refuses_each_malformed_file(server: Server, catalogue_dir: Path, counts: Tally) -> None:
    problems = _post_each(server, CATALOGUE, catalogue_dir, counts)
    assert not problems, problems
    assert server.proc is not None and server.proc.poll() is None


def test_server_detail_names_the_row(server: Server, catalogue_dir: Path, counts: Tally) -> None:
    rows = [b for b in CATALOGUE if b.row is not None]
    problems = _post_each(server, rows, catalogue_dir, counts, row_in_detail=True)
    assert not problems, problems


def test_server_refuses_each_crashing_file(server: Server, catalogue_dir: Path, counts: Tally) -> None:
    problems = _post_each(server, CRASHING, catalogue_dir, counts)
    assert not problems, problems


def test_server_still_answers_after_all_of_them(server: Server, counts: Tally) -> None:
    """Runs after both catalogue tests: whatever they answered, the server lives and is healthy."""
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        health = client.get("/api/sft/health")
    counts.record("health at the end", health.status_code == 200, str(health.status_code))
    assert health.status_code == 200 and health.json()["status"] == "ok"
