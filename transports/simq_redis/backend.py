"""The Redis result backend: one key per task, an atomic chord counter, waiting without polling.

``redis://host:port/db[?namespace=NAME]`` as ``result_backend``. A record is
stored with ``SET`` (expiring after ``result_expires``, one day by default;
``None`` or 0 keeps it for ever); when a task reaches a ready state the
backend also pushes a token to a per-task notify list, and ``result.get()``
blocks on that list with ``BLMOVE`` (which leaves the token in place for every
other waiter), so waiting never sleep-polls. Chord counters are ``INCRBY``; a
chord part is counted (its marker and the counter) by one Lua script, in one
round trip. Every key the backend writes (records, tokens, counters, canvas
records) carries the same expiry.

Writes do not wait for Redis's reply. A result write goes out on the thread's
own connection when ``store_result`` returns, and its reply is read before
that thread's next command (so a thread always reads its own writes) or by
``sync()``, which the worker calls before it acknowledges a late-ack task.
Until its reply is read a write is *unconfirmed*: if the connection dies
first, every unconfirmed write of that thread is run again, in order, on a
fresh connection before anything else the thread sends (writes are
idempotent), and when Redis cannot be reached they are kept and
``BrokerUnavailable`` is raised; the next command or ``sync()`` tries them
again. Inside ``deferred_writes()`` a canvas task's result and its chord
count share one pipelined round trip.

Every connection is named ``simq:<namespace>:backend`` (``CLIENT LIST``), so
an operator or a fault campaign can tell the backend's connections from the
broker's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import redis

from simq import states
from simq.backends.base import Backend, ResultMeta
from simq.exceptions import BrokerUnavailable
from simq.transport import redact_url
from simq_redis.connection import client_name, connect_redis, dedicated_connection

__all__ = ["RedisBackend", "client_name", "redis_backend_factory"]

log = logging.getLogger("simq.backends.redis")

# An op is ("set", key, value, guard) or ("script", name, keys, args). ``guard``
# is the ready-token key of a result record that is not ready (STARTED,
# RETRY...), else None: when such a write is run again after a lost
# connection it must not overwrite a ready record written since.
Op = tuple[Any, ...]

# Expiry arguments are milliseconds; 0 means the key never expires.

# A ready record and its wake-up token in one command: Redis runs the script
# atomically, so a woken waiter always finds the record.
_STORE_READY = """
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('DEL', KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

# A chord part counted once: KEYS[1] the part's marker, KEYS[2] the counter.
# Returns the new count, or -1 when this part was counted before.
_COUNT_PART = """
local ttl = tonumber(ARGV[1])
local first = redis.call('INCR', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
if first ~= 1 then return -1 end
local n = redis.call('INCR', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return n
"""

# A not-ready record written again after a lost connection: skipped when the
# task's ready token exists (a ready record was stored since; keep it).
_SET_UNLESS_READY = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"""

_SCRIPTS = {"store_ready": _STORE_READY, "count_part": _COUNT_PART, "set_unless_ready": _SET_UNLESS_READY}

_LOST = (redis.ConnectionError, redis.TimeoutError)


@attrs.define(eq=False)
class _Writes:
    """One thread's writes that Redis has not confirmed yet, on the connection they went out on."""

    pid: int
    conn: Any = None
    unread: list[Op] = attrs.field(factory=list)
    """Sent on ``conn``; their replies are not read yet."""
    redo: list[Op] = attrs.field(factory=list)
    """Sent on a connection that died (or never sent): run again before anything else."""
    pending: list[Op] | None = None
    """Queued inside ``deferred_writes()``; None outside it."""
    refused: list[str] = attrs.field(factory=list)
    """Writes Redis answered with an error (out of memory...): ``sync()`` reports them."""
    record: str = ""
    """What ``_set`` is writing: "ready" or "unready" for a task's result, "" for anything else."""

    def unconfirmed(self) -> list[Op]:
        return [*self.redo, *self.unread, *(self.pending or ())]


@attrs.define(eq=False)
class RedisBackend(Backend):
    """Results in Redis, shared by every process that points at the same database and namespace."""

    url: str = "redis://127.0.0.1:6379/0"
    connect_timeout: float | None = 4.0
    _client: redis.Redis | None = attrs.field(default=None, init=False)
    _local: threading.local = attrs.field(factory=threading.local, init=False)
    prefix: str = attrs.field(default="simq-result:", init=False)
    name: str = attrs.field(default=client_name(""), init=False)
    _scripts: dict[str, Any] = attrs.field(factory=dict, init=False)
    _threads: weakref.WeakValueDictionary[int, _Writes] = attrs.field(factory=weakref.WeakValueDictionary, init=False)
    _threads_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _serial: int = attrs.field(default=0, init=False)

    @property
    def ttl_ms(self) -> int:
        """``result_expires`` in milliseconds; 0 when records never expire."""
        if self.expires is None:
            return 0
        return max(1, math.ceil(self.expires * 1000))

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            client, query = connect_redis(self.url, self.connect_timeout, what="result backend")
            namespace = query.get("namespace", "")
            self.prefix = f"simq-result:{namespace}:" if namespace else "simq-result:"
            self.name = client_name(namespace)
            pool = client.connection_pool
            pool.connection_kwargs["client_name"] = self.name
            pool.disconnect()  # the connection the check used has no name: start again with named ones
            pool.reset()
            self._client = client
            self._scripts = {name: client.register_script(src) for name, src in _SCRIPTS.items()}
            for script in self._scripts.values():  # loaded now, so pipelines can use EVALSHA
                self._call(client.script_load, script.script)
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _LOST as exc:
            raise BrokerUnavailable(f"lost the Redis result backend at {redact_url(self.url)}: {exc}") from exc

    def _writes(self) -> _Writes:
        """This thread's write state; a forked child starts afresh (the parent confirms its own writes)."""
        st: _Writes | None = getattr(self._local, "w", None)
        pid = os.getpid()
        if st is None or st.pid != pid:
            st = self._local.w = _Writes(pid)
            with self._threads_lock:
                if self._threads and next(iter(self._threads.values())).pid != pid:
                    self._threads.clear()  # the parent's threads, inherited through a fork
                self._serial += 1
                self._threads[self._serial] = st
        return st

    # -- deferred writes: queued, then sent with the next command that needs a reply --------
    @contextlib.contextmanager
    def deferred_writes(self) -> Iterator[None]:
        if self._writes().pending is not None:
            yield
            return
        self._writes().pending = []
        try:
            yield
        finally:
            try:
                self._flush()
            finally:
                # Never leave the thread deferred: what could not be sent is kept to run again.
                st = self._writes()
                if st.pending:
                    st.redo.extend(st.pending)
                st.pending = None

    def _write(self, op: Op) -> None:
        """Queue ``op`` while writes are deferred; otherwise send it now without waiting for the reply."""
        st = self._writes()
        if st.pending is not None:
            st.pending.append(op)
        else:
            self._send(st, op)

    def _send(self, st: _Writes, op: Op) -> None:
        if st.redo:  # an earlier connection died: its writes go first, and this one after them
            st.redo.append(op)
            self._rerun(st)
            return
        try:
            if st.conn is None:
                st.conn = dedicated_connection(self.client)
            st.conn.send_command(*self._command(op))
        except _LOST:
            self._lost(st, [op])
            self._rerun(st)  # on a fresh connection; raises BrokerUnavailable (keeping them) if Redis is gone
            return
        st.unread.append(op)
        if len(st.unread) >= 1000:
            self._drain(st)

    def _command(self, op: Op, again: bool = False) -> tuple[Any, ...]:
        ttl = self.ttl_ms
        if op[0] == "set":
            if again and op[3] is not None:
                return ("EVALSHA", self._scripts["set_unless_ready"].sha, 2, op[1], op[3], op[2], ttl)
            return ("SET", op[1], op[2], "PX", ttl) if ttl else ("SET", op[1], op[2])
        return ("EVALSHA", self._scripts[op[1]].sha, len(op[2]), *op[2], *op[3])

    def _lost(self, st: _Writes, more: Sequence[Op] = ()) -> None:
        """The connection died: every write whose reply was not read runs again, in order, then ``more``."""
        st.redo.extend(st.unread)
        st.redo.extend(more)
        st.unread = []
        conn, st.conn = st.conn, None
        if conn is not None:
            conn.disconnect()
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.connection_pool.release(conn)  # back to the pool, closed: no leak per reconnect

    def _drain(self, st: _Writes) -> None:
        """Confirm this thread's writes: read their replies, and run again those that did not happen."""
        unread = st.unread
        if unread:
            st.unread = []
            conn = st.conn
            read = 0
            try:
                for op in unread:
                    try:
                        conn.read_response()
                    except redis.exceptions.NoScriptError:
                        st.redo.append(op)  # Redis restarted and lost the script: load it, run the write again
                    except redis.ResponseError as exc:
                        self._refused(st, op, exc)
                    read += 1
            except BaseException as exc:
                # connection lost (or interrupted) while reading: unknown whether the rest ran
                st.unread = unread[read:]
                self._lost(st)
                if not isinstance(exc, _LOST):
                    raise
        if st.redo:
            self._rerun(st)

    def _refused(self, st: _Writes, op: Op, exc: Exception) -> None:
        key = op[2][0] if op[0] == "script" else op[1]
        log.error("Redis refused a result write to %s: %s", key, exc)
        st.refused.append(f"{key}: {exc}")

    def _rerun(self, st: _Writes) -> None:
        """Run ``st.redo`` in one pipeline, waiting; keep it and raise ``BrokerUnavailable`` if Redis is gone."""
        ops = st.redo
        replies = self._pipeline(ops, again=True)  # raises BrokerUnavailable; st.redo still holds them
        st.redo = []
        for op, reply in zip(ops, replies, strict=True):
            if isinstance(reply, Exception):
                self._refused(st, op, reply)

    def _flush(self, then: Op | None = None) -> Any:
        """Confirm what was sent, send the queued writes and ``then`` in one round trip; return ``then``'s reply."""
        st = self._writes()
        self._drain(st)
        ops = st.pending or []
        if ops:
            st.pending = []
        if then is not None:
            ops = [*ops, then]
        if not ops:
            return None
        try:
            return self._run(ops)[-1]
        except BrokerUnavailable:
            # The writes among them are kept to run again; ``then`` (whose reply the caller needs) is not.
            st.redo.extend(op for op in ops if op is not then)
            raise

    def _pipeline(self, ops: list[Op], again: bool = False) -> list[Any]:
        """One pipeline for ``ops``: each reply, or the error Redis answered. Scripts go as EVALSHA
        (loaded at connect); if Redis lost them (a restart), they are loaded again and only the ops
        that found no script rerun."""
        client = self.client
        pipe = client.pipeline(transaction=False)
        for op in ops:
            pipe.execute_command(*self._command(op, again))
        replies = list(self._call(pipe.execute, raise_on_error=False))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:
            for script in self._scripts.values():
                self._call(client.script_load, script.script)
            rerun = self._pipeline([ops[i] for i in missing], again)
            for i, reply in zip(missing, rerun, strict=True):
                replies[i] = reply
        return replies

    def _run(self, ops: list[Op]) -> list[Any]:
        """``_pipeline``, raising the first error Redis answered."""
        replies = self._pipeline(ops)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def sync(self) -> None:
        """Return once every write this thread made is stored in Redis; raise ``BrokerUnavailable`` if one cannot be.

        Reads the replies of the writes sent so far (usually already in the
        socket buffer: no round trip), runs again on a fresh connection those
        a dead connection lost, and sends what ``deferred_writes()`` queued.
        The writes that could not be stored are kept: the next call tries
        them again.
        """
        self._flush()
        st = self._writes()
        if st.refused:
            refused, st.refused = st.refused, []
            raise BrokerUnavailable(
                f"the Redis result backend at {redact_url(self.url)} refused {len(refused)} write(s): "
                + "; ".join(refused[:5])
            )

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
        record = self._writes().record
        if record == "ready":
            self._write(("script", "store_ready", [name, self._key(f"{key}:ready")], [value, self.ttl_ms]))
        elif record == "unready":  # when run again, it must not overwrite a ready record stored since
            self._write(("set", name, value, self._key(f"{key}:ready")))
        else:
            self._write(("set", name, value, None))

    def store_result(self, task_id: str, result: Any, state: str, *args: Any, **kwargs: Any) -> ResultMeta:
        st = self._writes()
        st.record = "ready" if state in states.READY_STATES else "unready"
        try:
            return super().store_result(task_id, result, state, *args, **kwargs)
        finally:
            st.record = ""

    def _incr(self, key: str, by: int = 1) -> int:
        self._flush()
        name = self._key(f"counter:{key}")
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(name, by)
        if self.ttl_ms:
            pipe.pexpire(name, self.ttl_ms)
        value = self._call(pipe.execute)[0]
        return int(value)

    def count_part(self, counter: str, part: str) -> int | None:
        keys = [self._key(f"counter:{part}"), self._key(f"counter:{counter}")]
        # with the deferred result write ahead of it: one round trip for both
        value = int(self._flush(then=("script", "count_part", keys, [self.ttl_ms])))
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
        self.sync()
        client = self.client
        if self.prefix == "simq-result:":
            raise ValueError("refusing to delete the default result namespace; give ?namespace=NAME")
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)

    def close(self) -> None:
        """Store every write still unconfirmed (this process's threads too), then disconnect.

        Other threads' writes are run again rather than confirmed on their
        connections (those belong to their threads); running a write twice is
        harmless. Raises ``BrokerUnavailable`` naming how many writes were
        lost if Redis cannot be reached.
        """
        lost: list[Op] = []
        pid = os.getpid()
        try:
            if self._client is not None:
                try:
                    self.sync()
                except BrokerUnavailable:
                    lost.extend(self._writes().unconfirmed())
                mine = self._writes()
                with self._threads_lock:
                    others = [st for st in self._threads.values() if st.pid == pid and st is not mine]
                for st in others:
                    ops = st.unconfirmed()
                    if not ops:
                        continue
                    try:
                        self._pipeline(ops, again=True)
                    except BrokerUnavailable:
                        lost.extend(ops)
        finally:
            st = self._writes()
            st.unread, st.redo, st.pending = [], [], None
            conn, st.conn = st.conn, None
            if conn is not None:
                conn.disconnect()
            if self._client is not None:
                self._client.close()
                self._client = None
        if lost:
            keys = [op[2][0] if op[0] == "script" else op[1] for op in lost]
            log.error(
                "closing the result backend with %d write(s) Redis never confirmed: %s", len(lost), ", ".join(keys[:10])
            )
            raise BrokerUnavailable(
                f"closed the Redis result backend at {redact_url(self.url)} with {len(lost)} write(s) it could not store "
                f"(first: {', '.join(keys[:3])})"
            )


def redis_backend_factory(url: str, *, serializers: Any, clock: Any, serializer: str = "json", **kw: Any) -> Backend:
    """Entry point for ``redis://`` result backend URLs."""
    backend = RedisBackend(serializers, clock, serializer, url=url, **kw)
    backend.client  # noqa: B018 - connect now, so a wrong URL fails where it is configured
    return backend
