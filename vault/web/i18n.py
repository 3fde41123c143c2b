"""Latvian by default, English on request; the choice persists in a cookie."""

from __future__ import annotations

from flask import Flask, request
from flask_babel import Babel

from vault.web import context

DEFAULT_LOCALE = "lv"
# Each language is named in itself, so the switch is readable whatever the current language.
LANGUAGES: dict[str, str] = {"lv": "Latviešu", "en": "English"}
LANGUAGE_COOKIE = "vault_lang"
LANGUAGE_COOKIE_MAX_AGE = 365 * 24 * 3600


def select_locale() -> str:
    requested = request.args.get("lang") or request.cookies.get(LANGUAGE_COOKIE)
    return requested if requested in LANGUAGES else DEFAULT_LOCALE


def init_app(app: Flask) -> None:
    app.config["BABEL_DEFAULT_LOCALE"] = DEFAULT_LOCALE
    # Every time a page shows is the school's local time (VAULT_TIMEZONE); JSON keeps
    # ISO 8601 with the offset.
    app.config["BABEL_DEFAULT_TIMEZONE"] = context.settings_of(app).timezone
    # Catalogues live in vault/translations, relative to the app's root path.
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = "translations"
    Babel(app, locale_selector=select_locale)
