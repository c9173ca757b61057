"""Reading training data: local files, saved `datasets` folders, shipped samples and Hub ids.

Rows are read lazily and converted one at a time into what `SFTTrainer` takes (`messages`,
`prompt`/`completion`, or `text`), so a preview of a 10 GB file reads a few lines, and every problem
is reported as the file, the row and what is wrong with it, never as a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
SAMPLES = {"chat": "chat.jsonl", "alpaca": "alpaca.json"}
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MAX_ROW_ERRORS = 20


class DatasetError(ValueError):
    """A dataset problem a person can fix: names the source, the row (when there is one) and the problem."""

    def __init__(self, source: str, message: str, row: int | None = None, errors: list[str] | None = None):
        self.source, self.row, self.problem = source, row, message
        self.errors = errors or []
        where = f"{source} row {row}" if row is not None else source
        super().__init__(f"{where}: {message}")


@dataclass
class Preview:
    """The first rows as they will be trained, plus what was detected on the way."""

    source: str
    format: str
    columns: list[str]
    rows: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)
    scanned: int = 0


# ---- where the data lives ---------------------------------------------------------------------------
def sample_names() -> list[str]:
    return [f"sample:{name}" for name in SAMPLES]


def resolve_local(name: str) -> Path | None:
    """The local file or folder `name` points at, or None when it should be a Hub id."""
    if name.startswith("sample:"):
        key = name.split(":", 1)[1]
        if key not in SAMPLES:
            raise DatasetError(name, f"unknown sample (samples: {', '.join(sample_names())})")
        return SAMPLES_DIR / SAMPLES[key]
    if "\x00" in name:
        raise DatasetError("dataset_name", "path contains a NUL byte")
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or path.suffix.lower() in FILE_SUFFIXES or "\\" in name
    if not looks_like_path and name.count("/") == 1:
        return None  # 'org/name' is a Hub id; a local folder of that shape is written './org/name'
    if path.exists():
        return path.resolve()
    raise DatasetError(name, "file or folder not found")


# ---- raw rows, read lazily ----------------------------------------------------------------------------
def _decode(raw: bytes, source: str, row: int) -> str:
    try:
        return raw.decode("utf-8-sig" if row == 1 else "utf-8")  # tolerate a byte-order mark
    except UnicodeDecodeError:
        raise DatasetError(source, "not valid UTF-8 text", row) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = _decode(raw, path.name, lineno).strip()
            if not text:
                continue
            try:
                yield lineno, json.loads(text)
            except json.JSONDecodeError as exc:
                raise DatasetError(path.name, f"invalid JSON ({exc.msg} at column {exc.colno})", lineno) from None
            except (ValueError, RecursionError) as exc:  # absurd nesting or a 5,000-digit number
                raise DatasetError(path.name, f"invalid JSON ({type(exc).__name__}: {str(exc)[:100]})",
                                   lineno) from None


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        yield from _jsonl_rows(path)  # .json holding one object per line, as `datasets` also accepts
        return
    text = _decode(path.read_bytes(), path.name, 1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(path.name, f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:
        raise DatasetError(path.name, f"invalid JSON ({type(exc).__name__}: {str(exc)[:100]})") from None
    yield from enumerate(data, start=1)


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as fh:
        text_stream = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
        try:
            reader = csv.DictReader(text_stream)
            for rowno, row in enumerate(reader, start=1):
                if None in row:
                    raise DatasetError(path.name, "more values than header columns", rowno)
                yield rowno, row
        except UnicodeDecodeError:
            raise DatasetError(path.name, "not valid UTF-8 text") from None
        except csv.Error as exc:
            raise DatasetError(path.name, f"invalid CSV ({exc})") from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DatasetError(path.name, f"not a readable Parquet file ({exc})") from None
    rowno = 0
    for batch in pf.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            rowno += 1
            yield rowno, row


def _folder_rows(path: Path, split: str) -> Iterator[tuple[int, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # not a saved dataset folder
        raise DatasetError(path.name, f"not a folder saved with datasets.save_to_disk ({exc})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DatasetError(path.name, f"dataset_train_split '{split}' not found (splits: {', '.join(ds)})")
        ds = ds[split]
    yield from enumerate(ds, start=1)


def _hub_rows(name: str, split: str) -> Iterator[tuple[int, Any]]:
    from datasets import load_dataset

    try:
        ds = load_dataset(name, split=split, streaming=True)
    except Exception as exc:  # network, auth, or unknown repo: all become one readable message
        raise DatasetError(name, f"could not load from the Hugging Face Hub ({type(exc).__name__}: {exc})") from None
    yield from enumerate(ds, start=1)


def raw_rows(name: str, split: str = "train") -> Iterator[tuple[int, Any]]:
    """(row number, raw row) pairs from any supported source, lazily."""
    path = resolve_local(name)
    if path is None:
        yield from _hub_rows(name, split)
        return
    if path.is_dir():
        yield from _folder_rows(path, split)
        return
    if path.stat().st_size == 0:
        raise DatasetError(path.name, "the file is empty")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(path.name, f"unsupported file type (use {', '.join(FILE_SUFFIXES)})")
    yield from reader(path)


# ---- formats -------------------------------------------------------------------------------------------
def detect_format(columns: list[str], first_row: dict[str, Any] | None = None) -> str:
    """The row format implied by the (already mapped) columns."""
    cols = set(columns)
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        turns = (first_row or {}).get("conversations")
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "role" in turns[0]:
            return "messages"
        return "sharegpt"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "text" in cols:
        return "text"
    raise ValueError(
        f"cannot detect the format from columns {sorted(cols)}: expected 'messages', 'conversations', "
        "'instruction'+'output', 'prompt'+'completion' or 'text' (or set column_mapping)"
    )


def _str(row: dict[str, Any], key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and value != value):  # missing, or NaN from pandas/csv
        if required:
            raise ValueError(f"missing '{key}'")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be text, got {type(value).__name__}")
    return value


def _check_messages(turns: Any, key: str = "messages") -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"'{key}' must be a non-empty list of {{role, content}}")
    out = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise ValueError(f"'{key}' item {i} must be an object with 'role' and 'content'")
        if turn["role"] not in ROLES:
            raise ValueError(f"'{key}' item {i}: role {turn['role']!r} is not one of {', '.join(ROLES)}")
        if not isinstance(turn["content"], str):
            raise ValueError(f"'{key}' item {i}: content must be text")
        out.append({"role": turn["role"], "content": turn["content"]})
    if not any(t["role"] == "assistant" for t in out):
        raise ValueError(f"'{key}' has no assistant turn to learn from")
    return out


def _sharegpt(turns: Any) -> list[dict[str, str]]:
    if not isinstance(turns, list) or not turns:
        raise ValueError("'conversations' must be a non-empty list of {from, value}")
    out = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"'conversations' item {i} must be an object with 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise ValueError(f"'conversations' item {i}: 'from' {turn['from']!r} is not human, gpt or system")
        if not isinstance(turn["value"], str):
            raise ValueError(f"'conversations' item {i}: 'value' must be text")
        out.append({"role": role, "content": turn["value"]})
    return _check_messages(out, "conversations")


def convert_row(row: Any, fmt: str) -> dict[str, Any]:
    """One raw row as SFTTrainer wants it; raises ValueError with the problem (no row number)."""
    if not isinstance(row, dict):
        raise ValueError(f"each row must be an object, got {type(row).__name__}")
    if fmt == "messages":
        key = "messages" if "messages" in row or "conversations" not in row else "conversations"
        if key not in row:
            raise ValueError("missing 'messages'")
        return {"messages": _check_messages(row[key], key)}
    if fmt == "sharegpt":
        if "conversations" not in row:
            raise ValueError("missing 'conversations'")
        return {"messages": _sharegpt(row["conversations"])}
    if fmt == "alpaca":
        instruction, extra = _str(row, "instruction"), _str(row, "input", required=False)
        turns = [{"role": "system", "content": _str(row, "system")}] if row.get("system") else []
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": _str(row, "output")}]
        return {"messages": turns}
    if fmt == "prompt_completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list) and isinstance(completion, list):
            return {"prompt": _turns(prompt, "prompt"), "completion": _check_messages(completion, "completion")}
        return {"prompt": _str(row, "prompt"), "completion": _str(row, "completion")}
    if fmt == "text":
        text = _str(row, "text")
        if not text.strip():
            raise ValueError("'text' is empty")
        return {"text": text}
    raise ValueError(f"unknown dataset_format '{fmt}'")


def _turns(turns: list[Any], key: str) -> list[dict[str, str]]:
    """A prompt's messages: like `_check_messages` but without needing an assistant turn."""
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise ValueError(f"'{key}' item {i} must be an object with a valid 'role' and text 'content'")
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def _apply_mapping(row: Any, mapping: dict[str, str]) -> Any:
    if not mapping or not isinstance(row, dict):
        return row
    out = dict(row)
    for role, column in mapping.items():
        if column in row:
            out[role] = row[column]
    return out


def _check_mapping(columns: list[str], mapping: dict[str, str], source: str) -> None:
    for role, column in mapping.items():
        if column not in columns:
            raise DatasetError(source, f"column_mapping: column '{column}' (for {role}) not found; "
                                       f"columns are: {', '.join(columns) or 'none'}")


# ---- the public entry points ----------------------------------------------------------------------------
class _Reader:
    """Iterates converted rows, learning the format from the first row when asked to detect it."""

    def __init__(self, name: str, fmt: str = "auto", mapping: dict[str, str] | None = None, split: str = "train"):
        self.name, self.fmt, self.mapping, self.split = name, fmt, mapping or {}, split
        self.source = Path(name).name if not name.startswith("sample:") else name
        self.columns: list[str] = []

    def rows(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        """(row number, converted row or None, error or None)."""
        seen_any = False
        for rowno, raw in raw_rows(self.name, self.split):
            if not seen_any:
                seen_any = True
                self._learn(raw, rowno)
            row = _apply_mapping(raw, self.mapping)
            try:
                yield rowno, convert_row(row, self.fmt), None
            except ValueError as exc:
                yield rowno, None, str(exc)
        if not seen_any:
            raise DatasetError(self.source, "no rows found (the file is empty)")

    def _learn(self, raw: Any, rowno: int) -> None:
        if not isinstance(raw, dict):
            raise DatasetError(self.source, f"each row must be an object, got {type(raw).__name__}", rowno)
        self.columns = [str(c) for c in raw]
        _check_mapping(self.columns, self.mapping, self.source)
        if self.fmt == "auto":
            try:
                self.fmt = detect_format(list(_apply_mapping(raw, self.mapping)), _apply_mapping(raw, self.mapping))
            except ValueError as exc:
                raise DatasetError(self.source, str(exc)) from None


def preview(name: str, fmt: str = "auto", mapping: dict[str, str] | None = None, n: int = 5,
            split: str = "train", scan_rows: int = 200) -> Preview:
    """The first `n` converted rows, the detected format, and row errors among the first `scan_rows`."""
    reader = _Reader(name, fmt, mapping, split)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    scanned = 0
    for rowno, row, error in islice(reader.rows(), max(n, scan_rows)):
        scanned += 1
        if error and len(errors) < MAX_ROW_ERRORS:
            errors.append(f"{reader.source} row {rowno}: {error}")
        elif row is not None and len(rows) < n:
            rows.append(row)
    return Preview(reader.source, reader.fmt, reader.columns, rows, errors, scanned)


def load_rows(name: str, fmt: str = "auto", mapping: dict[str, str] | None = None, split: str = "train",
              max_samples: int | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Every row converted, or a DatasetError listing the first bad rows. Returns (format, rows)."""
    reader = _Reader(name, fmt, mapping, split)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    first: tuple[int, str] | None = None
    for rowno, row, error in reader.rows():
        if error:
            first = first or (rowno, error)
            errors.append(f"{reader.source} row {rowno}: {error}")
            if len(errors) >= MAX_ROW_ERRORS:
                break
        elif row is not None:
            rows.append(row)
        if max_samples is not None and len(rows) >= max_samples:
            break
    if first is not None:
        more = f" ({len(errors)}{'+' if len(errors) >= MAX_ROW_ERRORS else ''} bad rows)" if len(errors) > 1 else ""
        raise DatasetError(reader.source, first[1] + more, first[0], errors=errors)
    if not rows:
        raise DatasetError(reader.source, "no usable rows")
    return reader.fmt, rows
