"""A burst of sign-ins cannot make a worker hold one 64 MiB Argon2id computation per thread.

Measured in a fresh interpreter, as gunicorn's threads would do it: eight threads check a
password at the same moment, and the process's resident high-water mark is compared with
its size before. Unbounded, that is eight times 64 MiB; bounded, two.
"""

from __future__ import annotations

from tests.support.processes import measure_in_fresh_interpreter
from vault.services.passwords import Passwords

_BURST = """
import os, threading
from tests.support.processes import peak_rss_mib, reset_peak_rss, run_threads
from vault.services.passwords import Passwords

passwords = Passwords()  # the production cost
passwords.verify(None, "warm-up: the dummy hash is made on first use")
reset_peak_rss(os.getpid())
before = peak_rss_mib(os.getpid())
start = threading.Barrier(8)

def sign_in():
    start.wait()
    passwords.verify(None, "a wrong password, tried by many")

run_threads(sign_in, 8)
print(peak_rss_mib(os.getpid()) - before)
"""

ARGON2_MEMORY_MIB = 64


def test_simultaneous_password_checks_are_bounded_in_memory() -> None:
    growth = measure_in_fresh_interpreter(_BURST, timeout=120)
    # Two computations at a time, with room for the threads' own stacks and buffers.
    assert growth < 2.5 * ARGON2_MEMORY_MIB, growth


def test_production_passwords_use_argon2id_at_the_documented_cost() -> None:
    """The tests run on a cheap cost; this is the one check of the real one."""
    hashed = Passwords().hash("a passphrase long enough")
    assert hashed.startswith("$argon2id$") and "$m=65536,t=3,p=2$" in hashed
    assert Passwords().verify(hashed, "a passphrase long enough")
    assert not Passwords().verify(hashed, "another passphrase")
    assert not Passwords().verify(None, "a passphrase long enough")
