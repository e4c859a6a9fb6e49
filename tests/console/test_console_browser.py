"""The console as a person uses it: a real headless Chromium (Debian's) driven by Playwright
against a real gateway, vLLM engine, Celery worker and Redis.

Set TIQU_CONSOLE_SCREENSHOTS=docs/console to refresh the README's screenshots.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared import adapters
from shared.cli import app as tiqu_cli
from shared.prompts import student_target
from shared.schema import get_schema
from shared.settings import get_settings
from shared.store import Store
from tests.engine_fixtures import API_KEY, copy_lora
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (`make tools` installs Debian's chromium)")
    with playwright.sync_playwright() as driver:
        # Root has no user namespace sandbox here; the pages are the test's own.
        launched = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(WAIT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def screenshot(page: Any, name: str) -> None:
    """Keep a picture of the page for docs/console when asked to."""
    folder = os.environ.get("TIQU_CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


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
    page: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
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
        assert image.evaluate("img => img.naturalWidth") > 100  # a real PNG was served
    screenshot(page, "adapter-report")

    # A wrong address inside the console is a page, not a stack trace.
    page.goto(f"{gateway.url}/console/adapters/extractor/v99")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
