"""The service layer's own exceptions.

Each carries an English message id, marked with ``N_`` so the catalogue extractor finds
it; the web layer translates it when it renders the answer. The web layer maps each
class to an HTTP status in one place (``vault.web.errors``).
"""

from __future__ import annotations

from collections.abc import Mapping


def N_(message: str) -> str:  # noqa: N802 - the conventional name of the gettext no-op marker
    """Mark a message for translation without translating it here."""
    return message


class ServiceError(Exception):
    """Base class: a refusal or failure the user can be told about."""

    message = N_("The request could not be completed.")
    #: Set on refusals that pass with time: the answer says when to try again.
    retry_after_seconds: int | None = None

    def __init__(self, message: str | None = None, **params: str | int) -> None:
        if message is not None:
            self.message = message
        self.params: dict[str, str | int] = dict(params)
        super().__init__(self.message % self.params if self.params else self.message)


class NotFound(ServiceError):
    message = N_("Not found.")


class PermissionDenied(ServiceError):
    message = N_("You do not have permission to do this.")


class Conflict(ServiceError):
    message = N_("This conflicts with the current state. Reload and try again.")


class Gone(ServiceError):
    message = N_("This item has been deleted.")


class PayloadTooLarge(ServiceError):
    message = N_("The file is too large.")


class UnsupportedMediaType(ServiceError):
    message = N_("This file type is not accepted.")


class RangeNotSatisfiable(ServiceError):
    message = N_("The requested range is outside the recording.")


class StorageUnavailable(ServiceError):
    message = N_("The recording storage is unavailable. Please try again in a few minutes.")


class IntegrityFailure(ServiceError):
    """Stored ciphertext failed verification: tampering, truncation or a swapped object."""

    message = N_("The recording failed its integrity check and cannot be played.")


class KeysUnavailable(ServiceError):
    """The encryption keys are missing or do not match the database (an operator's problem)."""

    message = N_("The encryption keys are not available. Please contact the administrator.")


class UploadBusy(ServiceError):
    """A request that is still sending this upload holds it (HTTP 423, which tus clients
    retry): a second tab or client uploading the same file at the same time."""

    message = N_("This upload is still receiving another request. Try again in a moment.")
    retry_after_seconds = 2


class TooManyRequests(ServiceError):
    message = N_("Too many refused requests came from this address. Wait a minute and try again.")
    retry_after_seconds = 60


class ValidationFailed(ServiceError):
    """Input that breaks a rule; ``field_errors`` maps each field to its message ids."""

    message = N_("Some fields need correcting.")

    def __init__(self, field_errors: Mapping[str, list[str]], message: str | None = None) -> None:
        super().__init__(message)
        self.field_errors: dict[str, list[str]] = {k: list(v) for k, v in field_errors.items()}
