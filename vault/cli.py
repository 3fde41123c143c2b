"""`recvault`: the operator's command line. It calls services, as the web layer does."""

from __future__ import annotations

import json
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TextIO

import click
from flask import Flask
from gunicorn.app.base import BaseApplication

from vault import allocator, signing
from vault.app import build_runtime, create_app, initialise_instance
from vault.services import (
    account_admin,
    accounts,
    audit_chain,
    audit_checkpoints,
    audit_erasure,
    audit_export,
    certificates,
    reminders,
)
from vault.services import calendar as school_calendar
from vault.services import demo as sample_media
from vault.services import fsck as storage_check
from vault.services import keys as key_service
from vault.services import lifecycle as daily
from vault.services import year_end as school_year_end
from vault.services.accounts import Role
from vault.services.errors import ServiceError, ValidationFailed
from vault.services.passwords import Passwords
from vault.services.runtime import Clock, Runtime, system_clock
from vault.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(help="Recording Vault: restricted-access storage for recordings of online lessons.")
def main() -> None:
    """Entry point of the console script."""


@main.command(help="Create or update the instance: folders, secrets, database schema, storage.")
def init() -> None:
    try:
        report = initialise_instance(_settings())
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    for line in report.lines():
        click.echo(line)


@main.group(help="Master key operations (see keys/README.md).")
def keys() -> None:
    """Group of key commands."""


@keys.command("generate", help="Print a new random master key (base64) for VAULT_MASTER_KEY.")
def keys_generate() -> None:
    click.echo(key_service.generate_master_key_material())


@keys.command("rotate", help="Finish a pending master-key rotation, or rotate now with --force.")
@click.option("--force", is_flag=True, help="Rotate even though no shred requires it.")
def keys_rotate(force: bool) -> None:
    with _service_runtime() as runtime:
        outcome = key_service.finish_master_rotation(runtime, runtime.clock(), force=force)
    if outcome.new_version is not None:
        click.echo(f"master key rotated to version {outcome.new_version}")
    if outcome.destroyed_versions:
        versions = ", ".join(map(str, outcome.destroyed_versions))
        click.echo(f"destroyed master key versions: {versions}")
    if outcome.pending_operator_action:
        click.echo(outcome.pending_operator_action, err=True)
        sys.exit(3)
    if outcome.new_version is None and not outcome.destroyed_versions:
        click.echo("nothing to do")


@dataclass(frozen=True)
class Collaborators:
    """What a program embedding the CLI may hand in as click's context object.

    The commands build everything else from the settings; a caller may replace the clock (to
    run a command as of another instant) and the password hashing cost (the tests do both).
    """

    clock: Clock = system_clock
    passwords: Passwords | None = None


def _runtime() -> Runtime:
    collaborators = click.get_current_context().find_object(Collaborators) or Collaborators()
    return build_runtime(_settings(), collaborators.clock, collaborators.passwords)


def _fail(exc: ServiceError) -> NoReturn:
    if isinstance(exc, ValidationFailed):
        details = "; ".join(
            f"{field}: {' '.join(msgs)}" for field, msgs in exc.field_errors.items()
        )
        raise click.ClickException(details) from None
    raise click.ClickException(str(exc)) from None


@contextmanager
def _service_runtime() -> Iterator[Runtime]:
    """The runtime a command calls its services with.

    A service's refusal ends the command with its message; the upload threads are stopped
    and the engine's connections closed either way.
    """
    runtime = _runtime()
    try:
        yield runtime
    except ServiceError as exc:
        _fail(exc)
    finally:
        runtime.close()


def _generated_password() -> str:
    # Four groups of five characters: easy to type once, ~100 bits of entropy.
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(5)) for _ in range(4))


@main.group(help="Accounts: add, list, disable, reset a lost second factor.")
def user() -> None:
    """Group of account commands."""


@user.command(
    "add", help="Create an account (TOTP is enrolled and printed where the role needs it)."
)
@click.argument("username")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice([role.value for role in Role]),
)
@click.option("--name", "full_name", required=True)
@click.option("--email", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def user_add(
    username: str, roles: tuple[str, ...], full_name: str, email: str | None, password_stdin: bool
) -> None:
    password = sys.stdin.readline().rstrip("\n") if password_stdin else _generated_password()
    with _service_runtime() as runtime:
        created = account_admin.add_account(
            runtime,
            username=username,
            full_name=full_name,
            email=email,
            roles=roles,
            password=password,
            now=runtime.clock(),
        )
    click.echo(f"created {created.username} ({', '.join(created.roles)})")
    if not password_stdin:
        click.echo(f"password: {password}")
    if created.totp_secret:
        click.echo(f"totp secret: {created.totp_secret}")
        click.echo("recovery codes: " + " ".join(created.recovery_codes))


@user.command("list", help="List accounts.")
def user_list() -> None:
    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            for account in accounts.list_users(session):
                status = "disabled" if account.disabled_at else "active"
                roles = ",".join(sorted(account.roles))
                click.echo(f"{account.username}\t{roles}\t{status}\t{account.full_name}")
    finally:
        runtime.close()


@user.command("disable", help="Disable an account and end its sessions and tokens.")
@click.argument("username")
def user_disable(username: str) -> None:
    with _service_runtime() as runtime:
        account_admin.disable_account(runtime, username, runtime.clock())
    click.echo(f"disabled {username}")


@user.command(
    "reset-second-factor",
    help=(
        "Replace a lost authenticator of USERNAME: prints a new TOTP secret and recovery codes "
        "to hand over in person. The password stays; sessions and tokens end; audited, and "
        "the holder is told by e-mail where e-mail is configured."
    ),
)
@click.argument("username")
def user_reset_second_factor(username: str) -> None:
    with _service_runtime() as runtime:
        replaced = account_admin.reset_second_factor(runtime, username, runtime.clock())
    click.echo(f"totp secret: {replaced.totp_secret}")
    click.echo("recovery codes: " + " ".join(replaced.recovery_codes))
    if replaced.announced_to:
        click.echo(f"the holder was told by e-mail ({replaced.announced_to})")
    else:
        click.echo("no e-mail reached the holder: tell them in person", err=True)


@main.group(help="Personal API tokens (the operator's tool on the server).")
def token() -> None:
    """Group of token commands."""


@token.command("create", help="Print only a new token for USERNAME on standard output.")
@click.argument("username")
@click.option("--ttl", default="30d", show_default=True, help="Lifetime, e.g. 30d or 12h.")
@click.option("--name", default="operator", show_default=True)
def token_create(username: str, ttl: str, name: str) -> None:
    with _service_runtime() as runtime:
        issued = account_admin.issue_token(runtime, username, name, ttl, runtime.clock())
    click.echo(issued)


@token.command("list", help="List USERNAME's tokens (never the tokens themselves).")
@click.argument("username")
def token_list(username: str) -> None:
    with _service_runtime() as runtime:
        rows = account_admin.tokens_of(runtime, username)
    now = runtime.clock()
    for row in rows:
        state = "revoked" if row.revoked_at else ("expired" if row.expires_at <= now else "active")
        used = row.last_used_at.isoformat() if row.last_used_at else "never"
        click.echo(
            f"{row.id}\t{row.name}\t{state}\texpires {row.expires_at.isoformat()}\tlast used {used}"
        )


@token.command("revoke", help="Revoke a token by its id.")
@click.argument("token_id", type=click.UUID)
def token_revoke(token_id: uuid.UUID) -> None:
    with _service_runtime() as runtime:
        account_admin.revoke_token(runtime, token_id, runtime.clock())
    click.echo(f"revoked {token_id}")


@main.command(
    help="Seed one account per role and a sample recording for a first look; "
    "refuses a database with accounts."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of text.")
def demo(as_json: bool) -> None:
    sample: sample_media.SampleRecording | None = None
    with _service_runtime() as runtime:
        seeded = account_admin.seed_demo(runtime, _generated_password, runtime.clock())
        teacher = next(a.username for a in seeded if Role.TEACHER in a.roles)
        try:
            sample = sample_media.seed_sample_recording(runtime, teacher, runtime.clock())
        except ServiceError as exc:
            # The accounts stand; only the sample is missing, and the message says why.
            click.echo(f"no sample recording: {exc}", err=True)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "username": a.username,
                        "password": a.password,
                        "roles": list(a.roles),
                        "totp_secret": a.totp_secret,
                    }
                    for a in seeded
                ],
                indent=2,
            )
        )
        return
    click.echo("Demo accounts (shown once; keep them for this instance):")
    for account in seeded:
        line = (
            f"  {account.username:<10} password {account.password}  roles {','.join(account.roles)}"
        )
        if account.totp_secret:
            line += f"  totp secret {account.totp_secret}"
        click.echo(line)
    if sample is not None:
        click.echo(
            f"Sample recording of {sample.owner}: {sample.title!r} ({sample.status}, "
            f"{sample.size_bytes} bytes). To watch it as another person, sign in as the "
            "director and issue an order naming that person and the recording."
        )


@main.group(help="The school-year calendar: the last school day decides retention and the shred.")
def calendar() -> None:
    """Group of calendar commands."""


@calendar.command(
    "set",
    help="Set a school year's last school day (audited; re-tags objects). The year is "
    "shredded that day at VAULT_SHRED_HOUR: a change that brings the shred within 30 days "
    "prints what it destroys and needs --yes; a day before tomorrow is refused.",
)
@click.argument("school_year")
@click.option("--last-day", required=True, type=click.DateTime(formats=["%Y-%m-%d"]))
@click.option("--yes", is_flag=True, help="Confirm a change that brings the shred within 30 days.")
def calendar_set(school_year: str, last_day: datetime, yes: bool) -> None:
    change = school_calendar.LastDayChange(school_year, last_day.date(), confirmed=yes)
    with _service_runtime() as runtime:
        try:
            done = school_calendar.set_last_day_as_operator(runtime, change)
        except school_calendar.ConfirmationRequired as exc:
            click.echo(school_calendar.describe(exc.consequence))
            click.echo("Nothing was changed; run again with --yes to confirm.", err=True)
            sys.exit(2)
        reminders.send_reminders(runtime, runtime.clock(), school_year)
    day = last_day.date().isoformat()
    click.echo(f"{school_year}: last school day {day}; {done.retagged} objects re-tagged")
    if done.consequence is not None:
        click.echo(school_calendar.describe(done.consequence))


@calendar.command("show", help="Show the known school years and their last school days.")
def calendar_show() -> None:
    runtime = _runtime()
    try:
        with runtime.sessions() as session:
            entries = school_calendar.known_years(session)
    finally:
        runtime.close()
    for entry in entries:
        origin = "set" if entry.configured else "default"
        click.echo(f"{entry.school_year}\t{entry.last_day.isoformat()}\t{origin}")


@main.group(help="The scheduled lifecycle job.")
def lifecycle() -> None:
    """Group of lifecycle commands."""


@lifecycle.command(
    "run",
    help="The hourly job: shreds each school year whose shred time has passed (its last "
    "school day at VAULT_SHRED_HOUR), keeps the store's expiry rules current, cleans "
    "abandoned uploads, ends lapsed views, purges tombstones past VAULT_TOMBSTONE_DAYS, "
    "e-mails reminders of deletions in the next 30 days, signs an audit checkpoint, purges "
    "audit events past VAULT_AUDIT_RETENTION_DAYS.",
)
@click.option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
def lifecycle_run(dry_run: bool) -> None:
    with _service_runtime() as runtime:
        report = daily.run(runtime, runtime.clock(), dry_run=dry_run)
    if report.busy:
        click.echo("another lifecycle run or year-end is in progress; this one did nothing")
        return
    for plan in report.years_due:
        _report_plan(plan)
    for outcome in report.year_ends:
        _report_year_end(outcome)
    verb = "would clean" if dry_run else "cleaned"
    for item in report.stale_uploads:
        idle_since = item.last_activity.isoformat()
        click.echo(f"{verb} {item.kind.value}: {item.object_key} (idle since {idle_since})")
    click.echo(f"{verb} {len(report.stale_uploads)} stale uploads")
    if not dry_run:
        click.echo(f"ended {report.ended_views} lapsed views")
    if report.reminders_sent:
        click.echo(f"e-mailed {report.reminders_sent} reminders of coming deletions")
    if report.tombstones_purged:
        click.echo(f"purged {report.tombstones_purged} tombstones past VAULT_TOMBSTONE_DAYS")
    if report.checkpoint_tree_size is not None:
        click.echo(f"signed an audit checkpoint of {report.checkpoint_tree_size} events")
    if report.audit_purge is not None:
        purge = report.audit_purge
        click.echo(
            f"purged {purge.removed} audit events past their retention, through event "
            f"{purge.through_seq} (checkpoint root {purge.checkpoint_root})"
        )
    for failure in report.failures:
        click.echo(f"step {failure.step.value} failed: {failure.error}", err=True)
    if report.failures:
        sys.exit(1)


@main.command(
    "year-end",
    help="Shred SCHOOL_YEAR (e.g. 2025-2026): freeze it, write the manifest, destroy its key "
    "and rotate the master key, delete its objects, keep tombstones, sign the deletion "
    "certificate. Resumes an interrupted run. Refused before the year's shred time unless "
    "--early.",
)
@click.argument("school_year")
@click.option("--dry-run", is_flag=True, help="Print what would happen; change nothing.")
@click.option("--early", is_flag=True, help="Close the year before its last school day.")
def year_end_command(school_year: str, dry_run: bool, early: bool) -> None:
    with _service_runtime() as runtime:
        now = runtime.clock()
        if dry_run:
            _report_plan(school_year_end.plan(runtime, school_year, now), early=early)
            return
        outcome = school_year_end.run(runtime, school_year, now, early=early)
    _report_year_end(outcome)
    if outcome.keys_pending:
        click.echo(outcome.keys_pending, err=True)
        sys.exit(3)


def _report_plan(plan: school_year_end.Plan, *, early: bool = False) -> None:
    when = plan.shred_at.strftime("%Y-%m-%d %H:%M %Z")
    if not plan.steps_left:
        click.echo(f"{plan.school_year}: the year-end is complete; nothing to do")
        return
    if not plan.due and not early:
        click.echo(
            f"{plan.school_year}: not due before {when}; `year-end --early` would close it now"
        )
    click.echo(
        f"{plan.school_year}: would destroy {plan.recordings} recordings of {plan.teachers} "
        f"teachers ({plan.objects} stored objects) and the year key "
        f"(shred time {when}); {plan.deleted_early} deleted early before"
    )
    click.echo(f"steps left: {', '.join(step.value for step in plan.steps_left)}")


def _report_year_end(outcome: school_year_end.YearEndOutcome) -> None:
    ran = ", ".join(step.value for step in outcome.steps_run) or "none"
    click.echo(f"{outcome.school_year}: steps run: {ran}")
    if outcome.certificate_id is not None:
        click.echo(f"deletion certificate {outcome.certificate_id}")
    if outcome.objects_pending:
        click.echo(
            f"{outcome.objects_pending} objects the store refused to delete: remove them by "
            "hand (the certificate lists them)",
            err=True,
        )


@main.command(help="Check that the database and the storage agree; --repair fixes what it finds.")
@click.option("--repair", is_flag=True, help="Remove orphans, re-tag, mark missing objects failed.")
def fsck(repair: bool) -> None:
    with _service_runtime() as runtime:
        findings = storage_check.check(runtime, runtime.clock(), repair=repair)
    for finding in findings:
        state = " (repaired)" if finding.repaired else ""
        click.echo(f"{finding.kind.value}\t{finding.object_key}\t{finding.detail}{state}")
    if not findings:
        click.echo("database and storage agree")
    elif not repair:
        click.echo(f"{len(findings)} problems; run `recvault fsck --repair` to fix them", err=True)
        sys.exit(1)


@main.group(help="The audit log: check that its hash chain is intact.")
def audit() -> None:
    """Group of audit-log commands."""


@audit.command(
    "erase-details",
    help="Erase the addresses, browsers and request texts recorded for USERNAME's acts "
    "(GDPR art. 17); the events and their chain stay.",
)
@click.argument("username")
def audit_erase_details(username: str) -> None:
    with _service_runtime() as runtime:
        erased = audit_erasure.erase_details_at_console(runtime, username)
    click.echo(
        f"erased the request details of {erased.events} events and the addresses of "
        f"{erased.sign_in_attempts} sign-in attempts"
    )


@audit.command("verify", help="Walk the live hash chain; exit 1 at the first damaged event.")
@click.option(
    "--export",
    "export_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Check a JSON Lines export offline instead, against its manifest and checkpoint.",
)
@click.option(
    "--public-key",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help=(
        "With --export: the audit public key (PEM, or the saved answer of "
        "GET /api/v1/audit/public-key) whose fingerprint was published; checks the signatures."
    ),
)
@click.option(
    "--witness",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help=(
        "Checkpoints kept outside the server (JSON, as GET /api/v1/audit/checkpoints gives): "
        "the live log, or the export, must still hold each of them."
    ),
)
def audit_verify(
    export_file: Path | None, public_key: TextIO | None, witness: TextIO | None
) -> None:
    kept = _witnessed_checkpoints(witness) if witness is not None else []
    if export_file is not None:
        _report_export(export_file, public_key, kept)
        return
    if public_key is not None:
        raise click.UsageError("--public-key checks an export: give --export FILE too")
    with _service_runtime() as runtime, runtime.sessions() as session:
        verdict = audit_chain.verify(session)
        report = audit_checkpoints.verify(session, runtime.keyring, kept)
    if verdict.intact:
        click.echo(f"audit chain intact: {verdict.count} events, head {verdict.head_hash}")
    else:
        click.echo(
            f"audit chain damaged at event {verdict.at_seq}: {verdict.damage}; "
            f"the {verdict.count} events before it verify (their head {verdict.head_hash})",
            err=True,
        )
    if verdict.unlinked:
        # Normal for an instant after an act; lasting, it means linking failed after commits.
        click.echo(
            f"{verdict.unlinked} events committed but not linked into the chain yet "
            "(`recvault lifecycle run` links them)"
        )
    _report_checkpoints(report)
    if not (verdict.intact and report.intact):
        sys.exit(1)


def _witnessed_checkpoints(file: TextIO) -> list[audit_checkpoints.SignedCheckpoint]:
    try:
        return audit_checkpoints.witnessed(json.load(file))
    except json.JSONDecodeError:
        raise click.ClickException("the witness file is not JSON") from None
    except ServiceError as exc:
        _fail(exc)


def _report_checkpoints(report: audit_checkpoints.CheckpointReport) -> None:
    for found in report.findings:
        origin = "kept" if found.witnessed else "stored"
        click.echo(
            f"audit checkpoint damage at event {found.at_seq}: {found.damage}; the {origin} "
            f"checkpoint of {found.tree_size} events: {found.detail}",
            err=True,
        )
    if report.fingerprint is None:
        click.echo("no audit checkpoints yet")
        return
    verdict = "all verify" if report.intact else f"{len(report.findings)} findings"
    click.echo(
        f"audit checkpoints: {report.stored} stored, {report.witnessed} kept; {verdict}; "
        f"signing key {report.fingerprint}"
    )
    if report.latest is not None:
        click.echo(
            f"latest checkpoint: {report.latest.tree_size} events, root {report.latest.root_hash}"
        )


@audit.command(
    "checkpoint",
    help="Sign a checkpoint of the audit chain now (the lifecycle run makes one every hour).",
)
def audit_checkpoint() -> None:
    with _service_runtime() as runtime:
        made = audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    if made is None:
        click.echo("no audit events since the last checkpoint; none made")
        return
    click.echo(f"audit checkpoint: {made.tree_size} events")
    click.echo(f"root: {made.root_hash}")
    click.echo(f"key fingerprint: {made.key_fingerprint}")


def _report_export(
    path: Path, public_key_file: TextIO | None, kept: list[audit_checkpoints.SignedCheckpoint]
) -> None:
    try:
        public_key = (
            audit_export.public_key_from_file(public_key_file.read())
            if public_key_file is not None
            else None
        )
        verdict = audit_export.verify_export(path, public_key, kept)
    except ServiceError as exc:
        _fail(exc)
    if public_key is not None:
        click.echo(f"audit public key {signing.fingerprint(public_key)}")
    if not verdict.intact:
        where = f"event {verdict.at_seq}" if verdict.at_seq is not None else "an unknown event"
        detail = f" ({verdict.detail})" if verdict.detail else ""
        click.echo(
            f"audit export damaged at {where}: {verdict.damage}{detail}; the {verdict.count} "
            f"events before it verify, of the {verdict.expected} the manifest counts",
            err=True,
        )
        sys.exit(1)
    if verdict.contiguous:
        click.echo(
            f"audit export intact: {verdict.count} consecutive events, every link recomputed; "
            f"the last is the head the manifest names, {verdict.head_hash}"
        )
    else:
        click.echo(
            f"audit export intact: {verdict.count} filtered events, as the manifest counts; "
            "each hashes to itself, matches the filter, comes in order, links to its "
            "neighbour where that is exported too, and is proved by its audit path to be "
            "in the log under the checkpoint's root"
        )
    _report_export_checkpoint(verdict, kept)


def _report_export_checkpoint(
    verdict: audit_export.ExportVerdict, kept: list[audit_checkpoints.SignedCheckpoint]
) -> None:
    checkpoint = verdict.checkpoint
    if checkpoint is None:
        click.echo("the export names no signed checkpoint: nothing in it is proved")
        return
    signature = (
        "its signature verifies under the public key given"
        if verdict.signed
        else "its signature was NOT checked: give --public-key"
    )
    click.echo(
        f"checkpoint: {checkpoint.tree_size} events, root {checkpoint.root_hash}, signed "
        f"{checkpoint.created_at}; {signature}"
    )
    if kept:
        click.echo(
            f"kept checkpoints: {len(kept)} given, {verdict.compared} compared with the "
            "export, none contradicted"
        )


@audit.command(
    "export",
    help="Export audit events as JSON Lines (to verify) or CSV (for spreadsheets), with a "
    "manifest in FILE.manifest.json; audited. Personal request details are never exported.",
)
@click.option(
    "--since",
    default=None,
    help="From this day (YYYY-MM-DD, school time zone) or instant (2026-11-18T08:30:00Z).",
)
@click.option(
    "--until",
    default=None,
    help="Through this day (YYYY-MM-DD, included) or up to this instant (excluded).",
)
@click.option("--actor", default=None, help="The acting account: username or account id.")
@click.option("--recording", default=None, help="A recording id.")
@click.option("--action", default=None, help="An audited action, e.g. view:started.")
@click.option("--outcome", type=click.Choice(["success", "denied", "failure"]), default=None)
@click.option("--format", "export_format", type=click.Choice(["jsonl", "csv"]), default="jsonl")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="FILE"
)
def audit_export_command(output: Path, export_format: str, **criteria: str | None) -> None:
    manifest_file = output.with_name(output.name + ".manifest.json")
    try:
        with _service_runtime() as runtime, output.open("wb") as target:
            manifest = audit_export.export_as_operator(
                runtime, {**criteria, "format": export_format}, target
            )
    except BaseException:
        # A refused or broken-off export must not be left behind looking like one.
        output.unlink(missing_ok=True)
        raise
    manifest_file.write_text(json.dumps(manifest.as_json(), indent=2) + "\n", encoding="utf-8")
    click.echo(
        f"exported {manifest.count} events to {output} (seq {manifest.first_seq} to "
        f"{manifest.last_seq}; head {manifest.head_seq}); manifest in {manifest_file}; "
        f"recorded as event {manifest.export_seq}"
    )


@main.group(help="Deletion certificates.")
def certificate() -> None:
    """Group of certificate commands."""


@certificate.command("verify", help="Verify a deletion certificate file (JSON) offline.")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option(
    "--fingerprint",
    default=None,
    help="The published key fingerprint; default: this instance's signing key.",
)
def certificate_verify(file: TextIO, fingerprint: str | None) -> None:
    try:
        document = json.load(file)
    except json.JSONDecodeError:
        raise click.ClickException("the file is not JSON") from None
    if fingerprint is None:
        runtime = _runtime()
        try:
            fingerprint, _ = key_service.initialise_signing_key(runtime)
        finally:
            runtime.close()
    try:
        result = certificates.verify_document(document, fingerprint)
    except ServiceError as exc:
        _fail(exc)
    if not result.valid:
        raise click.ClickException(f"INVALID: {result.reason} (key {result.fingerprint})")
    click.echo(f"valid: signed by the key with fingerprint {result.fingerprint}")


class GunicornApplication(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """Runs a WSGI app under gunicorn without a config file, so `recvault serve` is
    self-contained. The app is made in each worker after the fork, so no database
    connection crosses processes."""

    def __init__(self, make_app: Callable[[], Flask], options: dict[str, Any]) -> None:
        self._make_app = make_app
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._make_app()


# Streams and uploads hold a thread for as long as they last, so a worker needs many
# threads; with gthread the worker's liveness is independent of request length, and
# the timeout only has to cover a stuck worker. 192 threads per worker carry 256 viewers
# beside a person holding 200 connections on a two-core server (docs/performance.md, P5's
# capacity): a gthread worker accepts connections whether or not it has a free thread, and
# the two workers do not share them evenly, so each needs room for well over half.
SERVE_WORKERS = 2
SERVE_THREADS = 192
SERVE_TIMEOUT_SECONDS = 120
# The access log leaves out query strings: they may carry signed tokens.
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms'


def gunicorn_options(bind: str, workers: int, threads: int) -> dict[str, Any]:
    """The server settings `recvault serve` runs with (the benchmarks' reference servers use
    the same)."""
    return {
        "bind": bind,
        "worker_class": "gthread",
        "workers": workers,
        "threads": threads,
        "timeout": SERVE_TIMEOUT_SECONDS,
        "graceful_timeout": 30,
        "keepalive": 5,
        # The control socket would sit under $HOME, read-only in the container image;
        # operators manage the server through signals instead.
        "control_socket_disable": True,
    }


@main.command(help="Run the app under gunicorn (gthread workers).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=SERVE_WORKERS, show_default=True, type=click.IntRange(1, 64))
@click.option("--threads", default=SERVE_THREADS, show_default=True, type=click.IntRange(1, 256))
def serve(host: str, port: int, workers: int, threads: int) -> None:
    settings = _settings()
    try:
        settings.read_secret_key()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options = gunicorn_options(bind, workers, threads) | {
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "preload_app": False,
    }
    # Before the fork, so that every worker inherits it.
    allocator.map_large_blocks()
    GunicornApplication(lambda: create_app(settings), options).run()
    sys.exit(0)


if __name__ == "__main__":
    main()
