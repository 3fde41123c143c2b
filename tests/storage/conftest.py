"""Fixtures for the storage contract suite: the same tests run on every BlobStore.

The SeaweedFS fixtures (``s3_server``, ``s3_env``) come from the ``tests.support.seaweed``
plugin that the root conftest registers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from storage_backends.base import BlobStore, LifecycleRules
from storage_backends.local import LocalStore
from storage_backends.s3 import S3Store
from storage_backends.url import open_store
from tests.support.seaweed import SeaweedServer

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]

StoreFactory = Callable[[], BlobStore]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A URL naming a fresh, not yet initialised store of the parametrised backend."""
    if backend == "local":
        return (tmp_path / "store").as_uri()
    server: SeaweedServer = request.getfixturevalue("s3_env")
    return server.url(server.new_bucket_name())


@pytest.fixture
def store(store_url: str) -> BlobStore:
    """A fresh, initialised store opened from its URL, as the application opens it."""
    opened = open_store(store_url)
    opened.ensure_ready(LifecycleRules())
    return opened


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "store", min_part_size=1)
    store.ensure_ready(LifecycleRules())
    return store


@pytest.fixture
def s3_store(s3_env: SeaweedServer) -> S3Store:
    store = open_store(s3_env.new_bucket())
    assert isinstance(store, S3Store)
    return store
