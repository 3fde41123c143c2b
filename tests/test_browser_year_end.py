"""The year-end in Debian's Chromium: the admin's calendar refuses a last day before tomorrow
and asks for the code and a confirmation before bringing a shred within 30 days; the admin
closes the year early with a code; the scheduler's run finishes it; the teacher then sees the
tombstone, the watch page answers 410 and the certificate page shows it verified."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import sign_in_with_a_code, sign_in_with_the_form
from tests.support.clock import TestClock
from tests.support.console import Console
from tests.support.live_server import LiveServer
from tests.support.people import add_person
from tests.support.year_end_support import CURRENT_YEAR, two_years, year_end_state
from vault.services import calendar
from vault.services.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_admin_guards_the_calendar_and_closes_the_year_early(
    live_server: LiveServer,
    page: Page,
    runtime: Runtime,
    recvault: Console,
    clock: TestClock,
) -> None:
    years = two_years(runtime, clock)
    admin = add_person(runtime, "it-admin", "admin", name="Pēteris Admins")
    base = live_server.url
    sign_in_with_a_code(page, base, admin)
    today = clock.riga_today()

    page.goto(f"{base}/admin/calendar")
    last_day_form = page.locator("form", has=page.locator('input[name="last_day"]'))
    last_day_form.locator('input[name="school_year"]').fill(CURRENT_YEAR)
    last_day_form.locator('input[name="last_day"]').fill(today.isoformat())
    last_day_form.get_by_role("button", name="Saglabāt").click()
    expect(page.locator(".field-errors").first).to_contain_text("nevar būt agrāk par rītdienu")

    soon = calendar.year_bounds(CURRENT_YEAR)[0].replace(month=12, day=1)
    last_day_form.locator('input[name="last_day"]').fill(soon.isoformat())
    last_day_form.get_by_role("button", name="Saglabāt").click()
    expect(page.locator("#consequence")).to_contain_text(
        f"{soon.isoformat()} plkst. 18:00 tiks iznīcināti ieraksti: 1 (skolotāji: 1)"
    )
    with runtime.sessions() as session:
        assert calendar.last_day(session, CURRENT_YEAR) != soon
    last_day_form.locator('input[name="totp"]').fill(admin.fresh_code())
    last_day_form.locator('input[name="confirm"]').check()
    last_day_form.get_by_role("button", name="Saglabāt").click()
    expect(page.locator(".flash.success")).to_be_visible()
    with runtime.sessions() as session:
        assert calendar.last_day(session, CURRENT_YEAR) == soon

    close_form = page.locator("form", has=page.locator('input[name="confirm_year"]'))
    close_form.locator('input[name="school_year"]').fill(CURRENT_YEAR)
    close_form.locator('input[name="confirm_year"]').fill(CURRENT_YEAR)
    close_form.locator('input[name="totp"]').fill(admin.fresh_code())
    close_form.get_by_role("button").click()
    expect(page.locator(".flash.success")).to_contain_text("ir noslēgts")

    finished = recvault("lifecycle", "run")
    assert finished.exit_code == 0, finished.output
    state = year_end_state(runtime, CURRENT_YEAR)
    assert state is not None and state.certificate_id is not None

    teacher = page.context.browser.new_context(locale="lv-LV")  # type: ignore[union-attr]
    tab = teacher.new_page()
    sign_in_with_the_form(tab, base, years.teacher.username)
    tab.goto(f"{base}/recordings")
    row = tab.locator("tr", has_text="Novembra stunda")
    expect(row).to_contain_text("iznīcināts mācību gada beigās")
    answer = tab.goto(f"{base}/recordings/{years.current}/watch")
    assert answer is not None and answer.status == 410
    expect(tab.locator("h1")).to_contain_text("410")
    tab.goto(f"{base}/certificates/{state.certificate_id}")
    expect(tab.locator("#verification")).to_contain_text("Pārbaudīts")
    expect(tab.locator("main")).to_contain_text("Novembra stunda")
    teacher.close()
