"""Reading the fields of a submitted form or JSON object, collecting per-field messages.

Each reader returns the value, or a neutral one after adding the field's message to
``errors``, so a use case reports every wrong field at once (422 with per-field errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from vault.services.errors import N_

Errors = dict[str, list[str]]


def required_text(raw: Mapping[str, Any], name: str, limit: int, errors: Errors) -> str:
    value = raw.get(name)
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        errors.setdefault(name, []).append(N_("This field is required."))
    elif len(text) > limit:
        errors.setdefault(name, []).append(N_("This text is too long."))
    return text


def iso_date(raw: Any, name: str, errors: Errors, *, required: bool = True) -> date | None:
    """A date written YYYY-MM-DD (SPEC: dates are ISO dates in the school's time zone)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if required:
            errors.setdefault(name, []).append(N_("This field is required."))
        return None
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            pass
    errors.setdefault(name, []).append(N_("Enter a date as YYYY-MM-DD."))
    return None
