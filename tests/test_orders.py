"""Access orders: issuing, validation, filters frozen at issue, revocation, reading, and the
pages built on them (the printable order, "Available to me", the director's register)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError

from tests.support.clock import RIGA
from tests.support.people import Person, add_person
from tests.support.recording_support import insert_recording, riga_today
from tests.support.streaming_support import Browser, bearer, browser
from vault.models import AccessOrder, AuditEvent, Recording, User
from vault.services import access, account_admin, calendar
from vault.services.access import Action
from vault.services.actors import Actor
from vault.services.runtime import Runtime


def audit_rows(runtime: Runtime, action: str) -> list[AuditEvent]:
    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def days_from(today: date, days: int) -> str:
    return (today + timedelta(days=days)).isoformat()


def order_body(
    runtime: Runtime, recording_ids: list[uuid.UUID], grantees: list[str], **changes: Any
) -> dict[str, Any]:
    today = riga_today(runtime)
    body: dict[str, Any] = {
        "number": "12-1/7",
        "issued_on": today.isoformat(),
        "purpose": "Metodiskā darba izvērtēšana pēc metodiskās komisijas lēmuma",
        "grantees": grantees,
        "recording_ids": [str(rid) for rid in recording_ids],
        "valid_from": today.isoformat(),
        "valid_until": days_from(today, 14),
    }
    body.update(changes)
    return body


@dataclass
class School:
    teacher: Person
    colleague: Person
    staff: Person
    director: Person
    auditor: Person
    admin: Person


@pytest.fixture
def school(runtime: Runtime) -> School:
    return School(
        teacher=add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa"),
        colleague=add_person(runtime, "kolegis", "teacher", name="Edgars Vītols"),
        staff=add_person(runtime, "psihologs", "staff", name="Jānis Kalniņš"),
        director=add_person(runtime, "direktore", "director", name="Ilze Ozola"),
        auditor=add_person(runtime, "dpo", "auditor", name="Māris Liepa"),
        admin=add_person(runtime, "it-admin", "admin", name="Pēteris Krūmiņš"),
    )


def start_view_allowed(runtime: Runtime, username: str, recording_id: uuid.UUID) -> bool:
    with runtime.sessions() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        recording = session.get(Recording, recording_id)
        assert recording is not None
        decision = access.decide(
            session,
            Actor(user.id, user.roles),
            Action.START_VIEW,
            recording,
            runtime.clock(),
            RIGA,
        )
        return decision.allowed


# -- issuing ----------------------------------------------------------------------------------


def test_the_director_issues_an_order_from_a_browser_session(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    response = director.post_json(
        "/api/v1/orders", order_body(runtime, [recording_id], ["psihologs"])
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["number"] == "12-1/7"
    assert body["grantees"] == [{"username": "psihologs", "name": "Jānis Kalniņš"}]
    assert body["recording_ids"] == [str(recording_id)]
    assert body["recordings"][0]["teacher"] == "skolotaja"
    assert body["state"] == "active" and body["revoked_at"] is None
    assert response.headers["Location"].endswith(f"/api/v1/orders/{body['id']}")

    (event,) = audit_rows(runtime, "order:issued")
    assert event.object_id == body["id"]
    assert event.details["names_issuer"] is False
    assert event.details["recordings"] == [str(recording_id)]
    assert start_view_allowed(runtime, "psihologs", recording_id)
    assert not start_view_allowed(runtime, "kolegis", recording_id)


def test_the_director_may_name_themself_and_that_is_logged(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    assert not start_view_allowed(runtime, "direktore", recording_id)
    response = director.post_json(
        "/api/v1/orders", order_body(runtime, [recording_id], ["direktore"])
    )
    assert response.status_code == 201
    (event,) = audit_rows(runtime, "order:issued")
    assert event.details["names_issuer"] is True
    assert start_view_allowed(runtime, "direktore", recording_id)


def test_an_order_past_retention_gets_422_naming_the_recording(
    app: Flask, runtime: Runtime, school: School
) -> None:
    kept = riga_today(runtime) + timedelta(days=5)
    short = insert_recording(runtime, "skolotaja", title="Ģeometrija", retain_until=kept)
    longer = insert_recording(
        runtime, "skolotaja", retain_until=riga_today(runtime) + timedelta(days=90)
    )
    director = browser(app, school.director)
    body = order_body(
        runtime, [longer, short], ["psihologs"], valid_until=(kept + timedelta(days=1)).isoformat()
    )
    response = director.post_json("/api/v1/orders", body)
    assert response.status_code == 422
    problem = response.get_json()
    assert response.mimetype == "application/problem+json"
    assert "valid_until" in problem["errors"]
    assert "Ģeometrija" in problem["detail"] and kept.isoformat() in problem["detail"]
    # On the last day itself the order is acceptable.
    body["valid_until"] = kept.isoformat()
    assert director.post_json("/api/v1/orders", body).status_code == 201


def test_a_teacher_issuing_an_order_gets_403_and_the_refusal_is_audited(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    for person in (school.teacher, school.staff, school.auditor, school.admin):
        client = browser(app, person)
        response = client.post_json(
            "/api/v1/orders", order_body(runtime, [recording_id], ["kolegis"])
        )
        assert response.status_code == 403, person.username
    denials = audit_rows(runtime, "access:denied")
    assert [event.details["action"] for event in denials] == ["issue_order"] * 4
    with runtime.sessions() as session:
        assert session.scalars(select(AccessOrder)).first() is None


def test_an_order_issued_with_an_api_token_gets_403(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    response = app.test_client().post(
        "/api/v1/orders",
        json=order_body(runtime, [recording_id], ["psihologs"]),
        headers=bearer(runtime, "direktore"),
    )
    assert response.status_code == 403
    assert "API token" in response.get_json()["detail"] or response.get_json()["detail"]
    (denial,) = audit_rows(runtime, "access:denied")
    assert denial.details == {
        "action": "issue_order",
        "reason": "no_second_factor_session",
        "role": "director",
    }
    with runtime.sessions() as session:
        assert session.scalars(select(AccessOrder)).first() is None


@pytest.mark.parametrize(
    ("grantee", "why"),
    [
        ("it-admin", "an admin-only account"),
        ("dpo", "an auditor-only account"),
        ("nobody-here", "an unknown account"),
        ("atlaists", "a disabled account"),
    ],
)
def test_naming_an_account_the_procedure_excludes_gets_422(
    app: Flask, runtime: Runtime, school: School, grantee: str, why: str
) -> None:
    add_person(runtime, "atlaists", "teacher")
    account_admin.disable_account(runtime, "atlaists", runtime.clock())
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    response = director.post_json(
        "/api/v1/orders", order_body(runtime, [recording_id], ["psihologs", grantee])
    )
    assert response.status_code == 422, why
    assert list(response.get_json()["errors"]) == ["grantees"]
    assert audit_rows(runtime, "order:issued") == []


def test_a_person_named_twice_in_different_spellings_is_named_once(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    body = order_body(runtime, [recording_id, recording_id], ["psihologs", " PSIHOLOGS"])
    response = director.post_json("/api/v1/orders", body)
    assert response.status_code == 201
    issued = response.get_json()
    assert [g["username"] for g in issued["grantees"]] == ["psihologs"]
    assert issued["recording_ids"] == [str(recording_id)]


@pytest.mark.parametrize("second_role", ["admin", "auditor"])
def test_an_admin_or_auditor_who_also_teaches_is_never_named(
    app: Flask, runtime: Runtime, school: School, second_role: str
) -> None:
    """Separation of duties holds for mixed-role accounts too (SPEC §2)."""
    add_person(runtime, "it-skolotajs", second_role, "teacher")
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    response = director.post_json(
        "/api/v1/orders", order_body(runtime, [recording_id], ["it-skolotajs"])
    )
    assert response.status_code == 422
    assert "grantees" in response.get_json()["errors"]
    form = director.client.get("/orders/new").get_data(as_text=True)
    assert 'value="it-skolotajs"' not in form and 'value="psihologs"' in form


def test_the_form_offers_only_what_an_order_can_name(
    app: Flask, runtime: Runtime, school: School
) -> None:
    """The pickers leave out recordings a named person could not watch, and accounts that
    are disabled or have not taken up their invitation."""
    watchable = insert_recording(runtime, "skolotaja", title="Skatāms")
    for status in ("registered", "uploading", "processing", "failed", "restricted", "deleted"):
        insert_recording(runtime, "skolotaja", title=f"Statusā {status}", status=status)
    add_person(runtime, "atspejots", "staff")
    add_person(runtime, "uzaicinats", "staff")
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(User).where(User.username == "atspejots").values(disabled_at=runtime.clock())
        )
        session.execute(
            update(User).where(User.username == "uzaicinats").values(password_hash=None)
        )
    form = browser(app, school.director).client.get("/orders/new").get_data(as_text=True)
    assert f'value="{watchable}"' in form and "Skatāms" in form
    assert "Statusā" not in form
    assert 'value="psihologs"' in form
    assert 'value="atspejots"' not in form and 'value="uzaicinats"' not in form


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (lambda today: {"valid_from": days_from(today, 20)}, "valid_until"),
        (lambda today: {"grantees": []}, "grantees"),
        (lambda today: {"recording_ids": []}, "recording_ids"),
        (lambda today: {"recording_ids": [str(uuid.uuid4())]}, "recording_ids"),
        (lambda today: {"recording_ids": ["not-a-uuid"]}, "recording_ids"),
        (lambda today: {"filter": {"teacher": "skolotaja"}}, "recording_ids"),
        (lambda today: {"number": "  "}, "number"),
        (lambda today: {"purpose": ""}, "purpose"),
        (lambda today: {"issued_on": "2025-13-01"}, "issued_on"),
        (lambda today: {"issued_on": days_from(today, 3)}, "issued_on"),
        (
            lambda today: {"valid_until": days_from(today, -1), "valid_from": days_from(today, -9)},
            "valid_until",
        ),
        (lambda today: {"grantees": "psihologs"}, "grantees"),
    ],
)
def test_order_validation_names_the_field(
    app: Flask,
    runtime: Runtime,
    school: School,
    changes: Callable[[date], dict[str, Any]],
    field: str,
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    body = order_body(runtime, [recording_id], ["psihologs"])
    body.update(changes(riga_today(runtime)))
    response = director.post_json("/api/v1/orders", body)
    assert response.status_code == 422
    assert field in response.get_json()["errors"]


EMPTY_ORDER_MESSAGES = {
    "number": "Šis lauks ir obligāts.",
    "issued_on": "Šis lauks ir obligāts.",
    "purpose": "Šis lauks ir obligāts.",
    "grantees": "Norādiet vismaz vienu personu.",
    "recording_ids": "Norādiet vismaz vienu ierakstu.",
    "valid_from": "Šis lauks ir obligāts.",
    "valid_until": "Šis lauks ir obligāts.",
}


def test_an_empty_order_gets_every_fields_message_at_once(
    app: Flask, runtime: Runtime, school: School
) -> None:
    """The form and the API both answer an empty order with 422 naming every field, not one
    field at a time; the form marks each field and links it from the summary."""
    insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    api = director.post_json("/api/v1/orders", {})
    assert api.status_code == 422
    assert set(api.get_json()["errors"]) == set(EMPTY_ORDER_MESSAGES)

    form = director.client.post("/orders", data={"csrf_token": director.csrf["X-CSRF-Token"]})
    assert form.status_code == 422
    page = form.get_data(as_text=True)
    assert "<form" in page and " novalidate>" in page
    summary = page.split('<div class="error-summary" role="alert" tabindex="-1"', 1)[1]
    summary = summary.split("</div>", 1)[0]
    for name, message in EMPTY_ORDER_MESSAGES.items():
        assert f'href="#field-{name}"' in summary, name
        assert (
            f'id="field-{name}" aria-invalid="true" aria-describedby="field-{name}-error' in page
        ), name
        assert f'<p class="field-errors" id="field-{name}-error"><span>{message}</span>' in page


def test_a_wrong_order_reports_the_databases_findings_with_the_other_fields(
    app: Flask, runtime: Runtime, school: School
) -> None:
    """A taken number, an account the procedure excludes and an order outlasting retention
    are reported together with the fields left empty, not after they are filled in."""
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    first = order_body(runtime, [recording_id], ["psihologs"])
    assert director.post_json("/api/v1/orders", first).status_code == 201
    again = order_body(
        runtime,
        [recording_id],
        ["it-admin"],
        purpose="",
        valid_until=days_from(riga_today(runtime), 400),
    )
    response = director.post_json("/api/v1/orders", again)
    assert response.status_code == 422
    assert set(response.get_json()["errors"]) == {"number", "purpose", "grantees", "valid_until"}
    assert "Daļskaitļi" in response.get_json()["detail"]


def test_a_deleted_recording_cannot_be_named(app: Flask, runtime: Runtime, school: School) -> None:
    gone = insert_recording(runtime, "skolotaja", status="deleted")
    director = browser(app, school.director)
    response = director.post_json("/api/v1/orders", order_body(runtime, [gone], ["psihologs"]))
    assert response.status_code == 422 and "recording_ids" in response.get_json()["errors"]


def test_an_order_number_is_unique_within_its_year(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    assert (
        director.post_json(
            "/api/v1/orders", order_body(runtime, [recording_id], ["psihologs"])
        ).status_code
        == 201
    )
    again = director.post_json("/api/v1/orders", order_body(runtime, [recording_id], ["kolegis"]))
    assert again.status_code == 422 and "number" in again.get_json()["errors"]


def test_the_database_keeps_order_numbers_unique_within_a_year(
    runtime: Runtime, school: School
) -> None:
    """The constraint under the service's check: a row written past the service is refused,
    while the same number in another year is a different order."""
    with runtime.sessions() as session:
        director = session.scalars(select(User.id).where(User.username == "direktore")).one()

    def insert(number: str, issued_on: date) -> None:
        with runtime.sessions() as session, session.begin():
            session.add(
                AccessOrder(
                    number=number,
                    issued_on=issued_on,
                    purpose="Pārbaude",
                    issued_by=director,
                    valid_from=issued_on,
                    valid_until=issued_on + timedelta(days=7),
                    created_at=runtime.clock(),
                )
            )

    insert("5/2", date(2025, 12, 30))
    insert("5/2", date(2026, 1, 5))
    with pytest.raises(IntegrityError):
        insert("5/2", date(2025, 3, 1))


def test_a_director_who_loses_the_numbering_race_gets_the_field_error(
    app: Flask, runtime: Runtime, school: School
) -> None:
    """Another director issues the same number between this request's check and its insert:
    the request gets 422 on the number, and nothing of its order is kept."""
    recording_id = insert_recording(runtime, "skolotaja")
    add_person(runtime, "vietniece", "director", name="Līga Zariņa")
    with runtime.sessions() as session:
        deputy = session.scalars(select(User.id).where(User.username == "vietniece")).one()
    body = order_body(runtime, [recording_id], ["psihologs"])
    raced: list[bool] = []

    def issue_the_same_number_first(
        connection: Any, cursor: Any, statement: str, *args: Any
    ) -> None:
        if raced or not statement.lstrip().upper().startswith("INSERT INTO ACCESS_ORDERS "):
            return
        raced.append(True)
        with runtime.sessions() as other, other.begin():
            other.add(
                AccessOrder(
                    number=body["number"],
                    issued_on=riga_today(runtime),
                    purpose="Vietnieces rīkojums",
                    issued_by=deputy,
                    valid_from=riga_today(runtime),
                    valid_until=riga_today(runtime) + timedelta(days=7),
                    created_at=runtime.clock(),
                )
            )

    event.listen(runtime.engine, "before_cursor_execute", issue_the_same_number_first)
    try:
        response = browser(app, school.director).post_json("/api/v1/orders", body)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", issue_the_same_number_first)
    assert raced
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "number" in response.get_json()["errors"]
    with runtime.sessions() as session:
        issued = session.scalars(select(AccessOrder).where(AccessOrder.number == body["number"]))
        assert [order.issued_by for order in issued] == [deputy]
        assert not session.scalars(
            select(AuditEvent).where(AuditEvent.action == "order:issued")
        ).all()


# -- filters ----------------------------------------------------------------------------------


def test_a_filter_names_exactly_what_matched_at_issue_and_never_a_later_recording(
    app: Flask, runtime: Runtime, school: School
) -> None:
    first = insert_recording(
        runtime,
        "skolotaja",
        class_group="7.a",
        lesson_date=riga_today(runtime) - timedelta(days=20),
    )
    second = insert_recording(
        runtime, "skolotaja", class_group="7.a", lesson_date=riga_today(runtime) - timedelta(days=5)
    )
    insert_recording(runtime, "skolotaja", class_group="8.b")
    insert_recording(runtime, "kolegis", class_group="7.a")
    insert_recording(
        runtime,
        "skolotaja",
        class_group="7.a",
        lesson_date=riga_today(runtime) - timedelta(days=60),
    )
    insert_recording(runtime, "skolotaja", class_group="7.a", status="shredded")
    director = browser(app, school.director)
    selection = {
        "teacher": "skolotaja",
        "class_group": "7.a",
        "from": (riga_today(runtime) - timedelta(days=30)).isoformat(),
        "to": riga_today(runtime).isoformat(),
    }
    body = order_body(runtime, [], ["psihologs"], filter=selection)
    del body["recording_ids"]
    response = director.post_json("/api/v1/orders", body)
    assert response.status_code == 201, response.get_json()
    issued = response.get_json()
    assert sorted(issued["recording_ids"]) == sorted([str(first), str(second)])
    assert issued["filter"] == selection

    later = insert_recording(
        runtime, "skolotaja", class_group="7.a", lesson_date=riga_today(runtime) - timedelta(days=1)
    )
    again = director.get(f"/api/v1/orders/{issued['id']}").get_json()
    assert sorted(again["recording_ids"]) == sorted([str(first), str(second)])
    assert start_view_allowed(runtime, "psihologs", first)
    assert start_view_allowed(runtime, "psihologs", second)
    assert not start_view_allowed(runtime, "psihologs", later)


def test_a_filter_that_matches_nothing_or_an_unknown_teacher_gets_422(
    app: Flask, runtime: Runtime, school: School
) -> None:
    insert_recording(runtime, "skolotaja", class_group="7.a")
    director = browser(app, school.director)
    for selection, field in (
        ({"class_group": "12.c"}, "filter"),
        ({"teacher": "nezinams"}, "filter.teacher"),
        ({}, "filter"),
        ({"from": "2025-05-01", "to": "2025-04-01"}, "filter.to"),
        ({"class_group": "7.a", "owner": "x"}, "filter"),
    ):
        body = order_body(runtime, [], ["psihologs"], filter=selection)
        del body["recording_ids"]
        response = director.post_json("/api/v1/orders", body)
        assert response.status_code == 422, selection
        assert field in response.get_json()["errors"], selection


# -- reading and revoking ---------------------------------------------------------------------


def issue(
    runtime: Runtime,
    director: Browser,
    recording_id: uuid.UUID,
    grantees: list[str],
    **changes: Any,
) -> dict[str, Any]:
    response = director.post_json(
        "/api/v1/orders", order_body(runtime, [recording_id], grantees, **changes)
    )
    assert response.status_code == 201, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_the_auditor_reads_orders_and_others_get_403(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    issued = issue(runtime, director, recording_id, ["psihologs"])
    auditor = browser(app, school.auditor)
    assert [o["id"] for o in auditor.get("/api/v1/orders").get_json()["orders"]] == [issued["id"]]
    assert auditor.get(f"/api/v1/orders/{issued['id']}").get_json()["number"] == "12-1/7"
    assert (
        auditor.post_json(f"/api/v1/orders/{issued['id']}/revoke", {"reason": "x"}).status_code
        == 403
    )
    for person in (school.teacher, school.staff, school.admin):
        client = browser(app, person)
        assert client.get("/api/v1/orders").status_code == 403
        assert client.get(f"/api/v1/orders/{issued['id']}").status_code == 403
        assert client.get(f"/orders/{issued['id']}").status_code == 403
    assert director.get(f"/api/v1/orders/{uuid.uuid4()}").status_code == 404
    # The auditor reads with a token as well: reading grants nothing.
    by_token = app.test_client().get("/api/v1/orders", headers=bearer(runtime, "dpo"))
    assert by_token.status_code == 200


def test_revocation_is_a_logged_act_with_a_reason_and_happens_once(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    issued = issue(runtime, director, recording_id, ["psihologs"])
    path = f"/api/v1/orders/{issued['id']}/revoke"
    assert start_view_allowed(runtime, "psihologs", recording_id)

    assert director.post_json(path, {"reason": "  "}).status_code == 422
    assert browser(app, school.teacher).post_json(path, {"reason": "x"}).status_code == 403
    revoked = director.post_json(path, {"reason": "Izvērtēšana pabeigta"})
    assert revoked.status_code == 200
    body = revoked.get_json()
    assert body["state"] == "revoked" and body["revocation_reason"] == "Izvērtēšana pabeigta"
    assert body["revoked_by"] == "direktore"
    assert not start_view_allowed(runtime, "psihologs", recording_id)
    assert director.post_json(path, {"reason": "again"}).status_code == 409
    assert [e.object_id for e in audit_rows(runtime, "order:revoked")] == [issued["id"]]
    # Everything else the order said is untouched.
    after = director.get(f"/api/v1/orders/{issued['id']}").get_json()
    unchanged = (
        "number",
        "issued_on",
        "purpose",
        "grantees",
        "recording_ids",
        "valid_from",
        "valid_until",
    )
    assert {k: after[k] for k in unchanged} == {k: issued[k] for k in unchanged}
    assert (
        director.post_json(f"/api/v1/orders/{uuid.uuid4()}/revoke", {"reason": "x"}).status_code
        == 404
    )


def test_a_director_token_may_revoke_but_not_issue(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    issued = issue(runtime, browser(app, school.director), recording_id, ["psihologs"])
    response = app.test_client().post(
        f"/api/v1/orders/{issued['id']}/revoke",
        json={"reason": "Pārtraukt piekļuvi nekavējoties"},
        headers=bearer(runtime, "direktore"),
    )
    assert response.status_code == 200


def test_order_states_over_time(app: Flask, runtime: Runtime, school: School) -> None:
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    future = issue(
        runtime,
        director,
        recording_id,
        ["psihologs"],
        number="1",
        valid_from=(riga_today(runtime) + timedelta(days=3)).isoformat(),
    )
    assert future["state"] == "not_yet_valid"
    assert not start_view_allowed(runtime, "psihologs", recording_id)
    with runtime.sessions() as session, session.begin():
        order = session.get(AccessOrder, uuid.UUID(future["id"]))
        assert order is not None
        order.valid_from = riga_today(runtime) - timedelta(days=10)
        order.valid_until = riga_today(runtime) - timedelta(days=1)
    assert director.get(f"/api/v1/orders/{future['id']}").get_json()["state"] == "expired"
    assert not start_view_allowed(runtime, "psihologs", recording_id)


# -- pages ------------------------------------------------------------------------------------


def test_the_director_issues_and_revokes_through_the_pages_and_prints_the_order(
    app: Flask, runtime: Runtime, school: School
) -> None:
    recording_id = insert_recording(
        runtime, "skolotaja", title="Pitagora teorēma", class_group="9.b"
    )
    director = browser(app, school.director)
    form_page = director.get("/orders/new?lang=en")
    assert form_page.status_code == 200
    assert "Pitagora teorēma" in form_page.get_data(as_text=True)
    token = director.csrf["X-CSRF-Token"]
    form = {
        "csrf_token": token,
        "number": "1-7/25",
        "issued_on": riga_today(runtime).isoformat(),
        "purpose": "Skolas iekšējās kvalitātes izvērtēšana",
        "grantees": ["psihologs", "direktore"],
        "selection": "pick",
        "recording_ids": [str(recording_id)],
        "valid_from": riga_today(runtime).isoformat(),
        "valid_until": (riga_today(runtime) + timedelta(days=7)).isoformat(),
    }
    bad = director.client.post(
        "/orders",
        data={**form, "valid_until": (riga_today(runtime) + timedelta(days=400)).isoformat()},
    )
    assert bad.status_code == 422
    assert "Pitagora teorēma" in bad.get_data(as_text=True)
    response = director.client.post("/orders", data=form)
    assert response.status_code == 303
    location = response.headers["Location"]
    page = director.get(location + "?lang=en").get_data(as_text=True)
    for expected in (
        "1-7/25",
        "Skolas iekšējās kvalitātes izvērtēšana",
        "Jānis Kalniņš",
        "Ilze Ozola",
        "Pitagora teorēma",
        "9.b",
        "Anna Bērziņa",
        (riga_today(runtime) + timedelta(days=7)).isoformat(),
        "Daugavpils Centra vidusskola",
    ):
        assert expected in page, expected

    revoke_path = location + "/revoke"
    assert (
        director.client.post(revoke_path, data={"csrf_token": token, "reason": ""}).status_code
        == 422
    )
    assert (
        director.client.post(
            revoke_path, data={"csrf_token": token, "reason": "Beidzies"}
        ).status_code
        == 303
    )
    printed = director.get(location + "?lang=en").get_data(as_text=True)
    assert "Revocation" in printed and "Beidzies" in printed
    assert "Revoke this order" not in printed
    listing = director.get("/orders?lang=en").get_data(as_text=True)
    assert "1-7/25" in listing and "revoked" in listing


def test_the_order_pages_are_for_the_director_and_the_auditor(
    app: Flask, runtime: Runtime, school: School
) -> None:
    assert browser(app, school.auditor).get("/orders").status_code == 200
    assert browser(app, school.auditor).get("/orders/new").status_code == 403
    for person in (school.teacher, school.staff, school.admin):
        client = browser(app, person)
        assert client.get("/orders").status_code == 403
        assert client.get("/orders/new").status_code == 403
        assert client.get("/register").status_code == 403


def test_available_to_me_lists_live_recordings_of_valid_orders_only(
    app: Flask, runtime: Runtime, school: School
) -> None:
    shown = insert_recording(runtime, "skolotaja", title="Redzamais ieraksts")
    restricted = insert_recording(runtime, "skolotaja", title="Ierobežotais ieraksts")
    revoked_one = insert_recording(runtime, "skolotaja", title="Atsauktais ieraksts")
    deleted_one = insert_recording(runtime, "skolotaja", title="Dzēstais ieraksts")
    other = insert_recording(runtime, "skolotaja", title="Cita ieraksts")
    director = browser(app, school.director)
    until = riga_today(runtime) + timedelta(days=9)
    issue(runtime, director, shown, ["psihologs"], number="A-1", valid_until=until.isoformat())
    issue(runtime, director, restricted, ["psihologs"], number="A-2")
    issue(runtime, director, deleted_one, ["psihologs"], number="A-3")
    revoked = issue(runtime, director, revoked_one, ["psihologs"], number="A-4")
    issue(runtime, director, other, ["kolegis"], number="A-5")
    director.post_json(f"/api/v1/orders/{revoked['id']}/revoke", {"reason": "x"})
    with runtime.sessions() as session, session.begin():
        for rid, status in ((restricted, "restricted"), (deleted_one, "deleted")):
            row = session.get(Recording, rid)
            assert row is not None
            row.status = status

    page = browser(app, school.staff).get("/available?lang=en").get_data(as_text=True)
    assert "Redzamais ieraksts" in page and "A-1" in page and until.isoformat() in page
    assert "Ierobežotais ieraksts" in page and "cannot be watched now" in page
    assert f"/recordings/{shown}/watch" in page
    assert f"/recordings/{restricted}/watch" not in page
    for absent in ("Atsauktais ieraksts", "Dzēstais ieraksts", "Cita ieraksts"):
        assert absent not in page
    assert "Redzamais" not in browser(app, school.colleague).get("/available").get_data(
        as_text=True
    )
    assert browser(app, school.auditor).get("/available").status_code == 403
    assert browser(app, school.admin).get("/available").status_code == 403


def test_the_register_shows_metadata_with_filters_and_no_media_access(
    app: Flask, runtime: Runtime, school: School
) -> None:
    add_person(runtime, "aizgajusi", "teacher", name="Laura Priede")
    insert_recording(runtime, "skolotaja", title="Vektori", class_group="10.a")
    insert_recording(
        runtime,
        "aizgajusi",
        title="Ķīmiskās reakcijas",
        class_group="11.b",
        purpose="methodological",
    )
    insert_recording(
        runtime, "skolotaja", title="Senā Ēģipte", class_group="10.a", status="shredded"
    )
    account_admin.disable_account(runtime, "aizgajusi", runtime.clock())

    director = browser(app, school.director)
    page = director.get("/register?lang=en").get_data(as_text=True)
    for expected in (
        "Vektori",
        "Ķīmiskās reakcijas",
        "Senā Ēģipte",
        "Laura Priede",
        "owner disabled",
        "Matemātika",
    ):
        assert expected in page, expected
    assert "/download" not in page and "/views" not in page and "<video" not in page
    assert "/api/v1/recordings" not in page

    only = director.get("/register?lang=en&class_group=10.a&status=available").get_data(
        as_text=True
    )
    assert "Vektori" in only and "Senā Ēģipte" not in only and "Ķīmiskās" not in only
    by_teacher = director.get("/register?teacher=aizgajusi").get_data(as_text=True)
    assert "Ķīmiskās reakcijas" in by_teacher and "Vektori" not in by_teacher
    year = calendar.school_year_of(riga_today(runtime) - timedelta(days=10))
    assert "Vektori" in director.get(f"/register?school_year={year}").get_data(as_text=True)
    assert "Vektori" not in director.get("/register?school_year=1999-2000").get_data(as_text=True)
    assert "Vektori" in browser(app, school.auditor).get("/register").get_data(as_text=True)


def test_pages_show_the_schools_local_time(app: Flask, runtime: Runtime, school: School) -> None:
    """The order's record time is shown in Riga time (10:30 on the test morning), never in
    UTC (08:30); its JSON keeps ISO 8601 with the offset."""
    recording_id = insert_recording(runtime, "skolotaja")
    director = browser(app, school.director)
    issued = director.post_json(
        "/api/v1/orders", order_body(runtime, [recording_id], ["psihologs"])
    )
    assert issued.status_code == 201, issued.get_data(as_text=True)
    order_id = issued.get_json()["id"]
    page = director.get(f"/orders/{order_id}").get_data(as_text=True)
    assert "10:30" in page and "08:30" not in page
    created = director.get(f"/api/v1/orders/{order_id}").get_json()["created_at"]
    assert created.endswith("+00:00") and "T08:30" in created
