"""Celery setting names on simq: which map onto simq's, which are refused, which mean nothing here.

simq's own settings already carry Celery 4+'s lower-case names, so most keys
pass through unchanged. Celery's old upper-case names (``CELERY_ALWAYS_EAGER``)
are renamed; settings simq does not honour are refused with the reason, never
accepted and ignored; the options of a result backend simq does not have
(``cassandra_*`` with a Redis backend) configure nothing that exists and are
dropped, and refused if the app's backend is that one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from simq.exceptions import ConfigurationError

__all__ = ["BACKEND_GROUPS", "NOT_SUPPORTED", "OLD_NAMES", "translate"]

#: Celery 3's upper-case names (and ``config_from_object(namespace="CELERY")`` keys) -> simq's.
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "BROKER_CONNECTION_TIMEOUT": "broker_connection_timeout",
    "BROKER_POOL_LIMIT": "broker_pool_limit",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ROUTES": "task_routes",
    "CELERY_QUEUES": "task_queues",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_DEFAULT_EXCHANGE": "task_default_exchange",
    "CELERY_DEFAULT_EXCHANGE_TYPE": "task_default_exchange_type",
    "CELERY_DEFAULT_ROUTING_KEY": "task_default_routing_key",
    "CELERY_CREATE_MISSING_QUEUES": "task_create_missing_queues",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_TASK_PUBLISH_RETRY": "task_publish_retry",
    "CELERY_TASK_PUBLISH_RETRY_POLICY": "task_publish_retry_policy",
    "CELERY_DEFAULT_RATE_LIMIT": "task_default_rate_limit",
    "CELERY_DISABLE_RATE_LIMITS": "worker_disable_rate_limits",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
}

#: Celery settings simq does not honour, and why (refused when given).
NOT_SUPPORTED: dict[str, str] = {
    "result_extended": "simq's result records keep the task name, not its args/kwargs/queue",
    "result_backend_transport_options": "simq's backends take their options in the URL",
    "broker_transport_options": "simq's transports take their options in the URL",
    "broker_connection_retry": "simq retries a worker's connection always and a client's send per task_publish_retry",
    "broker_connection_retry_on_startup": "simq's worker waits for the broker at start always",
    "broker_connection_max_retries": "see broker_connection_retry",
    "broker_heartbeat": "set the heartbeat in the amqp:// URL",
    "broker_use_ssl": "use amqps:// or rediss:// URLs",
    "task_protocol": "simq has one wire protocol (docs/protocol.md)",
    "task_compression": "simq does not compress messages",
    "result_compression": "simq does not compress results",
    "task_send_sent_event": "simq has no event stream; use the before/after_task_publish signals",
    "worker_send_task_events": "simq has no event stream; use the task signals",
    "task_send_events": "simq has no event stream",
    "task_annotations": "set options on the task (@app.task(...)) instead",
    "task_inherit_parent_priority": "simq does not inherit priorities",
    "task_store_errors_even_if_ignored": "an ignored result is not stored in simq",
    "task_allow_error_cb_on_chord_header": (
        "simq has it (docs/canvas.md), but Celery's own tests of it do not pass on simq yet (docs/celery.md), "
        "so the layer does not claim Celery's behaviour"
    ),
    "result_chord_join_timeout": "simq joins a chord by a counter, not by polling",
    "result_chord_retry_interval": "simq joins a chord by a counter, not by polling",
    "worker_pool": "give the pool on the command line: simq worker -P threads|processes|solo",
    "worker_hijack_root_logger": "simq's worker configures logging from -l",
    "worker_redirect_stdouts": "simq's worker does not redirect stdout",
    "worker_direct": "simq has no per-worker queues",
    "worker_deduplicate_successful_tasks": "not in simq",
    "worker_cancel_long_running_tasks_on_connection_loss": "not in simq",
    "worker_enable_remote_control": "simq's remote control is always on (docs/operations.md)",
    "beat_schedule": "simq has no beat scheduler",
    "beat_scheduler": "simq has no beat scheduler",
    "enable_utc": "simq keeps times in UTC always (enable_utc=True is accepted)",
}

#: Options of result backends (and brokers) simq does not have: they configure nothing here.
BACKEND_GROUPS: dict[str, tuple[str, ...]] = {
    "cassandra_": ("cassandra",),
    "mongodb_": ("mongodb",),
    "database_": ("db+",),
    "couchbase_": ("couchbase",),
    "arangodb_": ("arangodb",),
    "cosmosdb_": ("cosmosdbsql",),
    "azureblockblob_": ("azureblockblob",),
    "elasticsearch_": ("elasticsearch",),
    "s3_": ("s3",),
    "gcs_": ("gcs",),
    "sqs_": ("sqs",),
}


def translate(values: Mapping[str, Any], backend: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Celery settings -> (simq settings, the layer's own: ``imports``/``include``).

    ``backend`` is the result backend URL the app will have, to tell a
    meaningless ``cassandra_*`` (dropped) from one that would matter (refused).
    """
    simq_values: dict[str, Any] = {}
    layer: dict[str, Any] = {}
    if "result_backend" in values:
        backend = values["result_backend"]
    scheme = urlsplit(str(backend or "memory://")).scheme
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"a setting name must be a string, got {key!r}")
        name = OLD_NAMES.get(key, key)
        if name in ("imports", "include"):
            layer[name] = value
            continue
        if name == "enable_utc" and value is True:
            continue
        if name in NOT_SUPPORTED:
            raise ConfigurationError(f"setting {key!r} is not supported by simq's Celery layer: {NOT_SUPPORTED[name]}")
        group = next((g for g in BACKEND_GROUPS if name.startswith(g)), None)
        if group is not None:
            if any(scheme.startswith(s) for s in BACKEND_GROUPS[group]):
                raise ConfigurationError(
                    f"setting {key!r} configures a {BACKEND_GROUPS[group][0]} backend, which simq does not have"
                )
            continue  # meaningless with this backend: docs/celery.md, "Settings"
        if name.startswith(("CELERY", "BROKER_")):
            raise ConfigurationError(
                f"setting {key!r}: simq knows no such Celery name; use the lower-case names (docs/celery.md)"
            )
        simq_values[name] = value
    return simq_values, layer
