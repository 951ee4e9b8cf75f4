"""Deployed mode of the pytest plugin: real ``simq worker`` processes on a broker named on the command line.

Every app of the session gets ``--simq-celery-broker`` / ``--simq-celery-backend``
with one ``namespace`` per session (Redis keys and queues of the session stay
apart from anyone else's). The worker processes load
``simq.celery.worker_app``, which rebuilds the app from the settings, includes
and class-based tasks passed in their environment.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from simq.clock import WallClock
from simq.config import DEFAULTS
from simq.exceptions import ConfigurationError

__all__ = ["DeployedWorkers", "settings", "workers"]


def _namespace(config: Any) -> str:
    """One namespace per pytest session, kept on its config."""
    import pytest

    key = _stash_key(pytest)
    if key not in config.stash:
        namespace = config.stash[key] = f"simq-celery-{uuid.uuid4().hex[:12]}"
        urls = [config.getoption("--simq-celery-broker"), config.getoption("--simq-celery-backend")]
        config.add_cleanup(lambda: _delete_namespace([u for u in urls if u], namespace))
    return str(config.stash[key])


def _delete_namespace(urls: Sequence[str], namespace: str) -> None:
    """At the session's end: delete the session's keys (queues, results, logs) from each Redis it used."""
    seen: set[str] = set()
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            continue
        plain = urlunsplit(parts._replace(query=""))
        if plain in seen:
            continue
        seen.add(plain)
        import redis

        client = redis.Redis.from_url(plain)
        try:
            keys = list(client.scan_iter(match=f"*:{namespace}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()


@functools.cache
def _stash_key(pytest: Any) -> Any:
    return pytest.StashKey[str]()


def _with_namespace(url: str, namespace: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "namespace"] + [("namespace", namespace)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def settings(config: Any) -> dict[str, Any]:
    """The broker and backend settings every app of a deployed session has."""
    broker = config.getoption("--simq-celery-broker")
    if not broker:
        raise ConfigurationError("--simq-celery-mode=deployed needs --simq-celery-broker URL (and a backend)")
    backend = config.getoption("--simq-celery-backend") or broker
    if urlsplit(backend).scheme in ("", "memory"):
        raise ConfigurationError("deployed mode needs a result backend every process shares: --simq-celery-backend")
    namespace = _namespace(config)
    return {
        "broker_url": _with_namespace(broker, namespace),
        "result_backend": _with_namespace(backend, namespace),
        "task_default_queue": namespace,
    }


class DeployedWorkers:
    """The ``simq worker`` processes of a fixture, and where their logs are."""

    def __init__(self, app: Any, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
        self.app = app
        self.procs = procs
        self.logs = logs
        self.hostname = "simq-deployed"

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)


def _worker_env(app: Any, includes: Sequence[str], class_tasks: Sequence[Any], rootdir: str) -> dict[str, str]:
    conf = {k: v for k, v in app.conf.items() if k not in ("include", "imports") and DEFAULTS.get(k, object()) != v}
    try:
        encoded = json.dumps(conf)
    except TypeError as exc:
        raise ConfigurationError(f"deployed mode passes the app's settings to workers as JSON: {exc}") from exc
    paths = [rootdir, os.getcwd(), *[p for p in sys.path if p], os.environ.get("PYTHONPATH", "")]
    return dict(
        os.environ,
        SIMQ_CELERY_MAIN=str(app.main),
        SIMQ_CELERY_SETTINGS=encoded,
        SIMQ_CELERY_INCLUDES=json.dumps([*includes, *app.conf.get("include", ()), *app.conf.get("imports", ())]),
        SIMQ_CELERY_CLASS_TASKS=json.dumps([f"{c.__module__}:{c.__qualname__}" for c in class_tasks]),
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
    )


@contextlib.contextmanager
def workers(config: Any, app: Any, includes: Sequence[str], class_tasks: Sequence[Any]) -> Iterator[DeployedWorkers]:
    """Start ``simq worker -P <pool> -c <n>`` for ``app``; wait until it answers a ping; stop it after."""
    rootdir = str(config.rootpath)
    env = _worker_env(app, includes, class_tasks, rootdir)
    pool = config.getoption("--simq-celery-pool")
    concurrency = config.getoption("--simq-celery-concurrency")
    tmp = Path(tempfile.mkdtemp(prefix="simq-celery-workers-"))
    log = tmp / "worker-1.log"
    cmd = [sys.executable, "-m", "simq.cli", "worker", "-A", "simq.celery.worker_app:app"]
    cmd += ["-P", pool, "-c", str(concurrency), "-l", "INFO", "-n", f"{app.conf.task_default_queue}@deployed"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=rootdir, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603 - our own argv
    handle = DeployedWorkers(app, [proc], [log])
    try:
        _wait_ready(app, proc, handle)
        yield handle
    finally:
        _stop(proc)


def _wait_ready(app: Any, proc: subprocess.Popen[bytes], handle: DeployedWorkers, limit: float = 60.0) -> None:
    clock = WallClock()
    deadline = clock.monotonic() + limit
    while clock.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigurationError(f"simq worker exited with {proc.returncode}:\n{handle.log()}")
        if app.control.ping(timeout=1.0):
            return
    raise ConfigurationError(f"simq worker did not answer a ping within {limit} s:\n{handle.log()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def decode_env(environ: Mapping[str, str]) -> tuple[str, dict[str, Any], list[str], list[str]]:
    """What ``worker_app`` reads: main, settings, include modules, class-based tasks."""
    return (
        environ.get("SIMQ_CELERY_MAIN", "celery.tests"),
        json.loads(environ.get("SIMQ_CELERY_SETTINGS", "{}")),
        json.loads(environ.get("SIMQ_CELERY_INCLUDES", "[]")),
        json.loads(environ.get("SIMQ_CELERY_CLASS_TASKS", "[]")),
    )
