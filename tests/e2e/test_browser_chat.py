"""The "Chat & export" tab in a real browser: a real `python app.py` (with the UI), a job trained through the REST
API, headless Chromium picking the job and watching the fine-tuned answer stream in. Screenshots go to
test-artifacts/e2e/chat-*.png."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from helpers import Server, require_browser, wait_for

require_browser()

from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = pytest.mark.slow

TRAIN_TIMEOUT_S = 240.0
ANSWER_TIMEOUT_S = 120.0  # the first chat starts the inference worker (imports torch) and loads the model
BOT = "#chat-tuned .message-row.bot-row, #chat-tuned [data-testid='bot']"


@pytest.fixture(scope="module", autouse=True)
def single_threaded_children() -> Any:
    """The server (and its workers) inherit os.environ: one OpenMP thread each keeps two shared cores usable."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


@pytest.fixture(scope="module")
def trained_job(e2e_server: Server) -> dict[str, Any]:
    """A tiny LoRA job trained to the end through the REST API of the server the browser talks to."""
    with httpx.Client(base_url=e2e_server.url, timeout=30) as http:
        created = http.post("/api/sft/train", json={"config_id": "tiny-lora", "overrides": {"max_steps": 15}})
        assert created.status_code == 201, created.text
        job_id = created.json()["job_id"]
        wait_for(lambda: http.get(f"/api/sft/jobs/{job_id}").json()["status"] in ("succeeded", "failed", "stopped"),
                 TRAIN_TIMEOUT_S, 0.5, "the job to finish")
        job = http.get(f"/api/sft/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    return job


def bot_text(page: Page) -> str:
    bubbles = page.locator(BOT)
    return bubbles.last.inner_text() if bubbles.count() else ""


def test_chat_tab_streams_the_fine_tuned_answer(page: Page, e2e_server: Server, trained_job: dict[str, Any],
                                                shot: Any) -> None:
    job_id = trained_job["job_id"]
    page.goto(e2e_server.url + "/")
    tab = page.get_by_role("tab", name="Chat & export", exact=True)
    expect(tab).to_be_visible(timeout=30_000)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")
    expect(page.locator("#chat-job")).to_be_visible()
    shot("chat-01-tab")

    page.locator("#chat-job input").click()  # focus refreshes the list of jobs that have a result
    option = page.get_by_role("option", name=re.compile(re.escape(job_id)))
    expect(option).to_be_visible(timeout=15_000)
    option.click()
    expect(page.locator("#chat-job input")).to_have_value(re.compile(re.escape(job_id)))
    expect(page.locator("#chat-result input")).to_have_value("final", timeout=15_000)  # the job's results load

    page.locator("#chat-prompt textarea").fill("What is the plural of hero?")
    page.locator("#chat-send").click()
    expect(page.locator("#chat-tuned")).to_contain_text("What is the plural of hero?", timeout=15_000)
    shot("chat-02-sent")

    seen: list[str] = []
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    streaming_shot = False
    while time.monotonic() < deadline:
        text = bot_text(page)
        if not seen or text != seen[-1]:
            seen.append(text)
            if text.strip() and not streaming_shot:
                shot("chat-03-streaming")
                streaming_shot = True
        pending = page.locator("#chat-tuned .pending, #chat-tuned [data-testid='pending']").count()
        if text.strip() and len(seen) > 1 and not pending and page.locator("#chat-send").is_enabled():
            time.sleep(1.0)  # let the last pieces land
            if bot_text(page) == text:
                break
        time.sleep(0.1)
    final = bot_text(page)
    shot("chat-04-answered")
    nonempty = [s for s in seen if s.strip()]
    assert final.strip(), f"no fine-tuned answer appeared; texts seen: {seen!r}"
    assert "⚠️" not in final, final
    # streamed: the bubble was seen growing, or at least it ended non-empty (a fast machine may beat the polls)
    grew = len({len(s) for s in nonempty}) > 1
    assert "".join(final.split()).startswith("".join(nonempty[0].split())), (nonempty[0], final)  # appended to
    print(f"answer grew over {len(nonempty)} polls (grew={grew}): {final[:200]!r}")
    assert page.locator("#chat-base").is_hidden()  # compare is off: no base column
