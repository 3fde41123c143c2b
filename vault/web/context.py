"""Per-request access to the pieces the composition root built.

The views never construct a database engine or a store; they ask for the ones
``create_app`` was given, so tests and production differ only in configuration.
"""

from __future__ import annotations

from flask import Flask, current_app, g
from sqlalchemy.orm import Session

from vault.services.runtime import Runtime
from vault.settings import Settings

EXTENSION_KEY = "vault"


def install(app: Flask, runtime: Runtime) -> None:
    app.extensions[EXTENSION_KEY] = runtime
    app.teardown_appcontext(_close_db_session)


def runtime() -> Runtime:
    value: Runtime = current_app.extensions[EXTENSION_KEY]
    return value


def settings() -> Settings:
    return runtime().settings


def settings_of(app: Flask) -> Settings:
    runtime_of_app: Runtime = app.extensions[EXTENSION_KEY]
    return runtime_of_app.settings


def db_session() -> Session:
    """The request's database session; closed (and rolled back if uncommitted) at teardown."""
    if "db_session" not in g:
        g.db_session = runtime().sessions()
    session: Session = g.db_session
    return session


def _close_db_session(_exc: BaseException | None) -> None:
    session: Session | None = g.pop("db_session", None)
    if session is not None:
        session.close()
