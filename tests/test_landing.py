"""Each role lands on its own work after signing in: the teacher on what needs attention,
the director on open requests and lapsing orders, staff on what they may watch, the auditor
on the checks, the admin on the machine; a visitor on the welcome."""

from __future__ import annotations

import dataclasses

from flask import Flask
from sqlalchemy import select, update

from tests.support.people import Person, add_person, signed_in
from tests.support.recording_support import delete_early, register
from tests.support.streaming_support import School, issue_order, make_school
from vault.app import create_app
from vault.models import User
from vault.services import recordings
from vault.services.actors import Actor
from vault.services.runtime import Runtime
from vault.settings import Settings


def home(app: Flask, person: Person) -> str:
    return signed_in(app, person).get("/").get_data(as_text=True)


def request_a_recording(runtime: Runtime, lesson: str) -> None:
    with runtime.sessions() as session, session.begin():
        director = session.scalars(select(User).where(User.username == "direktore")).one()
        recordings.create_request(
            session, Actor(user_id=director.id), director, "skolotaja", lesson, "Metodiskais darbs"
        )


def test_each_role_lands_on_its_own_work(app: Flask, runtime: Runtime) -> None:
    school: School = make_school(runtime)
    register(runtime, "skolotaja", title="Nepabeigts ieraksts")
    request_a_recording(runtime, "7.a matemātika, 3. stunda")
    issue_order(runtime, ["metodikis"], [school.recording_id], "7-2/60", days=3)
    admin = add_person(runtime, "it-admin", "admin")
    add_person(runtime, "jauna", "staff")
    with runtime.sessions() as session, session.begin():
        session.execute(update(User).where(User.username == "jauna").values(password_hash=None))

    teacher = home(app, school.teacher)
    assert 'id="teacher-work"' in teacher and "Nepabeigts ieraksts" in teacher
    assert "/recordings/new" in teacher
    assert "7.a matemātika, 3. stunda" in teacher
    assert 'id="admin-work"' not in teacher and 'id="director-work"' not in teacher

    director = home(app, school.director)
    assert 'id="director-work"' in director and "Nr. 7-2/60" in director
    assert "7.a matemātika, 3. stunda" in director
    assert 'id="teacher-work"' not in director

    staff = home(app, school.viewer)
    assert 'id="available-work"' in staff
    assert f"/recordings/{school.recording_id}/watch" in staff
    assert 'id="teacher-work"' not in staff and 'id="director-work"' not in staff

    auditor = home(app, school.auditor)
    assert 'id="auditor-work"' in auditor and "/audit" in auditor
    assert 'id="available-work"' not in auditor

    machine = home(app, admin)
    assert 'id="admin-work"' in machine and "v1 (file)" in machine
    assert "aktivizējuši to īpašnieki</dt><dd>1</dd>" in machine
    assert 'id="teacher-work"' not in machine and "Nepabeigts ieraksts" not in machine

    visitor = app.test_client().get("/").get_data(as_text=True)
    assert "Droša vieta tiešsaistes mācību stundu ierakstiem" in visitor
    assert 'class="landing"' not in visitor


def test_the_certificates_page_lists_what_each_reader_may_read(
    app: Flask, runtime: Runtime
) -> None:
    school = make_school(runtime)
    other = register(runtime, "kolegis", title="Kolēģa ieraksts")
    mine, theirs = (str(delete_early(runtime, rid)) for rid in (school.recording_id, other))
    teacher = signed_in(app, school.teacher).get("/certificates").get_data(as_text=True)
    assert mine in teacher and theirs not in teacher
    auditor = signed_in(app, school.auditor).get("/certificates").get_data(as_text=True)
    assert mine in auditor and theirs in auditor
    staff = signed_in(app, school.viewer).get("/certificates").get_data(as_text=True)
    assert mine not in staff and "Dzēšanas apliecinājumu vēl nav" in staff


def test_an_admin_is_told_when_the_schools_name_is_not_set(
    app: Flask, settings: Settings, runtime: Runtime
) -> None:
    """Without VAULT_SCHOOL_NAME the printed orders and certificates name no school: the
    admin's home page says so and how to set it; other roles are not troubled with it."""
    admin = add_person(runtime, "it-admin", "admin")
    director = add_person(runtime, "direktore", "director")
    assert 'id="school-name-missing"' not in home(app, admin)

    unnamed = dataclasses.replace(settings, school_name="")
    unnamed_app = create_app(unnamed, dataclasses.replace(runtime, settings=unnamed))
    banner = home(unnamed_app, admin).split('id="school-name-missing">', 1)[1]
    banner = banner.split("</div>", 1)[0]
    assert "Skolas nosaukums nav iestatīts" in banner
    assert "VAULT_SCHOOL_NAME" in banner and "VAULT_SCHOOL_ADDRESS" in banner
    assert 'id="school-name-missing"' not in home(unnamed_app, director)
