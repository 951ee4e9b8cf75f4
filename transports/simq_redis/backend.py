"""The Redis result backend: one key per task, an atomic chord counter, waiting without polling.

``redis://host:port/db[?namespace=NAME]`` as ``result_backend``. A record is
stored with ``SET`` (expiring after ``result_expires`` seconds, one day by
default); when a task reaches a ready state the backend also pushes a token to
a per-task notify list, and ``result.get()`` blocks on that list with
``BLMOVE`` (which leaves the token in place for every other waiter), so
waiting never sleep-polls. Chord counters are ``INCRBY``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import redis

from simq import states
from simq.backends.base import Backend, ResultMeta
from simq.exceptions import BrokerUnavailable
from simq.transport import redact_url
from simq_redis.transport import connect_redis

__all__ = ["RedisBackend", "redis_backend_factory"]

DAY = 86_400


@attrs.define(eq=False)
class RedisBackend(Backend):
    """Results in Redis, shared by every process that points at the same database and namespace."""

    url: str = "redis://127.0.0.1:6379/0"
    expires: int = DAY
    connect_timeout: float | None = 4.0
    _client: redis.Redis | None = attrs.field(default=None, init=False)
    _local: threading.local = attrs.field(factory=threading.local, init=False)
    prefix: str = attrs.field(default="simq-result:", init=False)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            client, query = connect_redis(self.url, self.connect_timeout, what="result backend")
            namespace = query.get("namespace", "")
            self.prefix = f"simq-result:{namespace}:" if namespace else "simq-result:"
            self._client = client
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"lost the Redis result backend at {redact_url(self.url)}: {exc}") from exc

    # -- storage hooks -----------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        client = self.client
        value: bytes | None = self._call(client.get, self._key(key))
        return value

    def _set(self, key: str, value: bytes) -> None:
        client = self.client
        if not getattr(self._local, "ready", False):
            self._call(client.set, self._key(key), value, ex=self.expires)
            return
        # a ready record and its wake-up token travel in one round trip; Redis
        # runs them in order, so a woken waiter always finds the record
        notify = self._key(f"{key}:ready")
        pipe = client.pipeline(transaction=False)
        pipe.set(self._key(key), value, ex=self.expires)
        pipe.delete(notify)
        pipe.rpush(notify, b"1")
        pipe.expire(notify, self.expires)
        self._call(pipe.execute)

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> ResultMeta:
        self._local.ready = state in states.READY_STATES
        try:
            return super().store_result(task_id, result, state, *args, **kwargs)
        finally:
            self._local.ready = False

    def _incr(self, key: str, by: int = 1) -> int:
        name = self._key(f"counter:{key}")
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(name, by)
        pipe.expire(name, self.expires)
        value, _ = self._call(pipe.execute)
        return int(value)

    def _wait(self, key: str, timeout: float | None) -> bytes | None:
        notify = self._key(f"{key}:ready")
        client = self.client
        # BLMOVE source == destination rotates the list: it blocks while the
        # list is empty and leaves the token for the other waiters.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 5.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return None
            got = self._call(client.blmove, notify, notify, max(0.001, remaining), "LEFT", "RIGHT")
            raw = self._get(key)
            if raw is not None and self._decode(key, raw).ready:
                return raw
            if got is not None:
                # a token left by an earlier run of the same task id: drop it and wait again
                self._call(client.delete, notify)

    def _delete(self, key: str) -> None:
        self._call(self.client.delete, self._key(key), self._key(f"{key}:ready"))

    def delete_namespace(self) -> int:
        """Delete every result under this backend's namespace (tests)."""
        client = self.client
        if self.prefix == "simq-result:":
            raise ValueError("refusing to delete the default result namespace; give ?namespace=NAME")
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def redis_backend_factory(url: str, *, serializers: Any, clock: Any, serializer: str = "json", **kw: Any) -> Backend:
    """Entry point for ``redis://`` result backend URLs."""
    backend = RedisBackend(serializers, clock, serializer, url=url, **kw)
    backend.client  # noqa: B018 - connect now, so a wrong URL fails where it is configured
    return backend
