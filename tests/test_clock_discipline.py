"""Every test takes "now" from the test clock (``tests.support.clock``), so the suite passes at any
hour of any day. The few that must run on the machine's clock are listed here, each with the
reason; nothing else in ``tests/`` reads that clock."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
ROOT = TESTS.parent

# Modules that use ``MachineClock`` or the ``machine_clock`` marker, and why.
REAL_CLOCK_CASES = {
    "tests/support/clock.py": "defines MachineClock, the one reader of the machine's clock",
    "tests/conftest.py": "gives tests marked machine_clock a runtime on the machine's clock",
    "tests/support/nginx.py": "nginx and the browser check the test certificate against that clock",
    "tests/storage/test_contract.py": "stores date multipart writes by the machine's clock",
    "tests/storage/test_local.py": "the local store judges temporary files by their mtime",
    "tests/storage/test_s3.py": "S3 dates multipart writes (Initiated) by the server's clock",
    "tests/test_deploy.py": "the scheduler's health check judges its status file by mtime",
    "tests/test_keyring.py": "the orphan sweep judges master key files by their mtime",
    "tests/test_https_journey.py": "gunicorn, in another process, reads the machine's clock",
    "tests/test_fsck.py": "fsck compares the store's multipart dates",
    "tests/test_uploads.py": "left-over multipart writes are dated by the store",
    "tests/test_uploads_gunicorn.py": "gunicorn workers in other processes read that clock",
    "tests/test_uploads_recovery.py": "the stale-upload clean-up compares the store's dates",
}

# Calls that read the machine's clock for calendar purposes (date.today, datetime.now, a
# TOTP object's .now(), time.time ...). time.monotonic measures durations and stays allowed.
CLOCK_METHODS = frozenset({"now", "utcnow", "today"})
TIME_FUNCTIONS = frozenset({"time", "time_ns", "localtime", "gmtime", "ctime", "strftime"})


def clock_reads(source: str) -> list[tuple[int, str]]:
    """Where ``source`` reads the machine's clock: (line, what) pairs."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            receiver = node.func.value
            if name in CLOCK_METHODS:
                found.append((node.lineno, f".{name}()"))
            elif (
                name in TIME_FUNCTIONS and isinstance(receiver, ast.Name) and receiver.id == "time"
            ):
                found.append((node.lineno, f"time.{name}()"))
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            for alias in node.names:
                if alias.name in TIME_FUNCTIONS:
                    found.append((node.lineno, f"from time import {alias.name}"))
    return found


def uses_the_machine_clock(source: str) -> bool:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "MachineClock":
            return True
        if isinstance(node, ast.alias) and node.name == "MachineClock":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "machine_clock":
            return True
    return False


def python_files() -> list[Path]:
    return sorted(TESTS.rglob("*.py"))


def test_no_test_reads_the_machine_clock_outside_the_clock_module() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in python_files()
        if path != TESTS / "support" / "clock.py"
        for line, what in clock_reads(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], (
        "take the time from the test clock (tests/support/clock.py):\n" + "\n".join(offences)
    )


def test_only_the_listed_modules_run_on_the_machine_clock() -> None:
    using = {
        str(path.relative_to(ROOT))
        for path in python_files()
        if uses_the_machine_clock(path.read_text(encoding="utf-8"))
    }
    assert using - set(REAL_CLOCK_CASES) == set(), "list the reason in REAL_CLOCK_CASES"
    assert set(REAL_CLOCK_CASES) - using == set(), "no longer on the machine's clock: unlist"


def test_the_check_catches_each_way_of_reading_the_clock() -> None:
    source = "\n".join(
        [
            "import time, datetime, pyotp",
            "from datetime import date",
            "from time import time as wall",
            "a = datetime.datetime.now(datetime.UTC)",
            "b = date.today()",
            "c = time.time()",
            "d = pyotp.TOTP('A' * 32).now()",
            "e = datetime.datetime.utcnow()",
            "f = time.monotonic()",
            "g = clock.riga_today()",
        ]
    )
    assert [line for line, _ in clock_reads(source)] == [3, 4, 5, 6, 7, 8]
    assert uses_the_machine_clock("import pytest\n@pytest.mark.machine_clock\ndef t(): pass")
    assert uses_the_machine_clock("from tests.support.clock import MachineClock")
    assert not uses_the_machine_clock("from tests.support.clock import TestClock")
