"""Running a canvas here and now: ``Signature.apply()`` (and ``Task.replace`` inside ``Task.apply``).

No broker: each task runs through ``Task.apply`` in this process, in the
order the canvas says, and its outcome is stored in the result backend as a
worker would store it. The same rules as a sent canvas hold: a chain's link
gets the previous result (immutable ones none), a failing link stops the
chain (what follows it fails with its exception, noted), a chord's body gets
its header's results in header order or, if a header task failed, fails with
the first failed one's exception; ``link`` callbacks run after a success and
``link_error`` errbacks after a failure, here too, in the errback's own form.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from simq import states
from simq.canvas.checks import validate
from simq.canvas.composites import chain, chord, chunks, group
from simq.canvas.plan import prepare as _prepare
from simq.canvas.plan import result_of as _result
from simq.canvas.plan import spec as _spec
from simq.canvas.records import save_group
from simq.canvas.run import _errback_is_inline, _mark_failed, _noted
from simq.canvas.signatures import Signature, _deep_copy, _listify, from_dict
from simq.context import Context
from simq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["apply", "run_frozen"]

log = logging.getLogger("simq.canvas")


def apply(
    app: App, sig: Signature, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> Any:
    """``sig.apply(args, kwargs, task_id=...)``: copy, check, freeze, run here; an ``EagerResult`` (or ``GroupResult``)."""
    options = dict(options)
    task_id = options.pop("task_id", None)
    if options:
        raise ConfigurationError(
            f"{sig!r}.apply() runs the canvas here and now, so it takes no sending option: got "
            f"{', '.join(sorted(options))} (set them with apply_async(), which sends it)"
        )
    validate(app, sig)
    work = _deep_copy(sig, app)
    if isinstance(work, chunks):
        work = work.group()
    if task_id is not None:
        last = work
        while isinstance(last, chain):
            last = last.tasks[-1]
        last["options"] = {**last["options"], "task_id": task_id}
    _prepare(app, work)
    return run_frozen(app, work, tuple(args or ()), dict(kwargs or {}), None)


def run_frozen(app: App, node: Signature, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Any) -> Any:
    """Run a frozen node with a parent's ``args`` here; its result handle, with ``parent`` as its parent."""
    if node.immutable:
        args, kwargs = (), {}
    if isinstance(node, chain):
        return _chain(app, node, args, kwargs, parent)
    if isinstance(node, group):
        return _group(app, node, args, kwargs, parent)
    if isinstance(node, chord):
        return _chord(app, node, args, kwargs, parent)
    return _task(app, node, args, kwargs, parent)


def _failure(result: Any) -> tuple[BaseException, str] | None:
    """The first failed task in ``result`` (in order), as its exception and id; None if nothing failed."""
    members = getattr(result, "results", None)
    if members is not None:
        for member in members:
            found = _failure(member)
            if found is not None:
                return found
        return None
    if result.state in states.PROPAGATE_STATES:
        exc = result.result
        return (exc if isinstance(exc, BaseException) else RuntimeError(f"task {result.id} ended {result.state}")), str(
            result.id
        )
    return None


def _chain(app: App, node: chain, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Any) -> Any:
    result = parent
    tasks = node.tasks
    for i, link in enumerate(tasks):
        result = run_frozen(app, link, args, kwargs, result)
        failed = _failure(result)
        if failed is not None:
            rest = tasks[i + 1 :]
            if rest:
                exc = _noted(failed[0], f"simq: never ran, because task {failed[1]} before it failed")
                for later in rest:
                    _mark_failed(app, later, exc)
                    result = _result(app, later, result)
            return result
        args, kwargs = (result.get(propagate=False),), {}
    return result


def _group(app: App, node: group, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Any) -> Any:
    from simq.result import GroupResult

    gid = node.id or app.new_id()
    save_group(app, gid, _spec(node))  # GroupResult.restore(gid) finds it, as for a sent group
    members = [run_frozen(app, t, args, kwargs, None) for t in node.tasks]
    if not members:
        app.backend.store_result(gid, [], states.SUCCESS, name="simq.group")
    return GroupResult(gid, members, app, parent=parent)


def _chord(app: App, node: chord, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Any) -> Any:
    header = run_frozen(app, node.header, args, kwargs, parent)
    body: Signature = node.body  # type: ignore[assignment]
    failed = _failure(header)
    if failed is None:
        return run_frozen(app, body, (header.get(propagate=False),), {}, header)
    exc = _noted(failed[0], f"simq: header task {failed[1]} of chord {node.id} failed, so the chord's body never ran")
    _mark_failed(app, body, exc)
    _errbacks(app, body, exc, None, next(iter(body._leaf_ids()), body.id or ""))
    return _result(app, body, header)


def _task(app: App, node: Signature, args: tuple[Any, ...], kwargs: dict[str, Any], parent: Any) -> Any:
    call_args = tuple(args) + node.args
    call_kwargs = {**node["kwargs"], **kwargs}
    result = app.tasks[node.task].apply(call_args, call_kwargs, task_id=node.id)
    result.parent = parent
    if result.state == states.SUCCESS:
        value = result.get()
        for data in _listify(node["options"].get("link")):
            callback = _deep_copy(from_dict(data, app), app)
            _prepare(app, callback)
            run_frozen(app, callback, (value,), {}, None)
    elif result.state in states.PROPAGATE_STATES:
        _errbacks(app, node, result.result, result.traceback, str(result.id))
    return result


def _errbacks(app: App, node: Signature, exc: Any, traceback: str | None, task_id: str) -> None:
    """Call ``node``'s errbacks here, each in its own form: ``(request, exc, traceback)``, or sent the task's id."""
    for data in _listify(node["options"].get("link_error")):
        errback = _deep_copy(from_dict(data, app), app)
        task = app.tasks.get(errback.task)
        if task is not None and errback.subtask_type is None and _errback_is_inline(task):
            context = Context(id=task_id, task=node.task, called_directly=False, is_eager=True)
            try:
                task(context, exc, traceback, *errback.args, **errback["kwargs"])
            except Exception:
                log.exception("errback %s for task %s raised", errback.task, task_id)
        else:
            _prepare(app, errback)
            run_frozen(app, errback, (task_id,), {}, None)
