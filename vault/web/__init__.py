"""The web layer: the only package that imports Flask. ``init_app`` wires it into an app."""

from __future__ import annotations

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from vault.services.runtime import Runtime
from vault.web import (
    account,
    admin,
    api,
    audit,
    audit_console,
    audit_export,
    auth,
    errors,
    i18n,
    layout,
    orders,
    pages,
    recordings,
    reports,
    security,
    uploads,
    watch,
)
from vault.web.context import install


def init_app(app: Flask, runtime: Runtime) -> None:
    install(app, runtime)
    i18n.init_app(app)
    layout.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    CSRFProtect(app)
    auth.init_app(app)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(account.blueprint)
    app.register_blueprint(admin.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(audit_export.api)
    audit.init_app(app)
    audit_console.init_app(app)
    app.register_blueprint(uploads.blueprint)
    app.register_blueprint(recordings.pages)
    app.register_blueprint(recordings.api)
    orders.init_app(app)
    watch.init_app(app)
    reports.init_app(app)
