"""A process that appends audit events through the real ``audit.record`` from many threads at
once, each event in a transaction of its own as an act commits it: the load of many app
processes recording acts together, for the chain's concurrency test.

    python -m tests.support.audit_appender GO_FILE WORKER THREADS COUNT

The instance comes from the VAULT_ settings in the environment, and the runtime is built as
an app process builds its own (``build_runtime``), on the tests' clock: its sessions do
after a commit what an app's do (signing the checkpoint that falls due every so many
events). Waits until GO_FILE exists, so that every process starts at the same moment, then
appends COUNT events spread over THREADS threads. Each event says who appended it (worker, thread,
index), so the test can check that every one of them is in the chain exactly once. Every
fourth event carries a request's personal details, which go to the erasable side table as
a web request's would. Prints one JSON line: how many were appended and the seconds it took.
Any failure ends the process with a traceback and a non-zero status: nothing is retried,
because a conflict between appends is exactly what must never happen.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from tests.support.clock import TestClock
from vault.app import build_runtime
from vault.services import audit
from vault.settings import Settings

GO_POLL_SECONDS = 0.01
# The action of the appended events: one no upload or view ever records.
ACTION = audit.AuditAction.SYSTEM_INIT


def share(count: int, parts: int, index: int) -> int:
    """How many of ``count`` events part ``index`` of ``parts`` appends (they add up)."""
    return count // parts + (1 if index < count % parts else 0)


def append(sessions: sessionmaker[Session], worker: int, thread: int, count: int) -> None:
    for index in range(count):
        personal = index % 4 == 0
        context = audit.RequestContext(f"198.51.100.{worker}", f"appender/{thread}")
        with sessions() as session, session.begin():
            audit.record(
                session,
                audit.Event(
                    ACTION,
                    details={"worker": worker, "thread": thread, "index": index},
                    context=context if personal else None,
                ),
            )


def main(arguments: list[str]) -> int:
    go, worker, threads, count = arguments
    worker_number, thread_count, total = int(worker), int(threads), int(count)
    runtime = build_runtime(Settings.from_env(), TestClock())
    failures: list[BaseException] = []

    def run(thread: int) -> None:
        try:
            append(runtime.sessions, worker_number, thread, share(total, thread_count, thread))
        except BaseException as exc:
            failures.append(exc)
            raise

    while not Path(go).exists():
        time.sleep(GO_POLL_SECONDS)
    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(n,)) for n in range(thread_count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - started
    runtime.close()
    if failures:
        return 1
    print(json.dumps({"appended": total, "seconds": round(elapsed, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
