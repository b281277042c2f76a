"""Whether the Prefect server answers, known before a request needs it.

A probe of `/health` every second, so that while the server is gone or stopped the API says so
with a 503 at once instead of holding every client for the Prefect client's minute of retries:
- gone (the connection is refused): down from the first refused probe, about a second;
- stopped (a SIGSTOPped process accepts connections and never answers): down once nothing has
  answered for `SILENT_LIMIT_SECONDS`.

A slow but answering server is not down: requests then take as long as they take. So probes
overlap (one starts every second, each may wait up to the limit) and a late answer counts, and
every answer the API's own Prefect client receives counts too (`heard`): on a loaded machine
the server may answer a probe in over a second while it answers the API's requests all along.
(A CI run on a busy 2-core machine saw more than 2 s without an answer from a server that was
only slow; with the old 2 s limit and 1 s probes it was called down.)

Each probe opens a new connection: behind one port, several Prefect API processes (the cluster
profile) share the socket, and a kept-alive connection would ask the same, possibly busy, process
every time and call the whole server down while the others answer."""

from __future__ import annotations

import asyncio
import time

import httpx

PROBE_EVERY_SECONDS = 1.0
# A server that accepts connections and answers nothing this long is down.
SILENT_LIMIT_SECONDS = 5.0


class PrefectHealth:
    def __init__(self, api_url: str | None) -> None:
        self.api_url = api_url
        self._last_answer = time.monotonic()
        self._refused = False  # the last probe that failed to connect came after the last answer

    @property
    def silent_for(self) -> float:
        return 0.0 if self.api_url is None else time.monotonic() - self._last_answer

    @property
    def down(self) -> bool:
        return self._refused or self.silent_for > SILENT_LIMIT_SECONDS

    async def heard(self, response: httpx.Response) -> None:
        """An httpx response hook for the API's Prefect client: the server answered."""
        self._answered()

    def _answered(self) -> None:
        self._last_answer = time.monotonic()
        self._refused = False

    def reason(self) -> str:
        if self._refused:
            return (
                f"the Prefect server at {self.api_url} refuses connections (not running); "
                "no task is lost, try again once it is back"
            )
        return (
            f"the Prefect server at {self.api_url} has not answered for {self.silent_for:.0f} s; "
            "no task is lost, try again once it is back"
        )

    async def watch(self) -> None:
        """Probe until cancelled (the app's lifespan)."""
        if self.api_url is None:  # an in-process server: it is up while this process is
            return
        fresh_each_time = httpx.Limits(max_keepalive_connections=0)
        probes: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=SILENT_LIMIT_SECONDS, limits=fresh_each_time) as http:
            try:
                while True:
                    probe = asyncio.create_task(self._probe(http))
                    probes.add(probe)
                    probe.add_done_callback(probes.discard)
                    await asyncio.sleep(PROBE_EVERY_SECONDS)
            finally:
                for probe in probes:
                    probe.cancel()
                await asyncio.gather(*probes, return_exceptions=True)

    async def _probe(self, http: httpx.AsyncClient) -> None:
        sent = time.monotonic()
        try:
            answer = await http.get(f"{self.api_url}/health")
        except httpx.ConnectError:  # refused or unreachable: nobody listens
            if self._last_answer < sent:
                self._refused = True
            return
        except httpx.HTTPError:  # a timeout: the silence already counts
            return
        if answer.status_code == 200:
            self._answered()
