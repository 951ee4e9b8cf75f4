"""Kill the broker connections of one process, and only those: the shared brokers serve other tests too.

A process's connections are found from its own sockets (``/proc/<pid>/fd``
and ``/proc/<pid>/net/tcp``): the local ports it has open to the broker's
port. RabbitMQ closes connections by their pid (``rabbitmqctl close_connection``)
matched on their peer port; Redis kills clients by id matched on ``addr``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


def local_ports(pid: int, remote_port: int) -> set[int]:
    """Local ports of ``pid``'s established TCP connections to ``remote_port`` on loopback."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(match.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def kill_rabbitmq_connections(pid: int, port: int = 5672, reason: str = "simq test: connection closed") -> int:
    """Make RabbitMQ close every connection ``pid`` has to it; return how many."""
    mine = local_ports(pid, port)
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "peer_port", "pid"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    closed = 0
    for line in out.splitlines():
        peer, _, connection = line.partition("\t")
        if peer.strip().isdigit() and int(peer) in mine:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", connection.strip(), reason],
                capture_output=True,
                timeout=60,
                check=True,
            )
            closed += 1
    return closed


def kill_redis_connections(pid: int, url: str = "redis://127.0.0.1:6379/0", port: int = 6379) -> int:
    """``CLIENT KILL`` every connection ``pid`` has to Redis; return how many."""
    import redis

    mine = local_ports(pid, port)
    client = redis.Redis.from_url(url.split("?")[0])
    try:
        killed = 0
        for info in client.client_list():
            if int(str(info["addr"]).rsplit(":", 1)[1]) in mine:
                killed += int(client.client_kill_filter(_id=info["id"]))
        return killed
    finally:
        client.close()
