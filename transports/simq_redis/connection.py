"""Connecting to Redis: URL parsing, a checked client, named connections, fork-safe dedicated connections.

Shared by the transport and the result backend.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from simq.exceptions import AccessRefused, BrokerUnavailable, RoutingError
from simq.transport import redact_url

__all__ = ["CONNECTION_ERRORS", "client_name", "connect_redis", "dedicated_connection", "owned", "parse_redis_url"]

#: What redis-py raises when the server is gone or silent.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)


def parse_redis_url(url: str) -> tuple[dict[str, Any], dict[str, str]]:
    """redis-py connection arguments and simq's own query options from a ``redis://`` URL."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    db = 0
    path = parts.path.strip("/")
    if path:
        try:
            db = int(path)
        except ValueError:
            raise RoutingError(f"the Redis database in {redact_url(url)!r} must be a number, got {path!r}") from None
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 6379,
        "db": db,
        "password": parts.password,
        "username": parts.username or None,
    }
    if parts.scheme == "rediss":
        kwargs["ssl"] = True
    return kwargs, query


def client_name(namespace: str, role: str = "backend") -> str:
    """The ``CLIENT SETNAME`` of simq's connections for ``namespace`` and ``role`` (Redis allows no spaces)."""
    return "simq:" + re.sub(r"[^!-~]", "_", namespace) + ":" + role


def connect_redis(
    url: str, connect_timeout: float | None, what: str = "broker", role: str | None = None
) -> tuple[redis.Redis, dict[str, str]]:
    """A checked redis-py client; ``BrokerUnavailable`` naming host:port (never the password) if unreachable.

    With ``role``, every connection of the client is named ``simq:<namespace>:<role>``
    (``CLIENT LIST`` shows who is who; tests kill only their own).
    """
    kwargs, query = parse_redis_url(url)
    if role is not None:
        kwargs["client_name"] = client_name(query.get("namespace", ""), role)
    # no read timeout: BLPOP and BLMOVE block on purpose, and a dead server still fails fast (RST, keepalive)
    client = redis.Redis(socket_connect_timeout=connect_timeout, socket_timeout=None, socket_keepalive=True, **kwargs)
    probe = redis.Redis(
        socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout, retry=Retry(NoBackoff(), 0), **kwargs
    )
    try:
        # a server that accepts but never answers must fail within connect_timeout too
        probe.ping()
        probe.close()
        client.ping()
    except redis.AuthenticationError as exc:  # a ConnectionError to redis-py: caught first
        probe.close()
        client.close()
        raise AccessRefused(
            f"Redis at {kwargs['host']}:{kwargs['port']} refused the credentials in {redact_url(url)}: {exc}"
        ) from None
    except (*CONNECTION_ERRORS, OSError) as exc:
        probe.close()
        client.close()
        raise BrokerUnavailable(
            f"cannot reach the Redis {what} at {kwargs['host']}:{kwargs['port']} ({redact_url(url)}) "
            f"within {connect_timeout} s: {exc}. Is redis-server running there?"
        ) from None
    return client, query


def owned(conn: Any) -> bool:
    """Whether ``conn`` (a redis-py connection) was made by this process, not inherited through a fork."""
    return getattr(conn, "pid", None) == os.getpid()


def dedicated_connection(client: redis.Redis) -> Any:
    """A connection of ``client``'s pool kept apart, for commands whose replies are read later."""
    pool = client.connection_pool
    try:
        return pool.get_connection()  # redis-py >= 5.3
    except TypeError:
        return pool.get_connection("PING")
