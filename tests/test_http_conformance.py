"""HTTP details clients rely on: a conditional stream request answered 304, tus answers
without a body carry no media type, OPTIONS on an upload URL, and a cross-origin preflight
refused plainly (the vault grants no origin CORS)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.recording_support import register
from tests.support.streaming_support import School, browser, make_school
from tests.support.uploads_support import UPLOADS, create_url, head, media, patch, teacher_token
from vault.services.runtime import Runtime
from vault.settings import Settings


@pytest.fixture
def school(runtime: Runtime) -> School:
    return make_school(runtime)


def test_if_none_match_with_the_current_etag_answers_304_after_the_policy(
    app: Flask, school: School
) -> None:
    viewer = browser(app, school.viewer)
    url = viewer.stream_url(school.recording_id)
    first = viewer.client.get(url)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    again = viewer.client.get(url, headers={"If-None-Match": f'"other", {etag}'})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["ETag"] == etag and again.headers["Cache-Control"] == "no-store"
    assert viewer.client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    stale = viewer.client.get(url, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200 and stale.data == school.plaintext
    # The condition never bypasses the policy: another person's request is refused first.
    other = browser(app, school.other)
    assert other.client.get(url, headers={"If-None-Match": etag}).status_code == 403


@pytest.mark.usefixtures("verify_passes_finished")
def test_tus_answers_without_a_body_have_no_media_type(
    client: FlaskClient, runtime: Runtime, settings: Settings
) -> None:
    token = teacher_token(runtime, "skolotaja")
    recording_id = register(runtime, "skolotaja")
    url = create_url(client, token, recording_id, 4096)
    created_again = client.post(
        UPLOADS,
        headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"},
    )
    assert created_again.status_code >= 400  # an error keeps its problem+json body
    assert created_again.mimetype == "application/problem+json"
    answers = {
        "HEAD": head(client, token, url),
        "PATCH": patch(client, token, url, 0, media(1024)),
        "OPTIONS": client.options(url, headers={"Authorization": f"Bearer {token}"}),
    }
    for method, answer in answers.items():
        assert answer.status_code in (200, 204), method
        assert "Content-Type" not in answer.headers, method
    options = answers["OPTIONS"]
    assert options.headers["Tus-Resumable"] == "1.0.0"
    assert options.headers["Tus-Version"] == "1.0.0"
    assert options.headers["Tus-Extension"] == "creation,termination"
    assert options.headers["Tus-Max-Size"] == str(settings.max_upload_bytes)


def test_a_cross_origin_preflight_is_refused_plainly(client: FlaskClient) -> None:
    preflight = {
        "Origin": "https://elsewhere.example",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "tus-resumable, upload-offset, content-type",
    }
    for url in (UPLOADS, f"{UPLOADS}/8b1d9a52-8d2c-4a43-9b89-1f0b2f3c4d5e"):
        answer = client.options(url, headers=preflight)
        assert answer.status_code == 403
        assert answer.mimetype == "application/problem+json"
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert (
            "other websites" in answer.get_json()["detail"]
            or "citām" in answer.get_json()["detail"]
        )
    same_origin = client.options(UPLOADS, headers={**preflight, "Origin": "http://localhost"})
    assert same_origin.status_code != 403
