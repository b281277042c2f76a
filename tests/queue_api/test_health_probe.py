"""The /queue API's probe of the Prefect server: behind one port the cluster profile runs several
API processes, so each probe must reach whichever one accepts, not always the one process its
first connection landed on (which, busy, would make the API call the whole server down)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from queue_api.health import PROBE_EVERY_SECONDS, PrefectHealth


class _Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive allowed: the client decides

    def do_GET(self) -> None:
        self.server.peers.add(self.client_address[1])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prefect_health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    server.peers = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_every_probe_opens_a_connection_of_its_own(
    prefect_health_server: ThreadingHTTPServer,
) -> None:
    host, port = prefect_health_server.server_address[:2]
    health = PrefectHealth(f"http://{host!s}:{port}")

    async def probe_a_while() -> None:
        watching = asyncio.create_task(health.watch())
        await asyncio.sleep(3.5 * PROBE_EVERY_SECONDS)
        watching.cancel()

    asyncio.run(probe_a_while())
    peers = prefect_health_server.peers  # type: ignore[attr-defined]
    assert len(peers) >= 3, f"{len(peers)} connection(s) for about 4 probes: one was kept alive"
    assert not health.down
