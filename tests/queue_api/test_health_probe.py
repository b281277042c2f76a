"""The /queue API's probe of the Prefect server, against real HTTP servers on 127.0.0.1:
- behind one port the cluster profile runs several API processes, so each probe must reach
  whichever one accepts, not always the one process its first connection landed on (which, busy,
  would make the API call the whole server down);
- a server that answers slowly is not down (a busy CI machine made every client's add a 503);
- a server that is gone is down at once, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from queue_api.health import PROBE_EVERY_SECONDS, SILENT_LIMIT_SECONDS, PrefectHealth
from tests.support.ports import free_port


class _Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive allowed: the client decides

    def do_GET(self) -> None:
        self.server.peers.add(self.client_address[1])  # type: ignore[attr-defined]
        time.sleep(self.server.delay)  # type: ignore[attr-defined]
        with contextlib.suppress(BrokenPipeError):  # a probe cancelled as its watch ended
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
    server.delay = 0.0  # type: ignore[attr-defined]
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


def test_a_server_slower_than_a_probe_interval_is_not_called_down(
    prefect_health_server: ThreadingHTTPServer,
) -> None:
    prefect_health_server.delay = 1.5 * PROBE_EVERY_SECONDS  # type: ignore[attr-defined]
    host, port = prefect_health_server.server_address[:2]
    health = PrefectHealth(f"http://{host!s}:{port}")
    called_down = []

    async def watch_past_the_silent_limit() -> None:
        watching = asyncio.create_task(health.watch())
        until = time.monotonic() + SILENT_LIMIT_SECONDS + 3
        while time.monotonic() < until:
            called_down.append(health.down)
            await asyncio.sleep(0.1)
        watching.cancel()

    asyncio.run(watch_past_the_silent_limit())
    probes = len(prefect_health_server.peers)  # type: ignore[attr-defined]
    assert probes >= SILENT_LIMIT_SECONDS + 1, f"only {probes} probes: not long enough to tell"
    assert not any(called_down), "a server answering every probe in 1.5 s was called down"


def test_a_server_that_is_gone_is_down_within_a_probe_or_two_and_says_why() -> None:
    health = PrefectHealth(f"http://127.0.0.1:{free_port()}/api")  # nothing listens there

    async def watch_until_down() -> float:
        started = time.monotonic()
        watching = asyncio.create_task(health.watch())
        while not health.down and time.monotonic() - started < 3 * SILENT_LIMIT_SECONDS:
            await asyncio.sleep(0.05)
        watching.cancel()
        return time.monotonic() - started

    took = asyncio.run(watch_until_down())
    print(f"down after {took:.2f} s")
    assert health.down
    assert "refuses connections" in health.reason()  # not the silent limit: it said why at once
