"""The director's access orders (procedure §22), the designated person's list, the register.

An order names persons and recordings and a validity period. It is the only way anyone but
the subject teacher reaches a recording, so the rules here guard against the ways an order
could grant more than the director meant or more than the procedure allows:
- a stolen API token must not be able to grant access: issuing needs a browser session
  signed in with a one-time code;
- nobody the procedure excludes (administrators, the auditor) can be named;
- an order never outlives the retention of any recording it names;
- recordings chosen by a filter are frozen at issue, so a recording registered later is
  never silently covered;
- an issued order is never edited: revocation is a separate, audited act stamped on it,
  so the filed paper copy and the database always agree.

Whether a given request is allowed is decided by ``vault.services.access`` alone; this
module only creates, revokes and lists orders.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vault.models import AccessOrder, AccessOrderGrantee, AccessOrderRecording, Recording, User
from vault.services import access, audit, fields
from vault.services.access import TOMBSTONE_STATUSES, Action, Status
from vault.services.accounts import Role
from vault.services.actors import Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, Conflict, NotFound, PermissionDenied, ValidationFailed

NUMBER_LIMIT = 64
PURPOSE_LIMIT = 4000
REASON_LIMIT = 2000
_NUMBER_TAKEN = N_("An order with this number was already issued this year.")
# Roles that may read orders: the director issues them, the auditor checks them (SPEC §2).
READER_ROLES = frozenset({Role.DIRECTOR, Role.AUDITOR})
TOMBSTONE_VALUES = frozenset(status.value for status in TOMBSTONE_STATUSES)


class OrderState(StrEnum):
    ACTIVE = "active"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"


ORDER_STATE_LABELS = {
    OrderState.ACTIVE: N_("in force"),
    OrderState.NOT_YET_VALID: N_("not yet in force"),
    OrderState.EXPIRED: N_("expired"),
    OrderState.REVOKED: N_("revoked"),
}
STATUS_LABELS = {
    Status.REGISTERED: N_("registered"),
    Status.UPLOADING: N_("uploading"),
    Status.PROCESSING: N_("processing"),
    Status.AVAILABLE: N_("available"),
    Status.FAILED: N_("failed"),
    Status.RESTRICTED: N_("restricted (art. 18)"),
    Status.DELETED: N_("deleted"),
    Status.SHREDDED: N_("shredded at year-end"),
}


class OrderOutlastsRetention(ValidationFailed):
    """422 naming the recording whose retention the order would outlast, with the other
    fields' messages of the same request."""

    def __init__(
        self, valid_until: date, recording: Recording, others: Mapping[str, list[str]]
    ) -> None:
        field_errors = {name: list(messages) for name, messages in others.items()}
        field_errors.setdefault("valid_until", []).append(
            N_("An order may not be valid after the retain-until date of any recording it names.")
        )
        super().__init__(
            field_errors,
            N_(
                "The order would be valid until %(valid_until)s, but the recording "
                "\u201c%(title)s\u201d is kept only until %(retain_until)s. Choose a "
                "valid-until date no later than %(retain_until)s."
            ),
        )
        self.params = {
            "valid_until": valid_until.isoformat(),
            "title": recording.title,
            "retain_until": recording.retain_until.isoformat(),
        }


@dataclass(frozen=True)
class Selection:
    """All recordings of one teacher, class or period: expanded once, at issue."""

    teacher: str | None = None
    class_group: str | None = None
    from_: date | None = None
    to: date | None = None

    def as_json(self) -> dict[str, str]:
        values = {
            "teacher": self.teacher,
            "class_group": self.class_group,
            "from": self.from_.isoformat() if self.from_ else None,
            "to": self.to.isoformat() if self.to else None,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class OrderDraft:
    """The fields of an order as read from a request, before the database is consulted; a
    field that could not be read is empty (``""``, ``None`` or no items) and its message is
    in the errors ``parse_order`` filled."""

    number: str
    issued_on: date | None
    purpose: str
    grantees: tuple[str, ...]
    recording_ids: tuple[uuid.UUID, ...]
    selection: Selection | None
    valid_from: date | None
    valid_until: date | None


# -- parsing ----------------------------------------------------------------------------------


def _optional_text(
    raw: Mapping[str, Any], name: str, field: str, errors: dict[str, list[str]]
) -> str | None:
    value = raw.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value) > 100:
        errors.setdefault(field, []).append(N_("This value is not valid."))
        return None
    return value.strip()


def _string_list(raw: Any, name: str, errors: dict[str, list[str]]) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        errors.setdefault(name, []).append(N_("Give a list of values."))
        return []
    # Order kept, duplicates dropped: naming a person twice grants nothing more.
    return list(dict.fromkeys(item.strip() for item in raw if item.strip()))


def _parse_selection(raw: Any, errors: dict[str, list[str]]) -> Selection | None:
    if not isinstance(raw, Mapping):
        errors.setdefault("filter", []).append(N_("Give the filter as an object."))
        return None
    unknown = set(raw) - {"teacher", "class_group", "from", "to"}
    if unknown:
        errors.setdefault("filter", []).append(
            N_("A filter may name only teacher, class_group, from and to.")
        )
    teacher = _optional_text(raw, "teacher", "filter.teacher", errors)
    class_group = _optional_text(raw, "class_group", "filter.class_group", errors)
    from_ = fields.iso_date(raw.get("from"), "filter.from", errors, required=False)
    to = fields.iso_date(raw.get("to"), "filter.to", errors, required=False)
    if not (teacher or class_group or from_ or to):
        errors.setdefault("filter", []).append(
            N_("Choose a teacher, a class or a period for the filter.")
        )
    if from_ and to and from_ > to:
        errors.setdefault("filter.to", []).append(N_("The period ends before it starts."))
    return Selection(
        teacher=teacher.lower() if teacher else None, class_group=class_group, from_=from_, to=to
    )


def parse_order(raw: Mapping[str, Any], errors: dict[str, list[str]]) -> OrderDraft:
    """Read the fields of an order from a JSON object (or a form flattened into one), adding
    each wrong field's message to ``errors``: the director learns of every field at once."""
    number = fields.required_text(raw, "number", NUMBER_LIMIT, errors)
    purpose = fields.required_text(raw, "purpose", PURPOSE_LIMIT, errors)
    issued_on = fields.iso_date(raw.get("issued_on"), "issued_on", errors, required=True)
    valid_from = fields.iso_date(raw.get("valid_from"), "valid_from", errors, required=True)
    valid_until = fields.iso_date(raw.get("valid_until"), "valid_until", errors, required=True)
    grantees = _string_list(raw.get("grantees"), "grantees", errors)
    if not grantees and "grantees" not in errors:
        errors["grantees"] = [N_("Name at least one person.")]

    recording_ids: list[uuid.UUID] = []
    selection: Selection | None = None
    raw_ids = raw.get("recording_ids")
    raw_filter = raw.get("filter")
    if raw_ids not in (None, []) and raw_filter is not None:
        errors["recording_ids"] = [N_("Either pick recordings or give a filter, not both.")]
    elif raw_filter is not None:
        selection = _parse_selection(raw_filter, errors)
    else:
        for text in _string_list(raw_ids, "recording_ids", errors):
            try:
                recording_ids.append(uuid.UUID(text))
            except ValueError:
                errors.setdefault("recording_ids", []).append(N_("Unknown recording."))
                break
        if not recording_ids and "recording_ids" not in errors:
            errors["recording_ids"] = [N_("Name at least one recording.")]
    if valid_from and valid_until and valid_from > valid_until:
        errors.setdefault("valid_until", []).append(
            N_("The order cannot end before it comes into force.")
        )
    return OrderDraft(
        number=number,
        issued_on=issued_on,
        purpose=purpose,
        grantees=tuple(grantees),
        recording_ids=tuple(dict.fromkeys(recording_ids)),
        selection=selection,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def _names_recordings(errors: Mapping[str, list[str]]) -> bool:
    """Whether the recordings an order names were read without a fault: a filter with a
    wrong field must never be expanded (an empty one would match every recording)."""
    return not any(name == "recording_ids" or name.startswith("filter") for name in errors)


# -- issuing and revoking ---------------------------------------------------------------------


def _refuse(
    session: Session, actor: Actor, act: str, reason: str, message: str | None = None
) -> PermissionDenied:
    """Audit a refused order act (committed, as every denial is) and build the exception."""
    return audit.deny(session, actor, PermissionDenied(message), {"action": act, "reason": reason})


def selected_recordings(session: Session, selection: Selection) -> list[Recording]:
    """The live recordings a filter matches now (tombstones are never named)."""
    query: Select[Recording] = select(Recording).where(Recording.status.not_in(TOMBSTONE_VALUES))
    if selection.teacher:
        query = query.join(User, User.id == Recording.owner_id).where(
            User.username == selection.teacher
        )
    if selection.class_group:
        query = query.where(Recording.class_group == selection.class_group)
    if selection.from_:
        query = query.where(Recording.lesson_date >= selection.from_)
    if selection.to:
        query = query.where(Recording.lesson_date <= selection.to)
    return list(session.scalars(query.order_by(Recording.lesson_date, Recording.title)))


def _grantees(
    session: Session, usernames: Sequence[str], errors: dict[str, list[str]]
) -> list[User]:
    users: list[User] = []
    for username in usernames:
        user = session.scalars(
            select(User).where(User.username == username.strip().lower())
        ).one_or_none()
        if user is None:
            errors.setdefault("grantees", []).append(N_("Unknown account."))
        elif user.disabled_at is not None:
            errors.setdefault("grantees", []).append(N_("A disabled account cannot be named."))
        elif not access.designatable(user.roles):
            # SPEC §2: the administrator runs the machine and the auditor checks the
            # director; neither may ever be the one who watches, even with another role.
            errors.setdefault("grantees", []).append(
                N_(
                    "Only teacher, staff or director accounts can be named in an order, "
                    "and never an account that is also an administrator or auditor."
                )
            )
        elif all(chosen.id != user.id for chosen in users):
            users.append(user)
    return users


def _recordings(
    session: Session, draft: OrderDraft, errors: dict[str, list[str]]
) -> list[Recording]:
    if draft.selection is not None:
        if draft.selection.teacher and (
            session.scalars(select(User).where(User.username == draft.selection.teacher)).first()
            is None
        ):
            errors.setdefault("filter.teacher", []).append(N_("Unknown account."))
            return []
        chosen = [
            recording
            for recording in selected_recordings(session, draft.selection)
            if not access.year_closed(session, recording.school_year)
        ]
        if not chosen:
            errors.setdefault("filter", []).append(N_("No recordings match this filter."))
        return chosen
    chosen = []
    for recording_id in draft.recording_ids:
        recording = session.get(Recording, recording_id)
        if recording is None:
            errors.setdefault("recording_ids", []).append(N_("Unknown recording."))
        elif recording.status in TOMBSTONE_VALUES or access.year_closed(
            session, recording.school_year
        ):
            errors.setdefault("recording_ids", []).append(
                N_("A deleted recording cannot be named in an order.")
            )
        else:
            chosen.append(recording)
    return chosen


def issue(
    session: Session,
    actor: Actor,
    issuer: User,
    raw: Mapping[str, Any],
    now: datetime,
    zone: ZoneInfo,
    *,
    second_factor_session: bool,
) -> AccessOrder:
    """Issue the order ``raw`` describes (see ``parse_order``); the caller commits.

    ``second_factor_session`` is true only for a browser session signed in with a one-time
    code: an order grants access to children's images, so a leaked API token alone must
    not be able to create one.
    """
    if Role.DIRECTOR not in issuer.roles:
        raise _refuse(session, actor, "issue_order", "not_director")
    if not second_factor_session:
        raise _refuse(
            session,
            actor,
            "issue_order",
            "no_second_factor_session",
            N_(
                "Orders are issued only from a browser session signed in with a one-time "
                "code, not with an API token."
            ),
        )
    errors: dict[str, list[str]] = {}
    draft = parse_order(raw, errors)
    # Serialise the director's own issuing (a double-submitted form) so the number check
    # below cannot be raced by the same person.
    session.execute(select(User.id).where(User.id == issuer.id).with_for_update())
    today = now.astimezone(zone).date()
    if draft.issued_on and draft.issued_on > today:
        errors.setdefault("issued_on", []).append(N_("An order cannot be dated in the future."))
    if draft.valid_until and draft.valid_until < today:
        errors.setdefault("valid_until", []).append(N_("The order would already have expired."))
    if draft.number and draft.issued_on and _number_taken(session, draft.number, draft.issued_on):
        errors.setdefault("number", []).append(_NUMBER_TAKEN)
    grantees = _grantees(session, draft.grantees, errors)
    recordings = _recordings(session, draft, errors) if _names_recordings(errors) else []
    # Procedure §15: nothing may be kept, or watched, past the last school day.
    if recordings and draft.valid_until:
        earliest = min(recordings, key=lambda recording: recording.retain_until)
        if draft.valid_until > earliest.retain_until:
            raise OrderOutlastsRetention(draft.valid_until, earliest, errors)
    if errors:
        raise ValidationFailed(errors)
    assert draft.issued_on and draft.valid_from and draft.valid_until

    order = AccessOrder(
        number=draft.number,
        issued_on=draft.issued_on,
        purpose=draft.purpose,
        issued_by=issuer.id,
        valid_from=draft.valid_from,
        valid_until=draft.valid_until,
        selection_filter=draft.selection.as_json() if draft.selection else None,
        created_at=now,
    )
    session.add(order)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        if _number_taken(session, draft.number, draft.issued_on):
            # Another director issued this number since the check above.
            raise ValidationFailed({"number": [_NUMBER_TAKEN]}) from None
        raise
    session.add_all(AccessOrderGrantee(order_id=order.id, user_id=user.id) for user in grantees)
    session.add_all(
        AccessOrderRecording(order_id=order.id, recording_id=recording.id)
        for recording in recordings
    )
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.ORDER_ISSUED,
            object_id=str(order.id),
            details={
                "number": order.number,
                "grantees": [str(user.id) for user in grantees],
                "recordings": [str(recording.id) for recording in recordings],
                "valid_from": order.valid_from.isoformat(),
                "valid_until": order.valid_until.isoformat(),
                "by_filter": draft.selection is not None,
                # SPEC §2: the director may name themself, and that must stand out.
                "names_issuer": any(user.id == issuer.id for user in grantees),
            },
        ),
    )
    return order


def _number_taken(session: Session, number: str, issued_on: date) -> bool:
    taken = session.scalars(
        select(AccessOrder.id).where(
            AccessOrder.number == number,
            AccessOrder.issued_year == issued_on.year,
        )
    ).first()
    return taken is not None


def revoke(
    session: Session,
    actor: Actor,
    revoker: User,
    order_id: uuid.UUID,
    reason: str,
    now: datetime,
) -> AccessOrder:
    """Revoke an order from ``now`` on; the caller commits.

    Revocation only ever takes access away, so an API token may do it: a director who must
    stop access at once should not be held up.
    """
    if Role.DIRECTOR not in revoker.roles:
        raise _refuse(session, actor, "revoke_order", "not_director")
    order = session.get(AccessOrder, order_id, with_for_update=True)
    if order is None:
        raise NotFound()
    if order.revoked_at is not None:
        raise Conflict(N_("This order has already been revoked."))
    text = reason.strip()
    if not text:
        raise ValidationFailed({"reason": [N_("Give the reason for the revocation.")]})
    if len(text) > REASON_LIMIT:
        raise ValidationFailed({"reason": [N_("This text is too long.")]})
    order.revoked_at = now
    order.revoked_by = revoker.id
    order.revocation_reason = text
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.ORDER_REVOKED,
            object_id=str(order.id),
            details={"number": order.number},
        ),
    )
    return order


# -- reading ----------------------------------------------------------------------------------


def state_of(order: AccessOrder, today: date) -> OrderState:
    if order.revoked_at is not None:
        return OrderState.REVOKED
    if today < order.valid_from:
        return OrderState.NOT_YET_VALID
    if today > order.valid_until:
        return OrderState.EXPIRED
    return OrderState.ACTIVE


@dataclass(frozen=True)
class Person:
    id: uuid.UUID
    username: str
    full_name: str
    disabled: bool


@dataclass(frozen=True)
class NamedRecording:
    id: uuid.UUID
    title: str
    subject: str
    class_group: str
    lesson_date: date
    retain_until: date
    status: str
    teacher: Person


@dataclass(frozen=True)
class OrderDocument:
    """Everything the filed order shows, resolved to names."""

    order: AccessOrder
    state: OrderState
    issued_by: Person
    grantees: list[Person]
    recordings: list[NamedRecording]
    revoked_by: Person | None

    def as_json(self) -> dict[str, Any]:
        order = self.order
        return {
            "id": str(order.id),
            "number": order.number,
            "issued_on": order.issued_on.isoformat(),
            "purpose": order.purpose,
            "issued_by": self.issued_by.username,
            "grantees": [
                {"username": person.username, "name": person.full_name} for person in self.grantees
            ],
            "recording_ids": [str(recording.id) for recording in self.recordings],
            "recordings": [
                {
                    "id": str(recording.id),
                    "title": recording.title,
                    "class_group": recording.class_group,
                    "lesson_date": recording.lesson_date.isoformat(),
                    "teacher": recording.teacher.username,
                    "status": recording.status,
                }
                for recording in self.recordings
            ],
            "filter": order.selection_filter,
            "valid_from": order.valid_from.isoformat(),
            "valid_until": order.valid_until.isoformat(),
            "state": self.state.value,
            "created_at": order.created_at.isoformat(),
            "revoked_at": order.revoked_at.isoformat() if order.revoked_at else None,
            "revoked_by": self.revoked_by.username if self.revoked_by else None,
            "revocation_reason": order.revocation_reason,
        }


def person_of(user: User) -> Person:
    return Person(user.id, user.username, user.full_name, user.disabled_at is not None)


def require_reader(session: Session, actor: Actor, reader: User, act: str) -> None:
    if not reader.roles & READER_ROLES:
        raise _refuse(session, actor, act, "not_director_or_auditor")


def document(session: Session, order: AccessOrder, today: date) -> OrderDocument:
    people: dict[uuid.UUID, Person] = {}

    def person(user_id: uuid.UUID) -> Person:
        if user_id not in people:
            user = session.get(User, user_id)
            assert user is not None  # a foreign key
            people[user_id] = person_of(user)
        return people[user_id]

    grantee_ids = session.scalars(
        select(AccessOrderGrantee.user_id).where(AccessOrderGrantee.order_id == order.id)
    )
    recordings = session.scalars(
        select(Recording)
        .join(AccessOrderRecording, AccessOrderRecording.recording_id == Recording.id)
        .where(AccessOrderRecording.order_id == order.id)
        .order_by(Recording.lesson_date, Recording.title)
    )
    return OrderDocument(
        order=order,
        state=state_of(order, today),
        issued_by=person(order.issued_by),
        grantees=sorted((person(user_id) for user_id in grantee_ids), key=lambda p: p.full_name),
        recordings=[
            NamedRecording(
                id=recording.id,
                title=recording.title,
                subject=recording.subject,
                class_group=recording.class_group,
                lesson_date=recording.lesson_date,
                retain_until=recording.retain_until,
                status=recording.status,
                teacher=person(recording.owner_id),
            )
            for recording in recordings
        ],
        revoked_by=person(order.revoked_by) if order.revoked_by else None,
    )


def read(
    session: Session, actor: Actor, reader: User, order_id: uuid.UUID, now: datetime, zone: ZoneInfo
) -> OrderDocument:
    require_reader(session, actor, reader, "read_order")
    order = session.get(AccessOrder, order_id)
    if order is None:
        raise NotFound()
    return document(session, order, now.astimezone(zone).date())


def list_orders(
    session: Session, actor: Actor, reader: User, now: datetime, zone: ZoneInfo
) -> list[OrderDocument]:
    require_reader(session, actor, reader, "list_orders")
    today = now.astimezone(zone).date()
    orders = session.scalars(
        select(AccessOrder).order_by(AccessOrder.issued_on.desc(), AccessOrder.created_at.desc())
    )
    return [document(session, order, today) for order in orders]


def designatable_people(session: Session) -> list[User]:
    """Active accounts an order may name (for the director's form): not disabled, and with
    a password set, so the invitation has been taken up."""
    users = session.scalars(
        select(User)
        .where(User.disabled_at.is_(None), User.password_hash.is_not(None))
        .order_by(User.full_name)
    )
    return [user for user in users if access.designatable(user.roles)]


def watchable_recordings(session: Session) -> list[tuple[Recording, User]]:
    """The recordings the director's form offers, with their teachers: those a named person
    could watch now (available, of a year not closed)."""
    rows = session.execute(
        select(Recording, User)
        .join(User, User.id == Recording.owner_id)
        .where(Recording.status == Status.AVAILABLE.value)
        .order_by(Recording.lesson_date.desc(), Recording.title)
    )
    return [
        (recording, user)
        for recording, user in rows
        if not access.year_closed(session, recording.school_year)
    ]


# -- the designated person's list -------------------------------------------------------------


@dataclass(frozen=True)
class Available:
    recording: Recording
    teacher: Person
    order: AccessOrder
    can_watch: bool


def available_to(session: Session, user: User, now: datetime, zone: ZoneInfo) -> list[Available]:
    """The live recordings that valid orders name for ``user``, each with the order the
    policy itself says allows it (the latest-expiring valid one)."""
    today = now.astimezone(zone).date()
    actor = Actor.of(user)
    candidates = session.scalars(
        select(Recording)
        .join(AccessOrderRecording, AccessOrderRecording.recording_id == Recording.id)
        .join(AccessOrder, AccessOrder.id == AccessOrderRecording.order_id)
        .join(AccessOrderGrantee, AccessOrderGrantee.order_id == AccessOrder.id)
        .where(
            AccessOrderGrantee.user_id == user.id,
            AccessOrder.revoked_at.is_(None),
            AccessOrder.valid_from <= today,
            AccessOrder.valid_until >= today,
            Recording.status.not_in(TOMBSTONE_VALUES),
        )
        .distinct()
        .order_by(Recording.lesson_date.desc(), Recording.title)
    )
    result: list[Available] = []
    for recording in candidates:
        # The list shows only what the one policy grants through an order; it never
        # decides on its own.
        seen = access.decide(session, actor, Action.VIEW_METADATA, recording, now, zone)
        if not seen.allowed or seen.order is None:
            continue
        watch = access.decide(session, actor, Action.START_VIEW, recording, now, zone)
        teacher = session.get(User, recording.owner_id)
        assert teacher is not None
        result.append(
            Available(
                recording=recording,
                teacher=person_of(teacher),
                order=watch.order or seen.order,
                can_watch=watch.allowed,
            )
        )
    return result
