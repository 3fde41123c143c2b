"""The web layer: the only package that imports Flask. ``init_app`` wires it into an app."""

from __future__ import annotations

from flask import Flask
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

from vault.services.runtime import Runtime
from vault.web import api, errors, i18n, layout, pages, security
from vault.web.context import install


def init_app(app: Flask, runtime: Runtime) -> None:
    install(app, runtime)
    i18n.init_app(app)
    layout.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    login_manager = LoginManager()
    login_manager.user_loader(lambda _session_id: None)
    login_manager.init_app(app)
    CSRFProtect(app)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(api.blueprint)
