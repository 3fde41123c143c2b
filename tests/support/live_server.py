"""The app on a real loopback HTTP server, for clients that speak HTTP themselves
(the browser, the tus client). Runs Werkzeug's threaded server in a background thread,
on the test's own database and store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server


@dataclass(frozen=True)
class LiveServer:
    url: str
    server: BaseWSGIServer


@contextmanager
def serving_in_thread(app: Flask) -> Iterator[LiveServer]:
    """The app on Werkzeug's threaded server on a free loopback port until the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url=f"http://127.0.0.1:{server.server_port}", server=server)
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def live_server(app: Flask) -> Iterator[LiveServer]:
    with serving_in_thread(app) as running:
        yield running
