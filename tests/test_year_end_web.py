"""Moving the last school day is a destructive act, and people are told before their
recordings go: the calendar guard, the reminders, and the year-end from the admin's page."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.clock import TestClock, riga
from tests.support.console import Console
from tests.support.mailbox import Mailbox, smtp_server
from tests.support.people import Person, add_person, signed_in
from tests.support.streaming_support import bearer
from tests.support.webclient import csrf_token_from
from tests.support.year_end_support import CURRENT_YEAR, TwoYears, two_years, year_end_state
from vault.app import create_app
from vault.services import calendar, lifecycle
from vault.services.runtime import Runtime
from vault.settings import Settings


@pytest.fixture
def years(runtime: Runtime, clock: TestClock) -> TwoYears:
    return two_years(runtime, clock)


@pytest.fixture
def admin(runtime: Runtime) -> Person:
    return add_person(runtime, "it-admin", "admin", name="Pēteris Admins")


def last_day(runtime: Runtime, school_year: str) -> date:
    with runtime.sessions() as session:
        return calendar.last_day(session, school_year)


def post_calendar(client: FlaskClient, **fields: str) -> tuple[int, str]:
    token = csrf_token_from(client, "/admin/calendar")
    answer = client.post("/admin/calendar", data={"csrf_token": token, **fields})
    return answer.status_code, answer.get_data(as_text=True)


def test_moving_the_last_day_within_30_days_shows_the_count_and_needs_the_code(
    app: Flask, runtime: Runtime, years: TwoYears, admin: Person, clock: TestClock
) -> None:
    clock.set(riga(2027, 5, 10, 9))
    page = signed_in(app, admin)
    before = last_day(runtime, CURRENT_YEAR)
    status, body = post_calendar(page, school_year=CURRENT_YEAR, last_day="2027-05-20")
    assert status == 409
    assert "2027-05-20 plkst. 18:00 tiks iznīcināti ieraksti: 1 (skolotāji: 1)" in body
    assert 'name="totp"' in body
    assert last_day(runtime, CURRENT_YEAR) == before

    wrong = post_calendar(
        page, school_year=CURRENT_YEAR, last_day="2027-05-20", confirm="yes", totp="000000"
    )
    assert wrong[0] == 403 and last_day(runtime, CURRENT_YEAR) == before
    status, _ = post_calendar(
        page,
        school_year=CURRENT_YEAR,
        last_day="2027-05-20",
        confirm="yes",
        totp=admin.fresh_code(),
    )
    assert status == 302
    assert last_day(runtime, CURRENT_YEAR) == date(2027, 5, 20)

    # Later is never destructive: no confirmation asked.
    assert post_calendar(page, school_year=CURRENT_YEAR, last_day="2027-05-28")[0] == 302


def test_a_last_day_before_tomorrow_is_refused(
    app: Flask, runtime: Runtime, years: TwoYears, admin: Person, clock: TestClock
) -> None:
    clock.set(riga(2027, 5, 10, 9))
    page = signed_in(app, admin)
    status, body = post_calendar(
        page, school_year=CURRENT_YEAR, last_day="2027-05-10", confirm="yes", totp="1"
    )
    assert status == 422
    assert "nevar būt agrāk par rītdienu" in body
    assert last_day(runtime, CURRENT_YEAR) == date(2027, 5, 31)


def test_calendar_set_on_the_console_asks_for_yes_and_prints_the_count(
    runtime: Runtime, recvault: Console, years: TwoYears, clock: TestClock
) -> None:
    clock.set(riga(2027, 5, 10, 9))
    asked = recvault("calendar", "set", CURRENT_YEAR, "--last-day", "2027-05-20")
    assert asked.exit_code == 2
    assert "1 recordings of 1 teachers will be destroyed on 2027-05-20 at 18:00." in asked.output
    assert last_day(runtime, CURRENT_YEAR) == date(2027, 5, 31)
    done = recvault("calendar", "set", CURRENT_YEAR, "--last-day", "2027-05-20", "--yes")
    assert done.exit_code == 0, done.output
    assert "1 recordings of 1 teachers will be destroyed on 2027-05-20 at 18:00." in done.output
    assert last_day(runtime, CURRENT_YEAR) == date(2027, 5, 20)
    today = recvault("calendar", "set", CURRENT_YEAR, "--last-day", "2027-05-10", "--yes")
    assert today.exit_code != 0 and "tomorrow" in today.output


@dataclasses.dataclass(frozen=True)
class Mailing:
    """The app and runtime with SMTP configured, and the mailbox that receives."""

    runtime: Runtime
    app: Flask
    mailbox: Mailbox


@pytest.fixture
def mailing(settings: Settings, runtime: Runtime) -> Iterator[Mailing]:
    with smtp_server() as (box, port):
        changed = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{port}")
        mailing_runtime = dataclasses.replace(runtime, settings=changed)
        yield Mailing(mailing_runtime, create_app(changed, mailing_runtime), box)


def test_teachers_and_the_director_are_reminded_once(
    mailing: Mailing, years: TwoYears, clock: TestClock
) -> None:
    runtime, app, mailbox = mailing.runtime, mailing.app, mailing.mailbox
    clock.set(riga(2027, 4, 20, 9))  # 41 days before the shred: nothing yet
    lifecycle.run(runtime, clock(), dry_run=False)
    assert mailbox.messages == []
    home = signed_in(app, years.teacher).get("/").get_data(as_text=True)
    assert "tiks dzēsts" not in home and "tiks dzēsti" not in home

    clock.set(riga(2027, 5, 10, 9))  # 21 days before
    lifecycle.run(runtime, clock(), dry_run=False)
    lifecycle.run(runtime, clock() + timedelta(hours=1), dry_run=False)
    recipients = sorted(message["To"] for message in mailbox.messages)
    assert recipients == ["direktore@school.example.lv", "skolotaja@school.example.lv"]
    assert "2027-05-31 18:00" in mailbox.messages[0].get_payload()
    home = signed_in(app, years.teacher).get("/").get_data(as_text=True)
    assert "1 mācību gada 2026-2027 ieraksts tiks dzēsts 2027-05-31 plkst. 18:00" in home
    director = signed_in(app, years.director).get("/").get_data(as_text=True)
    assert "2026-2027" in director and "2027-05-31" in director

    # A new date is news: announced at once, once.
    recvault = Console(runtime.settings, clock, runtime.passwords)
    moved = recvault("calendar", "set", CURRENT_YEAR, "--last-day", "2027-05-25", "--yes")
    assert moved.exit_code == 0, moved.output
    assert len(mailbox.messages) == 4
    assert all("2027-05-25" in m.get_payload() for m in mailbox.messages[2:])
    lifecycle.run(runtime, clock(), dry_run=False)
    assert len(mailbox.messages) == 4


def test_admins_see_when_the_coming_years_last_day_is_not_set(
    app: Flask, runtime: Runtime, admin: Person
) -> None:
    page = signed_in(app, admin)
    assert "Mācību gada 2026-2027 pēdējā mācību diena nav iestatīta" in page.get("/").get_data(
        as_text=True
    )
    status, _ = post_calendar(page, school_year=CURRENT_YEAR, last_day="2027-06-18")
    assert status == 302
    assert "nav iestatīta" not in page.get("/").get_data(as_text=True)


def test_the_admin_closes_a_year_early_and_the_scheduler_finishes_it(
    app: Flask, runtime: Runtime, recvault: Console, years: TwoYears, admin: Person
) -> None:
    page = signed_in(app, admin)
    token = csrf_token_from(page, "/admin/calendar")
    fields = {"csrf_token": token, "school_year": CURRENT_YEAR}
    mistyped = page.post(
        "/admin/year-end", data={**fields, "confirm_year": "2026-2028", "totp": admin.fresh_code()}
    )
    assert mistyped.status_code == 422 and year_end_state(runtime, CURRENT_YEAR) is None
    no_code = page.post(
        "/admin/year-end", data={**fields, "confirm_year": CURRENT_YEAR, "totp": "123"}
    )
    assert no_code.status_code == 403 and year_end_state(runtime, CURRENT_YEAR) is None
    done = page.post(
        "/admin/year-end",
        data={**fields, "confirm_year": CURRENT_YEAR, "totp": admin.fresh_code()},
    )
    assert done.status_code == 302
    state = year_end_state(runtime, CURRENT_YEAR)
    assert state is not None and state.frozen_at is not None and state.certified_at is None
    teacher = signed_in(app, years.teacher)
    # Closed at once: the recording's media is gone before the scheduler's run.
    assert teacher.get(f"/recordings/{years.current}/watch").status_code == 410
    assert "turpinās" in page.get(done.headers["Location"]).get_data(as_text=True)

    assert recvault("lifecycle", "run").exit_code == 0
    state = year_end_state(runtime, CURRENT_YEAR)
    assert state is not None and state.certificate_id is not None
    assert str(state.certificate_id) in page.get("/admin/calendar").get_data(as_text=True)
    shown = signed_in(app, years.director).get(f"/certificates/{state.certificate_id}")
    assert "Pārbaudīts" in shown.get_data(as_text=True)
    assert "Novembra stunda" in shown.get_data(as_text=True)

    mine = teacher.get("/recordings").get_data(as_text=True)
    assert "iznīcināts mācību gada beigās" in mine
    watch = teacher.get(f"/recordings/{years.current}/watch")
    assert watch.status_code == 410
    own = teacher.get(f"/certificates/{state.certificate_id}").get_data(as_text=True)
    assert "Pārbaudīts" in own and "Novembra stunda" in own
    bearer_token = bearer(runtime, "skolotaja")
    listed = teacher.get("/api/v1/certificates", headers=bearer_token).get_json()["certificates"]
    assert str(state.certificate_id) in [c["id"] for c in listed]
    whole = teacher.get(f"/api/v1/certificates/{state.certificate_id}", headers=bearer_token)
    assert whole.status_code == 403
    stranger = add_person(runtime, "kolegis", "teacher")
    assert signed_in(app, stranger).get(f"/certificates/{state.certificate_id}").status_code == 403
