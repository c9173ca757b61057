"""The studio in a real browser, as a new user meets it: a real `python app.py`, headless Chromium, real training
of the embedded tiny model. Screenshots of each stage go to test-artifacts/e2e/."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from helpers import Server, require_browser

require_browser()

from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.slow

FIRST_STEP_TIMEOUT_S = 120.0  # the worker imports torch first: ~10 s alone, much more on two busy cores
PROGRESS_TIMEOUT_S = 60.0
# On an idle machine the tiny model runs 20-30 steps a second, so 400 steps can end in ~15 s, before the test has
# reloaded, stopped and resumed it; a long job is only ever stopped, so its length costs nothing.
LONG_STEPS = 4000
T = TypeVar("T")
Shot = Callable[[str], Path]


# ---- helpers -------------------------------------------------------------------------------------------------------
def poll(predicate: Callable[[], T], timeout: float, what: str | Callable[[], str], interval: float = 0.25) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def open_studio(page: Page, server: Server) -> None:
    page.goto(server.url + "/")
    expect(page.locator("#start-training")).to_be_visible(timeout=30_000)


def open_tab(page: Page, name: str) -> None:
    tab = page.get_by_role("tab", name=name, exact=True)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")


def choose(page: Page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).click()


def load_preset(page: Page, option: str, form_name: str) -> None:
    """Choose a preset and wait until the form shows it (typing earlier would race the form's update)."""
    text_field(page, "name").fill("(loading a preset)")
    choose(page, "#preset", option)
    expect(text_field(page, "name")).to_have_value(form_name)


def text_field(page: Page, name: str) -> Any:
    return page.locator(f"#field-{name} textarea, #field-{name} input").first


def set_number(page: Page, name: str, value: int) -> None:
    box = page.locator(f"#field-{name} input")
    box.fill(str(value))
    box.press("Tab")
    expect(box).to_have_value(str(value))


def job_row(page: Page, name: str) -> Any:
    # Gradio 6's dataframe also renders hidden measuring cells: the visible cell is the first span.text
    return page.locator(f"#jobs-table span.text:text-is('{name}')").first


def progress(page: Page) -> str:
    return page.locator("#job-progress").inner_text()


def step(page: Page) -> int:
    found = re.search(r"(\d+)/\d+ \(", progress(page))
    return int(found.group(1)) if found else 0


def wait_step_above(page: Page, floor: int, timeout: float, seen: list[int] | None = None) -> int:
    def check() -> int:
        current = step(page)
        if seen is not None:
            seen.append(current)
        return current if current > floor else 0

    return poll(check, timeout, lambda: f"the step to pass {floor}; #job-progress says {progress(page)!r}")


def stop_timeout_ms(server: Server) -> float:
    """The server's stop grace (the worker is killed after it) plus time to notice the exit."""
    return (float(server.env["SFT_UI_STOP_GRACE_S"]) + 15) * 1000


def log_lines(page: Page) -> int:
    return len(page.locator("#job-log textarea").input_value().splitlines())


def loss_line_points(page: Page) -> int:
    """Vertices of the drawn train-loss line in #loss-plot (Vega renders SVG paths or a canvas)."""
    return int(page.evaluate("""() => {
        const plot = document.querySelector('#loss-plot');
        if (!plot) return 0;
        if (plot.querySelector('canvas')) return 99;
        let best = 0;
        for (const p of plot.querySelectorAll('g.mark-line path')) {
            const d = p.getAttribute('d') || '';
            best = Math.max(best, (d.match(/L/g) || []).length + (d.startsWith('M') ? 1 : 0));
        }
        return best;
    }"""))


def jobs_named(server: Server, name: str) -> list[dict[str, Any]]:
    """Full job objects (with config) of the jobs called `name`, through the REST API."""
    jobs = httpx.get(f"{server.url}/api/sft/jobs", params={"limit": 500}, timeout=15).json()["jobs"]
    return [httpx.get(f"{server.url}/api/sft/jobs/{j['job_id']}", timeout=15).json() for j in jobs
            if j["name"] == name]


def total_jobs(server: Server) -> int:
    return int(httpx.get(f"{server.url}/api/sft/jobs", timeout=15).json()["total"])


# ---- tests ---------------------------------------------------------------------------------------------------------
def test_train_watch_reload_stop_and_resume(page: Page, e2e_server: Server, shot: Shot) -> None:
    name = "e2e long run"
    open_studio(page, e2e_server)
    tabs = page.get_by_role("tab").all_inner_texts()
    assert {"Train", "Jobs", "Compare", "Configs", "System"} <= set(tabs), tabs
    shot("01-studio-opened")

    # a preset fills the form: another one first, so choosing tiny-lora visibly changes it back
    load_preset(page, "preset: SmolLM2-135M-Instruct LoRA", "SmolLM2-135M-Instruct LoRA")
    expect(text_field(page, "model_name_or_path")).to_have_value(re.compile("SmolLM2"))
    load_preset(page, "preset: tiny-lora demo", "tiny-lora demo")
    expect(text_field(page, "model_name_or_path")).to_have_value("embedded:tiny-llama")
    expect(page.locator("#field-max_steps input")).to_have_value("60")
    text_field(page, "name").fill(name)
    set_number(page, "max_steps", LONG_STEPS)
    expect(page.locator("#yaml-preview")).to_contain_text(f"max_steps: {LONG_STEPS}")
    expect(page.locator("#yaml-preview")).to_contain_text(f"name: {name}")
    shot("02-form-filled")

    page.locator("#start-training").click()
    expect(job_row(page, name)).to_be_visible(timeout=2_000)  # the Jobs tab, within 2 s
    expect(page.get_by_role("tab", name="Jobs", exact=True)).to_have_attribute("aria-selected", "true")
    expect(page.locator("#job-progress")).to_contain_text(name)
    (job,) = jobs_named(e2e_server, name)
    assert job["config"]["max_steps"] == LONG_STEPS
    shot("03-job-started")

    # it trains: the step count rises, the log grows, the loss curve is drawn
    first = wait_step_above(page, 1, FIRST_STEP_TIMEOUT_S)
    expect(page.locator("#job-progress")).to_contain_text("running")
    wait_step_above(page, first, PROGRESS_TIMEOUT_S)
    lines = poll(lambda: log_lines(page), 30, "log lines")
    poll(lambda: log_lines(page) > lines, PROGRESS_TIMEOUT_S, lambda: f"the log to grow past {lines} lines")
    expect(page.locator("#job-log textarea")).to_have_value(re.compile(rf"step \d+/{LONG_STEPS} loss"))
    poll(lambda: loss_line_points(page) >= 2, PROGRESS_TIMEOUT_S, "a drawn loss line in #loss-plot")
    expect(page.locator("#lr-plot g.mark-line path").first).to_have_attribute("d", re.compile("^M.*L"))
    shot("04-training-live")

    # reload mid-training: the job is still there, still live
    before_reload = step(page)
    page.reload()
    expect(page.locator("#start-training")).to_be_visible(timeout=30_000)
    open_tab(page, "Jobs")
    expect(job_row(page, name)).to_be_visible(timeout=5_000)
    job_row(page, name).click()
    expect(page.locator("#job-progress")).to_contain_text(name)
    expect(page.locator("#job-progress")).to_contain_text("running")
    after_reload = wait_step_above(page, before_reload, PROGRESS_TIMEOUT_S)
    wait_step_above(page, after_reload, PROGRESS_TIMEOUT_S)
    assert log_lines(page) > 0
    shot("05-live-after-reload")

    # stop: a checkpoint is saved and the job ends as stopped within the grace
    expect(page.locator("#stop-btn")).to_be_enabled()
    expect(page.locator("#resume-btn")).to_be_disabled()
    page.locator("#stop-btn").click()
    expect(page.locator("#job-progress")).to_contain_text("stopped", timeout=stop_timeout_ms(e2e_server))
    expect(page.locator("#resume-btn")).to_be_enabled()
    expect(page.locator("#stop-btn")).to_be_disabled()
    stopped_at = step(page)
    assert 0 < stopped_at < LONG_STEPS
    expect(page.locator("#job-summary")).to_contain_text("checkpoints")
    shot("06-stopped")

    # resume: running again, continuing from the checkpoint (the step never falls back to the start)
    page.locator("#resume-btn").click()
    expect(page.locator("#job-progress")).to_contain_text("running", timeout=30_000)
    expect(page.locator("#job-progress")).to_contain_text("attempt 2")
    seen: list[int] = []
    wait_step_above(page, stopped_at, FIRST_STEP_TIMEOUT_S, seen)
    assert min(seen) >= stopped_at, f"resumed job went back to step {min(seen)} (stopped at {stopped_at})"
    shot("07-resumed")
    page.locator("#stop-btn").click()
    expect(page.locator("#job-progress")).to_contain_text("stopped", timeout=stop_timeout_ms(e2e_server))
    (job,) = jobs_named(e2e_server, name)
    assert job["status"] == "stopped" and job["attempt"] == 2 and job["progress"]["step"] > stopped_at


def test_short_job_runs_to_succeeded(page: Page, e2e_server: Server, shot: Shot) -> None:
    name = "e2e short run"
    open_studio(page, e2e_server)
    load_preset(page, "preset: tiny-lora demo", "tiny-lora demo")
    text_field(page, "name").fill(name)
    set_number(page, "max_steps", 30)
    expect(page.locator("#yaml-preview")).to_contain_text(f"name: {name}")
    expect(page.locator("#yaml-preview")).to_contain_text("max_steps: 30")
    page.locator("#start-training").click()
    expect(job_row(page, name)).to_be_visible(timeout=10_000)  # the 2 s promise is checked by the test above
    expect(page.locator("#job-progress")).to_contain_text("succeeded", timeout=(FIRST_STEP_TIMEOUT_S + 60) * 1000)
    expect(page.locator("#job-progress")).to_contain_text("30/30 (100%)")
    expect(page.locator("#resume-btn")).to_be_disabled()
    expect(page.locator("#stop-btn")).to_be_disabled()
    expect(page.locator("#job-summary")).to_contain_text("result:")
    expect(page.locator("#jobs-table .sft-badge:text-is('succeeded'):visible").first).to_be_visible()
    shot("08-short-job-succeeded")
    (job,) = jobs_named(e2e_server, name)
    assert job["status"] == "succeeded" and job["final_dir"]


def test_malformed_upload_shows_the_row_error(page: Page, e2e_server: Server, shot: Shot, tmp_path: Path) -> None:
    good = '{"messages": [{"role": "user", "content": "%s"}, {"role": "assistant", "content": "ok"}]}\n'
    bad = '{"messages": [{"role": "wizard", "content": "abracadabra"}, {"role": "assistant", "content": "ok"}]}\n'
    upload = tmp_path / "my data.jsonl"
    upload.write_text(good % "hi" + good % "2+2" + bad + good % "bye", encoding="utf-8")
    jobs_before = total_jobs(e2e_server)

    open_studio(page, e2e_server)
    page.locator("#dataset-upload input[type=file]").set_input_files(str(upload))
    info = page.locator("#preview-info")
    expect(info).to_contain_text("row 3", timeout=20_000)
    expect(info).to_contain_text("wizard")
    expect(text_field(page, "dataset_name")).to_have_value(re.compile(r"/uploads/upload-[0-9a-f]+\.jsonl$"))
    expect(page.locator("#preview-table")).to_contain_text("[user] bye")  # the good rows still preview
    shot("09-malformed-upload")

    # Start refuses it by row; no job is created
    page.locator("#start-training").click()
    expect(page.locator("#form-errors")).to_contain_text("row 3", timeout=10_000)
    expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true")
    assert total_jobs(e2e_server) == jobs_before
    shot("10-start-refused")


def finished_job_with_a_long_log(server: Server, min_lines: int) -> dict[str, Any]:
    """A finished job whose log overflows the log box; runs a short one (via REST) if none exists yet."""
    with httpx.Client(base_url=server.url, timeout=15) as http:
        for job in http.get("/api/sft/jobs", params={"limit": 500}).json()["jobs"]:
            if job["status"] in ("succeeded", "stopped"):
                text = http.get(f"/api/sft/jobs/{job['job_id']}/logs").json()["text"]
                if len(text.splitlines()) >= min_lines:
                    return job
        body = {"config_id": "tiny-lora", "overrides": {"name": "e2e log filler", "max_steps": min_lines}}
        job = http.post("/api/sft/train", json=body).json()
        return poll(lambda: (j := http.get(f"/api/sft/jobs/{job['job_id']}").json())["status"] == "succeeded" and j,
                    FIRST_STEP_TIMEOUT_S + 60, "the log filler job to succeed", interval=1)


def test_live_log_shows_its_newest_lines(page: Page, e2e_server: Server, shot: Shot) -> None:
    job = finished_job_with_a_long_log(e2e_server, 30)
    open_studio(page, e2e_server)
    open_tab(page, "Jobs")
    job_row(page, job["name"]).click()
    expect(page.locator("#job-progress")).to_contain_text(job["name"])
    poll(lambda: log_lines(page) >= 30, 15, "the log to load")
    page.wait_for_timeout(1_000)
    shot("14-log-box-after-opening-a-job")
    box = page.locator("#job-log textarea")
    top, height, total = box.evaluate("t => [t.scrollTop, t.clientHeight, t.scrollHeight]")
    assert total > height, "the log should overflow its box"
    assert top + height >= total - 4, f"log box scrolled to {top} of {total - height}: the newest lines are hidden"


def save_form_as(page: Page, config_name: str, max_steps: int) -> None:
    """Fill the form's name and max_steps, then save it from the Configs tab."""
    text_field(page, "name").fill(config_name)
    set_number(page, "max_steps", max_steps)
    open_tab(page, "Configs")
    page.locator("#config-name textarea, #config-name input").first.fill(config_name)
    page.locator("#config-save").click()
    expect(page.locator("#config-message")).to_contain_text(f"Saved as {config_name}")


def expect_form_carries(page: Page, config_name: str, max_steps: int) -> None:
    expect(page.get_by_role("tab", name="Train", exact=True)).to_have_attribute("aria-selected", "true")
    expect(text_field(page, "name")).to_have_value(config_name)
    expect(page.locator("#field-max_steps input")).to_have_value(str(max_steps))


def test_saved_config_loads_into_the_form(page: Page, e2e_server: Server, shot: Shot) -> None:
    config_name = "e2e saved experiment"
    open_studio(page, e2e_server)
    save_form_as(page, config_name, 77)
    expect(page.locator("#configs-table")).to_contain_text(config_name)
    shot("11-config-saved")

    # the Configs tab's picker loads it into the form (same page)
    open_tab(page, "Train")
    load_preset(page, "preset: tiny-lora demo", "tiny-lora demo")  # reset the form
    open_tab(page, "Configs")
    choose(page, "#config-picker", f"saved: {config_name}")
    page.locator("#config-load").click()
    expect_form_carries(page, config_name, 77)

    # after a reload the preset dropdown offers it and loads it
    page.reload()
    expect(page.locator("#start-training")).to_be_visible(timeout=30_000)
    expect(text_field(page, "name")).to_have_value("tiny-lora demo")
    load_preset(page, f"saved: {config_name}", config_name)
    expect_form_carries(page, config_name, 77)
    shot("12-config-loaded-via-preset")


def test_saved_config_in_config_picker_after_reload(page: Page, e2e_server: Server, shot: Shot) -> None:
    config_name = "e2e reloaded experiment"
    open_studio(page, e2e_server)
    save_form_as(page, config_name, 88)
    page.reload()
    expect(page.locator("#start-training")).to_be_visible(timeout=30_000)
    open_tab(page, "Configs")
    expect(page.locator("#configs-table")).to_contain_text(config_name)  # saved configs are listed first
    page.locator("#config-picker input").click()
    shot("13-config-picker-after-reload")
    expect(page.get_by_role("option", name=f"saved: {config_name}")).to_have_count(1, timeout=5_000)
    page.get_by_role("option", name=f"saved: {config_name}").click()
    page.locator("#config-load").click()
    expect_form_carries(page, config_name, 88)


def test_deleting_a_saved_config_asks_first(page: Page, e2e_server: Server, shot: Shot) -> None:
    config_name = "e2e doomed experiment"
    open_studio(page, e2e_server)
    save_form_as(page, config_name, 55)
    choose(page, "#config-picker", f"saved: {config_name}")
    page.locator("#config-delete").click()
    expect(page.locator("#config-delete")).to_have_text("Confirm delete")
    expect(page.locator("#config-message")).to_contain_text("Click Confirm delete")
    expect(page.locator("#configs-table")).to_contain_text(config_name)  # nothing deleted on the first click
    shot("14-config-delete-asks")
    page.locator("#config-delete").click()
    expect(page.locator("#config-message")).to_contain_text("Deleted")
    expect(page.locator("#configs-table")).not_to_contain_text(config_name)
    expect(page.locator("#config-delete")).to_have_text("Delete")
