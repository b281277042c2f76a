"""A slow network link on loopback: a TCP proxy in a thread that holds every chunk the server
sends back for `delay` seconds. Used where a test needs a Prefect server that answers slowly
(a busy one in CI) without touching the server itself."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


@contextmanager
def slow_link(url: str, delay: float) -> Iterator[str]:
    """`url` (http://host:port/path) as seen through the link: the same path, another port."""
    target = urlsplit(url)
    listening = socket.create_server(("127.0.0.1", 0))  # bound here: its port is known at once
    loop = asyncio.new_event_loop()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float) -> None:
        try:
            while chunk := await reader.read(65536):
                await asyncio.sleep(hold)
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def connect(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(target.hostname, target.port)
        await asyncio.gather(pipe(client_r, server_w, 0), pipe(server_r, client_w, delay))

    stop = asyncio.Event()

    async def main() -> None:
        async with await asyncio.start_server(connect, sock=listening):
            await stop.wait()
        links = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for link in links:
            link.cancel()
        await asyncio.gather(*links, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield urlunsplit(target._replace(netloc=f"127.0.0.1:{listening.getsockname()[1]}"))
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
