"""Shared fixtures: a migrated database per test, an instance folder, the app and a client.

The suite runs on SQLite by default. With ``VAULT_TEST_DATABASE_URL`` it runs on
PostgreSQL, in a schema of its own; with ``VAULT_TEST_STORAGE=s3`` the recordings go to
a real SeaweedFS S3 server started for the session.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import make_url
from werkzeug.routing import Rule

from storage_backends.base import LifecycleRules
from tests.support.clock import MachineClock, SteppingClock, TestClock
from tests.support.console import Console
from vault import schema
from vault.app import build_runtime, create_app, create_secret_file
from vault.db import make_engine
from vault.models import AuditChainHead, Base
from vault.services import audit_chain, keys
from vault.services.passwords import PasswordCost, Passwords
from vault.services.runtime import Runtime
from vault.settings import Settings, normalise_database_url

if TYPE_CHECKING:
    from tests.support.seaweed import SeaweedServer

pytest_plugins = [
    "tests.support.seaweed",
    "tests.support.live_server",
    "tests.support.people",
    "tests.support.browser",
]

POSTGRES_URL_VARIABLE = "VAULT_TEST_DATABASE_URL"
STORAGE_VARIABLE = "VAULT_TEST_STORAGE"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``postgres`` belong to the PostgreSQL pass: deselected (not skipped)
    when no PostgreSQL URL is given, so a skip always means a missing backend."""
    if postgres_base_url() is not None:
        return
    deselected = [item for item in items if item.get_closest_marker("postgres")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("postgres")]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Cancel the timers still pending at the end (the rate limiter's in-memory storage
    leaves one per app). The interpreter waits for them before it exits, and under
    faketime a timed wait's deadline lies years ahead of the real clock: cancelling wakes
    them at once, whatever the clock says."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def storage_kind() -> str:
    return os.environ.get(STORAGE_VARIABLE, "local")


def postgres_base_url() -> str | None:
    url = os.environ.get(POSTGRES_URL_VARIABLE, "").strip()
    return normalise_database_url(url) if url else None


def postgres_schema_url(base_url: str, schema_name: str) -> str:
    """A URL whose connections see only ``schema_name`` (isolates test runs in one database)."""
    url = make_url(base_url)
    return url.update_query_dict({"options": f"-csearch_path={schema_name}"}).render_as_string(
        hide_password=False
    )


@dataclass(frozen=True)
class TestDatabase:
    """Hands each test a freshly migrated, empty database."""

    __test__ = False  # a fixture value, not a test class

    kind: str
    template: Path | None = None
    shared_url: str | None = None

    def url_for(self, directory: Path) -> str:
        if self.template is not None:
            target = directory / "vault.db"
            shutil.copyfile(self.template, target)
            return f"sqlite:///{target}"
        assert self.shared_url is not None
        engine = make_engine(self.shared_url)
        try:
            truncate_all(engine)
        finally:
            engine.dispose()
        return self.shared_url


def truncate_all(engine: Engine) -> None:
    """Empty every table, leaving the database as the migrations leave a new one: with the
    audit chain's head row at its start."""
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        # Past the triggers that keep the audit log from being truncated, as a restore would.
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        connection.execute(
            insert(AuditChainHead).values(
                id=audit_chain.HEAD_ROW_ID, seq=0, entry_hash=audit_chain.GENESIS_HASH
            )
        )


def create_postgres_schema(base_url: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
    finally:
        admin.dispose()
    return name, postgres_schema_url(base_url, name)


def drop_postgres_schema(base_url: str, name: str) -> None:
    admin = make_engine(base_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session", autouse=True)
def url_rules_compiled_once() -> Iterator[None]:
    """Werkzeug compiles two Python functions for every URL rule of every app it builds, and
    most tests build an app of their own: the same few dozen rules would be compiled anew for
    each. A compiled builder depends only on the rule's text, its parsed parts and its
    defaults (it reads the converters from the rule when called), so each distinct rule is
    compiled once for the session."""
    original = Rule._compile_builder
    compiled: dict[tuple[object, ...], Callable[..., tuple[str, str]]] = {}

    def compile_once(rule: Rule, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        key = (
            rule.rule,
            rule.subdomain,
            rule.host,
            tuple(rule._trace),
            repr(sorted((rule.defaults or {}).items())),
            append_unknown,
        )
        if key not in compiled:
            compiled[key] = original(rule, append_unknown)
        return compiled[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Rule, "_compile_builder", compile_once)
        yield


@pytest.fixture(scope="session")
def test_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestDatabase]:
    base_url = postgres_base_url()
    if base_url is None:
        template = tmp_path_factory.mktemp("db-template") / "template.db"
        engine = make_engine(f"sqlite:///{template}")
        schema.upgrade(engine)
        engine.dispose()
        yield TestDatabase(kind="sqlite", template=template)
        return
    name, url = create_postgres_schema(base_url, "vault_test")
    engine = make_engine(url)
    try:
        schema.upgrade(engine)
    finally:
        engine.dispose()
    yield TestDatabase(kind="postgresql", shared_url=url)
    drop_postgres_schema(base_url, name)


@pytest.fixture
def storage_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if storage_kind() == "s3":
        server: SeaweedServer = request.getfixturevalue("s3_env")
        return server.new_bucket()
    return (tmp_path / "store").as_uri()


@pytest.fixture
def settings(tmp_path: Path, test_database: TestDatabase, storage_url: str) -> Settings:
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o700)
    (instance / "keys").mkdir(mode=0o700)
    settings = Settings.from_env(
        {
            "VAULT_INSTANCE_DIR": str(instance),
            "VAULT_DATABASE_URL": test_database.url_for(instance),
            "VAULT_STORAGE_URL": storage_url,
            "VAULT_SCHOOL_NAME": "Daugavpils Centra vidusskola",
        }
    )
    create_secret_file(settings.secret_key_file)
    return settings


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> SteppingClock:
    """The clock of the test and of the app it builds (see ``tests.support.clock``): a fixed school
    morning, or the machine's clock for tests marked ``machine_clock``."""
    if request.node.get_closest_marker("machine_clock") is not None:
        return MachineClock()
    return TestClock()


# Argon2id at its production cost takes about half a second per account and per sign-in;
# the tests use the cheapest cost (the production one has a test of its own).
TEST_PASSWORD_COST = PasswordCost(time_cost=1, memory_kib=8, parallelism=1)


@pytest.fixture
def runtime(settings: Settings, clock: SteppingClock) -> Iterator[Runtime]:
    runtime = build_runtime(settings, clock, Passwords(TEST_PASSWORD_COST))
    runtime.store.ensure_ready(LifecycleRules())
    keys.initialise_master_key(runtime)
    keys.initialise_signing_key(runtime)
    yield runtime
    runtime.close()


@pytest.fixture
def recvault(runtime: Runtime, clock: SteppingClock) -> Console:
    """The command line on the test's instance (prepared by ``runtime``) and clock."""
    return Console(runtime.settings, clock, runtime.passwords)


@pytest.fixture
def verify_passes_finished(runtime: Runtime) -> Iterator[None]:
    """Verify passes run after the final PATCH; none may outlive the test's database."""
    yield
    assert runtime.upload_workers.finish(120)


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> Flask:
    # TESTING stays off: a test must see the 500 page a user would, not a propagated exception.
    return create_app(settings, runtime)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
