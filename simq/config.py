"""The settings of an App: Celery's lower-case names, their defaults, and refusing ones that do not exist."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from simq.exceptions import ConfigurationError
from simq.lifecycle import check_settings
from simq.ratelimit import parse_rate

__all__ = ["DEFAULTS", "Config"]

DEFAULTS: dict[str, Any] = {
    "broker_url": "memory://",
    "result_backend": "memory://",
    "broker_connection_timeout": 4.0,
    "broker_pool_limit": 10,
    "task_serializer": "json",
    "result_serializer": "json",
    "result_expires": 86_400,  # seconds or a timedelta; None or 0: never (simq.backends.base.expires_seconds)
    "accept_content": ["json"],
    "task_routes": None,
    "task_queues": None,
    "task_default_queue": "celery",
    "task_default_exchange": None,
    "task_default_exchange_type": "direct",
    "task_default_routing_key": None,
    "task_default_priority": None,
    "task_create_missing_queues": True,
    "task_always_eager": False,
    "task_eager_seed": 0,
    "task_acks_late": False,
    "task_ignore_result": False,
    "task_track_started": False,
    "task_allow_error_cb_on_chord_header": False,  # chord.link_error also links to every header task (simq.canvas)
    "task_publish_retry": False,  # a client's send retried across a broker outage (simq.runtime.publish_policy)
    "task_publish_retry_policy": {"max_retries": 3, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2},
    "task_eta_limit": 10 * 365 * 86400,
    "task_reject_on_worker_lost": False,
    "task_time_limit": None,  # seconds; simq.limits
    "task_soft_time_limit": None,
    "worker_prefetch_multiplier": 4,
    "worker_concurrency": 1,
    "worker_max_message_size": 16 * 1024 * 1024,
    "worker_revoke_poll_interval": 1.0,
    "worker_control_poll_interval": 0.25,  # seconds between reads of the control log (simq.remote)
    "task_default_rate_limit": None,  # for tasks without rate_limit= (simq.ratelimit)
    "worker_disable_rate_limits": False,
    "worker_max_tasks_per_child": None,  # processes pool; simq.lifecycle
    "worker_max_memory_per_child": None,  # KiB, processes pool
    "worker_soft_shutdown_timeout": 0.0,  # seconds a warm shutdown waits before giving running tasks back
    "security_key": None,
    "security_digest": "sha256",
    "timezone": "UTC",
}

_POLICY_KEYS = ("max_retries", "interval_start", "interval_step", "interval_max")


def check_publish_policy(policy: Any) -> None:
    """Refuse a ``task_publish_retry_policy`` simq would not follow (Celery's keys; ``retry_errors`` is not one simq has)."""
    if not isinstance(policy, dict):
        raise ConfigurationError(f"task_publish_retry_policy must be a dict, got {policy!r}")
    for key, value in policy.items():
        if key not in _POLICY_KEYS:
            raise ConfigurationError(
                f"task_publish_retry_policy: simq does not take {key!r} (it takes {', '.join(_POLICY_KEYS)}; "
                "a send is retried on BrokerUnavailable only, never on refused credentials)"
            )
        if key == "max_retries" and value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigurationError(
                f"task_publish_retry_policy: max_retries must be None or an int >= 0, got {value!r}"
            )
        if key != "max_retries" and (not isinstance(value, int | float) or value < 0):
            raise ConfigurationError(f"task_publish_retry_policy: {key} must be a number >= 0, got {value!r}")


_PREFIXES = ("task_", "worker_", "broker_", "result_", "accept_", "timezone", "simq_", "security_")


class Config(dict[str, Any]):
    """Settings with attribute access; unknown simq-looking keys are refused with a suggestion."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__(DEFAULTS)
        self._on_change = on_change

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            super().__setattr__(key, value)
        else:
            self.update({key: value})

    def update(self, *args: Any, **kwargs: Any) -> None:
        values = dict(*args, **kwargs)
        for key in values:
            if key not in DEFAULTS and key.startswith(_PREFIXES):
                close = difflib.get_close_matches(key, list(DEFAULTS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigurationError(f"unknown setting {key!r}{hint}")
        if "task_default_rate_limit" in values:
            parse_rate(values["task_default_rate_limit"], "task_default_rate_limit")
        if "task_publish_retry_policy" in values:
            check_publish_policy(values["task_publish_retry_policy"])
        check_settings(values)
        super().update(values)
        self._on_change()
