"""Debian's nginx in front of the app, with the server block that docs/operations.md publishes.

The configuration is read from the document itself, so the deployment the tests exercise and
the one operators copy cannot drift apart. Only what a test machine must change is replaced:
the certificate (made here, self-signed), the ports, and the upstream's port.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.backends import missing_backend
from tests.support.clock import MachineClock
from tests.support.processes import free_port, stop_group, wait_for_port

OPERATIONS = Path(__file__).parents[2] / "docs" / "operations.md"
NGINX = "/usr/sbin/nginx"


def documented_server_config() -> str:
    match = re.search(r"```nginx\n(.*?)```", OPERATIONS.read_text(encoding="utf-8"), re.S)
    assert match, "docs/operations.md has no nginx example"
    return match.group(1)


@dataclass(frozen=True)
class Proxy:
    https_url: str
    http_url: str
    access_log: Path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, valid around the machine's clock, which nginx and the
    browser compare it with."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = MachineClock()()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "fullchain.pem"
    key_path = directory / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def adapted_server_config(
    https_port: int, http_port: int, upstream_port: int, certificate: Path, key: Path
) -> str:
    config = documented_server_config()
    for documented, here in [
        ("server 127.0.0.1:5000;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("/etc/letsencrypt/live/vault.example.lv/fullchain.pem", str(certificate)),
        ("/etc/letsencrypt/live/vault.example.lv/privkey.pem", str(key)),
    ]:
        assert config.count(documented) == 1, f"docs/operations.md changed: {documented!r}"
        config = config.replace(documented, here)
    return config


@contextmanager
def nginx_in_front(upstream_port: int, directory: Path) -> Iterator[Proxy]:
    """nginx in the foreground on two free loopback ports, stopped (with its workers) after."""
    if shutil.which(NGINX) is None:
        missing_backend(f"nginx at {NGINX} (Debian package nginx)")
    directory.mkdir(parents=True, exist_ok=True)
    certificate, key = self_signed_certificate(directory)
    https_port, http_port = free_port(), free_port()
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main_config = directory / "nginx.conf"
    main_config.write_text(
        f"""daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;
events {{ worker_connections 512; }}
http {{
    access_log {directory / "access.log"};
{temp_paths}
{adapted_server_config(https_port, http_port, upstream_port, certificate, key)}
}}
""",
        encoding="utf-8",
    )
    command = [NGINX, "-p", str(directory), "-c", str(main_config)]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, start_new_session=True)
    try:
        wait_for_port(https_port, process)
        yield Proxy(
            https_url=f"https://127.0.0.1:{https_port}",
            http_url=f"http://127.0.0.1:{http_port}",
            access_log=directory / "access.log",
        )
    finally:
        stop_group(process, grace_seconds=10)
