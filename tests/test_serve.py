"""`recvault init` then `recvault serve`: the app answers under gunicorn, in Latvian, switchable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.processes import free_port, serving
from tests.support.webclient import CSRF_META


@pytest.fixture
def served(tmp_path: Path, storage_url: str) -> Iterator[str]:
    env = {
        **os.environ,
        "VAULT_INSTANCE_DIR": str(tmp_path / "instance"),
        "VAULT_STORAGE_URL": storage_url,
    }
    recvault = [sys.executable, "-m", "vault.cli"]
    subprocess.run([*recvault, "init"], env=env, check=True, capture_output=True, timeout=60)
    port = free_port()
    with serving([*recvault, "serve", "--port", str(port), "--workers", "1"], env, port):
        yield f"http://127.0.0.1:{port}"


def test_served_page_is_latvian_and_switches_to_english(served: str) -> None:
    browser = requests.Session()
    page = browser.get(f"{served}/", timeout=5)
    assert page.status_code == 200
    assert '<html lang="lv">' in page.text
    assert page.headers["Server"].lower().startswith("gunicorn")
    match = CSRF_META.search(page.text)
    assert match
    switched = browser.post(
        f"{served}/language",
        data={"lang": "en", "next": "/", "csrf_token": match.group(1)},
        timeout=5,
    )
    assert switched.status_code == 200
    assert '<html lang="en">' in switched.text
    assert '<html lang="en">' in browser.get(f"{served}/", timeout=5).text
    assert browser.get(f"{served}/healthz", timeout=5).json()["status"] == "ok"
