"""The console as a person uses it: a real headless Chromium (Debian's) driven by Playwright
against a real gateway, vLLM engine, Celery worker and Redis.

Set TIQU_CONSOLE_SCREENSHOTS=docs/console to refresh the README's screenshots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shared import adapters
from shared.cli import app as tiqu_cli
from shared.prompts import student_target
from shared.schema import get_schema
from shared.settings import get_settings
from shared.store import Store
from tests.engine_fixtures import API_KEY, copy_lora
from tests.reliability.job_support import write_batch_export
from tests.serve.serve_support import train_lora
from tests.train.train_support import split_records, write_distill_run

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPLAINT = "我叫王芳，电话13800138000，快递丢了"
LABEL = {"name": "王芳", "phone": "13800138000", "question": "快递丢了"}
DATASET_ID = "ds-00000000000000c0"
RUN_ID = "dr-00000000000000c0-000000000001"
# Playwright's own waits: engine answers on a busy 2-core machine take seconds.
WAIT_MS = 60_000


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh Chromium page. Requested last by each test: Playwright's sync API runs an event
    loop, and fixtures such as a distill run need `asyncio.run` before it starts."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (`make tools` installs Debian's chromium)")
    with playwright.sync_playwright() as driver:
        # Root has no user namespace sandbox here; the pages are the test's own.
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        browser.close()


def screenshot(page: Any, name: str, *, full_page: bool = True) -> None:
    """Keep a picture of the page for docs/console when asked to."""
    folder = os.environ.get("TIQU_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full_page)


def sign_in(page: Any, url: str, key: str = API_KEY) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def train_with_cli(serve_records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """`tiqu train` as a user runs it, on a distill run of the session's records: registers and
    promotes extractor@v1 with its evaluation and charts."""
    splits = split_records(serve_records[:78], val=10, test=8)
    write_distill_run(Store.from_settings(), DATASET_ID, RUN_ID, splits)
    for key, value in {
        "TIQU_TRAIN_EPOCHS": "2",
        "TIQU_TRAIN_BATCH_SIZE": "8",
        "TIQU_TRAIN_LEARNING_RATE": "0.02",
        "TIQU_TRAIN_MAX_LENGTH": "512",
        "TIQU_TRAIN_THREADS": "1",
        "TIQU_EVAL_BATCH_SIZE": "8",
        "TIQU_EVAL_MAX_NEW_TOKENS": "24",
        "TIQU_LOG_JSON": "false",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    trained = CliRunner().invoke(tiqu_cli, ["train", RUN_ID], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output


def test_sign_in_extract_with_highlights_and_read_an_adapters_report(
    base,
    register,
    loras,
    serve_model: Path,
    serve_records: list[dict[str, Any]],
    start_gateway,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    page: Any,
) -> None:
    train_with_cli(serve_records, monkeypatch)
    learned = train_lora(
        serve_model,
        tmp_path / "learned",
        [(COMPLAINT, student_target(LABEL, get_schema()))],
        steps=40,
    )
    register("learned", learned)
    # v2 (the same weights), to promote and roll back by hand.
    register("learned", copy_lora(learned, tmp_path / "learned-again"), promote=False)
    # Promoted, but its manifest claims a probe answer it never gives: the gateway refuses it.
    register("broken", loras.nulls, probe={"phone": "13800138000"})
    gateway = start_gateway()

    # No key: the login page, not a JSON 401; a wrong key says so.
    page.goto(f"{gateway.url}/console")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    sign_in(page, gateway.url, key="not-a-key")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    screenshot(page, "login")
    sign_in(page, gateway.url)
    expect(page).to_have_url(re.compile(r"/console/playground$"))

    # Keyboard first: the skip link, then the page's controls, all reachable by Tab.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_label("Complaint text").fill(COMPLAINT)
    page.get_by_label("Adapter").select_option("learned")
    page.get_by_label("Adapter").press("Tab")
    expect(page.get_by_role("button", name="Extract")).to_be_focused()
    page.keyboard.press("Enter")
    highlighted = page.locator("#highlighted")
    expect(highlighted.locator('mark[data-field="phone"]')).to_have_text("13800138000")
    expect(highlighted.locator('mark[data-field="name"]')).to_have_text("王芳")
    expect(highlighted.locator('mark[data-field="question"]')).to_have_text("快递丢了")
    expect(highlighted).to_have_text(COMPLAINT)  # the whole text, cut only into marks
    expect(page.locator('#fields tr[data-field="email"] td').first).to_have_text("null")
    expect(page.locator('#fields tr[data-field="phone"] td').nth(1)).to_have_text("yes")
    expect(page.locator("#latency")).to_have_text(re.compile(r"^\d+ ms$"))
    page.get_by_text("Raw JSON").click()
    expect(page.locator("#raw-json")).to_contain_text('"phone": "13800138000"')
    screenshot(page, "playground")

    # An adapter that fails to load: its reason in the result area, the page still works.
    page.get_by_label("Adapter").select_option("broken")
    page.get_by_role("button", name="Extract").click()
    expect(page.locator("#result .alert")).to_contain_text("probe")
    page.get_by_label("Adapter").select_option("learned")
    page.get_by_role("button", name="Extract").click()
    expect(highlighted.locator('mark[data-field="phone"]')).to_have_text("13800138000")

    # The adapter list says what this gateway serves and refused; a report has bars and charts.
    page.get_by_role("link", name="Adapters").click()
    refused = page.locator('tr[data-adapter="broken@v1"]')
    expect(refused).to_contain_text("refused")
    expect(page.locator('tr[data-adapter="extractor@v1"]')).to_contain_text("promoted")
    screenshot(page, "adapters")
    page.get_by_role("button", name="Promote learned@v2").click()
    expect(page.locator('tr[data-adapter="learned@v2"]')).to_contain_text("promoted")
    page.get_by_role("button", name="Roll learned back to v1").click()
    expect(page.locator('tr[data-adapter="learned@v1"]')).to_contain_text("promoted")
    expect(page.locator('tr[data-adapter="learned@v2"]')).not_to_contain_text("promoted")
    assert adapters.read_alias(Store.from_settings(), "learned")["version"] == "v1"
    page.get_by_role("link", name="extractor@v1").click()
    expect(page.get_by_role("heading", name=re.compile(r"^test"))).to_be_visible()
    expect(page.locator('.field-bars[data-field="phone"] [role="img"]')).to_have_count(2)
    for chart in ("Training and validation loss", "Exact match and F1 per field"):
        image = page.get_by_alt_text(re.compile(chart))
        expect(image).to_be_visible()
        # A real PNG was served: its width once it has loaded (visible is not loaded yet).
        width = image.evaluate(
            "img => img.complete ? img.naturalWidth : new Promise(done => {"
            " img.onload = () => done(img.naturalWidth); img.onerror = () => done(0); })"
        )
        assert width > 100
    screenshot(page, "adapter-report")

    # A wrong address inside the console is a page, not a stack trace.
    page.goto(f"{gateway.url}/console/adapters/extractor/v99")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_watch_a_batch_job_to_100_percent_and_correct_a_rejected_label(
    register,
    loras,
    start_gateway,
    start_worker,
    rejected_run,
    tmp_path: Path,
    page: Any,
) -> None:
    dataset_id, run_id, rejected = rejected_run
    register("extractor", loras.nulls)
    gateway = start_gateway()
    start_worker(
        "batch",
        TIQU_GATEWAY_URL=gateway.url,
        TIQU_GATEWAY_API_KEY=API_KEY,
        TIQU_BATCH_CHUNK_ROWS="4",
        TIQU_BATCH_CONCURRENCY="2",
        TIQU_WORKER_METRICS_PORT="0",
    )
    export = tmp_path / "complaints.csv"
    write_batch_export(export, 24)
    with export.open("rb") as handle:
        accepted = httpx.post(
            f"{gateway.url}/v1/batches",
            files={"file": (export.name, handle, "text/csv")},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=30,
        )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]

    # Signing in on a deep link comes back to it.
    page.goto(f"{gateway.url}/console/jobs")
    sign_in(page, gateway.url)
    expect(page).to_have_url(re.compile(r"/console/jobs$"))
    page.get_by_role("link", name=job_id).click()
    expect(page.locator("#percent")).to_have_text("100%")  # htmx refreshes it every second
    expect(page.locator("#state")).to_have_text("ready")
    screenshot(page, "batch-job")
    with page.expect_download() as download:
        page.locator("#download").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["row"] for line in lines] == list(range(24))
    page.goto(f"{gateway.url}/console/jobs")
    screenshot(page, "jobs")
    page.goto(f"{gateway.url}/console/jobs/batch/bj-0000000000000000")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()

    # Review: the run's rejected rows; a made-up name is refused, the corrected label is kept.
    page.get_by_role("link", name="Review").click()
    page.get_by_role("link", name=run_id).click()
    first = page.locator("#row-1")
    expect(first).to_contain_text(rejected[0]["reason"])
    for field in ("name", "phone", "email", "address"):
        first.get_by_label(field, exact=True).fill("")
    first.get_by_label("question", exact=True).fill(rejected[0]["text"][:12])
    first.get_by_label("name", exact=True).fill("不存在的人")
    first.get_by_role("button", name="Accept").click()
    expect(first.get_by_role("alert")).to_contain_text("does not occur in the complaint text")
    first.get_by_label("name", exact=True).fill("")
    first.get_by_role("button", name="Accept").click()
    expect(first.get_by_role("status")).to_contain_text("Saved as corrections@v1")
    first.evaluate("row => row.scrollIntoView()")
    screenshot(page, "review", full_page=False)
    first.get_by_role("link", name="corrections@v1").click()
    row = page.locator(f'#labelset-rows tr[data-row="{rejected[0]["id"]}"]')
    expect(row).to_contain_text(run_id)
    expect(row).to_contain_text(rejected[0]["text"][:12])
    screenshot(page, "labelset")
    assert dataset_id in page.locator(f'#labelset-rows a[href*="{run_id}"]').get_attribute("href")

    page.get_by_role("link", name="Metrics").click()
    expect(page.get_by_role("heading", name="Metrics")).to_be_visible()
    expect(page.get_by_role("rowheader", name="extractor")).to_be_visible()
    screenshot(page, "metrics")
