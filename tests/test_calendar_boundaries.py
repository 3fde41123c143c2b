"""The calendar's awkward instants, each set explicitly on the test clock.

Orders, lessons and school years are counted in Riga days, and Riga is two or three hours
ahead of UTC: at 00:30 on 1 September it is still 31 August in UTC. Durations (session and
view timeouts) are counted in real time, across summer-time switches.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from tests.support.clock import RIGA, TestClock, riga
from tests.support.people import add_person, sign_in
from tests.support.recording_support import registration
from tests.support.streaming_support import bearer, browser, denials, issue_order, make_school
from vault.services import calendar
from vault.services.runtime import Runtime

LAST_SCHOOL_DAY = riga(2027, 5, 31)  # the default: the last weekday of May 2027, a Monday


def test_the_default_last_school_day_and_its_shred_time() -> None:
    assert calendar.default_last_day("2026-2027") == LAST_SCHOOL_DAY.date()
    # 18:00 in Riga's summer time is 15:00 UTC; in winter time it would be 16:00.
    assert calendar.shred_time(LAST_SCHOOL_DAY.date(), 18, RIGA) == datetime(
        2027, 5, 31, 15, tzinfo=UTC
    )
    assert calendar.shred_time(riga(2027, 1, 15).date(), 18, RIGA) == datetime(
        2027, 1, 15, 16, tzinfo=UTC
    )


@pytest.mark.parametrize(("hour", "minute"), [(17, 59), (18, 1)])
def test_the_last_school_day_before_and_after_the_shred_hour(
    app: Flask, runtime: Runtime, clock: TestClock, hour: int, minute: int
) -> None:
    """Until midnight of the last school day an order still admits its designated person;
    an early deletion's certificate names that day's shred hour as the moment cryptographic
    erasure completes, whether the deletion comes before it or after it."""
    clock.set(riga(2027, 5, 31, hour, minute))
    assert runtime.settings.shred_hour == 18
    school = make_school(runtime)
    shred_at = datetime(2027, 5, 31, 15, tzinfo=UTC)
    assert (clock() < shred_at) == (hour < 18)

    viewer = browser(app, school.viewer)
    assert viewer.start_view(school.recording_id).status_code == 201
    owner = browser(app, school.teacher)
    deleted = owner.client.delete(f"/api/v1/recordings/{school.recording_id}", headers=owner.csrf)
    assert deleted.status_code == 204, deleted.get_data(as_text=True)
    (summary,) = owner.client.get("/api/v1/certificates").get_json()["certificates"]
    document = owner.client.get(f"/api/v1/certificates/{summary['id']}").get_json()
    erasure = document["certificate"]["cryptographic_erasure"]
    assert erasure["complete"] is False
    assert datetime.fromisoformat(erasure["completes_at"]) == shred_at


def test_31_august_belongs_to_the_old_year_and_1_september_to_the_new(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    teacher = add_person(runtime, "skolotaja", "teacher")
    clock.set(riga(2027, 8, 31, 23, 59))
    page = app.test_client()
    sign_in(page, teacher)
    assert 'max="2027-08-31"' in page.get("/recordings/new").get_data(as_text=True)
    late = page.post(
        "/api/v1/recordings",
        json=registration(runtime, lesson_date="2027-08-31"),
        headers=bearer(runtime, "skolotaja"),
    )
    # 2026-2027 ended on its last school day, 31 May.
    assert late.status_code == 422
    assert "lesson_date" in late.get_json()["errors"]

    clock.set(riga(2027, 9, 1, 0, 30))
    assert clock().date().isoformat() == "2027-08-31"  # UTC is still in August
    api = bearer(runtime, "skolotaja")
    first = page.post(
        "/api/v1/recordings",
        json=registration(
            runtime,
            lesson_date="2027-09-01",
            subjects_informed={"method": "e-klase", "at": "2027-09-01"},
        ),
        headers=api,
    )
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["school_year"] == "2027-2028"
    assert first.get_json()["retain_until"] == "2028-05-31"
    tomorrow = page.post(
        "/api/v1/recordings",
        json=registration(runtime, lesson_date="2027-09-02"),
        headers=api,
    )
    assert tomorrow.status_code == 422


@pytest.mark.parametrize("day", [riga(2027, 2, 12), riga(2027, 6, 10)], ids=["winter", "summer"])
def test_an_order_ends_at_midnight_in_riga_not_in_utc(
    app: Flask, runtime: Runtime, clock: TestClock, day: datetime
) -> None:
    clock.set(day.replace(hour=9) - timedelta(days=2))
    school = make_school(runtime)
    if day.month == 6:
        # The year's last school day has passed by June: keep this recording till August.
        calendar.set_last_day_as_operator(
            runtime, calendar.LastDayChange("2026-2027", riga(2027, 8, 31).date())
        )
    issue_order(runtime, ["kolegis"], [school.recording_id], "7-2/16", days=2)

    clock.set(day.replace(hour=23, minute=59))
    colleague = browser(app, school.other)
    assert colleague.start_view(school.recording_id).status_code == 201

    clock.set(day + timedelta(days=1))  # 00:00 in Riga: 21:00 or 22:00 UTC the day before
    assert clock().date() == day.date()
    assert colleague.start_view(school.recording_id).status_code == 403
    assert [event.details["action"] for event in denials(runtime, "order_not_valid")] == [
        "start_view"
    ]


def test_an_order_issued_just_after_midnight_is_dated_by_riga(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    clock.set(riga(2027, 2, 12, 23, 50))
    school = make_school(runtime)
    clock.set(riga(2027, 2, 13, 0, 5))
    director = browser(app, school.director)
    body = {
        "number": "7-2/17",
        "issued_on": "2027-02-13",
        "purpose": "Stundas vērošana",
        "grantees": ["kolegis"],
        "recording_ids": [str(school.recording_id)],
        "valid_from": "2027-02-13",
        "valid_until": "2027-02-20",
    }
    response = director.post_json("/api/v1/orders", body)
    assert response.status_code == 201, response.get_json()
    assert browser(app, school.other).start_view(school.recording_id).status_code == 201


def test_a_session_idles_in_real_minutes_across_the_spring_switch(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    """On 28 March 2027 Riga's clocks jump from 03:00 to 04:00: 02:50 and 04:10 are twenty
    minutes apart, within the 30-minute idle timeout; 04:25 is not."""
    teacher = add_person(runtime, "skolotaja", "teacher")
    client = app.test_client()
    clock.set(riga(2027, 3, 28, 2, 50))
    assert sign_in(client, teacher).status_code == 302
    clock.set(riga(2027, 3, 28, 4, 10))
    assert client.get("/account").status_code == 200
    clock.set(riga(2027, 3, 28, 4, 45))
    assert client.get("/account").status_code == 302


def test_a_view_lives_in_real_minutes_across_the_autumn_switch(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    """On 25 October 2026 Riga's clocks go back from 04:00 to 03:00: a heartbeat at 03:05
    winter time comes ten minutes after 03:55 summer time, within the view's idle timeout."""
    clock.set(riga(2026, 10, 23, 10))
    school = make_school(runtime)
    clock.set(datetime(2026, 10, 25, 3, 55, tzinfo=RIGA, fold=0))  # summer time, 00:55 UTC
    viewer = browser(app, school.viewer)
    started = viewer.start_view(school.recording_id)
    assert started.status_code == 201
    view_id = started.get_json()["view_id"]
    clock.set(datetime(2026, 10, 25, 3, 5, tzinfo=RIGA, fold=1))  # winter time, 01:05 UTC
    assert clock() - datetime(2026, 10, 25, 0, 55, tzinfo=UTC) < timedelta(minutes=11)
    beat = viewer.post_json(f"/api/v1/views/{view_id}/heartbeat", {})
    assert beat.status_code == 200, beat.get_data(as_text=True)
    clock.advance(timedelta(minutes=20))
    assert viewer.post_json(f"/api/v1/views/{view_id}/heartbeat", {}).status_code == 403


def test_the_lesson_date_may_be_the_new_school_day_just_after_midnight(
    app: Flask, runtime: Runtime, clock: TestClock
) -> None:
    """At 00:00 in Riga (22:00 UTC the day before) the form already accepts the new day."""
    teacher = add_person(runtime, "skolotaja", "teacher")
    clock.set(riga(2027, 2, 13, 0, 0))
    client = app.test_client()
    sign_in(client, teacher)
    assert 'max="2027-02-13"' in client.get("/recordings/new").get_data(as_text=True)
