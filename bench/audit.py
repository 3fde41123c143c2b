"""P7: the audit log's hash chain on PostgreSQL: appends per second, verification of 1 M events,
and the export's peak memory.

P7 append  Events per second appended through ``vault.services.audit.record`` by --writers
           concurrent writers (default 8), each writing --per-writer events (default 2,000),
           one event per transaction and commit, as an act writes its event. Each event is
           one a real act could write (a sign-in, a view starting or ending with its summary,
           a refusal), with a request context (address and user agent), so the salted
           commitment and the erasable side-table row are written too. The events are
           drawn from the synthetic traffic before the clock starts. Each writer appends
           a few events first, untimed (connections, statement caches); the figure is the
           timed count over the time from the first writer's start to the last one's end;
           target >= 1,000 /s. Each act waits after its commit until its event is linked
           into the chain (``audit_chain.Linker``), as the app's acts do, so the count is
           of linked events. The figure's writers are threads sharing one runtime, as the
           threads of a `recvault serve` worker (gunicorn gthread) share theirs. The same
           count is also written by as many processes (``multiprocessing``, spawn), each
           with a runtime of its own; by the writers spread as `recvault serve` spreads
           requests by default, over its worker processes with threads each
           ("serve-shaped"); and by a single writer, for reference. The writers' own
           processor time per event (the app's side; the database server's is not in it)
           is printed too: on a two-core machine it, not the chain, is what bounds the rate.
           The checkpoints the app signs at every thousandth event as the appends go on are
           part of the measured work. After each run the whole chain is verified and must
           be intact, numbering its events once each with no gap, and hold exactly the
           events written, or the benchmark fails.
P7 verify  Seconds for ``audit_chain.verify`` over --events events (default 1,000,000) on a
           fresh PostgreSQL schema; target <= 10 s. The events are seeded in bulk: a fresh
           instance (``recvault init``'s steps) is continued with synthetic events of the
           same kinds, spread over the last 30 days, whose links are computed in Python with
           ``audit_chain.link`` over the entry ``audit_chain.entry_of`` reads back, written
           with COPY (``details`` in canonical form, as the engine writes JSON columns), the
           chain head set, and the table vacuumed and analysed as autovacuum would after a
           bulk load. The details kept beside the events are not seeded: verification and
           export never read them (as after an erasure). Seeding is not timed. The best of
           --verify-rounds rounds counts; the same verification of a SQLite file seeded
           alike is printed beside it (--no-sqlite skips it). --profile prints where one
           PostgreSQL round's time goes (cProfile).
P7 export  The peak resident memory (VmHWM, read by the process itself as it exits) of
           ``recvault audit export --output FILE`` (JSON Lines, no criteria: the whole log),
           run as its own process. The seeded log is exported when it holds 10,000 events,
           again at 100,000, and at the full count: flat means about the same peak for every
           count. Before each export (and after the verification), the checkpoints the app
           signs at every thousandth event as events arrive are signed over the seeded ones,
           untimed, as they would have been; the export then holds the log up to the latest
           checkpoint. Each figure is keyed by the number of events its export held (its
           manifest's count, checked against the file's lines).

Everything lives in a temporary directory and in throwaway schemas of the PostgreSQL
database given by --postgres-url (default: VAULT_TEST_DATABASE_URL, else the local server's
database ``test``); both are removed at the end.

Run: .venv/bin/python -m bench.audit [--events 1000000] [--writers 8] [--per-writer 2000]
     (a quick run, in under a minute: --events 20000 --per-writer 200)

The last line printed is JSON: {"P7": {"append_per_s": n, "verify_1m_s": s,
"export_peak_rss_mib": {"10000": MiB, ...}, ...}}, with "verify_events" the number of events
"verify_1m_s" covered, and beside them the processes', the serve-shaped writers' and the
single writer's append rates and the SQLite verification.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import os
import pstats
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

from vault.app import build_runtime, initialise_instance
from vault.cli import SERVE_WORKERS
from vault.db import canonical_json, make_engine
from vault.models import AuditChainHead, AuditEvent
from vault.services import audit, audit_chain, audit_checkpoints
from vault.services.audit import AuditAction, Event, Outcome, RequestContext
from vault.services.runtime import Runtime
from vault.settings import Settings, normalise_database_url

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SQLITE_BATCH = 10_000
# Events each writer appends before the clock starts (connections, statement caches).
WARM_UP_EVENTS = 20
# The writers spread as `recvault serve` spreads requests by default: over its worker
# processes, each with threads.
SERVER_SHAPED = "serve-shaped"
# What the writers record (``Acts``); the instance records none of these by itself.
WRITERS_ACTIONS = frozenset(
    action.value
    for action in (
        AuditAction.AUTH_LOGIN_SUCCEEDED,
        AuditAction.VIEW_STARTED,
        AuditAction.VIEW_ENDED,
        AuditAction.ACCESS_DENIED,
    )
)
SEEDED_PERIOD = timedelta(days=30)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)


# -- what the events look like ------------------------------------------------------------------


@dataclass(frozen=True)
class Act:
    """One audited act's event, as the services would record it."""

    action: AuditAction
    outcome: Outcome
    actor_id: uuid.UUID
    recording_id: uuid.UUID | None
    object_id: str | None
    details: dict[str, Any]
    context: RequestContext


class Acts:
    """A school's traffic: people sign in, watch recordings under orders, are sometimes
    refused; deterministic for a given seed."""

    def __init__(self, seed: int, people: int = 400, recordings: int = 3000) -> None:
        self.random = random.Random(seed)
        self.people = [
            uuid.UUID(int=self.random.getrandbits(128), version=4) for _ in range(people)
        ]
        self.recordings = [
            uuid.UUID(int=self.random.getrandbits(128), version=4) for _ in range(recordings)
        ]
        self.orders = [
            (str(uuid.UUID(int=self.random.getrandbits(128), version=4)), f"R-2026/{n}")
            for n in range(1, 120)
        ]
        self.moment = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)

    def next(self) -> Act:
        pick = self.random
        actor = pick.choice(self.people)
        context = RequestContext(
            ip_address=f"10.{pick.randrange(4)}.{pick.randrange(256)}.{pick.randrange(1, 255)}",
            user_agent=pick.choice(USER_AGENTS),
        )
        recording = pick.choice(self.recordings)
        order_id, order_number = pick.choice(self.orders)
        view = str(uuid.UUID(int=pick.getrandbits(128), version=4))
        kind = pick.randrange(10)
        if kind < 2:
            return Act(
                AuditAction.AUTH_LOGIN_SUCCEEDED,
                Outcome.SUCCESS,
                actor,
                None,
                None,
                {"second_factor": bool(kind)},
                context,
            )
        if kind < 6:
            details: dict[str, Any] = {
                "order_id": order_id,
                "order_number": order_number,
                "via": "browser",
            }
            return Act(
                AuditAction.VIEW_STARTED, Outcome.SUCCESS, actor, recording, view, details, context
            )
        if kind < 9:
            size = pick.randrange(200, 900) << 20
            seconds = pick.randrange(60, 2700)
            self.moment += timedelta(seconds=1)
            summary = {
                "order_id": order_id,
                "started_at": self.moment.isoformat(),
                "ended_at": (self.moment + timedelta(seconds=seconds)).isoformat(),
                "reason": "closed",
                "requests": pick.randrange(1, 40),
                "bytes_sent": size // 2,
                "size_bytes": size,
                "served_bytes": [[0, size // 2 - 1]],
                "played_reported_seconds": [[0, seconds / 2], [seconds * 0.75, seconds * 0.8]],
                "duration_reported_seconds": 2700.0,
                "fetched_fast": False,
            }
            return Act(
                AuditAction.VIEW_ENDED, Outcome.SUCCESS, actor, recording, view, summary, context
            )
        return Act(
            AuditAction.ACCESS_DENIED,
            Outcome.DENIED,
            actor,
            recording,
            None,
            {"reason": "no_valid_order", "route": "stream"},
            context,
        )

    def event(self) -> Event:
        act = self.next()
        return Event(
            act.action,
            outcome=act.outcome,
            actor_id=act.actor_id,
            recording_id=act.recording_id,
            object_id=act.object_id,
            details=act.details,
            context=act.context,
        )


# -- the PostgreSQL schemas and the instances -------------------------------------------------


def schema_url(base_url: str, name: str) -> str:
    """A URL whose connections see only the schema ``name``."""
    url = make_url(normalise_database_url(base_url))
    return url.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(
        hide_password=False
    )


@contextmanager
def throwaway_schema(base_url: str, prefix: str) -> Iterator[str]:
    """A new, empty schema in the database at ``base_url``, dropped with all it holds at the
    end; yields the URL that works in it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(normalise_database_url(base_url))
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
        yield schema_url(base_url, name)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def instance_env(directory: Path, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "VAULT_INSTANCE_DIR": str(directory),
        "VAULT_DATABASE_URL": database_url,
        "VAULT_SCHOOL_NAME": "Benchmark School",
    }


def fresh_instance(directory: Path, database_url: str) -> dict[str, str]:
    """`recvault init`'s steps on an empty database; the instance's environment."""
    env = instance_env(directory, database_url)
    initialise_instance(Settings.from_env(env))
    return env


@contextmanager
def runtime_of(env: dict[str, str]) -> Iterator[Runtime]:
    runtime = build_runtime(Settings.from_env(env))
    try:
        yield runtime
    finally:
        runtime.close()


# -- P7 append --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendRun:
    label: str
    writers: int
    events: int  # timed
    seconds: float
    cpu_seconds: float  # the writers' own processor time (the app's side, not the server's)

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def written(self) -> int:
        """Every event the run added, its writers' untimed warm-up included."""
        return self.events + self.writers * WARM_UP_EVENTS


def drawn(acts: Acts, count: int) -> list[Event]:
    """The next ``count`` events of the traffic, drawn before a timed run: what is timed is
    the app recording them, not the benchmark making them up."""
    return [acts.event() for _ in range(count)]


def append(runtime: Runtime, events: list[Event]) -> None:
    """Each event in a transaction of its own, committed one by one."""
    for event in events:
        with runtime.sessions() as session, session.begin():
            audit.record(session, event)


def chain_state(runtime: Runtime) -> tuple[int, int]:
    """(stored events, the head's count)."""
    with runtime.sessions() as session:
        stored = session.scalar(select(func.count()).select_from(AuditEvent)) or 0
        head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
        return int(stored), head.seq if head else 0


def count_of(runtime: Runtime, actions: frozenset[str]) -> int:
    with runtime.sessions() as session:
        query = select(func.count()).where(AuditEvent.action.in_(actions))
        return int(session.scalar(query) or 0)


def check_chain(runtime: Runtime, written: int) -> None:
    """The chain must verify, number its events 1..head each once, and hold exactly
    ``written`` events of the writers (besides the instance's own, such as the checkpoints
    the app signs at intervals as the appends go on)."""
    with runtime.sessions() as session:
        verdict = audit_chain.verify(session)
        top = session.scalar(select(func.max(AuditEvent.seq))) or 0
    stored, head = chain_state(runtime)
    found = count_of(runtime, WRITERS_ACTIONS)
    if not verdict.intact or {verdict.count, stored, head, top} != {head} or found != written:
        raise SystemExit(
            f"P7 FAILED: the chain after the appends: {verdict}; {stored} rows, head {head}, "
            f"highest seq {top}; {found} of the writers' events, expected {written}"
        )


def threads_run(runtime: Runtime, writers: int, per_writer: int, label: str) -> AppendRun:
    """``writers`` threads sharing one runtime, as a gthread worker's threads do."""
    barrier = threading.Barrier(writers + 1)
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        try:
            acts = Acts(seed=1000 + index)
            append(runtime, drawn(acts, WARM_UP_EVENTS))
            timed = drawn(acts, per_writer)
            barrier.wait()
            started = time.monotonic()
            append(runtime, timed)
            spans.append((started, time.monotonic()))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    with suppress(threading.BrokenBarrierError):  # a writer failed: its error is raised below
        barrier.wait()
    cpu_started = time.process_time()
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu_started
    if errors:
        raise errors[0]
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return AppendRun(label, writers, writers * per_writer, seconds, cpu)


Span = tuple[int, float, float, float]


def _process_writer(
    env: dict[str, str],
    index: int,
    shape: tuple[int, int],
    barrier: Barrier,
    results: multiprocessing.Queue[Span],
) -> None:
    """One process of a run: its threads (``shape``: threads, events each) share its runtime."""
    threads, count = shape
    failures: list[BaseException] = []
    ready = threading.Barrier(threads + 1)
    go = threading.Event()
    with runtime_of(env) as runtime:

        def writer(thread: int) -> None:
            try:
                acts = Acts(seed=2000 + 100 * index + thread)
                append(runtime, drawn(acts, WARM_UP_EVENTS))
                timed = drawn(acts, count)
                ready.wait()
                go.wait()
                append(runtime, timed)
            except BaseException as exc:
                failures.append(exc)
                ready.abort()
                raise

        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        ready.wait()
        barrier.wait()
        started = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes
        cpu_started = time.process_time()
        go.set()
        for worker in workers:
            worker.join()
        if failures:
            raise failures[0]
        results.put((index, started, time.monotonic(), time.process_time() - cpu_started))


def processes_run(
    env: dict[str, str], processes: int, threads: int, per_writer: int, label: str
) -> AppendRun:
    """``processes`` processes, each with a runtime (an engine and its pool) of its own and
    ``threads`` writer threads sharing it."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results: multiprocessing.Queue[Span] = context.Queue()
    started = [
        context.Process(
            target=_process_writer, args=(env, i, (threads, per_writer), barrier, results)
        )
        for i in range(processes)
    ]
    for process in started:
        process.start()
    spans: list[Span] = []
    while len(spans) < processes:
        try:
            spans.append(results.get(timeout=1))
        except queue.Empty:
            if any(process.exitcode not in (None, 0) for process in started):
                for process in started:
                    process.kill()
                raise SystemExit("P7 FAILED: a writer process failed") from None
    for process in started:
        process.join()
    seconds = max(end for _, _, end, _ in spans) - min(start for _, start, _, _ in spans)
    cpu = sum(cpu for _, _, _, cpu in spans)
    writers = processes * threads
    return AppendRun(label, writers, writers * per_writer, seconds, cpu)


def append_figures(
    env: dict[str, str], writers: int, per_writer: int
) -> tuple[list[AppendRun], int]:
    runs: list[AppendRun] = []
    with runtime_of(env) as runtime:
        expected = count_of(runtime, WRITERS_ACTIONS)
        starts: list[Callable[[], AppendRun]] = [
            lambda: threads_run(runtime, 1, per_writer, "single writer"),
            lambda: threads_run(runtime, writers, per_writer, "threads"),
            lambda: processes_run(env, writers, 1, per_writer, "processes"),
            lambda: processes_run(
                env, SERVE_WORKERS, writers // SERVE_WORKERS, per_writer, SERVER_SHAPED
            ),
        ]
        for start in starts:
            done = start()
            expected += done.written
            check_chain(runtime, expected)
            runs.append(done)
        checkpoints = count_of(runtime, frozenset({AuditAction.AUDIT_CHECKPOINT_CREATED.value}))
    return runs, checkpoints


# -- seeding in bulk ----------------------------------------------------------------------------


Row = tuple[datetime, str, str, uuid.UUID, uuid.UUID | None, str | None, str, int, str, str]


def chained_rows(first_seq: int, previous: str, count: int, period: Period) -> Iterator[Row]:
    """``count`` events continuing the chain after ``first_seq - 1`` (whose hash is
    ``previous``), each linked exactly as ``audit_chain.append`` links what
    ``audit_chain.entry_of`` reads back."""
    acts = Acts(seed=first_seq)
    for seq in range(first_seq, first_seq + count):
        act = acts.next()
        moment = period.start + seq * period.step
        salt = audit_chain.new_salt()
        context = act.context
        commitment = audit_chain.commitment(salt, context.ip_address, context.user_agent, None)
        entry = {
            "seq": seq,
            "occurred_at": audit_chain.utc_text(moment),
            "action": act.action.value,
            "outcome": act.outcome.value,
            "actor_id": str(act.actor_id),
            "recording_id": str(act.recording_id) if act.recording_id else None,
            "object_id": act.object_id,
            "details": act.details,
            "context_commitment": commitment,
        }
        previous = audit_chain.link(entry, previous)
        yield (
            moment,
            act.action.value,
            act.outcome.value,
            act.actor_id,
            act.recording_id,
            act.object_id,
            canonical_json(act.details),  # as the engine writes JSON columns
            seq,
            previous,
            commitment,
        )


@dataclass(frozen=True)
class Period:
    """When the seeded events happened: event ``seq`` at ``start + seq * step``."""

    start: datetime
    step: timedelta

    @classmethod
    def last_days(cls, events: int) -> Period:
        """``events`` spread evenly over the last 30 days."""
        return cls(datetime.now(UTC) - SEEDED_PERIOD, SEEDED_PERIOD / max(events, 1))


def chain_head(engine: Engine) -> tuple[int, str]:
    with engine.connect() as connection:
        seq, entry_hash = connection.execute(
            select(AuditChainHead.seq, AuditChainHead.entry_hash).where(
                AuditChainHead.id == audit_chain.HEAD_ROW_ID
            )
        ).one()
    return int(seq), str(entry_hash)


def seed(engine: Engine, total: int, period: Period) -> float:
    """Continue the chain up to ``total`` events, in bulk: COPY on PostgreSQL, batched
    INSERTs on SQLite; then the head row. The seconds it took."""
    started = time.perf_counter()
    seq, previous = chain_head(engine)
    last_hash = previous

    def noted(rows: Iterator[Row]) -> Iterator[Row]:
        nonlocal last_hash
        for row in rows:
            last_hash = row[8]
            yield row

    rows = noted(chained_rows(seq + 1, previous, total - seq, period))
    if engine.dialect.name == "postgresql":
        _copy(engine, rows)
    else:
        _insert_batches(engine, rows)
    with engine.begin() as connection:
        connection.execute(
            update(AuditChainHead)
            .where(AuditChainHead.id == audit_chain.HEAD_ROW_ID)
            .values(seq=total, entry_hash=last_hash)
        )
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE audit_events")
            )
    return time.perf_counter() - started


def _copy(engine: Engine, rows: Iterator[Row]) -> None:
    raw = engine.raw_connection()
    try:
        connection = cast(Any, raw.driver_connection)
        columns = ", ".join(audit_chain.EVENT_COLUMNS)
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY audit_events ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        raw.commit()
    finally:
        raw.close()


def _insert_batches(engine: Engine, rows: Iterator[Row]) -> None:
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as connection:
            connection.execute(insert(AuditEvent), batch)
        batch.clear()

    for row in rows:
        values: dict[str, Any] = dict(zip(audit_chain.EVENT_COLUMNS, row, strict=True))
        values["details"] = json.loads(row[6])
        batch.append(values)
        if len(batch) >= SQLITE_BATCH:
            flush()
    if batch:
        flush()


# -- P7 verify --------------------------------------------------------------------------------


def timed_verify(runtime: Runtime, expected: int) -> float:
    with runtime.sessions() as session:
        session.execute(select(1))
        started = time.perf_counter()
        verdict = audit_chain.verify(session)
        seconds = time.perf_counter() - started
    if not verdict.intact or verdict.count != expected:
        raise SystemExit(f"P7 FAILED: the seeded chain does not verify: {verdict}")
    if verdict.rehashed:
        raise SystemExit(f"P7 FAILED: {verdict.rehashed} events did not verify as stored")
    return seconds


def profile_verify(runtime: Runtime) -> None:
    profiler = cProfile.Profile()
    with runtime.sessions() as session:
        profiler.enable()
        audit_chain.verify(session)
        profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    print("\nverify under cProfile (PostgreSQL), by own time:")
    stats.sort_stats("tottime").print_stats(18)
    print("by cumulative time:")
    stats.sort_stats("cumulative").print_stats(25)


# -- P7 export --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportRun:
    events: int
    seconds: float
    peak_mib: float
    size_mib: float


# `recvault` as `python -m vault.cli` runs it, reporting its own peak resident set as it
# exits. The peak is read inside the process: ``wait4``'s ``ru_maxrss`` would not do, since
# the kernel counts in it the high-water mark of the memory the process started from before
# its exec, the benchmark's own.
PEAK_REPORTING_CLI = """
import atexit, os, runpy, sys
from pathlib import Path

def report():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            Path(os.environ["BENCH_PEAK_FILE"]).write_text(line.split()[1])

atexit.register(report)
sys.argv[0] = "recvault"
runpy.run_module("vault.cli", run_name="__main__")
"""


def export_peak(env: dict[str, str], directory: Path, at_least: int) -> ExportRun:
    """`recvault audit export` of the whole log, in a process of its own; its peak RSS
    (VmHWM) as it exits. The log holds ``at_least`` events."""
    output = directory / f"export-{at_least}.jsonl"
    peak_file = directory / "peak-kib"
    command = [sys.executable, "-c", PEAK_REPORTING_CLI, "audit", "export", "--output", str(output)]
    started = time.perf_counter()
    done = subprocess.run(
        command, env={**env, "BENCH_PEAK_FILE": str(peak_file)}, capture_output=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"P7 FAILED: the export exited with {done.returncode}: {done.stderr!r}")
    peak_mib = int(peak_file.read_text()) / 1024
    peak_file.unlink()
    manifest = json.loads(output.with_name(output.name + ".manifest.json").read_text())
    # The whole log up to the head of the checkpoint the export is bound to: every event
    # from the first, each once.
    count = manifest["count"]
    if not (at_least <= count == manifest["head_seq"] == manifest["last_seq"]) or (
        manifest["first_seq"] != 1
    ):
        raise SystemExit(f"P7 FAILED: the export of {at_least} events holds {manifest}")
    with output.open("rb") as lines:
        exported = sum(1 for _ in lines) - 1  # the manifest's line
    if exported != count:
        raise SystemExit(f"P7 FAILED: the export has {exported} lines of events, not {count}")
    size_mib = output.stat().st_size / (1 << 20)
    output.unlink()
    return ExportRun(count, seconds, peak_mib, size_mib)


# -- the run ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P7: the audit log's hash chain")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to verify")
    parser.add_argument("--writers", type=int, default=8, help="concurrent appending writers")
    parser.add_argument("--per-writer", type=int, default=2000, help="events each writer appends")
    parser.add_argument("--verify-rounds", type=int, default=2, help="verify rounds (best counts)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite verification")
    parser.add_argument("--profile", action="store_true", help="profile one verify round")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("VAULT_TEST_DATABASE_URL") or DEFAULT_POSTGRES_URL,
        help="a PostgreSQL database to make throwaway schemas in",
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="vault-bench-audit-"))
    try:
        return run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(args: argparse.Namespace, root: Path) -> int:
    events: int = args.events
    figures: dict[str, Any] = {}

    print(f"P7 append: {args.writers} writers x {args.per_writer} events, one commit each")
    with throwaway_schema(args.postgres_url, "bench_audit_append") as url:
        env = fresh_instance(root / "append", url)
        runs, checkpoints = append_figures(env, args.writers, args.per_writer)
    print(f"{'writers':<22}{'events':>8}{'seconds':>10}{'events/s':>10}{'app CPU ms/event':>18}")
    for done in runs:
        label = f"{done.writers} {done.label}"
        print(
            f"{label:<22}{done.events:>8}{done.seconds:>10.2f}{done.rate:>10.0f}"
            f"{1000 * done.cpu_seconds / done.events:>18.2f}"
        )
    print(
        "the chain verified intact after each run: every number once, no gap, each writer's "
        f"events all there; {checkpoints} checkpoints signed at intervals as it grew"
    )
    by_label = {done.label: done for done in runs}
    figures["append_per_s"] = round(by_label["threads"].rate)
    figures["append_processes_per_s"] = round(by_label["processes"].rate)
    figures["append_serve_shaped_per_s"] = round(by_label[SERVER_SHAPED].rate)
    figures["append_single_writer_per_s"] = round(by_label["single writer"].rate)
    figures["writers"] = args.writers

    # One log grown in stages: its whole export at 10,000 and 100,000 events, then at the
    # full count, which is also the one verified.
    stages = [n for n in (10_000, 100_000) if n < events] + [events]
    period = Period.last_days(events)
    exports: list[ExportRun] = []
    rounds: list[float] = []
    print(f"\nP7 verify and export: {events} events seeded in bulk")
    with throwaway_schema(args.postgres_url, "bench_audit_verify") as url:
        env = fresh_instance(root / "verify", url)
        for stage in stages:
            with runtime_of(env) as runtime:
                seconds = seed(runtime.engine, stage, period)
                print(f"PostgreSQL: seeded to {stage} events in {seconds:.1f} s (not timed)")
                if stage == events:
                    rounds = [timed_verify(runtime, events) for _ in range(args.verify_rounds)]
                    listed = " ".join(f"{r:.2f}" for r in rounds)
                    print(f"PostgreSQL: verify rounds (s): {listed}")
                    if args.profile:
                        profile_verify(runtime)
                # The checkpoints the app would have signed, one at every thousandth event,
                # had the events arrived one by one; then the export signs only its own.
                started = time.perf_counter()
                audit_checkpoints.checkpoint_now(runtime, runtime.clock())
                signed = time.perf_counter() - started
                print(f"PostgreSQL: checkpoints signed over them in {signed:.1f} s (not timed)")
            # The export holds the whole log up to its checkpoint: the seeded events, and the
            # events of the checkpoints and of the earlier exports.
            exports.append(export_peak(env, root, stage))
    figures["verify_events"] = events
    figures["verify_1m_s"] = round(min(rounds), 2)

    print("\nP7 export: `recvault audit export` (JSON Lines) of the whole log, in a process")
    print(f"{'events':>10}{'seconds':>10}{'file MiB':>10}{'peak RSS MiB':>14}")
    for exported in exports:
        print(
            f"{exported.events:>10}{exported.seconds:>10.1f}{exported.size_mib:>10.1f}"
            f"{exported.peak_mib:>14.1f}"
        )
    figures["export_peak_rss_mib"] = {str(e.events): round(e.peak_mib, 1) for e in exports}

    if not args.no_sqlite:
        env = fresh_instance(root / "sqlite", f"sqlite:///{root / 'sqlite' / 'vault.db'}")
        with runtime_of(env) as runtime:
            seconds = seed(runtime.engine, events, period)
            print(f"\nSQLite: seeded to {events} events in {seconds:.1f} s (not timed)")
            rounds = [timed_verify(runtime, events) for _ in range(args.verify_rounds)]
            print(f"SQLite: verify rounds (s): {' '.join(f'{r:.2f}' for r in rounds)}")
        figures["verify_1m_sqlite_s"] = round(min(rounds), 2)

    print(
        f"\nP7 append {figures['append_per_s']} events/s with {args.writers} writers "
        f"(target >= 1000); verify {figures['verify_1m_s']} s for {events} events "
        "(target <= 10 s)"
    )
    print(json.dumps({"P7": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
