"""Loopback ports and process trees, for tests and benchmarks that start servers."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    """The direct children of ``pid`` (gunicorn's workers, say), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces; the ppid follows it.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def reset_peak_rss(pid: int) -> None:
    """Lower the process's VmHWM to its current resident size (Linux ``clear_refs`` 5), so
    the next reading covers only what happens from now on."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _status_mib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc status")


def resident_mib(pid: int) -> float:
    """The process's resident set now (VmRSS), in MiB."""
    return _status_mib(pid, "VmRSS")


def peak_rss_mib(pid: int) -> float:
    """The kernel's high-water mark of the process's resident set (VmHWM), in MiB."""
    return _status_mib(pid, "VmHWM")


def run_threads(work: Callable[[], None], count: int) -> None:
    """Run ``work`` on ``count`` threads at once and wait until all of them have finished."""
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure_in_fresh_interpreter(script: str, *arguments: str, timeout: float) -> float:
    """Run ``script`` in a new Python process, whose memory and process-wide settings no
    earlier test has touched, and return the number it prints."""
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    return float(result.stdout.strip())


def stop_group(process: subprocess.Popen[bytes], grace_seconds: float = 30) -> None:
    """SIGTERM to the process's group (a gunicorn master and its workers), SIGKILL after
    ``grace_seconds``."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_until_healthy(process: subprocess.Popen[bytes], port: int, seconds: float = 60) -> None:
    """Until ``GET /healthz`` on 127.0.0.1:``port`` answers at all (any status)."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode} before answering")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                connection.request("GET", "/healthz")
                connection.getresponse().read()
                return
            finally:
                connection.close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextmanager
def serving(
    command: list[str], env: dict[str, str], port: int
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server in its own process group until the block ends, once it answers."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_healthy(process, port)
        yield process
    finally:
        stop_group(process)
