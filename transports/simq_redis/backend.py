"""The Redis result backend: one key per task, an atomic chord counter, waiting without polling.

``redis://host:port/db[?namespace=NAME]`` as ``result_backend``. A record is
stored with ``SET`` (expiring after ``result_expires`` seconds, one day by
default); when a task reaches a ready state the backend also pushes a token to
a per-task notify list, and ``result.get()`` blocks on that list with
``BLMOVE`` (which leaves the token in place for every other waiter), so
waiting never sleep-polls. Chord counters are ``INCRBY``; a chord part is
counted (its marker and the counter) by one Lua script, in one round trip.
The record and its token are also written by one script, and the writer does
not wait for Redis's "OK": the write is on the wire when ``store_result``
returns, and the reply is read before that thread's next command (so a
thread always reads its own writes). Inside ``deferred_writes()`` a canvas
task's result and its chord count share one pipelined round trip.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import redis

from simq import states
from simq.backends.base import Backend, ResultMeta
from simq.exceptions import BrokerUnavailable
from simq.transport import redact_url
from simq_redis.transport import connect_redis, dedicated_connection, owned

__all__ = ["RedisBackend", "redis_backend_factory"]

log = logging.getLogger("simq.backends.redis")

DAY = 86_400

# A ready record and its wake-up token in one command: Redis runs the script
# atomically, so a woken waiter always finds the record.
_STORE_READY = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# A chord part counted once: KEYS[1] the part's marker, KEYS[2] the counter.
# Returns the new count, or -1 when this part was counted before.
_COUNT_PART = """
local first = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
if first ~= 1 then return -1 end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return n
"""


@attrs.define(eq=False)
class RedisBackend(Backend):
    """Results in Redis, shared by every process that points at the same database and namespace."""

    url: str = "redis://127.0.0.1:6379/0"
    expires: int = DAY
    connect_timeout: float | None = 4.0
    _client: redis.Redis | None = attrs.field(default=None, init=False)
    _local: threading.local = attrs.field(factory=threading.local, init=False)
    prefix: str = attrs.field(default="simq-result:", init=False)
    _scripts: dict[str, Any] = attrs.field(factory=dict, init=False)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            client, query = connect_redis(self.url, self.connect_timeout, what="result backend")
            namespace = query.get("namespace", "")
            self.prefix = f"simq-result:{namespace}:" if namespace else "simq-result:"
            self._client = client
            self._scripts = {
                "store_ready": client.register_script(_STORE_READY),
                "count_part": client.register_script(_COUNT_PART),
            }
            for script in self._scripts.values():  # loaded now, so pipelines can use EVALSHA
                self._call(client.script_load, script.script)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"lost the Redis result backend at {redact_url(self.url)}: {exc}") from exc

    # -- deferred writes: queued, then sent with the next command that needs a reply --------
    # An op is ("set", key, value) or ("script", name, keys, args).
    @contextlib.contextmanager
    def deferred_writes(self) -> Iterator[None]:
        if getattr(self._local, "pending", None) is not None:
            yield
            return
        self._local.pending = []
        try:
            yield
        finally:
            self._flush()
            self._local.pending = None

    def _write(self, op: tuple[Any, ...]) -> None:
        """Queue ``op`` while writes are deferred; otherwise send it now without waiting for the reply."""
        pending = getattr(self._local, "pending", None)
        if pending is not None:
            pending.append(op)
        else:
            self._send(op)

    # -- writes on the wire before the call returns, replies read before this thread's next command --
    # A write is sent on this thread's own connection and its reply ("OK") read
    # later: Redis runs it when the bytes arrive, a waiter wakes as before, and
    # the worker does not wait one round trip per task. Every other command of
    # this thread first reads the outstanding replies, so it observes its own
    # writes; a lost script or connection makes the writes run again (they are
    # idempotent: SET, and DEL+RPUSH of the one wake-up token).
    def _send(self, op: tuple[Any, ...]) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is None or not owned(conn):  # none yet, or the parent's after a fork
            conn = self._local.conn = dedicated_connection(self.client)
            self._local.unread = []
        try:
            conn.send_command(*self._command(op))
        except (redis.ConnectionError, redis.TimeoutError):
            self._drop_conn()
            self._run([op])  # on a fresh connection, waiting; raises BrokerUnavailable if Redis is gone
            return
        unread = self._local.unread
        unread.append(op)
        if len(unread) >= 1000:
            self._drain()

    def _command(self, op: tuple[Any, ...]) -> tuple[Any, ...]:
        if op[0] == "set":
            return ("SET", op[1], op[2], "EX", self.expires)
        return ("EVALSHA", self._scripts[op[1]].sha, len(op[2]), *op[2], *op[3])

    def _drain(self) -> None:
        """Read the replies of this thread's writes; run again the ones that did not happen."""
        unread = getattr(self._local, "unread", None)
        if not unread:
            return
        conn = self._local.conn
        if not owned(conn):  # forked: those replies are the parent's to read
            self._local.conn = None
            self._local.unread = []
            return
        self._local.unread = []
        again: list[tuple[Any, ...]] = []
        for i, op in enumerate(unread):
            try:
                conn.read_response()
            except redis.exceptions.NoScriptError:
                again.append(op)  # Redis restarted and lost the script: load it, run the write again
            except redis.ResponseError as exc:
                log.error("Redis refused a result write to %s: %s", op[2][0] if op[0] == "script" else op[1], exc)
            except (redis.ConnectionError, redis.TimeoutError):
                self._drop_conn()
                again.extend(unread[i:])  # unknown whether these ran: run them again
                break
        if again:
            self._run(again)

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        self._local.unread = []
        if conn is not None:
            conn.disconnect()

    def _flush(self, then: tuple[Any, ...] | None = None) -> Any:
        """Send the queued writes, and ``then`` after them, in one round trip; return ``then``'s reply."""
        self._drain()
        ops = getattr(self._local, "pending", None) or []
        if ops:
            self._local.pending = []
        if then is not None:
            ops = [*ops, then]
        if not ops:
            return None
        return self._run(ops)[-1]

    def _run(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        """One pipeline for ``ops``. Scripts go as EVALSHA (loaded at connect); if Redis lost
        them (a restart), they are loaded again and only the ops that found no script rerun."""
        client = self.client
        pipe = client.pipeline(transaction=False)
        for op in ops:
            pipe.execute_command(*self._command(op))
        replies = list(self._call(pipe.execute, raise_on_error=False))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            for script in self._scripts.values():
                self._call(client.script_load, script.script)
            rerun = self._run([ops[i] for i in missing])
            for i, reply in zip(missing, rerun, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    # -- storage hooks -----------------------------------------------------------------
    def _get(self, key: str) -> bytes | None:
        self._flush()
        client = self.client
        value: bytes | None = self._call(client.get, self._key(key))
        return value

    def _get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._flush()
        client = self.client
        out: list[bytes | None] = []
        for start in range(0, len(keys), 1000):  # MGET in slices: one round trip per thousand
            chunk = [self._key(key) for key in keys[start : start + 1000]]
            out.extend(self._call(client.mget, chunk))
        return out

    def _set(self, key: str, value: bytes) -> None:
        name = self._key(key)
        if not getattr(self._local, "ready", False):
            self._write(("set", name, value))
            return
        self._write(("script", "store_ready", [name, self._key(f"{key}:ready")], [value, self.expires]))

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> ResultMeta:
        self._local.ready = state in states.READY_STATES
        try:
            return super().store_result(task_id, result, state, *args, **kwargs)
        finally:
            self._local.ready = False

    def _incr(self, key: str, by: int = 1) -> int:
        self._flush()
        name = self._key(f"counter:{key}")
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(name, by)
        pipe.expire(name, self.expires)
        value, _ = self._call(pipe.execute)
        return int(value)

    def count_part(self, counter: str, part: str) -> int | None:
        keys = [self._key(f"counter:{part}"), self._key(f"counter:{counter}")]
        # with the deferred result write ahead of it: one round trip for both
        value = int(self._flush(then=("script", "count_part", keys, [self.expires])))
        return None if value < 0 else value

    def _wait(self, key: str, timeout: float | None) -> bytes | None:
        self._flush()
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
        self._flush()
        self._call(self.client.delete, self._key(key), self._key(f"{key}:ready"))

    def delete_namespace(self) -> int:
        """Delete every result under this backend's namespace (tests)."""
        self._drain()
        client = self.client
        if self.prefix == "simq-result:":
            raise ValueError("refusing to delete the default result namespace; give ?namespace=NAME")
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)

    def close(self) -> None:
        if getattr(self._local, "unread", None):
            try:
                self._drain()
            except BrokerUnavailable:
                pass  # Redis is gone: what was written before is all it will get
        self._drop_conn()
        if self._client is not None:
            self._client.close()
            self._client = None


def redis_backend_factory(url: str, *, serializers: Any, clock: Any, serializer: str = "json", **kw: Any) -> Backend:
    """Entry point for ``redis://`` result backend URLs."""
    backend = RedisBackend(serializers, clock, serializer, url=url, **kw)
    backend.client  # noqa: B018 - connect now, so a wrong URL fails where it is configured
    return backend
