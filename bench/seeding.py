"""Steps that give an instance its data through the services, as the app's own pages would.

The benchmarks run without the test tree, so the tests take the steps they share with the
benchmarks from here.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from vault.models import Recording
from vault.services import accounts, orders
from vault.services.actors import Actor
from vault.services.runtime import Runtime


def issue_order(
    runtime: Runtime,
    director: str,
    grantees: list[str],
    recording_ids: list[uuid.UUID],
    number: str,
    purpose: str,
    days: int,
) -> uuid.UUID:
    """An order issued through the orders service by ``director``, signed in with a second
    factor: valid from today for ``days`` days, but never past the retention of the
    recordings it names (the service refuses that)."""
    now = runtime.clock()
    zone = runtime.settings.zone
    today = now.astimezone(zone).date()
    with runtime.sessions() as session, session.begin():
        issuer = accounts.find_user(session, director)
        assert issuer is not None
        retained = session.scalars(
            select(Recording.retain_until).where(Recording.id.in_(recording_ids))
        )
        order = orders.issue(
            session,
            Actor(user_id=issuer.id),
            issuer,
            {
                "number": number,
                "issued_on": today.isoformat(),
                "purpose": purpose,
                "grantees": grantees,
                "recording_ids": [str(r) for r in recording_ids],
                "valid_from": today.isoformat(),
                "valid_until": min([today + timedelta(days=days), *retained]).isoformat(),
            },
            now,
            zone,
            second_factor_session=True,
        )
        return order.id
