"""/healthz tells whether the database and the storage answer."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from storage_backends.base import LifecycleRules
from tests.support.seaweed import run_seaweedfs
from vault.app import build_runtime, create_app
from vault.settings import Settings


def test_healthy(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "storage": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def client_for(settings: Settings) -> FlaskClient:
    runtime = build_runtime(settings)
    runtime.store.ensure_ready(LifecycleRules())
    return create_app(settings, runtime).test_client()


def assert_storage_unavailable(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["storage"] == "unavailable"
    assert body["database"] == "ok"
    assert response.headers["Retry-After"]


def test_stopped_local_storage_is_503(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "local-store"
    client = client_for(dataclasses.replace(settings, storage_url=root.as_uri()))
    assert client.get("/healthz").status_code == 200
    shutil.rmtree(root)
    assert_storage_unavailable(client)


@pytest.mark.slow
def test_stopped_s3_server_is_503(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_seaweedfs(tmp_path / "seaweed") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        client = client_for(dataclasses.replace(settings, storage_url=server.new_bucket()))
        assert client.get("/healthz").status_code == 200
        server.stop()
        assert_storage_unavailable(client)
