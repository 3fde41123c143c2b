"""The composition root: the one place that picks the database, the storage and the keys."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from storage_backends.url import open_store
from vault import web
from vault.db import make_engine, make_session_factory
from vault.keyring import EnvMasterKeys, FileMasterKeys, Keyring, MasterKeyProvider
from vault.services import audit_chain, audit_witness, keys
from vault.services.passwords import Passwords
from vault.services.runtime import Clock, Runtime, system_clock
from vault.services.upload_workers import UploadWorkers
from vault.settings import Settings


def build_runtime(
    settings: Settings, clock: Clock = system_clock, passwords: Passwords | None = None
) -> Runtime:
    """Everything built from the settings, shared by the web app and the CLI."""
    engine = make_engine(settings.database_url)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        store=open_store(settings.storage_url),
        keyring=Keyring(master_key_provider(settings)),
        upload_workers=UploadWorkers(),
        audit_linker=audit_chain.Linker(engine),
        clock=clock,
        passwords=passwords or Passwords(),
        witness_store=(
            open_store(settings.audit_witness_url) if settings.audit_witness_url else None
        ),
    )
    audit_witness.attach(runtime)
    return runtime


def master_key_provider(settings: Settings) -> MasterKeyProvider:
    if settings.master_key:
        return EnvMasterKeys(settings.master_key, settings.master_key_previous)
    return FileMasterKeys(settings.keys_dir)


def create_app(settings: Settings, runtime: Runtime | None = None) -> Flask:
    runtime = runtime or build_runtime(settings)
    app = Flask(
        "vault",
        template_folder="web/templates",
        static_folder="web/static",
    )
    secure_cookies = settings.served_over_https
    app.config.update(
        SECRET_KEY=settings.read_secret_key(),
        SESSION_COOKIE_NAME="vault_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookies,
        REMEMBER_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # A tus PATCH carries at most this much; the upload service enforces the rest.
        MAX_CONTENT_LENGTH=128 * 1024 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session it is bound to
        # Flask-WTF's strict check wants a Referer on HTTPS, which a browser may withhold;
        # vault.web.security checks the Origin a browser sends instead.
        WTF_CSRF_SSL_STRICT=False,
        JSON_SORT_KEYS=False,
        PREFERRED_URL_SCHEME="https" if secure_cookies else "http",
    )
    if settings.proxy_count:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.proxy_count,
            x_proto=settings.proxy_count,
            x_host=settings.proxy_count,
        )
    web.init_app(app, runtime)
    return app


@dataclass(frozen=True)
class InitReport:
    instance_dir: str
    created: tuple[str, ...]
    schema_revision: str
    audit_key_fingerprint: str

    def lines(self) -> list[str]:
        lines = [f"instance: {self.instance_dir}"]
        lines += [f"created: {item}" for item in self.created] or ["nothing new to create"]
        lines.append(f"database schema: {self.schema_revision}")
        lines.append(f"audit public-key fingerprint (publish it): {self.audit_key_fingerprint}")
        return lines


def initialise_instance(settings: Settings) -> InitReport:
    """`recvault init`: idempotent; it creates what is missing and never replaces a secret."""
    # Alembic is needed only here: imported at module level it would cost every server
    # worker about 10 MiB of resident memory for code it never runs.
    from vault import schema  # noqa: PLC0415  (see above)

    created: list[str] = []
    for directory in (settings.instance_dir, settings.keys_dir, settings.secret_key_file.parent):
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            created.append(f"folder {directory}")
    if create_secret_file(settings.secret_key_file):
        created.append(f"secret key {settings.secret_key_file}")
    runtime = build_runtime(settings)
    try:
        schema.upgrade(runtime.engine)
        revision = schema.current_revision(runtime.engine) or "none"
        master_key = keys.initialise_master_key(runtime)
        if master_key is not None:
            created.append(master_key)
        fingerprint, signing_key_created = keys.initialise_signing_key(runtime)
        if signing_key_created:
            created.append("audit signing key")
        keys.apply_storage_rules(runtime)
        audit_witness.prepare(runtime)
    finally:
        runtime.close()
    return InitReport(str(settings.instance_dir), tuple(created), revision, fingerprint)


def create_secret_file(path: Path) -> bool:
    """Write a fresh random secret readable by the owner only; leave an existing one alone."""
    try:
        # O_EXCL: two concurrent inits cannot both write, and an existing secret is never replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
    return True
