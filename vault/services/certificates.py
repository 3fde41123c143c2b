"""Signed deletion certificates, and the audit signing key that signs them.

The signing key is a sealed secret (wrapped by the master key), created by `recvault init`;
its public key's fingerprint is what the school publishes so that anyone can verify a
certificate or an audit export offline.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault import signing
from vault.keyring import Keyring
from vault.models import Certificate, Recording
from vault.services.errors import N_, KeysUnavailable, ValidationFailed

SIGNING_KEY_NAME = "audit-signing-key"
CERTIFICATE_FORMAT = "recording-vault/deletion-certificate/v1"


@dataclass(frozen=True)
class SigningIdentity:
    public_key: bytes

    @property
    def fingerprint(self) -> str:
        return signing.fingerprint(self.public_key)

    @property
    def pem(self) -> str:
        return signing.public_key_pem(self.public_key)


def ensure_signing_key(session: Session, keyring: Keyring) -> tuple[SigningIdentity, bool]:
    """The audit signing key's public half; creates the key on first use (True if created)."""
    private = keyring.unseal(session, SIGNING_KEY_NAME)
    created = private is None
    if private is None:
        private = signing.new_private_key()
        keyring.seal(session, SIGNING_KEY_NAME, private)
    return SigningIdentity(signing.public_key_of(private)), created


def _sign(session: Session, keyring: Keyring, body: str) -> tuple[str, str]:
    private = keyring.unseal(session, SIGNING_KEY_NAME)
    if private is None:
        raise KeysUnavailable(N_("The signing key is missing; run recvault init."))
    signature = signing.sign(private, body.encode())
    return signature.hex(), signing.fingerprint(signing.public_key_of(private))


def issue(
    session: Session,
    keyring: Keyring,
    *,
    kind: str,
    school_year: str,
    statement: dict[str, Any],
    now: datetime,
    recording: Recording | None = None,
) -> Certificate:
    """Sign ``statement`` as a certificate of ``kind``; one about a single recording is
    filed under it and its owner, so the owner finds it among their own."""
    certificate_id = uuid.uuid4()
    body = signing.canonical_json(
        {
            "format": CERTIFICATE_FORMAT,
            "id": str(certificate_id),
            "kind": kind,
            "issued_at": now.isoformat(),
            "school_year": school_year,
            **statement,
        }
    )
    signature, fingerprint = _sign(session, keyring, body)
    certificate = Certificate(
        id=certificate_id,
        kind=kind,
        recording_id=recording.id if recording else None,
        owner_id=recording.owner_id if recording else None,
        school_year=school_year,
        issued_at=now,
        body=body,
        signature=signature,
        key_fingerprint=fingerprint,
    )
    session.add(certificate)
    session.flush()
    return certificate


def exported(certificate: Certificate, identity: SigningIdentity) -> dict[str, Any]:
    """The self-contained JSON document a person keeps or an auditor verifies offline."""
    return {
        "certificate": json.loads(certificate.body),
        "signed_body": certificate.body,
        "signature": certificate.signature,
        "key_fingerprint": certificate.key_fingerprint,
        "public_key": base64.b64encode(identity.public_key).decode(),
    }


@dataclass(frozen=True)
class Verification:
    valid: bool
    fingerprint: str
    reason: str


def verify_document(document: dict[str, Any], trusted_fingerprint: str | None) -> Verification:
    """Check an exported certificate: the signature, and (if given) the published fingerprint."""
    try:
        public_key = base64.b64decode(document["public_key"], validate=True)
        body = str(document["signed_body"])
        signature = bytes.fromhex(str(document["signature"]))
    except (KeyError, ValueError, TypeError):
        raise ValidationFailed({"file": [N_("This is not a deletion certificate.")]}) from None
    fingerprint = signing.fingerprint(public_key)
    if trusted_fingerprint is not None and fingerprint != trusted_fingerprint:
        return Verification(False, fingerprint, "signed by a different key")
    if not signing.verify(public_key, body.encode(), signature):
        return Verification(False, fingerprint, "signature does not match the content")
    if json.loads(body) != document.get("certificate"):
        return Verification(False, fingerprint, "the readable copy differs from the signed body")
    return Verification(True, fingerprint, "valid")


def for_owner_or_all(session: Session, owner_id: uuid.UUID | None) -> list[Certificate]:
    """Every certificate, or an owner's: those of their own recordings, and the year
    certificates that name any of them."""
    query = select(Certificate).order_by(Certificate.issued_at.desc())
    if owner_id is not None:
        own_years = select(Recording.certificate_id).where(
            (Recording.owner_id == owner_id) | (Recording.responsible_id == owner_id)
        )
        query = query.where((Certificate.owner_id == owner_id) | Certificate.id.in_(own_years))
    return list(session.scalars(query))


def recordings_of_reader(
    session: Session, certificate_id: uuid.UUID, user_id: uuid.UUID
) -> frozenset[str]:
    """The ids of the recordings a year's certificate names that ``user_id`` owns or is
    responsible for: a teacher reads that part of it."""
    return frozenset(
        str(recording_id)
        for recording_id in session.scalars(
            select(Recording.id).where(
                Recording.certificate_id == certificate_id,
                (Recording.owner_id == user_id) | (Recording.responsible_id == user_id),
            )
        )
    )


def iso(day: date | datetime | None) -> str | None:
    return day.isoformat() if day is not None else None
