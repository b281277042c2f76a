"""A process and everything under it, as `ps --forest` shows it, and whether ports still answer."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.support.processes import alive


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, their children, ...), by parent pid."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # it exited while we looked
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return [p for p in found if alive(p)]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "(gone)"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
