"""Password hashing (Argon2id), with its cost a collaborator of the runtime.

Production uses RFC 9106's second recommended option with the memory lowered for a school
server; the tests inject a cheap cost, since every account they create and every sign-in
would otherwise pay a full hash.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class PasswordCost:
    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2


PRODUCTION_COST = PasswordCost()
# Each hash holds its memory while it runs. Unbounded, a burst of sign-ins on the 192 threads
# of one worker would ask for 12 GiB at once, an easy way to get workers killed for memory;
# the burst instead waits here, costing time (which the sign-in limits want anyway) rather
# than memory. Two at a time keep a two-core server's cores busy.
HASHES_AT_ONCE = 2


class Passwords:
    def __init__(self, cost: PasswordCost = PRODUCTION_COST) -> None:
        self.cost = cost
        self._hasher = PasswordHasher(
            time_cost=cost.time_cost, memory_cost=cost.memory_kib, parallelism=cost.parallelism
        )
        self._slots = threading.BoundedSemaphore(HASHES_AT_ONCE)
        self._dummy_lock = threading.Lock()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        with self._slots:
            return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; with no hash (no such account, no password set) the
        same work is done against a dummy hash, so timing does not reveal which it was."""
        try:
            with self._slots:
                return self._hasher.verify(password_hash or self._dummy_hash(), password) and (
                    password_hash is not None
                )
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        # Made on first need, not at import: importing the services must stay cheap.
        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = self._hasher.hash(secrets.token_urlsafe(16))
            return self._dummy
