"""The auditor works from the register: each row links to the recording, to who accessed it,
and to the restriction and erasure forms of its page, which stand apart, each with its own
heading and button; the director's register offers none of the auditor's acts."""

from __future__ import annotations

import re

from flask import Flask

from tests.support.people import add_person, signed_in
from tests.support.recording_support import insert_recording
from vault.services.runtime import Runtime


def register_row(page: str, title: str) -> str:
    rows: list[str] = [row for row in re.findall(r"<tr>.*?</tr>", page, re.DOTALL) if title in row]
    assert len(rows) == 1, title
    return rows[0]


def test_the_auditors_register_rows_link_to_accesses_restriction_and_erasure(
    app: Flask, runtime: Runtime
) -> None:
    add_person(runtime, "skolotaja", "teacher")
    auditor = add_person(runtime, "dpo", "auditor")
    director = add_person(runtime, "direktore", "director")
    live = insert_recording(runtime, "skolotaja", title="Vektori")
    restricted = insert_recording(runtime, "skolotaja", title="Optika", status="restricted")
    gone = insert_recording(runtime, "skolotaja", title="Senā Ēģipte", status="shredded")

    page = signed_in(app, auditor).get("/register?lang=en").get_data(as_text=True)
    row = register_row(page, "Vektori")
    assert f'<a href="/recordings/{live}">Vektori</a>' in row
    assert f'href="/recordings/{live}/accesses">Who accessed</a>' in row
    assert f'href="/recordings/{live}#restrict">Restrict</a>' in row
    assert f'href="/recordings/{live}#erase">Erase</a>' in row
    lifted = register_row(page, "Optika")
    assert f'href="/recordings/{restricted}#restrict">Lift the restriction</a>' in lifted
    # A tombstone still tells who accessed it (art. 15); nothing is left to restrict or erase.
    tombstone = register_row(page, "Senā Ēģipte")
    assert f'href="/recordings/{gone}/accesses"' in tombstone
    assert "#restrict" not in tombstone and "#erase" not in tombstone

    theirs = signed_in(app, director).get("/register?lang=en").get_data(as_text=True)
    row = register_row(theirs, "Vektori")
    assert f'<a href="/recordings/{live}">Vektori</a>' in row
    assert "/accesses" not in theirs and "#restrict" not in theirs and "#erase" not in theirs


def test_the_recording_page_keeps_restriction_and_erasure_apart(
    app: Flask, runtime: Runtime
) -> None:
    add_person(runtime, "skolotaja", "teacher")
    auditor = add_person(runtime, "dpo", "auditor")
    director = add_person(runtime, "direktore", "director")
    recording_id = insert_recording(runtime, "skolotaja", title="Vektori")

    page = signed_in(app, auditor).get(f"/recordings/{recording_id}?lang=en")
    text = page.get_data(as_text=True)
    restrict = text.split('<section class="data-subject-request" id="restrict"', 1)[1]
    restrict = restrict.split("</section>", 1)[0]
    erase = text.split(
        '<section class="data-subject-request data-subject-request--destructive" id="erase"', 1
    )[1]
    erase = erase.split("</section>", 1)[0]
    assert '<h2 id="restrict-heading">Restriction of processing (art. 18)</h2>' in restrict
    assert f'action="/recordings/{recording_id}/restrict"' in restrict
    assert '<button type="submit" class="primary">Restrict processing</button>' in restrict
    assert "/erase" not in restrict
    assert '<h2 id="erase-heading">Erasure on request (art. 17)</h2>' in erase
    assert f'action="/recordings/{recording_id}/erase"' in erase
    assert '<button type="submit" class="danger">Erase the recording for good</button>' in erase
    assert "/restrict" not in erase

    theirs = signed_in(app, director).get(f"/recordings/{recording_id}").get_data(as_text=True)
    assert 'id="restrict"' not in theirs and 'id="erase"' not in theirs
