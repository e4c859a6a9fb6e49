"""The review pages on a real distill run: list, page, highlight, accept or refuse a correction,
and train on what was accepted."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from services.serve.console import review
from services.serve.console.playground import Segment, highlight
from services.serve.console.web import KEY_COOKIE
from services.train.data import find_run, load_labelset, load_split, with_labelsets
from services.train.request import pin_labelsets
from shared import labelsets
from shared.store import Store
from tests.console.conftest import RejectedRun, console_app

ADMIN_KEY = "k1"
EXTRACT_KEY = "k2"
HTMX = {"HX-Request": "true"}


def review_app() -> FastAPI:
    return console_app([review.router], f"{ADMIN_KEY},extract:{EXTRACT_KEY}")


def client(key: str | None = ADMIN_KEY) -> TestClient:
    cookies = {KEY_COOKIE: key} if key else None
    return TestClient(review_app(), cookies=cookies, follow_redirects=False)


def run_path(run: RejectedRun) -> str:
    dataset_id, run_id, _ = run
    return f"/console/review/{dataset_id}/{run_id}"


def valid_correction(text: str) -> dict[str, str]:
    """A label that passes every check: contact fields left empty, the question quoted."""
    return {"name": "", "phone": "", "email": "", "address": "", "question": text[:12]}


def articles(html: str) -> list[str]:
    return re.findall(r'<article class="card" id="row-(\d+)"', html)


def test_the_index_lists_runs_with_rejected_rows_by_reason(rejected_run: RejectedRun) -> None:
    _, _, rows = rejected_run
    response = client().get("/console/review")
    assert response.status_code == 200
    assert f'href="{run_path(rejected_run)}"' in response.text
    reasons = {row["reason"] for row in rows}
    assert reasons >= {"ungrounded", "schema"}
    for reason in reasons:
        count = sum(row["reason"] == reason for row in rows)
        assert f"{reason} {count}" in response.text


def test_rows_are_paged_ten_at_a_time_with_reason_answer_and_form(
    rejected_run: RejectedRun,
) -> None:
    _, _, rows = rejected_run
    pages = -(-len(rows) // review.PAGE_SIZE)
    assert pages >= 2
    browser = client()
    first = browser.get(run_path(rejected_run))
    assert first.status_code == 200
    assert articles(first.text) == [str(n) for n in range(1, 11)]
    assert f"page 1 of {pages}" in first.text
    assert f'href="{run_path(rejected_run)}?page=2" rel="next"' in first.text
    assert 'rel="prev"' not in first.text
    assert rows[0]["id"] in first.text and rows[0]["reason"] in first.text
    assert '<pre class="answer">' in first.text
    for field in ("name", "phone", "email", "address", "question"):
        assert f'<label for="f-1-{field}">' in first.text
    assert 'name="labelset" value="corrections"' in first.text
    assert '<button type="submit">Accept</button>' in first.text

    last = browser.get(f"{run_path(rejected_run)}?page={pages}")
    assert f"page {pages} of {pages}" in last.text and 'rel="next"' not in last.text
    assert f'?page={pages - 1}" rel="prev"' in last.text
    assert len(articles(last.text)) == len(rows) - (pages - 1) * review.PAGE_SIZE
    beyond = browser.get(f"{run_path(rejected_run)}?page={pages + 5}")
    assert f"page {pages} of {pages}" in beyond.text


def test_the_first_readable_answer_prefills_the_form_and_is_highlighted(
    rejected_run: RejectedRun,
) -> None:
    _, _, rows = rejected_run
    position, row = next(
        (n, r) for n, r in enumerate(rows[:10], start=1) if r["reason"] == "ungrounded"
    )
    parsed = review.first_parsed(row["answers"])
    assert parsed is not None
    html = client().get(run_path(rejected_run)).text
    article = html.split(f'id="row-{position}"')[1].split("</article>")[0]
    # Contact fields are painted over `question`, so only theirs are marked whole.
    for field, value in parsed.items():
        if field != "question" and isinstance(value, str) and value in row["text"]:
            assert f'data-field="{field}" title="{field}">{value}</mark>' in article
    invented = parsed[row["field"]]
    assert invented not in row["text"]
    assert f'name="{row["field"]}" value="{invented}"' in article


def test_exact_spans_mark_verbatim_values_only() -> None:
    text = "我叫王芳，电话13800138000，快递丢了"
    spans = review.exact_spans(
        text, {"name": "王芳", "phone": "139 0000", "email": None, "address": 12, "question": ""}
    )
    assert spans["name"] is not None and (spans["name"].start, spans["name"].end) == (2, 4)
    assert spans["phone"] is None and spans["email"] is None and spans["address"] is None
    assert spans["question"] is None
    assert highlight(text, spans)[:3] == [
        Segment("我叫", None),
        Segment("王芳", "name"),
        Segment("，电话13800138000，快递丢了", None),
    ]


def test_an_accepted_correction_is_a_new_version_that_training_uses(
    rejected_run: RejectedRun,
) -> None:
    dataset_id, run_id, rows = rejected_run
    browser = client()
    first, second = rows[0], rows[1]
    saved = browser.post(
        f"{run_path(rejected_run)}/{first['id']}",
        data={**valid_correction(first["text"]), "labelset": "corrections"},
        headers=HTMX,
    )
    assert saved.status_code == 200
    assert "Saved as" in saved.text and "corrections@v1" in saved.text
    assert "<html" not in saved.text

    # Without JavaScript: a redirect back to the row, which now says where it went.
    plain = browser.post(
        f"{run_path(rejected_run)}/{second['id']}", data=valid_correction(second["text"])
    )
    assert plain.status_code == 303
    assert plain.headers["location"] == f"{run_path(rejected_run)}?page=1#row-2"
    page = browser.get(plain.headers["location"].split("#")[0]).text
    assert page.count("accepted in corrections@v2") == 2

    listing = browser.get("/console/review/labelsets/corrections")
    assert listing.status_code == 200 and "Label set corrections@v2" in listing.text
    for row in (first, second):
        assert f'data-row="{row["id"]}"' in listing.text
    assert first["text"][:12] in listing.text
    assert 'href="/console/review/labelsets/corrections"' in browser.get("/console/review").text

    store = Store.from_settings()
    (reference,) = pin_labelsets(store, ["corrections"])
    assert reference == "corrections@v2"
    run = find_run(store, run_id)
    train, uses = with_labelsets(
        load_split(store, run, "train"),
        [*load_split(store, run, "val"), *load_split(store, run, "test")],
        {reference: load_labelset(store, reference)},
    )
    corrected = {example.text: example.label for example in train}
    assert corrected[first["text"]]["question"] == first["text"][:12]
    assert corrected[second["text"]]["name"] is None
    assert uses[0].used == 2 and uses[0].dropped_held_out == 0
    assert dataset_id == run.dataset_id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "不存在的人"}, "name “不存在的人” does not occur in the complaint text"),
        ({"email": "not-an-email"}, "email “not-an-email” is not a valid email"),
        ({"labelset": "Bad Name"}, "label set name 'Bad Name' must be lowercase"),
    ],
)
def test_a_refused_correction_says_why_and_writes_nothing(
    rejected_run: RejectedRun, isolated_settings: Any, change: dict[str, str], message: str
) -> None:
    _, _, rows = rejected_run
    row = rows[0]
    form = {**valid_correction(row["text"]), **change}
    browser = client()
    answered = browser.post(f"{run_path(rejected_run)}/{row['id']}", data=form, headers=HTMX)
    assert answered.status_code == 200
    shown = unescape(answered.text)
    assert "Not accepted: " in shown and message in shown
    # The form keeps what was typed, to be fixed and sent again.
    for value in change.values():
        assert f'value="{value}"' in shown
    plain = browser.post(f"{run_path(rejected_run)}/{row['id']}", data=form)
    assert plain.status_code == 422 and message in unescape(plain.text) and "<html" in plain.text
    assert not (isolated_settings / "labelsets").exists()


def test_unknown_runs_rows_and_label_sets_are_404_pages(rejected_run: RejectedRun) -> None:
    dataset_id, run_id, _ = rejected_run
    browser = client()
    for path in (
        f"/console/review/{dataset_id}/dr-0000000000000000-000000000000",
        f"/console/review/ds-0000000000000000/{run_id}",
        f"/console/review/{dataset_id}/bad.id",
        "/console/review/labelsets/nothing-here",
        "/console/review/labelsets/Bad%20Name",
    ):
        response = browser.get(path)
        assert response.status_code == 404, path
        assert "<html" in response.text and "Not found" in response.text
    for row_id in ("no-such-row", "bad.id"):
        posted = browser.post(f"{run_path(rejected_run)}/{row_id}", data={"name": ""})
        assert posted.status_code == 404


def test_review_needs_an_admin_key(rejected_run: RejectedRun) -> None:
    forbidden = client(EXTRACT_KEY).get(run_path(rejected_run))
    assert forbidden.status_code == 403 and "'admin' scope" in unescape(forbidden.text)
    posted = client(EXTRACT_KEY).post(
        f"{run_path(rejected_run)}/{rejected_run[2][0]['id']}", data={}
    )
    assert posted.status_code == 403
    anonymous = client(None).get("/console/review")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/console/login?next=/console/review"
    assert labelsets.names(Store.from_settings()) == []
