"""Failures become problem+json for the API and a page for browsers, never a stack trace."""

from __future__ import annotations

import pytest
from flask import Flask, abort

from vault.services import errors as service_errors
from vault.web import security
from vault.web.errors import SERVICE_STATUS

HTML_STATUSES = [400, 403, 404, 405, 410, 413, 415, 416, 422, 429, 500, 503]
LEAK = "secret internal detail /etc/passwd"


@pytest.fixture
def failing_app(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The app plus public routes that fail on purpose."""

    @app.get("/_test/status/<int:code>")
    def fail_with(code: int) -> str:
        if code == 500:
            raise RuntimeError(LEAK)
        abort(code)

    @app.get("/_test/service/<name>")
    def fail_service(name: str) -> str:
        exc = {cls.__name__: cls for cls in SERVICE_STATUS}[name]
        if exc is service_errors.ValidationFailed:
            raise service_errors.ValidationFailed({"title": ["Some fields need correcting."]})
        raise exc()

    monkeypatch.setattr(
        security, "PUBLIC_ENDPOINTS", security.PUBLIC_ENDPOINTS | {"fail_with", "fail_service"}
    )
    return app


@pytest.mark.parametrize("status", HTML_STATUSES)
def test_html_error_page_for_each_status(failing_app: Flask, status: int) -> None:
    response = failing_app.test_client().get(
        f"/_test/status/{status}", headers={"Accept": "text/html"}
    )
    assert response.status_code == status
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert f"({status})" in body
    assert LEAK not in body and "Traceback" not in body
    assert response.headers["Content-Security-Policy"]
    if status == 503:
        assert response.headers["Retry-After"]


@pytest.mark.parametrize("status", HTML_STATUSES)
def test_problem_json_for_each_status(failing_app: Flask, status: int) -> None:
    response = failing_app.test_client().get(
        f"/_test/status/{status}?lang=en", headers={"Accept": "application/json"}
    )
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert LEAK not in response.get_data(as_text=True)


@pytest.mark.parametrize("exc", list(SERVICE_STATUS), ids=lambda cls: cls.__name__)
def test_service_exceptions_map_to_their_status(
    failing_app: Flask, exc: type[service_errors.ServiceError]
) -> None:
    response = failing_app.test_client().get(
        f"/_test/service/{exc.__name__}", headers={"Accept": "application/json"}
    )
    assert response.status_code == SERVICE_STATUS[exc]
    body = response.get_json()
    assert body["detail"]
    if exc is service_errors.ValidationFailed:
        assert response.status_code == 422
        assert body["errors"]["title"] == ["Dažos laukos nepieciešami labojumi."]


def test_unknown_api_path_is_problem_json(app: Flask) -> None:
    response = app.test_client().get("/api/v1/nothing-here")
    assert response.status_code in (401, 404)
    assert response.mimetype == "application/problem+json"


def test_method_not_allowed_names_allowed_methods(app: Flask) -> None:
    response = app.test_client().delete("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
