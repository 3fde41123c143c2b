"""Key operations as audited use cases: the master key at init, year shredding, rotation.

A shred runs as three committed steps (destroy the year key; rotate the master key;
destroy the retired master versions). Each step checks the state the previous one left,
so running the shred again after a crash at any point finishes the job.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from storage_backends.base import LifecycleRules, StorageError
from vault import crypto
from vault.keyring import ENV_ROTATION_INSTRUCTION, KeyringError, OperatorActionRequired
from vault.services import audit, calendar, certificates
from vault.services.audit import AuditAction, Outcome
from vault.services.errors import KeysUnavailable, StorageUnavailable
from vault.services.runtime import Runtime


@contextmanager
def keyring_errors() -> Iterator[None]:
    """Keyring failures leave this layer as the service's own exception, message intact."""
    try:
        yield
    except OperatorActionRequired:
        raise
    except KeyringError as exc:
        raise KeysUnavailable(str(exc)) from exc


def initialise_master_key(runtime: Runtime) -> str | None:
    """Create or register the master key on first use; refuse keys that do not match."""
    with keyring_errors(), runtime.sessions() as session, session.begin():
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


def generate_master_key_material() -> str:
    """A fresh master key as base64, for an operator who keeps it in VAULT_MASTER_KEY."""
    return base64.b64encode(crypto.new_key()).decode()


@dataclass(frozen=True)
class RotationOutcome:
    new_version: int | None
    destroyed_versions: tuple[int, ...]
    pending_operator_action: str | None


@dataclass(frozen=True)
class ShredOutcome:
    school_year: str
    year_key_destroyed_now: bool
    rotation: RotationOutcome

    @property
    def complete(self) -> bool:
        return self.rotation.pending_operator_action is None


def shred_year_key(runtime: Runtime, school_year: str, now: datetime) -> ShredOutcome:
    with keyring_errors(), runtime.sessions() as session, session.begin():
        destroyed = runtime.keyring.destroy_year_key(session, school_year, now)
        if destroyed:
            audit.record(
                session,
                audit.Event(AuditAction.KEYS_YEAR_KEY_DESTROYED, object_id=school_year),
            )
    return ShredOutcome(
        school_year=school_year,
        year_key_destroyed_now=destroyed,
        rotation=finish_master_rotation(runtime, now, force=False),
    )


def finish_master_rotation(runtime: Runtime, now: datetime, *, force: bool) -> RotationOutcome:
    """Rotate the master key if a shred made it due (or ``force``), then destroy old versions."""
    keyring = runtime.keyring
    new_version = None
    pending = None
    with keyring_errors(), runtime.sessions() as session, session.begin():
        if force or keyring.rotation_due(session):
            try:
                rotation = keyring.rotate_master(session, now)
            except OperatorActionRequired:
                pending = ENV_ROTATION_INSTRUCTION
                audit.record(
                    session,
                    audit.Event(
                        AuditAction.KEYS_MASTER_ROTATED,
                        outcome=Outcome.FAILURE,
                        details={"pending_operator_action": True},
                    ),
                )
            else:
                new_version = rotation.new_version
                audit.record(
                    session,
                    audit.Event(
                        AuditAction.KEYS_MASTER_ROTATED,
                        details={
                            "new_version": rotation.new_version,
                            "retired_versions": list(rotation.retired_versions),
                        },
                    ),
                )
    with keyring_errors(), runtime.sessions() as session, session.begin():
        before = keyring.retired_undestroyed_versions(session)
        still_pending = keyring.destroy_retired_masters(session, now)
        destroyed = tuple(v for v in before if v not in still_pending)
        if destroyed:
            audit.record(
                session,
                audit.Event(
                    AuditAction.KEYS_MASTER_DESTROYED, details={"versions": list(destroyed)}
                ),
            )
        if still_pending or keyring.rotation_due(session):
            pending = ENV_ROTATION_INSTRUCTION
    return RotationOutcome(new_version, destroyed, pending)


def initialise_signing_key(runtime: Runtime) -> tuple[str, bool]:
    """The audit signing key (created on first use); returns its public fingerprint."""
    with keyring_errors(), runtime.sessions() as session, session.begin():
        identity, created = certificates.ensure_signing_key(session, runtime.keyring)
        if created:
            audit.record(
                session,
                audit.Event(
                    AuditAction.KEYS_SIGNING_KEY_CREATED,
                    details={"fingerprint": identity.fingerprint},
                ),
            )
        return identity.fingerprint, created


def apply_storage_rules(runtime: Runtime) -> LifecycleRules:
    """Bring the store's expiry rules in line with the calendar (`recvault init` and every
    lifecycle run): a backstop that deletes bytes if every run failed, but proves nothing
    (only the year-end's certificate does)."""
    with runtime.sessions() as session:
        rules = calendar.lifecycle_rules(session)
    try:
        runtime.store.ensure_ready(rules)
    except StorageError as exc:
        raise StorageUnavailable() from exc
    return rules
