"""P1, P2, P5 and P4's stream half, and P5's capacity: streaming through the app under
gunicorn, on loopback.

The app runs as `recvault serve` does (gunicorn gthread, 2 workers, the same threads and
timeouts), on SQLite and the local directory store in a temporary directory on disk. A
1 GiB recording is encrypted into the store; the same plaintext is kept beside it as a file.

P1  Throughput of a full GET of the recording through the app (decrypting, policy checked,
    the range recorded) against Flask's `send_file` of the plaintext file, served by a tiny
    Flask app of its own under the same gunicorn settings, from the same disk. Best of the
    rounds of each side; target >= 0.8.
P2  Time to the first body byte of a 1 MiB range at 99 % of the recording against one at
    offset 0, through the app; median of the rounds of each side; target <= 1.5.
P5  N viewers (default 32), each signed in from its own loopback address (the sign-in rate
    limit is per address) with its own view, reading an open range at 4 Mbit/s and seeking
    to a random offset every 20 s, for 60 s; every request's time to first byte is kept.
    The viewers' first requests are spread evenly over one seek period, as people do not
    press play at the same millisecond; --burst makes them all start and seek together.
    Target: no errors, p95 time to first byte <= 200 ms.

P4  (the stream half) The resident high-water mark (VmHWM) of the app's workers during the
    P1 rounds, each a full GET of the recording; target <= 150 MiB. The mark is reset after
    the viewers have signed in, since a sign-in's Argon2id hash alone takes 64 MiB for a
    moment.

Capacity (--capacity; P1, P2 and P4 are not run then)
    N viewers (default 256) as in P5, and at the same time one abusive person (one account,
    one view, one address) holding --abusive-connections (default 200) stream requests for
    open ranges: each connection asks again after the Retry-After of a 429, and one that is
    answered 206 is kept open to the end without reading a byte, so its server thread stays
    blocked in a socket write. The connections start together and so keep in step;
    --abuse-spread starts each at a random moment and varies its waits. Meanwhile someone
    signs in every --sign-in-every seconds (default 1), each from an address of their own;
    the POST /login round trip, Argon2id hash included, is timed, and so is the GET /healthz
    each of them asks first, as a monitor would. Targets: the viewers see no errors and p95
    time to first byte <= 200 ms; sign-in and health check p95 <= 1 s; the abusive person is
    refused (429) beyond the fairness caps.

--workers and --threads set the server's processes and threads per process (by default
`recvault serve`'s), for comparing settings; the reference server of P1 gets the same.

Run: .venv/bin/python -m bench.stream [--size-mib 1024] [--viewers 32] [--seconds 60]
     .venv/bin/python -m bench.stream --capacity --size-mib 128 --seconds 40 [--viewers 256]

The last line printed is JSON: {"P1": r, "P1_from_disk": r, "P2": r, "P4_stream": MiB,
"P5": {"errors": n, "p95_ttfb_ms": ms}}; with --capacity, {"capacity": {...}} with the
viewers' errors and time to first byte, the sign-ins' and health checks' times and the
abusive person's answers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, send_file

from bench import seeding
from storage_backends.base import Part
from tests.support.processes import children_of, free_port, peak_rss_mib, reset_peak_rss, serving
from tests.support.recording_support import keep_year_open
from vault import crypto
from vault.app import build_runtime, initialise_instance
from vault.cli import SERVE_THREADS, SERVE_WORKERS, GunicornApplication, gunicorn_options
from vault.models import Recording
from vault.services import account_admin, accounts, calendar, recordings
from vault.services.actors import Actor
from vault.services.runtime import Runtime
from vault.settings import Settings

MIB = 1 << 20
PASSWORD = "bench password for the stream benchmark"
PART_SIZE = 64 * MIB
READ_PIECE = 4 * MIB


# -- servers ---------------------------------------------------------------------------------


def send_file_app(path: Path) -> Flask:
    """The reference: Flask's send_file of the plaintext, nothing else."""
    reference = Flask("bench_send_file")

    @reference.get("/file")
    def serve_file() -> Any:
        return send_file(path, mimetype="video/mp4", conditional=True)

    @reference.get("/healthz")
    def healthz() -> str:
        return "ok"

    return reference


def serve_send_file(path: Path, port: int, workers: int, threads: int) -> None:
    """The reference under the server settings `recvault serve` uses."""
    options = gunicorn_options(f"127.0.0.1:{port}", workers, threads)
    options["loglevel"] = "warning"
    GunicornApplication(lambda: send_file_app(path), options).run()


# -- the instance ----------------------------------------------------------------------------


def make_plaintext(path: Path, size: int) -> str:
    """A file of random-looking bytes (a repeated random block), and its SHA-256."""
    block = os.urandom(8 * MIB)
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            handle.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def store_recording(runtime: Runtime, recording_id: uuid.UUID, path: Path, sha256: str) -> None:
    """Encrypt the file into the store as a multipart write, as a finished upload leaves it."""
    size = path.stat().st_size
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        assert recording is not None
        data_key, wrapped = runtime.keyring.new_data_key(
            session, recording.id, recording.school_year
        )
        key = f"recordings/{recording.school_year}/{recording.id}"
        tags = calendar.object_tags(recording.school_year, recording.retain_until)
        encryptor = crypto.Encryptor.start(data_key, recording.id, recording.school_year, size)
        upload = runtime.store.start_multipart(key, tags)
        parts: list[Part] = []
        pending = bytearray(encryptor.header)
        with path.open("rb") as handle:
            while piece := handle.read(8 * MIB):
                pending += encryptor.feed(piece)
                if len(pending) >= PART_SIZE:
                    parts.append(
                        runtime.store.put_part(key, upload, len(parts) + 1, bytes(pending))
                    )
                    pending.clear()
        pending += encryptor.finish()
        parts.append(runtime.store.put_part(key, upload, len(parts) + 1, bytes(pending)))
        runtime.store.complete_multipart(key, upload, parts)
        recording.object_key = key
        recording.wrapped_data_key = wrapped
        recording.size_bytes = size
        recording.content_type = "video/mp4"
        recording.plaintext_sha256 = sha256
        recording.status = "available"
        recording.available_at = datetime.now(UTC)


def seed(
    runtime: Runtime, grantees: list[str], others: list[str], plaintext: Path, sha256: str
) -> uuid.UUID:
    """The recording, the ``grantees`` who may watch it under an order, and ``others``
    (staff accounts without a grant)."""
    now = datetime.now(UTC)
    zone = runtime.settings.zone
    today = now.astimezone(zone).date()
    year = calendar.school_year_of(today)
    keep_year_open(runtime)

    def person(username: str, role: str) -> None:
        account_admin.add_account(
            runtime,
            username=username,
            full_name=username.title(),
            email=None,
            roles=[role],
            password=PASSWORD,
            now=now,
        )

    person("teacher", "teacher")
    person("director", "director")
    for username in [*grantees, *others]:
        person(username, "staff")
    with runtime.sessions() as session, session.begin():
        owner = accounts.find_user(session, "teacher")
        assert owner is not None
        lesson = max(calendar.year_bounds(year)[0], today - timedelta(days=1))
        recording = recordings.register(
            session,
            Actor(user_id=owner.id),
            owner,
            recordings.parse_registration(
                {
                    "title": "Benchmark lesson",
                    "subject": "Physics",
                    "class_group": "10.a",
                    "lesson_date": lesson.isoformat(),
                    "platform": "zoom",
                    "purpose": "quality_safety",
                    "aim": "Measure streaming.",
                    "visible": "teacher_only",
                    "subjects_informed": {"method": "e-mail", "at": lesson.isoformat()},
                    "third_party_warning": True,
                    "device": "school",
                }
            ),
            now,
            zone,
        )
        recording_id = recording.id
    store_recording(runtime, recording_id, plaintext, sha256)
    seeding.issue_order(
        runtime, "director", grantees, [recording_id], "B-1", "Streaming benchmark", days=7
    )
    return recording_id


# -- clients ---------------------------------------------------------------------------------

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


def viewer_address(index: int) -> str:
    """Viewer ``index``'s own loopback address (127.0.0.10 onwards, 200 to a /24)."""
    return f"127.0.{index // 200}.{10 + index % 200}"


def viewer_name(index: int) -> str:
    return f"viewer{index:02d}"


@dataclass
class Viewer:
    """A browser-like client from its own loopback address, with its own session and view."""

    port: int
    address: str
    cookies: dict[str, str] = field(default_factory=dict)
    csrf: str = ""
    stream_path: str = ""
    heartbeat_path: str = ""

    def connect(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout, source_address=(self.address, 0)
        )

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        headers.update(extra or {})
        return headers

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        connection = self.connect()
        try:
            connection.request(method, path, body=body, headers=self._headers(headers))
            response = connection.getresponse()
            data = response.read()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    cookie = value.split(";", 1)[0]
                    key, _, content = cookie.partition("=")
                    self.cookies[key.strip()] = content.strip()
            return response.status, data
        finally:
            connection.close()

    def sign_in(self, username: str) -> float:
        """Sign in through the form; returns the seconds of the POST /login round trip (the
        password's Argon2id hash included)."""
        _, page = self.call("GET", "/login")
        token = CSRF_META.search(page.decode())
        assert token is not None
        form = urlencode({"username": username, "password": PASSWORD, "csrf_token": token[1]})
        started = time.perf_counter()
        status, _ = self.call(
            "POST",
            "/login",
            form.encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        elapsed = time.perf_counter() - started
        if status != 302:
            raise RuntimeError(f"sign-in of {username} answered {status}")
        _, account = self.call("GET", "/account")
        token = CSRF_META.search(account.decode())
        assert token is not None
        self.csrf = token[1]
        return elapsed

    def start_view(self, recording_id: uuid.UUID) -> None:
        status, body = self.call(
            "POST", f"/api/v1/recordings/{recording_id}/views", b"", {"X-CSRF-Token": self.csrf}
        )
        if status != 201:
            raise RuntimeError(f"starting a view answered {status}: {body[:200]!r}")
        view = json.loads(body)
        self.stream_path = view["stream_url"]
        self.heartbeat_path = view["heartbeat_url"]

    def heartbeat(self) -> int:
        status, _ = self.call(
            "POST",
            self.heartbeat_path,
            b'{"played": []}',
            {"X-CSRF-Token": self.csrf, "Content-Type": "application/json"},
        )
        return status


def first_byte(viewer: Viewer, first: int, length: int) -> float:
    """Time to the first body byte of one closed range; the rest is read and checked."""
    connection = viewer.connect()
    try:
        headers = viewer._headers({"Range": f"bytes={first}-{first + length - 1}"})
        started = time.perf_counter()
        connection.request("GET", viewer.stream_path, headers=headers)
        response = connection.getresponse()
        head = response.read(1)
        elapsed = time.perf_counter() - started
        rest = response.read()
        if response.status != 206 or len(head) + len(rest) != length:
            raise RuntimeError(f"range answered {response.status} with {len(rest) + 1} bytes")
        return elapsed
    finally:
        connection.close()


def full_read(port: int, path: str, headers: dict[str, str], size: int) -> float:
    """Seconds to read the whole body of a GET."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        received = 0
        while piece := response.read(READ_PIECE):
            received += len(piece)
        elapsed = time.perf_counter() - started
        if response.status != 200 or received != size:
            raise RuntimeError(f"GET {path} answered {response.status} with {received} bytes")
        return elapsed
    finally:
        connection.close()


# -- P5 ---------------------------------------------------------------------------------------


@dataclass
class Tally:
    ttfb: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes_read: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def seek_limit(size: int, rate: float, seek_every: float) -> int:
    """Where a seek may land at most: a whole seek period (a quarter more for slack) can
    still be played from there, since a body that ends at the end of the recording would
    look like one cut short."""
    return size - max(8 * MIB, int(rate * seek_every * 1.25))


def watch(
    viewer: Viewer,
    size: int,
    seconds: float,
    seek_every: float,
    rate: float,
    phase: float,
    tally: Tally,
) -> None:
    """One viewer: an open range read at ``rate`` bytes/s, a seek every ``seek_every`` s,
    for ``seconds`` from its first request, which waits ``phase`` seconds."""
    rng = random.Random(viewer.address)
    last_first = seek_limit(size, rate, seek_every)
    time.sleep(phase)
    stop_at = time.monotonic() + seconds
    piece = 64 * 1024
    while time.monotonic() < stop_at:
        first = rng.randrange(0, last_first)
        segment_end = min(stop_at, time.monotonic() + seek_every)
        connection = viewer.connect()
        try:
            started = time.perf_counter()
            connection.request(
                "GET", viewer.stream_path, headers=viewer._headers({"Range": f"bytes={first}-"})
            )
            response = connection.getresponse()
            data = response.read(1)
            ttfb = time.perf_counter() - started
            if response.status != 206 or not data:
                raise RuntimeError(f"stream answered {response.status}")
            with tally.lock:
                tally.ttfb.append(ttfb)
            read = len(data)
            paced_from = time.monotonic()
            while time.monotonic() < segment_end:
                chunk = response.read(piece)
                if not chunk:
                    raise RuntimeError("the body ended early")
                read += len(chunk)
                ahead = read / rate - (time.monotonic() - paced_from)
                if ahead > 0:
                    time.sleep(min(ahead, max(0.0, segment_end - time.monotonic())))
            with tally.lock:
                tally.bytes_read += read
        except Exception as exc:  # every failure counts, whatever its kind
            with tally.lock:
                tally.errors.append(f"{viewer.address}: {exc!r}")
        finally:
            connection.close()  # a seek: the player drops the connection and asks anew
        if viewer.heartbeat() != 200:
            with tally.lock:
                tally.errors.append(f"{viewer.address}: heartbeat refused")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


# -- capacity: an abusive person and sign-ins beside the viewers ------------------------------


@dataclass
class AbuseTally:
    """The answers to the abusive person's requests."""

    held: int = 0  # 206: kept open, never read
    refused: int = 0  # 429
    refused_seconds: list[float] = field(default_factory=list)  # each 429's round trip
    other: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> int:
        return self.held + self.refused + len(self.other) + len(self.errors)


def abuse(
    user: Viewer, size: int, stop_at: float, seed_value: int, spread: bool, tally: AbuseTally
) -> None:
    """One of the abusive person's connections until ``stop_at``: an open range on their own
    view; a 206 is held without reading a byte, a 429 is asked again after its Retry-After,
    a failure after a second. All connections start together and keep in step; with
    ``spread``, each starts at a random moment of the first five seconds and waits 0.5 to
    1.5 times the Retry-After."""
    rng = random.Random(seed_value)
    if spread:
        time.sleep(rng.uniform(0, 5))
    while time.monotonic() < stop_at:
        pause = 1.0
        connection = user.connect()
        try:
            first = rng.randrange(0, size - MIB)
            started = time.perf_counter()
            connection.request(
                "GET", user.stream_path, headers=user._headers({"Range": f"bytes={first}-"})
            )
            response = connection.getresponse()
            if response.status == 206:
                with tally.lock:
                    tally.held += 1
                # The server's thread writes until the socket buffers are full, then blocks.
                time.sleep(max(0.0, stop_at - time.monotonic()))
                continue
            response.read()
            elapsed = time.perf_counter() - started
            with tally.lock:
                if response.status == 429:
                    tally.refused += 1
                    tally.refused_seconds.append(elapsed)
                else:
                    tally.other.append(response.status)
            pause = float(response.getheader("Retry-After") or 5)
            if spread:
                pause *= rng.uniform(0.5, 1.5)
        except Exception as exc:  # every failure counts, whatever its kind
            with tally.lock:
                tally.errors.append(repr(exc))
        finally:
            connection.close()
        time.sleep(max(0.0, min(pause, stop_at - time.monotonic())))


@dataclass
class SignInTally:
    seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The health check asked just before each sign-in, as a monitor would.
    health_seconds: list[float] = field(default_factory=list)
    health_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sign_in_address(index: int) -> str:
    """The ``index``th sign-in's own loopback address (the sign-in rate limit is per
    address)."""
    return f"127.1.{index // 250}.{1 + index % 250}"


def health_once(viewer: Viewer, tally: SignInTally) -> None:
    started = time.perf_counter()
    try:
        status, _ = viewer.call("GET", "/healthz")
    except Exception as exc:  # every failure counts, whatever its kind
        with tally.lock:
            tally.health_errors.append(repr(exc))
        return
    with tally.lock:
        if status == 200:
            tally.health_seconds.append(time.perf_counter() - started)
        else:
            tally.health_errors.append(f"GET /healthz answered {status}")


def sign_in_once(port: int, index: int, username: str, tally: SignInTally) -> None:
    viewer = Viewer(port, sign_in_address(index))
    health_once(viewer, tally)
    try:
        seconds = viewer.sign_in(username)
        with tally.lock:
            tally.seconds.append(seconds)
    except Exception as exc:  # every failure counts, whatever its kind
        with tally.lock:
            tally.errors.append(repr(exc))


def sign_ins(
    port: int, usernames: list[str], every: float, stop_at: float, tally: SignInTally
) -> None:
    """A sign-in every ``every`` seconds until ``stop_at``, each on a thread of its own, so
    a slow one does not hold back the next."""
    started = time.monotonic()
    threads: list[threading.Thread] = []
    index = 0
    while (due := started + index * every) < stop_at:
        time.sleep(max(0.0, due - time.monotonic()))
        thread = threading.Thread(
            target=sign_in_once,
            args=(port, index, usernames[index % len(usernames)], tally),
            name=f"sign-in-{index}",
        )
        thread.start()
        threads.append(thread)
        index += 1
    for thread in threads:
        thread.join()


def spread_ms(values: list[float]) -> dict[str, float | None]:
    """Median, p95 and maximum of ``values`` (seconds), in milliseconds; None without any."""
    if not values:
        return {"median": None, "p95": None, "max": None}
    return {
        "median": round(statistics.median(values) * 1000, 1),
        "p95": round(percentile(values, 0.95) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


# -- main ------------------------------------------------------------------------------------


def evict(path: Path) -> None:
    """Drop this one file's pages from the page cache (other processes are unaffected)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def filesystem_of(path: Path) -> str:
    best, kind = "", "unknown"
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            _, mount_point, fs_type, *_ = line.split()
            if str(path).startswith(mount_point) and len(mount_point) > len(best):
                best, kind = mount_point, fs_type
    return kind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P1/P2/P5: streaming under gunicorn")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--viewers", type=int, default=None, help="P5 viewers (default 32; 256 with --capacity)"
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seek-every", type=float, default=20.0)
    parser.add_argument("--rate-mbit", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="P1 rounds per side")
    parser.add_argument(
        "--burst", action="store_true", help="P5: all viewers start and seek at the same moment"
    )
    parser.add_argument("--p2-rounds", type=int, default=25)
    parser.add_argument(
        "--workers",
        type=int,
        default=SERVE_WORKERS,
        help=f"server processes (default {SERVE_WORKERS}, as `recvault serve`)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=SERVE_THREADS,
        help=f"server threads per worker (default {SERVE_THREADS}, as `recvault serve`)",
    )
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="the viewers beside an abusive person and sign-ins, instead of P1/P2/P5",
    )
    parser.add_argument(
        "--abusive-connections",
        type=int,
        default=200,
        help="capacity: the abusive person's concurrent stream requests",
    )
    parser.add_argument(
        "--abuse-spread",
        action="store_true",
        help="capacity: the abusive connections start and retry at random moments, not together",
    )
    parser.add_argument(
        "--sign-in-every", type=float, default=1.0, help="capacity: seconds between sign-ins"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument("--serve-send-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_send_file is not None:
        serve_send_file(args.serve_send_file, args.port, args.workers, args.threads)
        return 0
    if args.viewers is None:
        args.viewers = 256 if args.capacity else 32

    root = Path(tempfile.mkdtemp(prefix="vault-bench-stream-", dir=args.dir))
    try:
        prepared = prepare(args, root)
        return run_capacity(args, prepared) if args.capacity else run(args, prepared)
    finally:
        shutil.rmtree(root, ignore_errors=True)


ABUSER = "abuser"
SIGNERS = [f"signer{index}" for index in range(5)]


@dataclass
class Prepared:
    """An instance with the recording stored, ready to be served."""

    env: dict[str, str]
    instance: Path
    plaintext: Path
    size: int
    recording_id: uuid.UUID
    object_key: str


def prepare(args: argparse.Namespace, root: Path) -> Prepared:
    size = args.size_mib * MIB
    instance = root / "instance"
    env = {
        **os.environ,
        "VAULT_INSTANCE_DIR": str(instance),
        "VAULT_SCHOOL_NAME": "Benchmark School",
    }
    settings = Settings.from_env(env)
    initialise_instance(settings)
    plaintext = root / "plaintext.mp4"
    print(f"files in {root} ({filesystem_of(root)}); {args.size_mib} MiB recording")
    started = time.perf_counter()
    sha256 = make_plaintext(plaintext, size)
    grantees = [viewer_name(index) for index in range(args.viewers)]
    others: list[str] = []
    if args.capacity:
        grantees.append(ABUSER)
        others = SIGNERS
    runtime = build_runtime(settings)
    try:
        recording_id = seed(runtime, grantees, others, plaintext, sha256)
        with runtime.sessions() as session:
            stored = session.get(Recording, recording_id)
            assert stored is not None and stored.object_key is not None
            object_key = stored.object_key
    finally:
        runtime.close()
    print(f"prepared in {time.perf_counter() - started:.1f} s")
    return Prepared(env, instance, plaintext, size, recording_id, object_key)


def app_command(port: int, args: argparse.Namespace) -> list[str]:
    """`recvault serve` as the benchmark runs it."""
    serve = [sys.executable, "-m", "vault.cli", "serve", "--port", str(port)]
    return [*serve, "--workers", str(args.workers), "--threads", str(args.threads)]


def signed_in_viewers(
    port: int, count: int, recording_id: uuid.UUID, address: Callable[[int], str]
) -> list[Viewer]:
    """``count`` viewers, each signed in from its own address with a view of its own (four
    at a time: each sign-in hashes a password)."""
    viewers = [Viewer(port, address(index)) for index in range(count)]

    def ready(index: int) -> None:
        viewers[index].sign_in(viewer_name(index))
        viewers[index].start_view(recording_id)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(ready, range(count)))
    return viewers


def start_watching(
    args: argparse.Namespace, viewers: list[Viewer], size: int, tally: Tally
) -> tuple[list[threading.Thread], list[float]]:
    """P5's viewers, started; their first requests are spread evenly over one seek period
    (with --burst, all start together)."""
    spread = 0.0 if args.burst else args.seek_every / len(viewers)
    phases = [index * spread for index in range(len(viewers))]
    rate = args.rate_mbit * 1_000_000 / 8
    if seek_limit(size, rate, args.seek_every) <= 0:
        raise SystemExit("the recording is too short for a seek period at this rate")
    threads = [
        threading.Thread(
            target=watch,
            args=(viewer, size, args.seconds, args.seek_every, rate, phase, tally),
            name=f"viewer-{viewer.address}",
        )
        for viewer, phase in zip(viewers, phases, strict=True)
    ]
    for thread in threads:
        thread.start()
    return threads, phases


def run(args: argparse.Namespace, prepared: Prepared) -> int:
    size, recording_id = prepared.size, prepared.recording_id
    env, plaintext = prepared.env, prepared.plaintext
    app_port, file_port = free_port(), free_port()
    file_command = [sys.executable, "-m", "bench.stream", "--serve-send-file", str(plaintext)]
    file_command += ["--port", str(file_port), "--workers", str(args.workers)]
    file_command += ["--threads", str(args.threads)]
    with (
        serving(app_command(app_port, args), env, app_port) as app_master,
        serving(file_command, env, file_port),
    ):
        viewers = signed_in_viewers(app_port, args.viewers, recording_id, viewer_address)
        first = viewers[0]

        # P1: whole-file throughput, app vs send_file, interleaved rounds; first with both
        # files in the page cache (the CPU-bound comparison), then with both evicted before
        # each read (each side reads its file from the disk).
        ciphertext = prepared.instance / "store" / "objects" / prepared.object_key
        # Each sign-in above hashed a password with Argon2id (64 MiB of memory): the stream's
        # own peak is measured from here on.
        workers = children_of(app_master.pid)
        for worker in workers:
            reset_peak_rss(worker)
        app_times, file_times = [], []
        app_cold, file_cold = [], []
        for _ in range(args.rounds):
            app_times.append(full_read(app_port, first.stream_path, first._headers(), size))
            file_times.append(full_read(file_port, "/file", {}, size))
        for _ in range(args.rounds):
            evict(ciphertext)
            app_cold.append(full_read(app_port, first.stream_path, first._headers(), size))
            evict(plaintext)
            file_cold.append(full_read(file_port, "/file", {}, size))
        # P4's stream half: the workers' resident high-water mark after the full streams.
        stream_rss = max(peak_rss_mib(worker) for worker in workers)
        app_rate = args.size_mib / min(app_times)
        file_rate = args.size_mib / min(file_times)
        p1 = app_rate / file_rate
        p1_cold = (args.size_mib / min(app_cold)) / (args.size_mib / min(file_cold))
        print(f"server: {args.workers} workers x {args.threads} threads")
        print(f"P1  app {app_rate:8.1f} MiB/s   send_file {file_rate:8.1f} MiB/s   ratio {p1:.3f}")
        print(f"    app rounds s: {[round(t, 2) for t in app_times]}")
        print(f"    send_file rounds s: {[round(t, 2) for t in file_times]}")
        print(
            f"P1 from the disk (page cache evicted): app {args.size_mib / min(app_cold):8.1f} "
            f"MiB/s   send_file {args.size_mib / min(file_cold):8.1f} MiB/s   "
            f"ratio {p1_cold:.3f}"
        )
        print(f"    app rounds s: {[round(t, 2) for t in app_cold]}")
        print(f"    send_file rounds s: {[round(t, 2) for t in file_cold]}")
        print(
            f"P4  peak RSS of the app's workers after {2 * args.rounds} full streams of "
            f"{args.size_mib} MiB: {stream_rss:.1f} MiB   target <= 150 MiB"
        )

        # P2: time to first byte of 1 MiB at 99 % vs at 0, interleaved.
        far = int(size * 0.99)
        near_ttfb, far_ttfb = [], []
        far = min(far, size - MIB)
        first_byte(first, 0, MIB)  # warm the connection path once
        for _ in range(args.p2_rounds):
            near_ttfb.append(first_byte(first, 0, MIB))
            far_ttfb.append(first_byte(first, far, MIB))
        near, far_median = statistics.median(near_ttfb), statistics.median(far_ttfb)
        p2 = far_median / near
        print(
            f"P2  TTFB at 0: {near * 1000:.2f} ms   at 99 %: {far_median * 1000:.2f} ms"
            f"   ratio {p2:.3f}   (medians of {args.p2_rounds})"
        )

        # P5: concurrent viewers reading at a player's pace and seeking. People do not press
        # play at the same millisecond: the viewers' first requests are spread evenly over
        # one seek period (with --burst, all start together).
        tally = Tally()
        started = time.perf_counter()
        threads, phases = start_watching(args, viewers, size, tally)
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started - phases[-1]
        p95 = percentile(tally.ttfb, 0.95) * 1000 if tally.ttfb else float("nan")
        print(
            f"P5  {args.viewers} viewers x {args.seconds:.0f} s at {args.rate_mbit} Mbit/s, "
            f"seek every {args.seek_every:.0f} s"
            f"{' (all at once)' if args.burst else ', phases spread'}: {len(tally.ttfb)} requests, "
            f"{len(tally.errors)} errors, TTFB median "
            f"{statistics.median(tally.ttfb) * 1000:.1f} ms, p95 {p95:.1f} ms, "
            f"max {max(tally.ttfb) * 1000:.1f} ms; "
            f"{tally.bytes_read * 8 / elapsed / 1e6:.1f} Mbit/s in total"
        )
        for error in tally.errors[:10]:
            print(f"    error: {error}")

    print(
        json.dumps(
            {
                "P1": round(p1, 3),
                "P1_from_disk": round(p1_cold, 3),
                "P2": round(p2, 3),
                "P4_stream": round(stream_rss, 1),
                "P5": {"errors": len(tally.errors), "p95_ttfb_ms": round(p95, 1)},
            }
        )
    )
    return 0


def at_most(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def run_capacity(args: argparse.Namespace, prepared: Prepared) -> int:
    """The viewers of P5 beside an abusive person and a stream of sign-ins."""
    size, recording_id = prepared.size, prepared.recording_id
    app_port = free_port()
    with serving(app_command(app_port, args), prepared.env, app_port) as app_master:
        started = time.perf_counter()
        viewers = signed_in_viewers(app_port, args.viewers, recording_id, viewer_address)
        abuser = Viewer(app_port, "127.2.0.1")
        abuser.sign_in(ABUSER)
        abuser.start_view(recording_id)
        print(
            f"{args.viewers} viewers and the abusive person signed in in "
            f"{time.perf_counter() - started:.1f} s"
        )
        workers = children_of(app_master.pid)
        for worker in workers:
            reset_peak_rss(worker)

        tally, abuse_tally, sign_in_tally = Tally(), AbuseTally(), SignInTally()
        started = time.perf_counter()
        threads, phases = start_watching(args, viewers, size, tally)
        stop_at = time.monotonic() + phases[-1] + args.seconds
        others = [
            threading.Thread(
                target=abuse,
                args=(abuser, size, stop_at, index, args.abuse_spread, abuse_tally),
                name=f"abuse-{index}",
            )
            for index in range(args.abusive_connections)
        ]
        others.append(
            threading.Thread(
                target=sign_ins,
                args=(app_port, SIGNERS, args.sign_in_every, stop_at, sign_in_tally),
                name="sign-ins",
            )
        )
        for thread in others:
            thread.start()
        for thread in [*threads, *others]:
            thread.join()
        elapsed = time.perf_counter() - started - phases[-1]
        peak_rss = max(peak_rss_mib(worker) for worker in workers)

    ttfb = spread_ms(tally.ttfb)
    sign_in = spread_ms(sign_in_tally.seconds)
    health = spread_ms(sign_in_tally.health_seconds)
    refused = spread_ms(abuse_tally.refused_seconds)
    print(
        f"capacity, {args.workers} workers x {args.threads} threads: {args.viewers} viewers "
        f"x {args.seconds:.0f} s at {args.rate_mbit} Mbit/s, seek every {args.seek_every:.0f} s"
        f"{' (all at once)' if args.burst else ', phases spread'}; the abusive person with "
        f"{args.abusive_connections} connections"
        f"{' (spread)' if args.abuse_spread else ' (in step)'}; "
        f"a sign-in every {args.sign_in_every:g} s"
    )
    print(
        f"    viewers: {len(tally.ttfb)} requests, {len(tally.errors)} errors, TTFB median "
        f"{ttfb['median']} ms, p95 {ttfb['p95']} ms, max {ttfb['max']} ms; "
        f"{tally.bytes_read * 8 / elapsed / 1e6:.1f} Mbit/s in total"
    )
    print(
        f"    sign-ins: {len(sign_in_tally.seconds)} done, {len(sign_in_tally.errors)} errors, "
        f"POST /login median {sign_in['median']} ms, p95 {sign_in['p95']} ms, "
        f"max {sign_in['max']} ms"
    )
    print(
        f"    health checks: {len(sign_in_tally.health_seconds)} answered 200, "
        f"{len(sign_in_tally.health_errors)} errors, GET /healthz median {health['median']} ms, "
        f"p95 {health['p95']} ms, max {health['max']} ms"
    )
    print(
        f"    abusive person: {abuse_tally.requests} requests, {abuse_tally.held} answered 206 "
        f"and held, {abuse_tally.refused} refused 429, {len(abuse_tally.other)} other answers "
        f"{sorted(set(abuse_tally.other))}, {len(abuse_tally.errors)} failures; a 429 took "
        f"median {refused['median']} ms, p95 {refused['p95']} ms, max {refused['max']} ms"
    )
    print(f"    peak RSS of a worker during the run: {peak_rss:.1f} MiB")
    for error in tally.errors[:10]:
        print(f"    viewer error: {error}")
    for error in sign_in_tally.errors[:5]:
        print(f"    sign-in error: {error}")
    for error in sign_in_tally.health_errors[:5]:
        print(f"    health check error: {error}")
    for error in abuse_tally.errors[:5]:
        print(f"    abusive request failure: {error}")
    met = (
        not tally.errors
        and at_most(ttfb["p95"], 200)
        and not sign_in_tally.errors
        and at_most(sign_in["p95"], 1000)
        and not sign_in_tally.health_errors
        and at_most(health["p95"], 1000)
        and abuse_tally.refused > 0
    )
    print(
        "targets (viewers 0 errors and p95 TTFB <= 200 ms, sign-in and health check p95 <= 1 s, "
        f"the abusive person refused 429): {'met' if met else 'NOT met'}"
    )
    print(
        json.dumps(
            {
                "capacity": {
                    "workers": args.workers,
                    "threads": args.threads,
                    "viewers": args.viewers,
                    "errors": len(tally.errors),
                    "ttfb_ms": ttfb,
                    "sign_ins": len(sign_in_tally.seconds),
                    "sign_in_errors": len(sign_in_tally.errors),
                    "sign_in_ms": sign_in,
                    "health_checks": len(sign_in_tally.health_seconds),
                    "health_errors": len(sign_in_tally.health_errors),
                    "health_ms": health,
                    "abusive": {
                        "requests": abuse_tally.requests,
                        "held": abuse_tally.held,
                        "refused_429": abuse_tally.refused,
                        "refused_ms": refused,
                        "other": len(abuse_tally.other),
                        "failures": len(abuse_tally.errors),
                    },
                    "peak_rss_mib": round(peak_rss, 1),
                }
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
