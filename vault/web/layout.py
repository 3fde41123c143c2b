"""What every page's layout needs: the menu by role, the language switch, the school name.

The menu is filtered by the signed-in user's roles.
Each area adds its entry here when it is built; an entry whose endpoint is not
registered is left out, so the menu never links to a page that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask, current_app, request
from flask_babel import format_datetime, get_locale, gettext
from flask_login import current_user

from vault.services.accounts import ROLE_LABELS
from vault.services.errors import N_
from vault.services.recordings import STATUS_LABELS
from vault.web import context
from vault.web.i18n import LANGUAGES


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    roles: frozenset[str] | None = None  # None: every signed-in user


@dataclass(frozen=True)
class NavLink:
    endpoint: str
    label: str


MENU: tuple[NavItem, ...] = (
    NavItem("pages.index", N_("Home")),
    NavItem("recordings.mine", N_("My recordings"), frozenset({"teacher"})),
    NavItem("recordings.requests_page", N_("Requests"), frozenset({"director", "teacher"})),
    NavItem("orders.available", N_("Available to me"), frozenset({"teacher", "staff", "director"})),
    NavItem("orders.index", N_("Orders"), frozenset({"director", "auditor"})),
    NavItem("orders.register", N_("Register"), frozenset({"director", "auditor"})),
    NavItem("admin.users", N_("Accounts"), frozenset({"admin"})),
    NavItem("admin.school_calendar", N_("Calendar"), frozenset({"admin"})),
    NavItem("audit_console.search", N_("Audit log"), frozenset({"auditor"})),
    NavItem("reports.processing", N_("Reports"), frozenset({"director", "auditor"})),
    NavItem("recordings.certificate_list", N_("Certificates"), frozenset({"auditor"})),
    NavItem("account.overview", N_("My account")),
)


def menu_for_current_user() -> list[NavLink]:
    if not current_user.is_authenticated:
        return []
    roles = frozenset(current_user.roles)
    return [
        NavLink(item.endpoint, gettext(item.label))
        for item in MENU
        if item.endpoint in current_app.view_functions
        and (item.roles is None or item.roles & roles)
    ]


def layout_context() -> dict[str, Any]:
    query = request.query_string.decode("latin-1")
    return {
        "navigation": menu_for_current_user(),
        "languages": LANGUAGES,
        "current_locale": str(get_locale() or "lv"),
        "current_path": request.path + (f"?{query}" if query else ""),
        "school_name": context.settings().school_name,
        "school_address": context.settings().school_address,
        "role_labels": ROLE_LABELS,
        "status_labels": STATUS_LABELS,
    }


def moment(value: datetime | str | None) -> str:
    """A time (or a document's ISO 8601 string) in the school's zone and the reader's
    language, as every page shows times."""
    if not value:
        return ""
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return str(format_datetime(when))


def init_app(app: Flask) -> None:
    app.context_processor(layout_context)
    app.add_template_filter(moment)
