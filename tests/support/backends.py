"""How a test reacts to a missing backend (S3 server, PostgreSQL, Chromium).

A developer's run may skip with a visible reason. CI sets ``VAULT_TEST_REQUIRE_BACKENDS=1``,
and then a missing backend is a failure, so a green CI never hides an untested backend.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_BACKENDS_FLAG = "VAULT_TEST_REQUIRE_BACKENDS"


def backends_required() -> bool:
    return os.environ.get(REQUIRE_BACKENDS_FLAG, "") not in ("", "0", "false", "no")


def missing_backend(reason: str) -> NoReturn:
    """Skip locally; fail when the run demands every backend."""
    if backends_required():
        pytest.fail(f"required backend missing: {reason}", pytrace=False)
    pytest.skip(f"backend missing: {reason}")
