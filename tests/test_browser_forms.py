"""Forms that say what is wrong, in Debian's Chromium: the director sends the order form empty;
no native validation bubble stops it, the server answers with the app's own Latvian messages
for every field at once, the focus lands on the summary, and each field is marked invalid and
described by its message. The order form's pickers offer only what an order can name."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import update

from tests.support.browser import sign_in_with_a_code, sign_in_with_the_form
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.recording_support import insert_recording
from vault.models import User
from vault.services import account_admin
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# The fields an empty order leaves wrong (its dates of issue and of coming into force are
# filled in with today), each with the message the server gives in Latvian.
EMPTY_ORDER_MESSAGES = {
    "number": "Šis lauks ir obligāts.",
    "purpose": "Šis lauks ir obligāts.",
    "grantees": "Norādiet vismaz vienu personu.",
    "recording_ids": "Norādiet vismaz vienu ierakstu.",
    "valid_until": "Šis lauks ir obligāts.",
}

# For each invalid field: its id and the text of the elements its aria-describedby names.
DESCRIBED_FIELDS = """() => Array.from(document.querySelectorAll('[aria-invalid="true"][id]'))
  .map((field) => [field.id, field.getAttribute("aria-describedby").split(" ")
    .map((id) => document.getElementById(id).textContent.trim()).join(" ")])"""


def test_the_empty_order_form_says_what_is_wrong(
    live_server: LiveServer, page: Page, runtime: Runtime
) -> None:
    add_person(runtime, "skolotaja", "teacher")
    add_person(runtime, "psihologs", "staff")
    director = add_person(runtime, "direktore", "director")
    insert_recording(runtime, "skolotaja", title="Vektori")
    base = live_server.url
    sign_in_with_a_code(page, base, director)

    page.goto(f"{base}/orders/new")
    assert page.evaluate("document.querySelector('form.order-form').noValidate")
    with page.expect_navigation() as sent:
        page.get_by_role("button", name="Izdot rīkojumu").click()
    # The browser sent the empty form: the server, not a bubble, judged it.
    answer = sent.value
    assert answer is not None and answer.status == 422

    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    assert page.evaluate("document.activeElement.getAttribute('role')") == "alert"
    expect(summary.get_by_role("heading")).to_have_text("Dažos laukos nepieciešami labojumi")
    links = summary.get_by_role("link")
    assert [link.get_attribute("href") for link in links.all()] == [
        f"#field-{name}" for name in EMPTY_ORDER_MESSAGES
    ]
    for name, message in EMPTY_ORDER_MESSAGES.items():
        expect(summary.locator(f'a[href="#field-{name}"]')).to_contain_text(message)

    described = dict(page.evaluate(DESCRIBED_FIELDS))
    assert sorted(described) == sorted(f"field-{name}" for name in EMPTY_ORDER_MESSAGES)
    for name, message in EMPTY_ORDER_MESSAGES.items():
        # The message first; a field's hint (the valid-until date's) may follow it.
        assert described[f"field-{name}"].startswith(message), name
    for field in ("grantees", "recording_ids"):
        # Every box of a group is marked, not only the first, which holds the id.
        boxes = page.locator(f'input[name="{field}"]')
        for box in boxes.all():
            expect(box).to_have_attribute("aria-invalid", "true")

    summary.locator('a[href="#field-purpose"]').click()
    expect(page.locator("#field-purpose")).to_be_focused()


def test_the_order_pickers_offer_only_what_an_order_can_name(
    live_server: LiveServer, page: Page, runtime: Runtime
) -> None:
    add_person(runtime, "skolotaja", "teacher")
    director = add_person(runtime, "direktore", "director")
    add_person(runtime, "psihologs", "staff")
    add_person(runtime, "atlaists", "staff")
    add_person(runtime, "uzaicinats", "staff")
    account_admin.disable_account(runtime, "atlaists", runtime.clock())
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(User).where(User.username == "uzaicinats").values(password_hash=None)
        )
    available = insert_recording(runtime, "skolotaja", title="Pieejamais")
    insert_recording(runtime, "skolotaja", title="Neizdevies", status="failed")
    insert_recording(runtime, "skolotaja", title="Tikai reģistrēts", status="registered")
    base = live_server.url
    sign_in_with_a_code(page, base, director)

    page.goto(f"{base}/orders/new")
    people = page.locator('input[name="grantees"]')
    assert {box.get_attribute("value") for box in people.all()} == {
        "skolotaja",
        "direktore",
        "psihologs",
    }
    recordings = page.locator('input[name="recording_ids"]')
    assert [box.get_attribute("value") for box in recordings.all()] == [str(available)]
    form = page.locator("form.order-form")
    expect(form).to_contain_text("Pieejamais")
    expect(form).not_to_contain_text("Neizdevies")
    expect(form).not_to_contain_text("Tikai reģistrēts")


def test_a_form_checked_in_the_browser_speaks_like_the_server(
    live_server: LiveServer, page: Page, runtime: Runtime
) -> None:
    """A form the browser checks before sending (here the teacher's token form: its name left
    empty, its lifetime out of range) shows the app's own Latvian messages in the same
    summary the server would send, never the browser's bubble, and sends nothing."""
    teacher = add_person(runtime, "skolotaja", "teacher")
    base = live_server.url
    sign_in_with_the_form(page, base, teacher.username)
    page.goto(f"{base}/account")
    form = page.locator("form", has=page.locator('input[name="name"]'))
    assert form.evaluate("(form) => form.noValidate")
    form.locator('input[name="days"]').fill("999")
    requests: list[str] = []
    page.on("request", lambda sent: requests.append(sent.method))
    form.get_by_role("button").click()

    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(summary.get_by_role("heading")).to_have_text("Dažos laukos nepieciešami labojumi")
    expect(summary.get_by_role("link")).to_have_text(
        ["Nosaukums: Šis lauks ir obligāts.", "Derīguma termiņš (dienās): Šī vērtība nav derīga."]
    )
    described = dict(page.evaluate(DESCRIBED_FIELDS))
    assert described == {
        "field-name": "Šis lauks ir obligāts.",
        "field-days": "Šī vērtība nav derīga.",
    }
    assert "POST" not in requests
    summary.get_by_role("link").first.click()
    expect(form.locator('input[name="name"]')).to_be_focused()

    # Corrected, the form goes to the server, and the old messages are gone.
    form.locator('input[name="name"]').fill("Atskaites skripts")
    form.locator('input[name="days"]').fill("30")
    with page.expect_navigation():
        form.get_by_role("button").click()
    expect(page.locator(".error-summary")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("Atskaites skripts")
