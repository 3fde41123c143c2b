"""Every role's pages in Debian's Chromium, in Latvian and in English: axe-core finds no serious
or critical WCAG 2.1 A/AA violation on any of them, each role lands on its own sections (a
screenshot of each landing page is kept under build/screenshots/), the header fits one row at
1280 px, and at 390 px the widest tables scroll inside their box instead of widening the page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect
from sqlalchemy import select

from tests.support.accessibility import assert_accessible
from tests.support.browser import sign_in_with_a_code, sign_in_with_the_form
from tests.support.live_server import LiveServer
from tests.support.people import Person, add_person
from tests.support.recording_support import delete_early, register
from tests.support.streaming_support import School, issue_order, make_school, user_id
from vault.models import User
from vault.services import recordings
from vault.services.actors import Actor
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SCREENSHOTS = Path(__file__).resolve().parents[1] / "build" / "screenshots"
ROLES = ("teacher", "director", "staff", "auditor", "admin")
LANGUAGES = ("lv", "en")
# The sections of landing.html each role lands on; it sees none of the others.
LANDING_SECTIONS = {
    "teacher": {"teacher-work", "available-work", "requests"},
    "director": {"director-work", "available-work", "requests"},
    "staff": {"available-work"},
    "auditor": {"auditor-work", "requests"},
    "admin": {"admin-work"},
}
ALL_SECTIONS = set().union(*LANDING_SECTIONS.values())
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@dataclass(frozen=True)
class Journey:
    """A school with people of every role and something on each of their pages."""

    school: School
    admin: Person
    registered: uuid.UUID  # registered, its upload still to come
    certificate: uuid.UUID  # of a recording deleted early
    base: str

    def person(self, role: str) -> Person:
        return {
            "teacher": self.school.teacher,
            "director": self.school.director,
            "staff": self.school.viewer,
            "auditor": self.school.auditor,
            "admin": self.admin,
        }[role]

    def pages(self, role: str, admin_id: uuid.UUID) -> list[str]:
        """The pages the role's menu offers, and the detail pages it reaches from them."""
        school = self.school
        recording = f"/recordings/{school.recording_id}"
        order = f"/orders/{school.order_id}"
        certificate = f"/certificates/{self.certificate}"
        registered = f"/recordings/{self.registered}"
        own = {
            "teacher": [
                "/recordings",
                "/recordings/new",
                recording,
                registered,
                f"{registered}/upload",
                f"{recording}/accesses",
                f"{recording}/delete",
                "/requests",
                "/available",
                "/certificates",
                certificate,
            ],
            "director": [
                "/requests",
                "/available",
                "/orders",
                "/orders/new",
                order,
                "/register",
                recording,
                "/reports/processing",
            ],
            "staff": ["/available", f"{recording}/watch"],
            "auditor": [
                "/orders",
                "/requests",
                order,
                "/register",
                "/audit",
                f"{recording}/accesses",
                "/reports/processing",
                "/reports/subject",
                "/certificates",
                certificate,
            ],
            "admin": ["/admin/users", f"/admin/users/{admin_id}", "/admin/calendar"],
        }
        return ["/", "/account", "/privacy", *own[role]]


def request_a_recording(runtime: Runtime) -> None:
    with runtime.sessions() as session, session.begin():
        director = session.scalars(select(User).where(User.username == "direktore")).one()
        recordings.create_request(
            session, Actor(user_id=director.id), director, "skolotaja", "7.a, 3. stunda", "Vērošana"
        )


@pytest.fixture
def journey(runtime: Runtime, live_server: LiveServer) -> Journey:
    school = make_school(runtime)
    admin = add_person(runtime, "it-admin", "admin", name="Pēteris Admins")
    registered = register(runtime, "skolotaja", title="Nepabeigts ieraksts")
    certificate = delete_early(runtime, register(runtime, "skolotaja", title="Dzēsts ieraksts"))
    request_a_recording(runtime)
    return Journey(school, admin, registered, certificate, live_server.url)


@contextmanager
def signed_in_tab(
    chromium: Browser, journey: Journey, role: str, language: str, viewport: dict[str, int]
) -> Iterator[Page]:
    """A browser of its own, signed in as the role, switched to the language by the header's
    language switch."""
    context = chromium.new_context(locale="lv-LV", viewport=viewport)  # type: ignore[arg-type]
    try:
        tab = context.new_page()
        person = journey.person(role)
        if person.totp_secret:
            sign_in_with_a_code(tab, journey.base, person)
        else:
            sign_in_with_the_form(tab, journey.base, person.username)
        if language != "lv":
            tab.locator(f'.language-switch button[value="{language}"]').click()
            expect(tab.locator("html")).to_have_attribute("lang", language)
        yield tab
    finally:
        context.close()


def visit(tab: Page, url: str) -> None:
    answer = tab.goto(url)
    assert answer is not None and answer.status == 200, f"{url}: {answer and answer.status}"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("role", ROLES)
def test_every_page_of_a_role_passes_the_accessibility_checks(
    chromium: Browser, journey: Journey, runtime: Runtime, role: str, language: str
) -> None:
    admin_id = user_id(runtime, journey.admin.username)
    with signed_in_tab(chromium, journey, role, language, DESKTOP) as tab:
        for path in journey.pages(role, admin_id):
            visit(tab, journey.base + path)
            expect(tab.locator("html")).to_have_attribute("lang", language)
            assert_accessible(tab)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_visitor_pages_pass_the_accessibility_checks(
    page: Page, journey: Journey, language: str
) -> None:
    for path in ("/", "/privacy", "/login"):
        visit(page, f"{journey.base}{path}?lang={language}")
        assert_accessible(page)
    # A refused sign-in: the form comes back with its error.
    page.fill('input[name="username"]', "nav")
    page.fill('input[name="password"]', "nepareiza parole")
    page.click('main form button[type="submit"]')
    expect(page.locator(".field-errors, .flash.error").first).to_be_visible()
    assert_accessible(page)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_lands_on_its_own_sections(
    chromium: Browser, journey: Journey, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for language in LANGUAGES:
        with signed_in_tab(chromium, journey, role, language, DESKTOP) as tab:
            for section in LANDING_SECTIONS[role]:
                expect(tab.locator(f"section#{section}")).to_be_visible()
            for section in ALL_SECTIONS - LANDING_SECTIONS[role]:
                expect(tab.locator(f"section#{section}")).to_have_count(0)
            shot = SCREENSHOTS / f"landing-{role}-{language}.png"
            tab.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # Shown whether or not pytest captures output: where to look at the picture.
            with capsys.disabled():
                print(f"\nlanding page screenshot: {shot}")


HEADER_ITEMS = ", ".join(
    f".site-header {item}"
    for item in (
        ".brand-block",
        ".menu a",
        ".signed-in-as",
        ".sign-out button",
        ".language-switch button",
    )
)


@pytest.mark.parametrize("role", ROLES)
def test_the_header_fits_one_row_at_1280_pixels(
    chromium: Browser, journey: Journey, role: str
) -> None:
    for language in LANGUAGES:
        with signed_in_tab(chromium, journey, role, language, DESKTOP) as tab:
            boxes = [item.bounding_box() for item in tab.locator(HEADER_ITEMS).all()]
            assert len(boxes) >= 6 and all(box is not None for box in boxes)
            middles = [box["y"] + box["height"] / 2 for box in boxes if box is not None]
            assert max(middles) - min(middles) <= 4, (language, middles)
            header = tab.locator(".site-header").bounding_box()
            assert header is not None and header["height"] <= 64, (language, header)


def page_width_fits(tab: Page) -> bool:
    return bool(tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.mark.parametrize(
    ("role", "paths"), [("director", ["/register"]), ("admin", ["/admin/users", "/admin/calendar"])]
)
def test_wide_tables_scroll_inside_their_box_on_a_phone(
    chromium: Browser, journey: Journey, role: str, paths: list[str]
) -> None:
    with signed_in_tab(chromium, journey, role, "lv", PHONE) as tab:
        for path in paths:
            visit(tab, journey.base + path)
            table = tab.locator("main table").first
            expect(table).to_be_visible()
            assert page_width_fits(tab), path
            # Wider than the phone, the table scrolls inside its own box.
            overflow = tab.evaluate(
                "(t) => getComputedStyle(t.parentElement).overflowX", table.element_handle()
            )
            assert overflow == "auto", path
            assert_accessible(tab)


LONG_ORDER_NUMBER = "2026/12-345-VRS"


def lines_of(element: Locator) -> int:
    """How many lines an inline element's text takes (one box per line)."""
    return int(element.evaluate("(e) => e.getClientRects().length"))


def test_order_numbers_stay_on_one_line_on_a_phone(
    chromium: Browser, journey: Journey, runtime: Runtime
) -> None:
    order_id = issue_order(runtime, ["metodikis"], [journey.school.recording_id], LONG_ORDER_NUMBER)
    with signed_in_tab(chromium, journey, "director", "lv", PHONE) as tab:
        visit(tab, f"{journey.base}/orders")
        cell = tab.locator("td.order-number", has_text=LONG_ORDER_NUMBER)
        expect(cell).to_have_count(1)
        link = tab.get_by_role("link", name=LONG_ORDER_NUMBER, exact=True)
        assert lines_of(link) == 1
        visit(tab, f"{journey.base}/orders/{order_id}")
        heading = tab.locator("h1 .order-number")
        expect(heading).to_have_text(LONG_ORDER_NUMBER)
        assert lines_of(heading) == 1


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_order_and_the_certificate_show_the_schools_local_time(
    chromium: Browser, journey: Journey, language: str
) -> None:
    """Both were recorded at 10:30 in Riga (08:30 UTC, the test clock's morning): the pages
    show the school's time, never UTC or a raw ISO timestamp."""
    with signed_in_tab(chromium, journey, "auditor", language, DESKTOP) as tab:
        for path in (f"/orders/{journey.school.order_id}", f"/certificates/{journey.certificate}"):
            visit(tab, journey.base + path)
            text = tab.locator("main").inner_text()
            assert "10:30" in text, path
            assert "08:30" not in text and "T08:30" not in text and "+00:00" not in text, path
