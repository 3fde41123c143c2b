"""The backup-restore drill around a year-end (docs/operations.md, "The backup-restore drill"),
on PostgreSQL and SeaweedFS.

Before the year-end of the past school year the database is dumped and the bucket copied to
a directory, as the documented backups do; after it, the database is dumped again and the
keys directory copied. Each dump is then restored into a database of its own, with the
bucket copy from before the year-end loaded into a fresh bucket and the keys directory as it
is after the year-end, and every recording is opened through the app's read path:

- the dump from before the year-end decrypts nothing, of any year: its year keys are wrapped
  by the master key version the year-end destroyed, and `recvault init` refuses it;
- the dump from after the year-end plays the current year, and not the shredded one, whose
  ciphertext is still in the bucket copy: its key row is empty, so even the data key kept
  in the older dump does not open it.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from tests.conftest import TEST_PASSWORD_COST, postgres_base_url
from tests.support.backends import missing_backend
from tests.support.clock import TestClock
from tests.support.console import Console
from tests.support.seaweed import SeaweedServer
from tests.support.year_end_support import CURRENT_YEAR, PAST_YEAR, TwoYears, two_years
from vault.app import build_runtime
from vault.keyring import WrongKeysError, YearShredded
from vault.models import Recording, SchoolYearKey
from vault.services import media
from vault.services.errors import Gone, KeysUnavailable
from vault.services.passwords import Passwords
from vault.services.runtime import Runtime
from vault.settings import Settings

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]

TOOL_TIMEOUT = 120


@pytest.fixture
def storage_url(s3_env: SeaweedServer) -> str:
    """The drill's store is a SeaweedFS bucket, whatever VAULT_TEST_STORAGE says."""
    return s3_env.new_bucket()


# -- the backups -------------------------------------------------------------------------


def libpq_url(url: str, *, database: str | None = None) -> str:
    """A SQLAlchemy PostgreSQL URL as the PostgreSQL tools take it (no driver, no options)."""
    parsed = make_url(url).set(drivername="postgresql", query={})
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def schema_of(url: str) -> str:
    """The schema a test database URL confines its connections to (its search_path)."""
    options = make_url(url).query["options"]
    assert isinstance(options, str) and options.startswith("-csearch_path="), options
    return options.removeprefix("-csearch_path=")


def run_tool(*command: str) -> None:
    if shutil.which(command[0]) is None:
        missing_backend(f"the PostgreSQL client tool {command[0]} is not installed")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{' '.join(command[:2])} …: {done.stderr}"


@dataclass(frozen=True)
class Dump:
    path: Path
    schema: str


def dump_database(settings: Settings, target: Path) -> Dump:
    """`pg_dump --format=custom` of the instance's schema, as the nightly backup takes it."""
    schema = schema_of(settings.database_url)
    run_tool(
        "pg_dump",
        f"--dbname={libpq_url(settings.database_url)}",
        f"--schema={schema}",
        "--format=custom",
        f"--file={target}",
    )
    return Dump(target, schema)


def bucket_of(storage_url: str) -> str:
    parts = urllib.parse.urlsplit(storage_url)
    assert parts.scheme == "s3" and parts.path in ("", "/"), storage_url
    return parts.netloc


def copy_bucket(client: S3Client, bucket: str, target: Path) -> Path:
    """Every object of the bucket into a directory, as `mc mirror` to a backup disk: keys and
    bytes (a file system keeps no object tags)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for entry in page.get("Contents", []):
            key = entry["Key"]
            path = target / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return target


def copy_keys(settings: Settings, target: Path) -> Path:
    """The keys backup: the master key files and the Flask secret, kept apart from the data."""
    (target / "keys").mkdir(parents=True, mode=0o700)
    for path in settings.keys_dir.glob("master-*.key"):
        shutil.copy2(path, target / "keys" / path.name)
    shutil.copy2(settings.secret_key_file, target / "secret_key")
    return target


def master_key_files(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("master-*.key")}


# -- the restores ------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """A fresh instance made from backups: its own database, bucket and instance folder."""

    runtime: Runtime
    recvault: Console

    def recording(self, recording_id: uuid.UUID) -> Recording:
        """The recording's row as this instance's database holds it (detached)."""
        with self.runtime.sessions() as session:
            found = session.get(Recording, recording_id)
            assert found is not None
            return found

    def play(self, recording: Recording) -> bytes:
        """The whole recording through the app's read path, with this instance's keys and
        store (``recording`` may come from another instance's database)."""
        with self.runtime.sessions() as session:
            opened = media.open_media(session, self.runtime.keyring, self.runtime.store, recording)
            return b"".join(opened.stream(0, opened.size))

    def ciphertext(self, recording: Recording) -> bytes:
        assert recording.object_key is not None
        return b"".join(self.runtime.store.read_range(recording.object_key))

    def object_keys(self) -> set[str]:
        return set(self.runtime.store.iter_keys("recordings/"))


Restore = Callable[[Dump, Path, Path], Restored]


@pytest.fixture
def restore(s3_env: SeaweedServer, clock: TestClock, tmp_path: Path) -> Iterator[Restore]:
    """Restores (dump, bucket copy, keys backup) into a fresh instance: a new database, a new
    bucket, a new instance folder; all removed at the end."""
    base_url = postgres_base_url()
    assert base_url is not None  # the postgres marker deselects the test otherwise
    admin_url = libpq_url(base_url)
    passwords = Passwords(TEST_PASSWORD_COST)

    with ExitStack() as cleanup:

        def restored(dump: Dump, bucket_copy: Path, keys_backup: Path) -> Restored:
            database = f"vault_drill_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            cleanup.callback(drop_database, admin_url, database)
            run_tool(
                "pg_restore",
                f"--dbname={libpq_url(base_url, database=database)}",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                str(dump.path),
            )

            bucket = s3_env.new_bucket_name()
            client = s3_env.client()
            client.create_bucket(Bucket=bucket)
            for path in sorted(p for p in bucket_copy.rglob("*") if p.is_file()):
                key = path.relative_to(bucket_copy).as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

            instance = tmp_path / database
            instance.mkdir(mode=0o700)
            shutil.copytree(keys_backup / "keys", instance / "keys")
            shutil.copy2(keys_backup / "secret_key", instance / "secret_key")
            schema_url = make_url(base_url).set(database=database)
            settings = Settings.from_env(
                {
                    "VAULT_INSTANCE_DIR": str(instance),
                    "VAULT_DATABASE_URL": schema_url.update_query_dict(
                        {"options": f"-csearch_path={dump.schema}"}
                    ).render_as_string(hide_password=False),
                    "VAULT_STORAGE_URL": s3_env.url(bucket),
                    "VAULT_SCHOOL_NAME": "Daugavpils Centra vidusskola",
                }
            )
            runtime = build_runtime(settings, clock, passwords)
            cleanup.callback(runtime.close)
            return Restored(runtime, Console(settings, clock, passwords))

        yield restored


def drop_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


# -- the drill ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Backups:
    years: TwoYears
    dump_before: Dump
    dump_after: Dump
    bucket_before: Path
    keys_after: Path


@pytest.fixture
def backups(
    runtime: Runtime, clock: TestClock, recvault: Console, s3_env: SeaweedServer, tmp_path: Path
) -> Backups:
    """Two school years with a recording each; backups taken before and after the year-end of
    the past one, as the operator takes them."""
    years = two_years(runtime, clock)
    settings = runtime.settings

    dump_before = dump_database(settings, tmp_path / "before-year-end.dump")
    bucket_before = copy_bucket(
        s3_env.client(), bucket_of(settings.storage_url), tmp_path / "bucket-before"
    )
    keys_before = master_key_files(settings.keys_dir)

    done = recvault("year-end", PAST_YEAR)
    assert done.exit_code == 0, done.output
    assert "deletion certificate" in done.output
    finished = recvault("year-end", PAST_YEAR, "--dry-run")
    assert "the year-end is complete" in finished.output, finished.output

    dump_after = dump_database(settings, tmp_path / "after-year-end.dump")
    keys_after = copy_keys(settings, tmp_path / "escrow")
    # The year-end rotated the master key and destroyed the version the first dump names.
    assert len(keys_before) == 1
    assert len(master_key_files(keys_after / "keys")) == 1
    assert master_key_files(keys_after / "keys").isdisjoint(keys_before)
    return Backups(years, dump_before, dump_after, bucket_before, keys_after)


def test_a_dump_from_before_the_year_end_decrypts_no_year_with_the_current_keys(
    backups: Backups, restore: Restore
) -> None:
    years = backups.years
    old = restore(backups.dump_before, backups.bucket_before, backups.keys_after)

    # The restore check's first step already stops: the keys do not match the database.
    init = old.recvault("init")
    assert init.exit_code != 0
    assert "is not in the configured file key provider" in init.output

    for recording_id, plaintext in (
        (years.past, years.past_media),
        (years.current, years.current_media),
    ):
        recording = old.recording(recording_id)
        assert recording.status == "available" and recording.wrapped_data_key is not None
        # The ciphertext is there, in the bucket copy, and holds nothing readable.
        ciphertext = old.ciphertext(recording)
        assert len(ciphertext) > len(plaintext) and plaintext[:256] not in ciphertext
        with pytest.raises(KeysUnavailable) as refused:
            old.play(recording)
        assert isinstance(refused.value.__cause__, WrongKeysError), recording.school_year


def test_a_dump_from_after_the_year_end_plays_the_other_year_and_never_the_shredded_one(
    backups: Backups, restore: Restore
) -> None:
    years = backups.years
    new = restore(backups.dump_after, backups.bucket_before, backups.keys_after)
    init = new.recvault("init")
    assert init.exit_code == 0, init.output

    current = new.recording(years.current)
    assert new.play(current) == years.current_media

    shredded = new.recording(years.past)
    assert shredded.status == "shredded" and shredded.wrapped_data_key is None
    assert shredded.object_key in new.object_keys()  # its ciphertext came back with the copy
    with pytest.raises(Gone):
        new.play(shredded)

    # The strongest combination there is: the data key the older dump still holds, the
    # current keys, and the bucket copy with the year's ciphertext. The year's key row is
    # empty, so nothing unwraps the data key; the same combination plays the other year.
    old = restore(backups.dump_before, backups.bucket_before, backups.keys_after)
    assert new.play(old.recording(years.current)) == years.current_media
    with pytest.raises(Gone) as refused:
        new.play(old.recording(years.past))
    assert isinstance(refused.value.__cause__, YearShredded)
    with new.runtime.sessions() as session:
        year_key = session.get(SchoolYearKey, PAST_YEAR)
        assert year_key is not None and year_key.wrapped_key is None

    # The rest of the restore check. The bucket copy still holds the shredded year's object,
    # which no row references any more, and a copy on disk keeps no tags: fsck names both
    # and --repair deletes the one and re-tags the other.
    found = new.recvault("fsck")
    assert found.exit_code == 1
    findings = {tuple(line.split("\t")[:2]) for line in found.output.splitlines() if "\t" in line}
    assert findings == {
        ("orphan_object", shredded.object_key),
        ("tag_mismatch", current.object_key),
    }
    repaired = new.recvault("fsck", "--repair")
    assert repaired.exit_code == 0, repaired.output
    again = new.recvault("fsck")
    assert again.exit_code == 0 and "database and storage agree" in again.output
    assert new.object_keys() == {current.object_key}
    assert current.object_key is not None
    assert new.runtime.store.get_tags(current.object_key)["school-year"] == CURRENT_YEAR

    verified = new.recvault("audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert "audit chain intact" in verified.output
    assert new.play(current) == years.current_media
