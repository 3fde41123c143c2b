"""Who performs an act: the one type every use case receives.

The web layer builds an ``Actor`` for each request from the session cookie or the API token;
the console builds ``OPERATOR``. The policy reads the roles, the streaming rules read the
channel and the sign-in session it came through, and the audit log records the account and
the request's personal details (kept apart from the event so they can be erased).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from vault.models import User
from vault.services.audit import RequestContext


class Channel(StrEnum):
    """How the actor reached the vault; audited as the event's ``via``."""

    BROWSER = "browser"
    API_TOKEN = "token"  # noqa: S105 - the name of a channel, not a secret
    CONSOLE = "cli"


@dataclass(frozen=True)
class Actor:
    """An account acting through the browser or an API token, or the operator at the console.

    ``login_session_id`` is the sign-in session a browser request came through; streaming binds
    a view to it, so a leaked API token (which has none) cannot open what an order names.
    """

    user_id: uuid.UUID | None
    roles: frozenset[str] = frozenset()
    via: Channel = Channel.BROWSER
    login_session_id: str | None = None
    context: RequestContext | None = None

    @classmethod
    def of(
        cls,
        user: User,
        *,
        via: Channel = Channel.BROWSER,
        login_session_id: str | None = None,
        context: RequestContext | None = None,
    ) -> Actor:
        return cls(user.id, user.roles, via, login_session_id, context)

    @classmethod
    def anonymous(cls, context: RequestContext | None) -> Actor:
        """Someone not signed in (a stream URL opened without a session): refused, and
        audited with the request's details."""
        return cls(None, context=context)

    @property
    def signed_in(self) -> bool:
        return self.user_id is not None

    @property
    def account_id(self) -> uuid.UUID:
        """The acting account; only use cases the console never runs ask for it."""
        if self.user_id is None:
            raise TypeError("the operator acts without an account")
        return self.user_id

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    def acting_role(self, needed: str | None) -> str | None:
        """The role an event records: ``needed`` when the account holds it, else every role
        it holds ("director+teacher"); "operator" at the console; None for someone not
        signed in."""
        if self.user_id is None:
            return "operator" if self.via is Channel.CONSOLE else None
        if needed is not None and needed in self.roles:
            return needed
        return "+".join(sorted(self.roles)) or None


OPERATOR = Actor(user_id=None, via=Channel.CONSOLE)
