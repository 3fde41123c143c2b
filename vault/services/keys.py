"""Key operations as audited use cases: the master key at init, and master-key rotation."""

from __future__ import annotations

from vault.services import audit
from vault.services.audit import AuditAction
from vault.services.runtime import Runtime


def initialise_master_key(runtime: Runtime) -> str | None:
    """Create or register the master key on first use; refuse keys that do not match."""
    with runtime.sessions() as session, session.begin():
        outcome = runtime.keyring.initialise(session)
        if outcome is not None:
            audit.record(
                session,
                audit.Event(
                    AuditAction.KEYS_MASTER_INITIALISED,
                    details={"provider": runtime.keyring.provider_name},
                ),
            )
        return outcome
