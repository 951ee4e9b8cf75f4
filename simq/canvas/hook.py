"""The canvas as a worker hook: what a finished task with an embedded canvas leads to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simq.canvas import run
from simq.hooks import WorkerHook

if TYPE_CHECKING:
    from simq.executor import Executor
    from simq.worker import Request

__all__ = ["CanvasHook"]


class CanvasHook(WorkerHook):
    """Callbacks, errbacks, the next chain link and chord counting, for tasks whose message embeds a canvas."""

    canvas_only = True

    def on_success(self, executor: Executor, request: Request, retval: Any) -> None:
        if request.message.embed:
            run.on_success(executor, request, retval)  # type: ignore[arg-type]

    def on_failure(self, executor: Executor, request: Request, exc: BaseException, traceback: str) -> None:
        if request.message.embed:
            run.on_failure(executor, request, exc, traceback)  # type: ignore[arg-type]

    def on_revoked(self, executor: Executor, request: Request, exc: BaseException, reason: str) -> None:
        if request.message.embed:
            run.on_revoked(executor, request, exc)  # type: ignore[arg-type]
