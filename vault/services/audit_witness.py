"""Witnesses of the audit log outside the server: every signed checkpoint is e-mailed to the
data-protection officer (``VAULT_DPO_CONTACT``, when ``VAULT_SMTP_URL`` is set) and written
to a store of its own (``VAULT_AUDIT_WITNESS_URL``, a bucket with S3 Object Lock in
production), as soon as the transaction that signed it commits.

A checkpoint held only by the server proves little against whoever controls the server: they
could rewrite the log and sign a new series. A copy they cannot reach, in the officer's
mailbox or in a bucket whose lock not even its owner can lift, is what ``recvault audit
verify --witness`` checks the log against later, and a database rolled back or rewritten
past it is caught.

The act that led to a checkpoint is already committed and answered for when the witnesses
are written, so a witness that fails is logged and recorded as an ``audit:checkpoint_witnessed``
event with the outcome ``failure``; the next checkpoint covers everything again.
"""

from __future__ import annotations

import logging
from email.utils import parseaddr
from enum import StrEnum

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from storage_backends.base import LifecycleRules, StorageError
from vault.services import audit, audit_chain, audit_checkpoints
from vault.services.audit import AuditAction, Outcome
from vault.services.audit_checkpoints import SignedCheckpoint
from vault.services.errors import ServiceError, StorageUnavailable
from vault.services.mail import MailNotSent, configured_mailer
from vault.services.runtime import Runtime
from vault.settings import Settings

_log = logging.getLogger(__name__)

# Checkpoints sit under this prefix of the witness store, one object each, never replaced.
WITNESS_PREFIX = "audit-checkpoints/"


class Channel(StrEnum):
    MAIL = "mail"
    STORE = "store"


def witness_key(checkpoint: SignedCheckpoint) -> str:
    """One key per checkpoint: a bucket under Object Lock keeps every version anyway, and a
    key naming the root never collides with another series's checkpoint of the same size."""
    return f"{WITNESS_PREFIX}{checkpoint.tree_size:012d}-{checkpoint.root_hash[:16]}.json"


def prepare(runtime: Runtime) -> None:
    """`recvault init`: a local witness directory is created; a bucket must exist already,
    made with Object Lock by the operator (docs/operations.md), since a lock can only be
    turned on when a bucket is created."""
    store, url = runtime.witness_store, runtime.settings.audit_witness_url or ""
    if store is None:
        return
    try:
        if url.startswith("file:"):
            # Only the lock keeps these objects; no rule may expire them.
            store.ensure_ready(
                LifecycleRules(abort_incomplete_after_days=None, noncurrent_version_days=None)
            )
        else:
            store.check()
    except StorageError as exc:
        raise StorageUnavailable(f"the audit witness store: {exc}") from exc


def dpo_address(settings: Settings) -> str | None:
    """The officer's e-mail address in ``VAULT_DPO_CONTACT`` ("Name <address>" or an address
    alone), if it holds one."""
    address = parseaddr(settings.dpo_contact)[1]
    return address if "@" in address else None


def _message(settings: Settings, checkpoint: SignedCheckpoint) -> tuple[str, str]:
    school = settings.school_name or "Recording Vault"
    document = audit_chain.canonical(checkpoint.as_json())
    subject = (
        f"{school}: audita kontrolpunkts / audit checkpoint, {checkpoint.tree_size} "
        f"(notikumi / events)"
    )
    body = "\n".join(
        [
            f"{school}: Recording Vault parakstīja audita žurnāla kontrolpunktu, kas aptver "
            f"pirmos {checkpoint.tree_size} notikumus.",
            "Saglabājiet šo vēstuli. Kopija ārpus servera ļauj vēlāk atklāt, ja žurnāls ir "
            "pārrakstīts vai atjaunots no vecākas kopijas: saglabājiet zemāk esošo JSON failā "
            "un pārbaudiet ar `recvault audit verify --witness FAILS`.",
            "",
            f"{school}: Recording Vault signed a checkpoint of the audit log covering its "
            f"first {checkpoint.tree_size} events.",
            "Keep this message. A copy outside the server is what later shows a log rewritten "
            "or rolled back: save the JSON below to a file and check with "
            "`recvault audit verify --witness FILE`.",
            "",
            f"Atslēgas nospiedums / key fingerprint: {checkpoint.key_fingerprint}",
            "",
            document,
            "",
        ]
    )
    return subject, body


def _record(runtime: Runtime, checkpoint: SignedCheckpoint, channel: Channel, error: str) -> None:
    with runtime.sessions() as session, session.begin():
        audit.record(
            session,
            audit.Event(
                AuditAction.AUDIT_CHECKPOINT_WITNESSED,
                outcome=Outcome.FAILURE if error else Outcome.SUCCESS,
                object_id=str(checkpoint.tree_size),
                details={
                    "tree_size": checkpoint.tree_size,
                    "root_hash": checkpoint.root_hash,
                    "channel": channel.value,
                    **({"error": error} if error else {}),
                },
            ),
        )


def send(runtime: Runtime, checkpoints: list[SignedCheckpoint]) -> None:
    """Write each checkpoint to every witness configured, and record each attempt."""
    settings = runtime.settings
    address = dpo_address(settings)
    mailer = configured_mailer(settings) if address else None
    store = runtime.witness_store
    for checkpoint in checkpoints:
        if mailer is not None and address is not None:
            error = ""
            try:
                mailer.send(address, *_message(settings, checkpoint))
            except MailNotSent:
                error = "the e-mail could not be sent"
                _log.error("audit checkpoint %s not e-mailed", checkpoint.tree_size)
            _record(runtime, checkpoint, Channel.MAIL, error)
        if store is not None:
            error = ""
            try:
                document = audit_chain.canonical(checkpoint.as_json()).encode()
                store.put(witness_key(checkpoint), document, {})
            except StorageError as exc:
                error = f"the witness store refused it: {exc}"[:200]
                _log.error("audit checkpoint %s not stored: %s", checkpoint.tree_size, exc)
            _record(runtime, checkpoint, Channel.STORE, error)


def attach(runtime: Runtime) -> None:
    """After each commit of ``runtime``'s sessions: link the events the transaction wrote
    (on PostgreSQL, through the runtime's ``audit_chain.Linker``), sign the checkpoint due
    when the chain reached a multiple of ``audit_chain.CHECKPOINT_INTERVAL``, and send every
    checkpoint the transaction signed to the witnesses.

    All come after the act's own commit: the act is answered for, and what cannot be done
    now (the database gone, keys unavailable, a damaged chain, a mail server down) is
    logged and left to the lifecycle run, which links what is left, signs over the same
    events within the hour, or reports the damage.
    """

    # Both events fire for savepoints too, while the transaction holding the events goes on.
    def committed(session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return
        signed: list[SignedCheckpoint] = session.info.pop(audit_checkpoints.SIGNED_IN_SESSION, [])
        due = session.info.pop(audit_chain.CHECKPOINT_DUE, False)
        try:
            if session.info.pop(audit_chain.LINK_DUE, False):
                due = runtime.audit_linker.link_committed().reached_checkpoint or due
        except (SQLAlchemyError, audit_chain.LinkingFailed):
            _log.exception("audit events committed but not linked; the lifecycle run links them")
        try:
            if signed:
                send(runtime, signed)
            if due:
                audit_checkpoints.checkpoint_now(runtime, runtime.clock())
        except ServiceError:
            _log.exception("an audit checkpoint due after a commit was not signed or witnessed")

    def rolled_back(session: Session) -> None:
        if session.get_nested_transaction() is None:
            session.info.pop(audit_chain.CHECKPOINT_DUE, None)
            session.info.pop(audit_chain.LINK_DUE, None)
            session.info.pop(audit_checkpoints.SIGNED_IN_SESSION, None)

    sqlalchemy_event.listen(runtime.sessions, "after_commit", committed)
    sqlalchemy_event.listen(runtime.sessions, "after_rollback", rolled_back)
