"""Deny by default, security headers everywhere, CSRF on state changes."""

from __future__ import annotations

import dataclasses

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from tests.support.people import Person, add_person, sign_in
from tests.support.routes import every_route
from tests.support.streaming_support import browser, make_school, user_id
from tests.support.webclient import CSRF_META, csrf_token_from
from vault.app import create_app
from vault.models import AuditEvent
from vault.services import account_admin
from vault.services.runtime import Runtime
from vault.settings import Settings
from vault.web.security import PUBLIC_ENDPOINTS


def test_every_route_is_public_by_allowlist_or_requires_sign_in(app: Flask) -> None:
    client = app.test_client()
    checked = 0
    for route in every_route(app):
        if route.endpoint in PUBLIC_ENDPOINTS:
            continue
        response = client.open(route.url, method=route.method)
        assert response.status_code == 401 or (
            response.status_code == 302 and "/login" in response.headers["Location"]
        ), f"{route.method} {route.url} ({route.endpoint}) answered {response.status_code}"
        checked += 1
    assert checked > 0


def test_allowlist_names_only_existing_endpoints(app: Flask) -> None:
    existing = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert existing >= PUBLIC_ENDPOINTS


def assert_security_headers(headers: dict[str, str]) -> None:
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "camera=()" in headers["Permissions-Policy"]


def test_security_headers_on_html_json_and_error_responses(client: FlaskClient) -> None:
    html = client.get("/")
    assert html.status_code == 200 and html.mimetype == "text/html"
    json_response = client.get("/healthz")
    assert json_response.is_json
    error = client.get("/no-such-page")
    assert error.status_code == 404
    api_error = client.get("/api/v1/me")
    assert api_error.status_code == 401
    for response in (html, json_response, error, api_error):
        assert_security_headers(dict(response.headers))
        assert "Strict-Transport-Security" not in response.headers


def test_hsts_when_served_over_https(client: FlaskClient) -> None:
    response = client.get("/", base_url="https://vault.example.lv")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_pages_have_no_inline_script_or_style(client: FlaskClient) -> None:
    body = client.get("/").get_data(as_text=True)
    assert "<script>" not in body and "<script " not in body.replace("<script src=", "")
    assert "<style" not in body and " style=" not in body
    assert " on" + "click=" not in body


def test_state_change_without_csrf_token_is_refused(client: FlaskClient) -> None:
    client.get("/")
    response = client.post("/language", data={"lang": "en", "next": "/"})
    assert response.status_code == 400
    assert "vault_lang" not in response.headers.get("Set-Cookie", "")


def test_language_switch_rejects_open_redirects(client: FlaskClient) -> None:
    token = csrf_token_from(client)
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:x"):
        response = client.post(
            "/language", data={"lang": "en", "next": target, "csrf_token": token}
        )
        assert response.status_code == 303
        assert response.headers["Location"] == "/", target


# -- behind the TLS proxy ------------------------------------------------------------------------

PUBLIC_URL = "https://vault.example.lv"


def proxied_app(settings: Settings, runtime: Runtime) -> Flask:
    """The app as docs/operations.md deploys it: one proxy in front, terminating TLS."""
    behind = dataclasses.replace(settings, proxy_count=1, base_url=PUBLIC_URL)
    return create_app(behind, dataclasses.replace(runtime, settings=behind))


def https_sign_in(client: FlaskClient, person: Person, origin: str | None) -> TestResponse:
    """A browser's sign-in through the proxy: HTTPS, no Referer (the browser may withhold
    it), and the Origin it sends for a form post."""
    proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "vault.example.lv"}
    form = client.get("/login", headers=proxy)
    match = CSRF_META.search(form.get_data(as_text=True))
    assert match
    headers = {**proxy, **({"Origin": origin} if origin is not None else {})}
    return client.post(
        "/login",
        data={
            "username": person.username,
            "password": person.password,
            "totp": person.fresh_code() if person.totp_secret else "",
            "csrf_token": match.group(1),
        },
        headers=headers,
    )


def test_sign_in_over_https_behind_the_proxy(settings: Settings, runtime: Runtime) -> None:
    director = add_person(runtime, "direktore", "director")
    app = proxied_app(settings, runtime)
    signed_in = https_sign_in(app.test_client(), director, PUBLIC_URL)
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    assert "Secure" in signed_in.headers["Set-Cookie"]
    # A client that sends no Origin at all is judged by the token alone.
    assert https_sign_in(app.test_client(), director, None).status_code == 302


def test_a_state_change_from_another_site_is_refused_even_with_a_token(
    settings: Settings, runtime: Runtime
) -> None:
    teacher = add_person(runtime, "skolotaja", "teacher")
    app = proxied_app(settings, runtime)
    for origin in ("https://evil.example", "null", "http://vault.example.lv"):
        refused = https_sign_in(app.test_client(), teacher, origin)
        assert refused.status_code == 400, origin
    client = app.test_client()
    assert https_sign_in(client, teacher, PUBLIC_URL).status_code == 302
    token = csrf_token_from(client, "/account")
    cross_site = client.post(
        "/logout",
        data={"csrf_token": token},
        headers={"X-Forwarded-Proto": "https", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 400
    assert client.get("/account", headers={"X-Forwarded-Proto": "https"}).status_code == 200


# -- every refusal leaves an audit event --------------------------------------------------------


def denials_of(runtime: Runtime, reason: str) -> list[AuditEvent]:
    with runtime.sessions() as session:
        return [
            event
            for event in session.scalars(
                select(AuditEvent).where(AuditEvent.action == "access:denied")
            )
            if event.details.get("reason") == reason
        ]


def test_a_role_refusal_is_audited(app: Flask, runtime: Runtime) -> None:
    teacher = add_person(runtime, "skolotaja", "teacher")
    client = app.test_client()
    sign_in(client, teacher)
    assert client.get("/admin/users").status_code == 403
    (event,) = denials_of(runtime, "role")
    assert event.details["endpoint"] == "admin.users"
    assert event.actor_id == user_id(runtime, "skolotaja")


def test_a_csrf_failure_of_a_signed_in_person_is_audited(app: Flask, runtime: Runtime) -> None:
    teacher = add_person(runtime, "skolotaja", "teacher")
    client = app.test_client()
    sign_in(client, teacher)
    assert client.post("/logout", data={}).status_code == 400
    (event,) = denials_of(runtime, "csrf")
    assert event.details["endpoint"] == "auth.logout"
    assert event.actor_id == user_id(runtime, "skolotaja")


def test_reading_another_persons_certificate_is_refused_and_audited(
    app: Flask, runtime: Runtime
) -> None:
    school = make_school(runtime)
    owner = browser(app, school.teacher)
    assert owner.delete(f"/api/v1/recordings/{school.recording_id}").status_code == 204
    (summary,) = owner.client.get("/api/v1/certificates").get_json()["certificates"]
    other = browser(app, school.other)
    assert other.client.get(f"/api/v1/certificates/{summary['id']}").status_code == 403
    (event,) = denials_of(runtime, "not_permitted")
    assert event.object_id == summary["id"]
    assert event.actor_id == user_id(runtime, school.other.username)


def test_only_the_upload_path_takes_large_bodies(app: Flask, runtime: Runtime) -> None:
    teacher = add_person(runtime, "skolotaja", "teacher")
    token = account_admin.issue_token(runtime, teacher.username, "t", "1d", runtime.clock())
    big = {"title": "x" * (100 * 1024)}
    api = app.test_client()
    refused = api.post("/api/v1/recordings", json=big, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 413
    assert refused.mimetype == "application/problem+json"
    # Unauthenticated, the body is never read: the answer is the sign-in refusal.
    assert app.test_client().post("/api/v1/recordings", json=big).status_code == 401
    form = app.test_client().post("/login", data={"username": "x" * (100 * 1024)})
    assert form.status_code == 413


def test_every_page_names_the_favicon_which_is_served(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
    assert icon.data.startswith(b"<svg")
