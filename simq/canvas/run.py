"""Running a canvas: the send path, continuations, chord counting, and the worker's hooks."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from simq import states
from simq.backends.base import ResultMeta, exception_from_dict, exception_to_dict
from simq.calling import NO_LINEAGE, Lineage, check_options
from simq.canvas import records
from simq.canvas.checks import validate
from simq.canvas.composites import _unroll, chain, chord, chunks, group
from simq.canvas.plan import count as _count
from simq.canvas.plan import leaf_ids as _leaf_ids
from simq.canvas.plan import prepare as _prepare
from simq.canvas.plan import result_from_spec
from simq.canvas.plan import result_of as _result
from simq.canvas.plan import spec as _spec
from simq.canvas.signatures import (
    Signature,
    _deep_copy,
    _listify,
    from_dict,
)
from simq.exceptions import ChordError, InvalidSignature, RoutingError, SerializationError

if TYPE_CHECKING:
    from simq.app import App
    from simq.task import Task
    from simq.worker import Request, Worker

__all__ = ["on_failure", "on_revoked", "on_success", "send"]

log = logging.getLogger("simq.canvas")

#: Continuations longer than this are stored in the result backend instead of riding in every message.
INLINE_CHAIN = 8


def send(
    app: App, sig: Signature, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: Mapping[str, Any]
) -> Any:
    """The entry point of every canvas send: copy, check, freeze, send; return the result handle."""
    if isinstance(sig, chord):
        items = sig.lazy_header()
        if items is not None:
            return _send_lazy_chord(app, sig, items, tuple(args or ()), dict(kwargs or {}), dict(options))
    validate(app, sig)
    work = _deep_copy(sig, app)
    options = dict(options)
    task_id = options.pop("task_id", None)
    if task_id is not None:
        work["options"] = {**work["options"], "task_id": task_id}
    if isinstance(work, chunks):
        work = work.group()
    if work.subtask_type is not None:
        # link= / link_error= given when sending a canvas: chain -> its last task, chord -> its body
        if isinstance(work, group) and options.get("link") is not None:
            # as Celery: a callback for the whole group needs its results, which is a chord
            raise InvalidSignature(
                f"a group cannot be sent with link={options['link']!r}: to run it with every member's result, use "
                "chord(group, callback) or group | callback (group.link(callback) links it to the first task only)"
            )
        for cb in _listify(options.pop("link", None)):
            work.link(cb)
        for eb in _listify(options.pop("link_error", None)):
            work.link_error(eb)
    if isinstance(work, chain) and task_id is not None:
        # the id of a chain is the id of its last task
        work["options"].pop("task_id")
        last = work.tasks[-1]
        last["options"] = {**last["options"], "task_id": task_id}
    _prepare(app, work)
    result = _result(app, work)
    with app.batched_publishing():  # a group's members go out together (one round trip on Redis)
        _apply(app, work, tuple(args or ()), dict(kwargs or {}), options, [], None)
    return result


def _send_lazy_chord(
    app: App, sig: chord, items: Iterator[Any], args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any]
) -> Any:
    """A chord whose header is an iterator: each header part is sent as it is yielded, before the next is asked for.

    The chord's size is not known until the iterator ends, so the chord
    counts as ``Task.add_to_chord`` does: its record starts with no header
    parts and a size of one (the sender's own report, made once every part
    is sent); each part moves the count back by what it reports before it is
    sent and stores where its value is, in header order. So the body runs
    once every part and the sender have reported, with the values in order.
    """
    body = sig.body
    if body is None:
        raise InvalidSignature("a chord needs a body: chord(header, body) or chord(header)(body)")
    body = _deep_copy(body, app)
    for cb in _listify(options.pop("link", None)):
        body.link(cb)
    for eb in _listify(options.pop("link_error", None)):
        body.link_error(eb)
    validate(app, body, "chord.body.")
    _prepare(app, body)
    backend = app.backend
    cid = str(options.pop("task_id", None) or sig.id or app.new_id())
    key = records.chord_key(cid)
    record: dict[str, Any] = {"body": body, "cont": [], "ctx": None, "spec": {"g": cid, "r": []}, "added": True}
    records.store(app, key, record)
    ctx = {"id": cid, "size": 1, "fail": _fail_ids(app, body, [], None)}
    specs: list[Any] = []
    try:
        for item in items:
            for part in _unroll(app, [item]):  # a group in a header is its members, as in any chord
                validate(app, part, f"chord.header[{len(specs)}].")
                work = _deep_copy(part, app)
                if isinstance(work, chunks):
                    work = work.group()
                _prepare(app, work)
                backend.incr(f"{key}.done", -_count(work))
                records.store(app, records.added_key(cid, backend.incr(f"{key}.added")), _spec(work))
                specs.append(_spec(work))
                _apply(app, work, args, kwargs, options, [], ctx, cid, len(specs) - 1)
    except Exception as exc:  # the header could not be read to its end: the chord can never end
        _fail_body(app, record, _noted(exc, f"simq: the lazy header of chord {cid} raised, so its body never ran"))
        raise
    records.save_group(app, cid, {"g": cid, "r": specs})
    _chord_report(app, ctx, [f"{cid}.header-sent"])
    return _result(app, body, result_from_spec(app, {"g": cid, "r": specs}))


def _apply(
    app: App,
    sig: Signature,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: Mapping[str, Any],
    cont: list[Any],
    ctx: Mapping[str, Any] | None,
    group_id: str | None = None,
    group_index: int | None = None,
) -> None:
    """Send a prepared node with a parent's ``args``, what follows it (``cont``) and the chord it reports to."""
    sig._send(Runner(app), args, kwargs, options, cont, ctx, group_id, group_index)


@attrs.define(eq=False, slots=True)
class Runner:
    """What sending a canvas node needs from the app and its result backend (``Signature._send`` calls it)."""

    app: App

    def send_task(
        self,
        name: str,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        cont: list[Any],
        ctx: Mapping[str, Any] | None,
        group_id: str | None,
        group_index: int | None,
    ) -> None:
        if options:
            check_options(options)
        embed: dict[str, Any] = {}
        if cont:
            embed["chain"] = cont
        if ctx:
            embed["chord"] = dict(ctx)
        lineage = Lineage(group_id, group_index) if group_id is not None else NO_LINEAGE
        self.app.send_call(name, args, kwargs, options, lineage=lineage, embed=embed)

    def continuation(self, tasks: list[Signature], chain_id: str | None) -> list[Any]:
        return _make_cont(self.app, tasks, chain_id or self.app.new_id())

    def pop(self, cont: Sequence[Any]) -> tuple[Signature, list[Any]]:
        return _pop(self.app, cont)

    def save_group(self, gid: str, spec: Any) -> None:
        records.save_group(self.app, gid, spec)

    def empty_group(self, gid: str, ctx: Mapping[str, Any] | None) -> None:
        """A group with no members is done when reached, with the value ``[]``."""
        self.app.backend.store_result(gid, [], states.SUCCESS, name="simq.group")
        if ctx:
            _chord_report(self.app, ctx, [gid])

    def save_chord(
        self, cid: str, header: Signature, body: Signature, cont: list[Any], ctx: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Store the chord's record; return what its header tasks carry to report to it."""
        app = self.app
        records.store(
            app, records.chord_key(cid), {"body": body, "cont": list(cont), "ctx": ctx, "spec": _spec(header)}
        )
        # "fail": what to mark FAILURE if the chord's record cannot be read back (the message is signed, the record may not be)
        fail = _fail_ids(app, body, cont, ctx)
        return {"id": cid, "size": _count(header), "fail": fail}


# -- continuations: what follows a task in a chain ---------------------------------------------------


def _make_cont(app: App, tasks: list[Signature], chain_id: str) -> list[Any]:
    """Short continuations ride in the message; long ones are stored once and referenced.

    A reference carries the ids of the chain's result ("fail"), so that if a
    stored link cannot be read back (expired, or not signed with the key) the
    chain's result is marked FAILURE instead of staying PENDING.
    """
    if len(tasks) <= INLINE_CHAIN:
        return list(tasks)
    backend = app.backend
    serializer = app.conf.task_serializer
    for i, t in enumerate(tasks):
        body, _, _ = app.serializers.dumps(t, serializer, what="chain link")
        backend.put_record(records.link_key(chain_id, i), body)
    backend.sync()  # stored before the first link is sent (see records.store)
    return [{"ref": chain_id, "next": 0, "size": len(tasks), "fail": _spec_ids(_spec(tasks[-1]))}]


def _is_ref(item: Any) -> bool:
    return isinstance(item, Mapping) and "ref" in item and "task" not in item


def _pop(app: App, cont: Sequence[Any]) -> tuple[Signature, list[Any]]:
    head, rest = cont[0], list(cont[1:])
    if _is_ref(head):
        index, size = int(head["next"]), int(head["size"])
        sig = from_dict(records.load(app, records.link_key(str(head["ref"]), index)), app)
        if index + 1 < size:
            rest.insert(0, {"ref": head["ref"], "next": index + 1, "size": size})
        return sig, rest
    return from_dict(head, app), rest


def _iter_ref(app: App, item: Mapping[str, Any]) -> Iterator[Signature]:
    for index in range(int(item["next"]), int(item["size"])):
        yield from_dict(records.load(app, records.link_key(str(item["ref"]), index)), app)


def _spec_ids(spec: Any) -> list[str]:
    """The task ids a spec (``plan.spec``) points at, in order."""
    if isinstance(spec, Mapping):
        return [task_id for child in spec["r"] for task_id in _spec_ids(child)]
    return [str(spec)]


def _fail_ids(app: App, body: Signature, cont: Sequence[Any], ctx: Mapping[str, Any] | None) -> list[str]:
    """What a user waits on past a chord: its body's results, its chain's, and those of the chord around it."""
    ids = _spec_ids(_spec(body))
    if cont:
        last = cont[-1]
        ids += [str(i) for i in last.get("fail", ())] if _is_ref(last) else _spec_ids(_spec(from_dict(last, app)))
    if ctx:
        ids += [str(i) for i in ctx.get("fail", ())]
    return list(dict.fromkeys(ids))


def _unreadable(app: App, err: InvalidSignature, fail: Iterable[Any], step: str) -> None:
    """A canvas record could not be read back (missing, or not signed with the key): fail what it led to, never run it."""
    ids = [str(i) for i in fail]
    log.error("%s: %s; marking %s FAILURE", step, err, ", ".join(ids) or "nothing")
    backend = app.backend
    for task_id in ids:
        try:
            done = backend.get_meta(task_id).ready
        except InvalidSignature:  # that result was forged too: replace it
            done = False
        if not done:
            backend.mark_as_failure(task_id, err)


def _part_ids(spec: Any) -> list[str]:
    """The ids that report to an enclosing chord for a spec: as many as ``plan.count`` says (an empty group: its own)."""
    if isinstance(spec, Mapping):
        children = spec["r"]
        if not children:
            return [str(spec["g"])]
        return [part for child in children for part in _part_ids(child)]
    return [str(spec)]


def _collect(app: App, spec: Any) -> tuple[Any, ResultMeta | None]:
    """The values a spec points at, in order (a chord's header results), read in one ``get_many``.

    Also the first of them, in header order, that failed (FAILURE or REVOKED),
    or None: the one whose exception a failed chord raises.
    """
    ids: list[str] = []

    def gather(node: Any) -> None:
        if isinstance(node, Mapping) and node["r"]:
            for child in node["r"]:
                gather(child)
        else:  # a task, or an empty group: it keeps a record of its own ([], or the failure that stopped it)
            ids.append(str(node["g"] if isinstance(node, Mapping) else node))

    gather(spec)
    metas = app.backend.get_many(ids)
    failed = next((meta for meta in metas if meta.state in states.PROPAGATE_STATES), None)
    values = iter([meta.result for meta in metas])

    def build(node: Any) -> Any:
        if isinstance(node, Mapping):
            if not node["r"]:
                value = next(values)
                return value if isinstance(value, list) else []
            return [build(child) for child in node["r"]]
        return next(values)

    return build(spec), failed


def _noted(exc: BaseException, note: str) -> BaseException:
    """A copy of ``exc`` (as the result backend would give it back) with ``note`` added; ``exc`` is left alone."""
    copy = exception_from_dict(exception_to_dict(exc))
    copy.add_note(note)
    return copy


def _mark_failed(app: App, sig: Signature, exc: BaseException) -> None:
    backend = app.backend
    for task_id in _leaf_ids(sig):
        if not backend.get_meta(task_id).ready:
            backend.mark_as_failure(task_id, exc)


# -- what the worker does after a task with an embedded canvas ---------------------------------------


def on_success(worker: Worker, request: Request, retval: Any) -> None:
    """Send the callbacks and the next chain link, or report to the chord this task belongs to.

    The task's children are recorded, and with its result stored (``sync``),
    before any of them is sent: a child on another worker may finish at once,
    and whoever waited on it then reads ``parent.children`` (a chain link's
    record once came after the next link's result on Redis).
    """
    app = worker.app
    embed = request.message.embed
    callbacks: list[Signature] = []
    for data in embed.get("callbacks") or ():
        sig = _deep_copy(from_dict(data, app), app)
        _prepare(app, sig)
        callbacks.append(sig)
    cont = embed.get("chain")
    ctx = embed.get("chord")
    nxt: Signature | None = None
    rest: list[Any] = []
    if cont:
        try:
            nxt, rest = _pop(app, cont)
        except InvalidSignature as err:  # a stored link is missing or forged: it never runs, what it led to fails
            log.error("chain after task %s cannot go on: %s", request.id, err)
            _fail_forward(app, cont, ctx, err, request.id, [request.id])
    children = [_spec(sig) for sig in callbacks]
    if nxt is not None:
        children.append(_spec(nxt))
    if children:
        records.save_children(app, request.id, children)
        app.backend.sync()
    for sig in callbacks:
        _apply(app, sig, (retval,), {}, {}, [], None)
    if cont and nxt is not None:
        try:
            _apply(app, nxt, (retval,), {}, {}, rest, ctx)  # (a group next pops one more link before sending)
        except InvalidSignature as err:
            log.error("chain after task %s cannot go on: %s", request.id, err)
            _fail_forward(app, cont, ctx, err, request.id, [request.id])
    elif ctx and not cont:
        _chord_report(app, ctx, [request.id])


def _chord_report(
    app: App, ctx: Mapping[str, Any], parts: Sequence[str], failure: tuple[BaseException, str] | None = None
) -> None:
    """Header parts finished (``failure``: the exception and task id, if they failed); the last report ends the chord.

    Every part counts once, failed or not, so a chord ends when its whole
    header has: then the body is sent, or, if a header task failed, the chord
    fails with the first failed one in header order (see ``_end_chord``).
    A failed task stands for every part it stopped (``parts``: a chain's last
    tasks). A redelivered task (a worker died after finishing it) reports
    twice; the per-part marker makes the second report count nothing, so the
    count never runs ahead of the header. If the worker died between
    completing the count and ending the chord, the redelivered part finds the
    count complete and the chord not marked ended, and ends it (at least
    once, never zero times).
    """
    backend = app.backend
    key = records.chord_key(str(ctx["id"]))
    size = int(ctx["size"])
    counts = [backend.count_part(f"{key}.done", f"{key}.part.{part}") for part in parts]
    if size not in counts:
        if any(count is not None for count in counts):
            return
        # counted before: only a chord that never ended is our business
        if backend.incr(f"{key}.done", 0) != size or backend.incr(f"{key}.sent", 0):
            return
    _end_chord(app, ctx, failure)


def _end_chord(app: App, ctx: Mapping[str, Any], failure: tuple[BaseException, str] | None) -> None:
    """The whole header is done: send the body with the header's values, or fail it with the first failed header task."""
    backend = app.backend
    cid = str(ctx["id"])
    key = records.chord_key(cid)
    try:
        record = records.load(app, key)
        spec = record["spec"]
        if record.get("added"):  # Task.add_to_chord added parts: their results follow the header's
            added = [
                records.load(app, records.added_key(cid, i)) for i in range(1, backend.incr(f"{key}.added", 0) + 1)
            ]
            spec = {"g": spec["g"], "r": [*spec["r"], *added]}
        values, failed = _collect(app, spec)  # header results are records too: verified before decoding
    except InvalidSignature as err:
        _unreadable(app, err, ctx.get("fail", ()), f"chord {cid}")
        backend.incr(f"{key}.sent")
        return
    if failed is not None:
        exc = failed.result
        if not isinstance(exc, BaseException):
            exc = ChordError(f"chord {cid}: header task {failed.task_id} ended {failed.state}", failed.task_id)
        _fail_chord(app, cid, record, exc, failed.task_id, failed.name)
    elif failure is not None:  # a failure whose result is not in the backend (it expired): fail with what we have
        _fail_chord(app, cid, record, failure[0], failure[1], None)
    else:
        body = from_dict(record["body"], app)
        try:
            with app.batched_publishing():
                _apply(app, body, (values,), {}, {}, list(record.get("cont") or []), record.get("ctx"))
        except (SerializationError, RoutingError) as exc:  # it never can be sent (a broker that is down: redelivery)
            log.error("chord %s: its body cannot be sent: %s", cid, exc)
            unsent = ChordError(
                f"chord {cid}: its body {_describe(body)} could not be sent ({type(exc).__name__}: {exc}), so it never ran",
                None,
                exception_to_dict(exc),
            )
            _fail_body(app, record, unsent)
    backend.incr(f"{key}.sent")


def _errback_is_inline(task: Task) -> bool:
    run = task.run
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3


def _call_errbacks(app: App, errbacks: Iterable[Any], context: Any, exc: BaseException, traceback: str | None) -> None:
    """Call each errback in the form its own signature asks for (see docs/canvas.md)."""
    for data in errbacks:
        sig = from_dict(data, app)
        task = app.tasks.get(sig.task)
        if task is not None and _errback_is_inline(task):
            # The modern form, errback(request, exc, traceback): runs inline in the worker.
            try:
                task(context, exc, traceback, *sig.args, **sig.kwargs)
            except Exception:
                log.exception("errback %s for task %s raised", sig.task, context.id)
        else:
            # The seeds' form, errback(task_id): sent as a task with the failed task's id.
            copy = _deep_copy(sig, app)
            _prepare(app, copy)
            _apply(app, copy, (context.id,), {}, {}, [], None)


def on_failure(worker: Worker, request: Request, exc: BaseException, traceback: str) -> None:
    """Call the errbacks; fail what the chain would have run next; report to the chord this task belongs to."""
    app = worker.app
    embed = request.message.embed
    errbacks = embed.get("errbacks")
    if errbacks:
        _call_errbacks(app, errbacks, request.context(), exc, traceback)
    _fail_forward(app, embed.get("chain") or [], embed.get("chord"), exc, request.id, [request.id])


def on_revoked(worker: Worker, request: Request, exc: BaseException) -> None:
    """The task expired before it ran: what it leads to never runs either; its chord counts it as failed."""
    embed = request.message.embed
    _fail_forward(worker.app, embed.get("chain") or [], embed.get("chord"), exc, request.id, [request.id])


def _fail_forward(
    app: App,
    cont: Sequence[Any],
    ctx: Mapping[str, Any] | None,
    exc: BaseException,
    failed_id: str,
    parts: Sequence[str],
) -> None:
    """Fail what the chain would have run next, then report to the chord it belongs to.

    ``parts`` are what the failed node reports as when nothing follows it
    (its own id; a chord: its body's); otherwise the chain's last node reports.
    """
    parts = list(parts)
    if cont:
        exc = _noted(exc, f"simq: never ran, because task {failed_id} before it failed")
    for item in cont:
        if not _is_ref(item):
            sig = from_dict(item, app)
            _mark_failed(app, sig, exc)
            parts = _part_ids(_spec(sig))
            continue
        try:
            links = list(_iter_ref(app, item))
        except InvalidSignature as err:
            _unreadable(app, err, item.get("fail", ()), f"chain after task {failed_id}")
            parts = [str(i) for i in item.get("fail", ())] or parts
            continue
        for sig in links:
            _mark_failed(app, sig, exc)
        if links:
            parts = _part_ids(_spec(links[-1]))
    if ctx:
        _chord_report(app, ctx, parts, (exc, failed_id))


def _fail_chord(
    app: App, cid: str, record: Mapping[str, Any], exc: BaseException, failed_id: str, name: str | None
) -> None:
    """A header task failed: the body never runs; it, its errbacks and what follows get that task's exception, noted."""
    body = from_dict(record["body"], app)
    task = f"{name}[{failed_id}]" if name else failed_id
    note = f"simq: header task {task} of chord {cid} failed, so the chord's body {_describe(body)} never ran"
    _fail_body(app, record, _noted(exc, note))


def _describe(body: Signature) -> str:
    first = _first_id(body)
    return f"{body.task}[{first}]" if body.subtask_type is None else f"{body.subtask_type} (first task {first})"


def _fail_body(app: App, record: Mapping[str, Any], err: BaseException) -> None:
    """The chord's body never runs: it, its errbacks and what follows it get ``err``."""
    from simq.context import Context

    body = from_dict(record["body"], app)
    body_id = _first_id(body)
    _mark_failed(app, body, err)
    errbacks = list(_listify(body["options"].get("link_error")))
    if errbacks:
        context = Context(id=body_id, task=body.task, called_directly=False)
        _call_errbacks(app, errbacks, context, err, None)
    _fail_forward(app, list(record.get("cont") or []), record.get("ctx"), err, body_id, _part_ids(_spec(body)))


def _first_id(sig: Signature) -> str:
    return next(iter(_leaf_ids(sig)), sig.id or "")
