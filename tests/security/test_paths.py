"""Paths a request names are confined to the allowed roots (the workspace, the shipped samples, SFT_UI_DATA_DIRS).

Every escape is tried twice: through the REST API of a real server subprocess (422 naming the field, no job row
and no job folder created) and through `sft_ui.paths.confine_config` directly. Uploads get server-made names, and
the package never hands a string to a shell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import gradio as gr
import httpx
import pytest
from helpers import REPO, new_workspace, wait_for

from sft_ui.config import ConfigError, JobConfig
from sft_ui.data import SAMPLES_DIR, DatasetError, resolve_local
from sft_ui.jobs import JobManager
from sft_ui.paths import confine_config
from sft_ui.settings import Settings
from sft_ui.ui.train_tab import save_upload

if TYPE_CHECKING:
    from conftest import Kit, SecureServer, Tally

CHAT_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
TERMINAL = {"succeeded", "failed", "stopped", "interrupted"}


@dataclass(frozen=True)
class Layout:
    """root/workspace (the server's), root/outside (not allowed), root/datadir (in SFT_UI_DATA_DIRS)."""

    root: Path
    ws: Path
    outside: Path
    datadir: Path

    @property
    def settings(self) -> Settings:
        return Settings(workspace=self.ws, data_dirs=(self.datadir.resolve(),))


def _write_chat(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(CHAT_ROW) + "\n", encoding="utf-8")
    return path


def make_layout(root: Path, models_cache: Path | None) -> Layout:
    ws = new_workspace(root, models_cache)
    outside, datadir = root / "outside", root / "datadir"
    for folder in (ws, ws / "uploads" / "sub", outside, datadir, root / "workspace-evil"):
        _write_chat(folder / "data.jsonl")
    (outside / "model").mkdir()
    (ws / "mymodel").mkdir()
    (ws / "link.jsonl").symlink_to(outside / "data.jsonl")
    (ws / "linkdir").symlink_to(outside, target_is_directory=True)
    (ws / "loop-a.jsonl").symlink_to(ws / "loop-b.jsonl")
    (ws / "loop-b.jsonl").symlink_to(ws / "loop-a.jsonl")
    return Layout(root, ws, outside, datadir)


# name -> value built from the layout; every one must be refused for dataset_name
REFUSED_DATASETS: dict[str, Callable[[Layout], str]] = {
    "dotdot-relative": lambda lay: "../outside/data.jsonl",
    "dotdot-nested": lambda lay: "uploads/../../outside/data.jsonl",
    "dotdot-many": lambda lay: "../../../../../../../../etc/passwd",
    "dotdot-absolute": lambda lay: f"{lay.ws}/../outside/data.jsonl",
    "dotdot-from-datadir": lambda lay: f"{lay.datadir}/../outside/data.jsonl",
    "dotdot-from-samples": lambda lay: f"{SAMPLES_DIR}/../../tests/conftest.py",
    "absolute-etc-passwd": lambda lay: "/etc/passwd",
    "absolute-outside-file": lambda lay: f"{lay.outside}/data.jsonl",
    "absolute-sibling-prefix": lambda lay: f"{lay.ws}-evil/data.jsonl",
    "absolute-proc": lambda lay: "/proc/self/environ",
    "symlink-file": lambda lay: "link.jsonl",
    "symlink-file-absolute": lambda lay: f"{lay.ws}/link.jsonl",
    "symlink-dir": lambda lay: "linkdir/data.jsonl",
    "symlink-loop": lambda lay: "loop-a.jsonl",
    "nul-byte": lambda lay: "data.jsonl\x00.csv",
    "nul-after-absolute": lambda lay: "/etc/passwd\x00",
    "nul-only": lambda lay: "\x00",
    "long-component": lambda lay: "a" * 300 + ".jsonl",
    "long-component-absolute": lambda lay: f"{lay.ws}/{'b' * 300}/data.jsonl",
    "tilde-root": lambda lay: "~root/.bashrc",
    "tilde-root-jsonl": lambda lay: "~root/data.jsonl",
    "sample-escape": lambda lay: "sample:../../../../etc/passwd",
    "file-url": lambda lay: "file:///etc/passwd",
    "backslashes": lambda lay: "..\\outside\\data.jsonl",
}

REFUSED_MODELS: dict[str, Callable[[Layout], str]] = {
    "absolute-etc": lambda lay: "/etc",
    "absolute-outside": lambda lay: str(lay.outside / "model"),
    "dotdot": lambda lay: "../outside/model",
    "dotdot-dot-slash": lambda lay: "./../outside/model",
    "symlink-dir": lambda lay: "./linkdir/model",
    "symlink-dir-absolute": lambda lay: f"{lay.ws}/linkdir/model",
    "tilde-root": lambda lay: "~root",
    "nul-byte": lambda lay: "mymodel\x00",
    "long-component": lambda lay: "m" * 300,
}

# name -> (value, what confine_config should store: None = unchanged)
ALLOWED_DATASETS: dict[str, Callable[[Layout], tuple[str, str | None]]] = {
    "workspace-relative": lambda lay: ("data.jsonl", str((lay.ws / "data.jsonl").resolve())),
    "workspace-absolute": lambda lay: (str(lay.ws / "data.jsonl"), str((lay.ws / "data.jsonl").resolve())),
    "workspace-subfolder": lambda lay: ("uploads/sub/data.jsonl",
                                        str((lay.ws / "uploads/sub/data.jsonl").resolve())),
    "data-dir": lambda lay: (str(lay.datadir / "data.jsonl"), str((lay.datadir / "data.jsonl").resolve())),
    "data-dir-dotdot-inside": lambda lay: (f"{lay.datadir}/../datadir/data.jsonl",
                                           str((lay.datadir / "data.jsonl").resolve())),
    "sample-chat": lambda lay: ("sample:chat", None),
}


# ---- through confine_config directly ------------------------------------------------------------------------------
@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return make_layout(tmp_path, None)


@pytest.mark.parametrize("case", sorted(REFUSED_DATASETS))
def test_confine_config_refuses_dataset_escape(case: str, layout: Layout, tally: Tally) -> None:
    value = REFUSED_DATASETS[case](layout)
    if value.startswith("sample:"):  # not a path for confine_config: the data layer knows only its own samples
        kept = confine_config(JobConfig(dataset_name=value), layout.settings).dataset_name == value
        with pytest.raises(DatasetError, match="unknown sample"):
            resolve_local(value)
        tally.record(f"confine_config dataset {case}", kept)
        assert kept
        return
    try:
        confine_config(JobConfig(dataset_name=value), layout.settings)
    except ConfigError as exc:
        ok, detail = [e.field for e in exc.errors] == ["dataset_name"] and "dataset_name" in str(exc), str(exc)
    else:
        ok, detail = False, f"{value!r} was accepted"
    tally.record(f"confine_config dataset {case}", ok, detail)
    assert ok, f"{case}: {detail}"


@pytest.mark.parametrize("case", sorted(REFUSED_MODELS))
def test_confine_config_refuses_model_escape(case: str, layout: Layout, tally: Tally) -> None:
    value = REFUSED_MODELS[case](layout)
    try:
        confine_config(JobConfig(model_name_or_path=value), layout.settings)
    except ConfigError as exc:
        ok, detail = [e.field for e in exc.errors] == ["model_name_or_path"], str(exc)
    else:
        ok, detail = False, f"{value!r} was accepted"
    tally.record(f"confine_config model {case}", ok, detail)
    assert ok, detail


@pytest.mark.parametrize("case", sorted(ALLOWED_DATASETS))
def test_confine_config_allows_the_roots(case: str, layout: Layout, tally: Tally) -> None:
    value, stored = ALLOWED_DATASETS[case](layout)
    config = confine_config(JobConfig(dataset_name=value), layout.settings)
    ok = config.dataset_name == (stored if stored is not None else value)
    tally.record(f"confine_config allowed {case}", ok, config.dataset_name)
    assert ok, (value, config.dataset_name)


def test_confine_config_allows_a_model_folder_in_the_workspace(layout: Layout, tally: Tally) -> None:
    for value in ("mymodel", str(layout.ws / "mymodel"), "embedded:tiny-llama", "Qwen/Qwen2.5-0.5B"):
        config = confine_config(JobConfig(model_name_or_path=value), layout.settings)
        expected = str((layout.ws / "mymodel").resolve()) if "mymodel" in value else value
        ok = config.model_name_or_path == expected
        tally.record(f"confine_config allowed model {value}", ok, config.model_name_or_path)
        assert ok, (value, config.model_name_or_path)


def test_hub_shaped_name_is_not_read_from_the_server_cwd(layout: Layout, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, tally: Tally) -> None:
    server_cwd = tmp_path / "server-cwd"
    (server_cwd / "evil" / "data").mkdir(parents=True)
    monkeypatch.chdir(server_cwd)
    manager = JobManager(layout.settings)
    try:
        manager.check_config(JobConfig(dataset_name="evil/data"))
        ok, detail = True, "accepted as a Hub id"
    except ConfigError as exc:  # refused as outside the roots: also fine
        ok, detail = "dataset_name" in str(exc), str(exc)
    except DatasetError as exc:
        ok, detail = False, f"read from the server cwd: {exc}"
    finally:
        manager.store.close()
    tally.record("check_config hub-shaped name in the server cwd", ok, detail)
    assert ok, detail


# ---- through the REST API ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, models_cache: Path, kit: type[Kit]
        ) -> Iterator[tuple[SecureServer, Layout]]:
    root = tmp_path_factory.mktemp("paths-api")
    lay = make_layout(root, models_cache)
    env = kit.clean_env(lay.ws, SFT_UI_DATA_DIRS=str(lay.datadir), SFT_UI_STOP_GRACE_S="2", SFT_UI_MAX_CONCURRENT="1")
    with kit.running_server(root, env) as server:
        yield server, lay


@pytest.fixture(scope="module")
def client(api: tuple[SecureServer, Layout]) -> Iterator[httpx.Client]:
    with api[0].client() as c:
        yield c


def _snapshot(client: httpx.Client, lay: Layout) -> tuple[int, set[str]]:
    total = client.get("/api/sft/jobs", params={"limit": 500}).json()["total"]
    jobs_dir = lay.ws / "jobs"
    return total, {p.name for p in jobs_dir.iterdir()} if jobs_dir.is_dir() else set()


def _post(client: httpx.Client, overrides: dict[str, Any]) -> httpx.Response:
    return client.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {"max_steps": 1, **overrides}})


def _names_field(body: dict[str, Any], field: str) -> bool:
    return field in str(body.get("detail", "")) or any(e.get("field") == field for e in body.get("errors", []))


def _refused(client: httpx.Client, lay: Layout, field: str, value: str) -> tuple[bool, str]:
    before = _snapshot(client, lay)
    response = _post(client, {field: value})
    after = _snapshot(client, lay)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    problems = []
    if response.status_code != 422:
        problems.append(f"status {response.status_code}")
    if not _names_field(body, field):
        problems.append(f"the error does not name {field}: {body}")
    if after != before:
        problems.append(f"something was created: jobs {before[0]} -> {after[0]}, dirs {sorted(after[1] - before[1])}")
    return not problems, "; ".join(problems) or str(body.get("detail"))


@pytest.mark.parametrize("case", sorted(REFUSED_DATASETS))
def test_api_refuses_dataset_escape(case: str, api: tuple[SecureServer, Layout], client: httpx.Client,
                                    tally: Tally) -> None:
    ok, detail = _refused(client, api[1], "dataset_name", REFUSED_DATASETS[case](api[1]))
    tally.record(f"api dataset {case}", ok, detail)
    assert ok, detail


@pytest.mark.parametrize("case", sorted(REFUSED_MODELS))
def test_api_refuses_model_escape(case: str, api: tuple[SecureServer, Layout], client: httpx.Client,
                                  tally: Tally) -> None:
    ok, detail = _refused(client, api[1], "model_name_or_path", REFUSED_MODELS[case](api[1]))
    tally.record(f"api model {case}", ok, detail)
    assert ok, detail


def test_api_refuses_in_a_full_config_too(api: tuple[SecureServer, Layout], client: httpx.Client,
                                          tally: Tally) -> None:
    """The same check applies to {"config": {...}} bodies, not only to overrides of a preset."""
    before = _snapshot(client, api[1])
    response = client.post("/api/sft/train", json={"config": {"dataset_name": "/etc/passwd", "max_steps": 1}})
    ok = response.status_code == 422 and _names_field(response.json(), "dataset_name") and \
        _snapshot(client, api[1]) == before
    tally.record("api full config /etc/passwd", ok, response.text[:300])
    assert ok, response.text


def test_api_does_not_read_hub_shaped_names_from_the_server_cwd(api: tuple[SecureServer, Layout],
                                                                client: httpx.Client, tally: Tally) -> None:
    assert (REPO / "tests" / "unit").is_dir()
    response = _post(client, {"dataset_name": "tests/unit"})
    if response.status_code == 201:  # treated as a Hub id: fine, but do not leave it queued
        client.post(f"/api/sft/jobs/{response.json()['job_id']}/stop")
    leaked = str(REPO) in response.text or "save_to_disk" in response.text
    tally.record("api hub-shaped name that exists in the server cwd", not leaked, response.text[:300])
    assert not leaked, response.text


CONFIG_IDS = {"nul": "tiny-lora\x00", "nul-inside": "tiny\x00lora", "parent": "../configs/tiny-lora",
              "absolute": str(REPO / "configs" / "tiny-lora"), "backslash": "..\\configs\\tiny-lora",
              "dotfile": ".tiny-lora", "over-long": "x" * 5000, "surrogate-pair": "\U0004fc3fC"}


@pytest.mark.parametrize("case", sorted(CONFIG_IDS))
def test_api_config_id_matches_only_a_preset_or_saved_config(case: str, client: httpx.Client,
                                                              tally: Tally) -> None:
    """A config_id is looked up, never turned into a path: 404 naming it, not a 500 (the NUL case was one)."""
    responses = [client.post("/api/sft/train", json={"config_id": CONFIG_IDS[case]}),
                 client.get("/api/sft/configs/" + quote(CONFIG_IDS[case], safe=""))]
    # the POST names the id; the GET may be the router's own 404 (a decoded '/' matches no route)
    ok = all(r.status_code == 404 and "not found" in r.json()["detail"].lower() for r in responses)
    tally.record(f"api config_id {case}", ok, " | ".join(r.text[:200] for r in responses))
    assert ok, [r.text[:200] for r in responses]


def test_api_allows_the_roots(api: tuple[SecureServer, Layout], client: httpx.Client, tally: Tally) -> None:
    """Files under the workspace (relative and absolute), under SFT_UI_DATA_DIRS, and samples are queued,
    stored as absolute paths; then every job is stopped (queued ones at once, the running one by SIGTERM)."""
    lay = api[1]
    cases = {**{k: f(lay) for k, f in ALLOWED_DATASETS.items()}, "sample-alpaca": ("sample:alpaca", None)}
    job_ids, failures = [], []
    for case, (value, stored) in cases.items():
        response = _post(client, {"dataset_name": value})
        ok = response.status_code == 201
        if ok:
            job = response.json()
            job_ids.append(job["job_id"])
            ok = job["config"]["dataset_name"] == (stored if stored is not None else value) and \
                Path(job["job_dir"]).parent == lay.ws / "jobs"
        tally.record(f"api allowed {case}", ok, response.text[:300])
        if not ok:
            failures.append(f"{case}: {response.status_code} {response.text[:300]}")
    for job_id in reversed(job_ids):  # queued ones first: the running one is stopped last
        client.post(f"/api/sft/jobs/{job_id}/stop")

    def all_finished() -> bool:
        return all(client.get(f"/api/sft/jobs/{j}").json()["status"] in TERMINAL for j in job_ids)

    wait_for(all_finished, 120, 0.5, "the allowed jobs to stop")
    assert not failures, failures


# ---- uploads ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("user_name", ["my data.jsonl", "../../evil.JSONL", "x;rm -rf ~.csv", "日本語.parquet",
                                       "data.json"])
def test_upload_gets_a_server_made_name(user_name: str, tmp_path: Path, tally: Tally) -> None:
    ws = tmp_path / "workspace"
    settings = Settings(workspace=ws)
    source = tmp_path / "browser" / Path(user_name.replace("../", "")).name
    source.parent.mkdir(parents=True)
    source.write_bytes(b'{"text": "hello"}\n')
    stored = Path(save_upload(settings, str(source)))
    stem = Path(user_name).stem
    ok = (stored.parent == settings.uploads_dir and re.fullmatch(r"upload-[0-9a-f]{16}\.(jsonl|json|csv|parquet)",
                                                                 stored.name) is not None
          and stem not in stored.name and stored.read_bytes() == source.read_bytes()
          and stored.suffix == Path(user_name).suffix.lower())
    tally.record(f"upload {user_name!r}", ok, str(stored))
    assert ok, stored
    again = Path(save_upload(settings, str(source)))
    assert again != stored and again.parent == settings.uploads_dir  # never overwrites an earlier upload


@pytest.mark.parametrize("user_name", ["notes.txt", "tool.exe", "data.jsonl.exe", "script.py", "README",
                                       "archive.tar.gz", ".jsonl.sh"])
def test_upload_refuses_other_file_types(user_name: str, tmp_path: Path, tally: Tally) -> None:
    settings = Settings(workspace=tmp_path / "workspace")
    source = tmp_path / "browser" / user_name
    source.parent.mkdir(parents=True)
    source.write_bytes(b"MZ\x90\x00 not data")
    try:
        save_upload(settings, str(source))
        refusal = ""
    except gr.Error as exc:
        refusal = str(exc)
    created = list(settings.uploads_dir.iterdir()) if settings.uploads_dir.is_dir() else []
    ok = not created and "Unsupported file type" in refusal
    tally.record(f"upload refused {user_name!r}", ok, f"refusal {refusal!r}; created {created}")
    assert ok, (refusal, created)


def test_upload_of_nothing_is_refused(tmp_path: Path, tally: Tally) -> None:
    for value in (None, ""):
        with pytest.raises(gr.Error):
            save_upload(Settings(workspace=tmp_path / "ws"), value)
        tally.record(f"upload {value!r}", True)


# ---- no shell --------------------------------------------------------------------------------------------------
def test_package_never_uses_a_shell(tally: Tally) -> None:
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(")
    sources = sorted((REPO / "sft_ui").rglob("*.py"))
    assert len(sources) > 20, "the package sources were not found"
    hits = []
    for path in sources:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
        tally.record(f"no shell in {path.relative_to(REPO)}", not any(str(path.relative_to(REPO)) in h for h in hits))
    assert not hits, hits

