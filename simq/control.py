"""``app.control``: acting on the workers of an app (Celery's names).

Today: ``revoke``. Broadcast commands with replies (``inspect()``,
``rate_limit``, ``shutdown``...) are not here yet; asking for one raises
``AttributeError`` rather than doing nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from simq import revoke as revoke_module
from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["Control"]


class Control:
    """What ``app.control`` is."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(
        self,
        task_id: str | Iterable[str],
        destination: Any = None,
        terminate: bool = False,
        signal: str | int = "SIGTERM",
        **kwargs: Any,
    ) -> None:
        """Revoke one task id or several on every worker (see :mod:`simq.revoke`)."""
        if destination is not None:
            raise ConfigurationError(
                "revoke(destination=...) is not supported: a revocation reaches every worker of the app "
                "(they read one log), so it cannot be aimed at some of them"
            )
        if kwargs:
            raise ConfigurationError(f"revoke() got unknown option {sorted(kwargs)[0]!r}")
        revoke_module.revoke(self.app, task_id, terminate=terminate, signal=signal)
