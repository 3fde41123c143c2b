"""Signed checkpoints of the audit chain, and their verification.

A checkpoint states, under the audit signing key, the Merkle root (RFC 6962, ``vault.merkle``)
over the entry hashes of the first ``tree_size`` events, the hash of the last of them, and
the time. The hash chain alone cannot stop whoever controls the database from rewriting
events and recomputing every link after them; a checkpoint kept outside the server can: the
rewritten log no longer has its root, and a log rolled back to before it lacks its events.

A checkpoint is signed at every multiple of ``audit_chain.CHECKPOINT_INTERVAL`` events, as
soon as the transaction reaching it commits (``audit_witness``, which also sends each signed
checkpoint to the witnesses outside the server); the lifecycle run makes one when there was
activity since the last one, and ``recvault audit checkpoint`` makes one on demand. Each
checkpoint extends its predecessor's stored frontier with the events since, after checking
their links, so it costs what those events cost; making one is itself an audit event,
recorded after the root is computed, so the next checkpoint covers it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vault import merkle, signing
from vault.keyring import Keyring, KeyringError
from vault.models import AuditChainHead, AuditCheckpoint, AuditEvent
from vault.services import audit, audit_chain, certificates
from vault.services.audit import AuditAction
from vault.services.audit_chain import Damage
from vault.services.errors import N_, Conflict, KeysUnavailable, NotFound, ValidationFailed
from vault.services.runtime import Runtime

FORMAT = "recording-vault/audit-checkpoint/v1"
# The session's list of the checkpoints its transaction signed: once it commits, they are
# sent to the witnesses (``audit_witness``).
SIGNED_IN_SESSION = "recvault.audit_checkpoints_signed"
# Housekeeping: events about checkpoints themselves and the lifecycle run's record of its
# steps. A checkpoint is not signed for them alone (an idle school would otherwise get one,
# and the officer an e-mail, every hour); the next one covers them.
_HOUSEKEEPING_ACTIONS = (
    AuditAction.AUDIT_CHECKPOINT_CREATED.value,
    AuditAction.AUDIT_CHECKPOINT_WITNESSED.value,
    AuditAction.LIFECYCLE_STEP.value,
)
# Entry hashes read per round trip when a pass walks the log.
BATCH = 5000
_BODY_FIELDS = ("tree_size", "root_hash", "head_hash", "created_at")


class ChainDamaged(Conflict):
    """The events since the last checkpoint do not verify: nothing is signed over them."""

    message = N_("The audit log is damaged at event %(seq)s; run recvault audit verify.")


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as an officer keeps it: the signed body is what counts."""

    tree_size: int
    root_hash: str
    head_hash: str
    created_at: str
    signed_body: str
    signature: str
    key_fingerprint: str

    def as_json(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "head_hash": self.head_hash,
            "created_at": self.created_at,
            "signed_body": self.signed_body,
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
        }


def body_of(tree_size: int, root_hash: str, head_hash: str, created_at: str) -> str:
    return signing.canonical_json(
        {
            "format": FORMAT,
            "tree_size": tree_size,
            "root_hash": root_hash,
            "head_hash": head_hash,
            "created_at": created_at,
        }
    )


def stored(checkpoint: AuditCheckpoint) -> SignedCheckpoint:
    return SignedCheckpoint(
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.root_hash,
        head_hash=checkpoint.head_hash,
        created_at=audit_chain.utc_text(checkpoint.created_at),
        signed_body=checkpoint.body,
        signature=checkpoint.signature,
        key_fingerprint=checkpoint.key_fingerprint,
    )


def parsed(item: Any) -> SignedCheckpoint:
    """A checkpoint from a kept copy, its fields read from the signed body alone (a readable
    copy beside it proves nothing). Raises ValueError if it is not one."""
    if not isinstance(item, dict):
        raise ValueError("not an object")
    body, signature = item.get("signed_body"), item.get("signature")
    if not isinstance(body, str) or not isinstance(signature, str):
        raise ValueError("no signed body or signature")
    content = json.loads(body)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError("not an audit checkpoint")
    size, values = content.get("tree_size"), [content.get(name) for name in _BODY_FIELDS[1:]]
    if not isinstance(size, int) or size < 1 or not all(isinstance(v, str) for v in values):
        raise ValueError("incomplete checkpoint")
    root_hash, head_hash, created_at = (str(value) for value in values)
    fingerprint = item.get("key_fingerprint")
    return SignedCheckpoint(
        size,
        root_hash,
        head_hash,
        created_at,
        body,
        signature,
        fingerprint if isinstance(fingerprint, str) else "",
    )


def witnessed(document: Any) -> list[SignedCheckpoint]:
    """The checkpoints of a kept file: the API's answer, a list of checkpoints, or one."""
    items: Any = document
    if isinstance(document, dict):
        items = document.get("checkpoints", [document])
    try:
        if not isinstance(items, list) or not items:
            raise ValueError("no checkpoints")
        return [parsed(item) for item in items]
    except (ValueError, TypeError):
        raise ValidationFailed(
            {"witness": [N_("This is not a file of audit checkpoints.")]}
        ) from None


# -- making checkpoints -------------------------------------------------------------------------


@contextmanager
def _keyring_errors() -> Iterator[None]:
    try:
        yield
    except KeyringError as exc:
        raise KeysUnavailable(str(exc)) from exc


def latest(session: Session) -> AuditCheckpoint | None:
    return session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)
    ).first()


def _activity_since(session: Session, tree_size: int) -> bool:
    """Whether any event after ``tree_size`` is more than housekeeping."""
    found = session.scalars(
        select(AuditEvent.seq)
        .where(
            AuditEvent.seq > tree_size,
            AuditEvent.action.not_in(_HOUSEKEEPING_ACTIONS),
        )
        .limit(1)
    ).first()
    return found is not None


def _frontier_of(checkpoint: AuditCheckpoint) -> merkle.Frontier:
    try:
        frontier = merkle.Frontier(
            checkpoint.tree_size, [bytes.fromhex(h) for h in checkpoint.frontier]
        )
    except (ValueError, TypeError):
        raise ChainDamaged(seq=checkpoint.tree_size) from None
    if frontier.root().hex() != checkpoint.root_hash:
        raise ChainDamaged(seq=checkpoint.tree_size)
    return frontier


def frontier_at(session: Session, tree_size: int) -> merkle.Frontier:
    """The stored frontier of the checkpoint covering exactly ``tree_size`` events, checked
    against its signed root."""
    row = session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.tree_size == tree_size)
    ).first()
    if row is None:
        raise ChainDamaged(seq=tree_size)
    return _frontier_of(row)


def make_checkpoint(session: Session, keyring: Keyring, now: datetime) -> AuditCheckpoint | None:
    """Sign a checkpoint over every event so far, in the caller's transaction, and one at
    each multiple of ``audit_chain.CHECKPOINT_INTERVAL`` passed since the last checkpoint;
    the one over every event is returned, None when nothing but the last checkpoint's own
    record happened since it.

    The events since the last checkpoint are checked link by link from its head first:
    a checkpoint must never vouch for a chain that does not verify. Raises ChainDamaged
    otherwise.
    """
    previous = latest(session)
    if previous is not None and not _activity_since(session, previous.tree_size):
        return None
    # The head row commits with the events it counts, so every event up to it is readable.
    head_seq, head_hash = session.execute(
        select(AuditChainHead.seq, AuditChainHead.entry_hash).where(
            AuditChainHead.id == audit_chain.HEAD_ROW_ID
        )
    ).one()
    if head_seq == 0:
        return None
    frontier = _frontier_of(previous) if previous is not None else merkle.Frontier()
    link = previous.head_hash if previous is not None else audit_chain.GENESIS_HASH
    states: list[tuple[int, str, str, list[str]]] = []
    chain = audit_chain.stored_chain(session, after=frontier.size, through=head_seq)
    for entry in chain.entries:
        expected = frontier.size + 1
        if entry.seq != expected or audit_chain.links_to(session, entry, link) is (
            audit_chain.Linked.NOT
        ):
            raise ChainDamaged(seq=expected)
        frontier.append(bytes.fromhex(entry.entry_hash))
        link = entry.entry_hash
        if entry.seq % audit_chain.CHECKPOINT_INTERVAL == 0 or entry.seq == head_seq:
            subtrees = [subtree.hex() for subtree in frontier.subtrees]
            states.append((entry.seq, frontier.root().hex(), link, subtrees))
    if frontier.size != head_seq or link != head_hash:
        raise ChainDamaged(seq=frontier.size + 1)
    made = [_signed(session, keyring, now, state) for state in states]
    return made[-1] if made and made[-1] is not None else None


def _signed(
    session: Session, keyring: Keyring, now: datetime, state: tuple[int, str, str, list[str]]
) -> AuditCheckpoint | None:
    """Sign and store the checkpoint of one state of the log, and record it; None when
    another run stored the same one a moment ago."""
    tree_size, root_hash, head_hash, subtrees = state
    body = body_of(tree_size, root_hash, head_hash, audit_chain.utc_text(now))
    with _keyring_errors():
        signature, fingerprint = certificates._sign(session, keyring, body)
    checkpoint = AuditCheckpoint(
        tree_size=tree_size,
        root_hash=root_hash,
        head_hash=head_hash,
        created_at=now,
        body=body,
        signature=signature,
        key_fingerprint=fingerprint,
        frontier=subtrees,
    )
    try:
        with session.begin_nested():
            session.add(checkpoint)
    except IntegrityError:
        return None
    session.info.setdefault(SIGNED_IN_SESSION, []).append(stored(checkpoint))
    audit.record(
        session,
        audit.Event(
            AuditAction.AUDIT_CHECKPOINT_CREATED,
            object_id=str(tree_size),
            details={
                "tree_size": tree_size,
                "root_hash": root_hash,
                "key_fingerprint": fingerprint,
            },
        ),
    )
    return checkpoint


def checkpoint_now(runtime: Runtime, now: datetime) -> SignedCheckpoint | None:
    """The console task: make a checkpoint if there was activity, and commit it.

    Events committed but left unlinked (a process ended between an act's commit and the
    linking after it) are linked first, so the checkpoint covers them.
    """
    runtime.audit_linker.link_committed()
    with runtime.sessions() as session, session.begin():
        made = make_checkpoint(session, runtime.keyring, now)
        return stored(made) if made is not None else None


# -- reading them ------------------------------------------------------------------------------

MAX_LISTED = 1000


def listed(session: Session, limit: int, before: int | None = None) -> list[SignedCheckpoint]:
    """Newest first: up to ``limit`` checkpoints, those covering fewer than ``before`` events
    if given (the next page)."""
    query = select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc())
    if before is not None:
        query = query.where(AuditCheckpoint.tree_size < before)
    return [stored(row) for row in session.scalars(query.limit(max(1, min(limit, MAX_LISTED))))]


def public_identity(session: Session, keyring: Keyring) -> certificates.SigningIdentity:
    """The audit signing key's public half; it is never created here."""
    with _keyring_errors():
        private = keyring.unseal(session, certificates.SIGNING_KEY_NAME)
    if private is None:
        raise KeysUnavailable(N_("The signing key is missing; run recvault init."))
    return certificates.SigningIdentity(signing.public_key_of(private))


def _range_root(session: Session, start: int, end: int) -> bytes:
    """MTH of the entry hashes of events start+1 .. end, streamed."""
    frontier = merkle.Frontier()
    hashes = session.scalars(
        select(audit_chain.LINKED_HASH)
        .where(AuditEvent.seq > start, AuditEvent.seq <= end)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=BATCH)
    )
    for entry_hash in hashes:
        frontier.append(bytes.fromhex(entry_hash))
    if frontier.size != end - start:
        raise ChainDamaged(seq=start + frontier.size + 1)
    return frontier.root()


def consistency(session: Session, older: AuditCheckpoint, newer: AuditCheckpoint) -> list[str]:
    """The RFC 6962 consistency proof from ``older`` to ``newer``, as hex.

    The older tree's part of the proof is its stored frontier; the rest is hashed from the
    events between the two, each streamed once.
    """
    known = dict(_frontier_of(older).blocks())
    return [
        (known[span] if span in known else _range_root(session, *span)).hex()
        for span in merkle.consistency_ranges(older.tree_size, newer.tree_size)
    ]


def consistency_to_latest(session: Session, from_size: int) -> dict[str, Any]:
    """The proof that the latest checkpoint extends the one of ``from_size`` events."""
    newest = latest(session)
    older = session.scalars(
        select(AuditCheckpoint).where(AuditCheckpoint.tree_size == from_size)
    ).first()
    if newest is None or older is None:
        raise NotFound()
    return {
        "from_tree_size": older.tree_size,
        "to_tree_size": newest.tree_size,
        "proof": consistency(session, older, newest),
    }


# -- verifying them ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One checkpoint the log does not bear out; ``at_seq`` is the first event that may be
    wrong (the first missing one, or the first after the last checkpoint that still holds)."""

    damage: Damage
    at_seq: int
    tree_size: int
    witnessed: bool
    detail: str


@dataclass(frozen=True)
class CheckpointReport:
    stored: int
    witnessed: int
    fingerprint: str | None
    latest: SignedCheckpoint | None
    findings: tuple[Finding, ...] = field(default=())

    @property
    def intact(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class _Claim:
    checkpoint: SignedCheckpoint
    witnessed: bool
    # What is already known to be wrong with it before the log is read.
    finding: Finding | None = None


def _stored_claim(row: AuditCheckpoint, public_key: bytes) -> _Claim:
    claim = stored(row)
    try:
        content = json.loads(row.body)
    except ValueError:
        content = None
    expected = json.loads(
        body_of(row.tree_size, row.root_hash, row.head_hash, audit_chain.utc_text(row.created_at))
    )
    if content != expected:
        return _Claim(
            claim,
            False,
            Finding(
                Damage.INCONSISTENT_CHECKPOINT,
                row.tree_size,
                row.tree_size,
                False,
                "the stored fields differ from the signed body",
            ),
        )
    return _signature_claim(claim, False, public_key)


def signature_holds(checkpoint: SignedCheckpoint, public_key: bytes) -> bool:
    """Whether ``public_key`` signed the checkpoint's body."""
    try:
        signature = bytes.fromhex(checkpoint.signature)
    except ValueError:
        return False
    return signing.verify(public_key, checkpoint.signed_body.encode(), signature)


def _signature_claim(claim: SignedCheckpoint, witness: bool, public_key: bytes) -> _Claim:
    if signature_holds(claim, public_key):
        return _Claim(claim, witness)
    detail = "the signature does not verify under the audit signing key"
    if claim.key_fingerprint and claim.key_fingerprint != signing.fingerprint(public_key):
        detail += f" (it names the key {claim.key_fingerprint})"
    finding = Finding(Damage.BAD_SIGNATURE, claim.tree_size, claim.tree_size, witness, detail)
    return _Claim(claim, witness, finding)


def verify(
    session: Session, keyring: Keyring, witnesses: Sequence[SignedCheckpoint] = ()
) -> CheckpointReport:
    """Check the stored checkpoints and the ones an officer kept against the live log.

    Each must be signed by the audit signing key and name the root and head of the log's
    first ``tree_size`` events. Every root is recomputed from the one log in a single
    streamed pass, so when they all hold the successive checkpoints are consistent with
    each other (what an RFC 6962 consistency proof shows, with its hashes recomputed rather
    than received). A kept checkpoint the log no longer bears out means the database was
    rolled back or rewritten; a stored one, that it was changed after it was signed.
    """
    rows = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size)))
    if not rows and not witnesses:
        return CheckpointReport(0, 0, None, None)
    public_key = public_identity(session, keyring).public_key
    claims = [_stored_claim(row, public_key) for row in rows]
    claims += [_signature_claim(kept, True, public_key) for kept in witnesses]
    findings = [claim.finding for claim in claims if claim.finding is not None]
    findings += _against_the_log(session, [claim for claim in claims if claim.finding is None])
    return CheckpointReport(
        stored=len(rows),
        witnessed=len(witnesses),
        fingerprint=signing.fingerprint(public_key),
        latest=stored(rows[-1]) if rows else None,
        findings=tuple(sorted(findings, key=lambda found: (found.at_seq, found.tree_size))),
    )


def _against_the_log(session: Session, claims: list[_Claim]) -> list[Finding]:
    """Walk the log's entry hashes once, comparing each claim at its size.

    After a retention purge the walk begins at the checkpoint the purge stopped at, from its
    stored frontier; a checkpoint covering fewer events than were purged can no longer be
    compared (its signature was checked).
    """
    start = audit_chain.start_of(session)
    purged = start.purged if start is not None else 0
    claims = sorted(
        (claim for claim in claims if claim.checkpoint.tree_size >= purged),
        key=lambda claim: claim.checkpoint.tree_size,
    )
    if not claims:
        return []
    findings: list[Finding] = []
    frontier, last_hash, vouched = merkle.Frontier(), audit_chain.GENESIS_HASH, 0
    if start is not None and purged:
        frontier, last_hash, vouched = frontier_at(session, purged), start.previous_hash, purged
    pending = iter(claims)
    claim: _Claim | None = next(pending)

    def compare() -> _Claim | None:
        nonlocal claim, vouched
        while claim is not None and claim.checkpoint.tree_size == frontier.size:
            kept = claim.checkpoint
            if kept.root_hash == frontier.root().hex() and kept.head_hash == last_hash:
                vouched = kept.tree_size
            else:
                findings.append(_differs(kept, claim.witnessed, vouched))
            claim = next(pending, None)
        return claim

    compare()
    rows = session.execute(
        select(audit_chain.LINKED_SEQ, audit_chain.LINKED_HASH)
        .where(AuditEvent.seq > purged, AuditEvent.seq <= claims[-1].checkpoint.tree_size)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=BATCH)
    )
    for seq, entry_hash in rows:
        if claim is None:
            break
        if seq != frontier.size + 1:
            break  # a gap: the chain's own check names it; nothing after it is comparable
        frontier.append(bytes.fromhex(entry_hash))
        last_hash = entry_hash
        compare()
    while claim is not None:
        findings.append(_missing(claim.checkpoint, claim.witnessed, frontier.size))
        claim = next(pending, None)
    return findings


def _differs(kept: SignedCheckpoint, witness: bool, vouched: int) -> Finding:
    where = f"after event {vouched}" if vouched else "from the first event"
    detail = f"the first {kept.tree_size} events no longer have this root; the log differs {where}"
    damage = Damage.ROLLED_BACK if witness else Damage.INCONSISTENT_CHECKPOINT
    return Finding(damage, vouched + 1, kept.tree_size, witness, detail)


def _missing(kept: SignedCheckpoint, witness: bool, held: int) -> Finding:
    detail = f"it covers {kept.tree_size} events; the log holds only the first {held} of them"
    damage = Damage.ROLLED_BACK if witness else Damage.INCONSISTENT_CHECKPOINT
    return Finding(damage, held + 1, kept.tree_size, witness, detail)
