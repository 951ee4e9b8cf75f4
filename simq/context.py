"""What ``self.request`` shows inside a bound task (its own module, so the canvas can build one without importing tasks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["Context"]


@attrs.define
class Context:
    """What ``self.request`` shows inside a bound task."""

    id: str | None = None
    task: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    retries: int = 0
    eta: float | None = None
    expires: float | None = None
    hostname: str | None = None
    delivery_info: Mapping[str, Any] = attrs.field(factory=dict)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    callbacks: Sequence[Any] | None = None
    errbacks: Sequence[Any] | None = None
    chain: Sequence[Any] | None = None
    chord: Any = None
    headers: Mapping[str, Any] = attrs.field(factory=dict)
    called_directly: bool = True
    is_eager: bool = False

    @property
    def stamps(self) -> dict[str, Any]:
        """The stamps this task was sent with (``Signature.stamp``): name -> value."""
        return dict(self.headers.get("stamps") or {})

    @property
    def stamped_headers(self) -> list[str]:
        """The names of this task's stamps, in the order they were given."""
        return list(self.headers.get("stamped_headers") or [])
