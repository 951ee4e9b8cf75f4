"""What a running task does to its own canvas: ``Task.replace`` and ``Task.add_to_chord``.

Both act from inside a task body, with the task's request (its id, the chain
that follows it, the chord it reports to) and send through the same path as
any canvas (``simq.canvas.run``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from simq.canvas import records
from simq.canvas.checks import validate
from simq.canvas.composites import chain, chord, chunks, group
from simq.canvas.plan import count as _count
from simq.canvas.plan import prepare as _prepare
from simq.canvas.plan import result_of as _result
from simq.canvas.plan import spec as _spec
from simq.canvas.run import _apply
from simq.canvas.signatures import ACCUMULATE_TASK, Signature, _deep_copy, from_dict
from simq.canvas.stamping import StampingVisitor, stamps_of
from simq.exceptions import ConfigurationError, InvalidSignature

if TYPE_CHECKING:
    from simq.app import App
    from simq.context import Context

__all__ = ["add_to_chord", "inherit_stamps", "replace", "replacement"]


# -- Task.replace: a running task hands its place in the canvas to another ------------------------------


def replace(app: App, context: Context, sig: Signature) -> Signature:
    """Send ``sig`` in the place of the running task ``context``; return what was sent (frozen).

    The replacement's result lands under the task's own id (a replacement
    whose value is a group's, a list of results, ends in ``simq.accumulate``
    so that one task holds it), it takes over the task's callbacks and
    errbacks, what follows it in its chain, and the chord and group it
    belongs to: whoever waits on the task, or counts it, gets the replacement.
    """
    work = replacement(app, context, sig)
    with app.batched_publishing():
        _apply(app, work, (), {}, {}, list(context.chain or ()), context.chord, context.group, context.group_index)
    return work


def replacement(app: App, context: Context, sig: Signature) -> Signature:
    """``sig`` checked, copied and frozen to take the place of task ``context`` (see ``replace``)."""
    if isinstance(sig, chain) and not sig.tasks:
        raise ConfigurationError(
            f"Cannot replace with an empty chain: task {context.task}[{context.id}] was given chain() to replace it "
            "(replace it with a chain that has at least one task)"
        )
    if not isinstance(sig, Signature):
        raise InvalidSignature(
            f"task {context.task}[{context.id}] can only be replaced by a signature, got {sig!r} (use task.s(...))"
        )
    validate(app, sig, "replacement: ")
    work = _deep_copy(sig, app)
    if isinstance(work, chunks):
        work = work.group()
    _prepare(app, work)
    if isinstance(_spec(work), Mapping):  # a group's value, a list: one task must hold it under the task's id
        acc = Signature(ACCUMULATE_TASK, app=app)
        # a group's results gathered by a chord (as Celery's group | accumulate: a group of one stays a group)
        work = chord(work, acc, app=app) if isinstance(work, group) else chain(work, acc, app=app)
        _prepare(app, work)
    last = work
    while isinstance(last, chain | chord):
        last = last.tasks[-1] if isinstance(last, chain) else last.body  # type: ignore[assignment]
    last["options"] = {**last["options"], "task_id": context.id}
    for cb in context.callbacks or ():
        work.link(from_dict(cb, app))
    for eb in context.errbacks or ():
        work.link_error(from_dict(eb, app))
    return work


def inherit_stamps(context: Context, sig: Any) -> Any:
    """``sig`` (a copy) with the stamps of the task it replaces, under any of its own (Celery keeps both)."""
    stamps = context.stamps
    if not stamps or not isinstance(sig, Signature):
        return sig
    work = _deep_copy(sig, app=sig._app)
    work.stamp(_Inherited(stamps))
    return work


class _Inherited(StampingVisitor):
    """The replaced task's stamps, for each signature that has no stamp of that name itself."""

    def __init__(self, stamps: Mapping[str, Any]) -> None:
        self.stamps = stamps

    def on_signature(self, sig: Signature, **headers: Any) -> Mapping[str, Any]:
        own = stamps_of(sig["options"])
        return {name: value for name, value in self.stamps.items() if name not in own}


# -- Task.add_to_chord: a header task adds a part to its chord ----------------------------------------


def add_to_chord(app: App, context: Context, sig: Signature) -> Any:
    """Send ``sig`` as one more part of the chord the running header task ``context`` reports to; its result handle.

    Its result joins the body's input after the header's. The chord waits
    for it: the count is moved back by what ``sig`` reports before the
    running task (which has not reported yet) can end the chord.
    """
    ctx = context.chord
    if not ctx:
        raise ConfigurationError(
            f"task {context.task}[{context.id}] reports to no chord (it is not in a chord's header, or not the last "
            f"task of a chain there), so add_to_chord({sig!r}) has no chord to add to"
        )
    validate(app, sig, "add_to_chord: ")
    work = _deep_copy(sig, app)
    if isinstance(work, chunks):
        work = work.group()
    _prepare(app, work)
    backend = app.backend
    cid = str(ctx["id"])
    key = records.chord_key(cid)
    backend.incr(f"{key}.done", -_count(work))
    records.store(app, records.added_key(cid, backend.incr(f"{key}.added")), _spec(work))
    record = records.load(app, key)
    if not record.get("added"):  # every writer writes the same record, so concurrent adds lose nothing
        records.store(app, key, {**record, "added": True})
    with app.batched_publishing():
        _apply(app, work, (), {}, {}, [], ctx, context.group, None)
    return _result(app, work)
