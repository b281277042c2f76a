"""Whether the Prefect server answers, known before a request needs it.

A probe of `/health` every second, with a short timeout, so that while the server is down (or
stopped: a SIGSTOPped process accepts connections and never answers) the API says so with a 503
within about two seconds instead of holding every client for the Prefect client's minute of
retries. A slow but answering server is not down: requests then take as long as they take.

Each probe opens a new connection: behind one port, several Prefect API processes (the cluster
profile) share the socket, and a kept-alive connection would ask the same, possibly busy, process
every time and call the whole server down while the others answer."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

PROBE_EVERY_SECONDS = 1.0
DOWN_AFTER_SECONDS = 2.0  # without an answer this long, the server counts as down


class PrefectHealth:
    def __init__(self, api_url: str | None) -> None:
        self.api_url = api_url
        self._last_answer = time.monotonic()

    @property
    def silent_for(self) -> float:
        return 0.0 if self.api_url is None else time.monotonic() - self._last_answer

    @property
    def down(self) -> bool:
        return self.silent_for > DOWN_AFTER_SECONDS

    def reason(self) -> str:
        return (
            f"the Prefect server at {self.api_url} has not answered for {self.silent_for:.0f} s; "
            "no task is lost, try again once it is back"
        )

    async def watch(self) -> None:
        """Probe until cancelled (the app's lifespan)."""
        if self.api_url is None:  # an in-process server: it is up while this process is
            return
        fresh_each_time = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=PROBE_EVERY_SECONDS, limits=fresh_each_time) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.api_url}/health")).status_code == 200:
                        self._last_answer = time.monotonic()
                await asyncio.sleep(PROBE_EVERY_SECONDS)
