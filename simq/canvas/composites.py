"""The composite signatures: chain, group, chord and chunks, each with its own canvas steps.

Each class overrides the steps of ``Signature`` that differ for its kind
(freeze, spec, count, leaf ids, result, send, check, copy), so what a chain
or a chord does lives in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from simq.canvas.signatures import Signature, _as_signature, _deep_copy, _members, _plain_item, from_dict, xstarmap
from simq.canvas.stamping import StampingVisitor, gathered
from simq.exceptions import InvalidSignature

if TYPE_CHECKING:
    from simq.app import App
    from simq.canvas.checks import Checker
    from simq.canvas.run import Runner

__all__ = ["chain", "chord", "chunks", "group"]


class chain(Signature):  # noqa: N801 - Celery's name
    """Run tasks one after another, each receiving the previous result: ``chain(a.s(), b.s())`` or ``a.s() | b.s()``."""

    kind = "chain"

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for t in tasks:
            sig = _as_signature(app, t)
            if isinstance(sig, chain):
                flat.extend(sig.tasks)
            else:
                flat.append(sig)
        app = app or next((t._app for t in flat if t._app is not None), None)
        super().__init__("simq.chain", (), {"tasks": flat}, options, subtask_type="chain", app=app)

    @property
    def tasks(self) -> list[Signature]:
        return _members(self)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app)
        return NotImplemented

    def link(self, callback: Any) -> Signature:
        return self.tasks[-1].link(callback)

    def link_error(self, errback: Any) -> Signature:
        for t in self.tasks:
            t.link_error(errback)
        return _as_signature(self._app, errback)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    def _stamp(self, visitor: StampingVisitor | None, append: bool, headers: Mapping[str, Any]) -> None:
        _stamp_members(self, "chain", visitor, append, headers)

    def _freeze(self, app: App) -> None:
        Signature._freeze(self, app)
        flat = _spliced(self.tasks)
        out: list[Signature] = []
        i = 0
        while i < len(flat):  # a group followed by anything is a chord
            t = flat[i]
            if isinstance(t, group) and i + 1 < len(flat):
                out.append(chord(t, flat[i + 1], app=app))
                i += 2
            else:
                out.append(t)
                i += 1
        self["kwargs"]["tasks"] = out
        for t in out:
            t._freeze(app)

    def _spec(self) -> Any:
        return self.tasks[-1]._spec()

    def _count(self) -> int:
        return self.tasks[-1]._count()

    def _leaf_ids(self) -> Iterator[str]:
        for t in self.tasks:
            yield from t._leaf_ids()

    def _result(self, app: App, parent: Any) -> Any:
        result = parent
        for t in self.tasks:
            result = t._result(app, result)
        return result

    def _nested(self) -> list[Any]:
        return list(self["kwargs"].get("tasks") or [])

    def _copy_nested(self) -> None:
        self["kwargs"]["tasks"] = [
            _deep_copy(from_dict(t, self._app), self._app) for t in self["kwargs"].get("tasks") or []
        ]

    def _send(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Mapping[str, Any],
        cont: list[Any],
        ctx: Mapping[str, Any] | None,
        group_id: str | None,
        group_index: int | None,
    ) -> None:
        if self.immutable:  # takes no parent result, as an immutable task
            args, kwargs = (), {}
        tasks = self.tasks
        rest = runner.continuation(tasks[1:], self.id) + list(cont)
        tasks[0]._send(runner, args, kwargs, options, rest, ctx, group_id, group_index)

    def _check(self, checker: Checker, path: str) -> None:
        tasks = self["kwargs"].get("tasks") or []
        if not tasks:
            raise InvalidSignature(f"{path or 'canvas'}: an empty chain has nothing to run")
        for i, t in enumerate(tasks):
            checker.visit(t, f"{path}chain[{i}].")


def _stamp_members(
    sig: chain | group, kind: str, visitor: StampingVisitor | None, append: bool, headers: Mapping[str, Any]
) -> None:
    """A chain's or a group's stamping: ``on_<kind>_start``'s stamps to its links and members, then ``on_<kind>_end``.

    ``kind`` is given, not read from ``sig.kind``: a registered subclass has its own kind name.
    """
    stamps = gathered(visitor, f"on_{kind}_start", sig, append, headers)
    sig._stamp_links(visitor, append, stamps)
    for t in sig.tasks:
        t._stamp(visitor, append, stamps)
    if visitor is not None:
        getattr(visitor, f"on_{kind}_end")(sig, **stamps)


def _spliced(tasks: list[Signature]) -> list[Signature]:
    """A chain's tasks with nested chains spliced in; a group of one task is that task here, as in Celery."""
    flat: list[Signature] = []
    for t in tasks:
        while isinstance(t, group) and len(t) == 1:
            t = t.tasks[0]
        if isinstance(t, chain):
            flat.extend(_spliced(t.tasks))
        elif isinstance(t, chunks):
            flat.append(t.group())
        else:
            flat.append(t)
    return flat


class group(Signature):  # noqa: N801 - Celery's name
    """Run tasks in parallel; ``group(...)()`` returns a ``GroupResult`` whose ``get()`` keeps this order.

    Groups nested in a group are unrolled, as Celery does: ``group(a, group(b, c))``
    is ``group(a, b, c)`` (a chain or a chord in a group stays one member).
    """

    kind = "group"

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        members = _unroll(app, tasks)
        app = app or next((t._app for t in members if t._app is not None), None)
        super().__init__("simq.group", (), {"tasks": members}, options, subtask_type="group", app=app)

    @property
    def tasks(self) -> list[Signature]:
        return _members(self)

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, group):
            return chain(self, other, app=self._app)
        if isinstance(other, Signature):
            return chord(self, other, app=self._app)
        return NotImplemented

    def __len__(self) -> int:
        return len(self["kwargs"].get("tasks") or [])

    def link(self, callback: Any) -> Signature:
        """As Celery does: an immutable copy of ``callback`` is linked to the group's *first* task only.

        So it runs once, when that task succeeds, with no argument, whatever
        the other members do. To run something with every member's result,
        use ``chord(group, callback)`` or ``group | callback``.
        """
        tasks = self.tasks
        if not tasks:
            raise InvalidSignature(f"an empty group has no task to link {callback!r} to")
        sig = _deep_copy(_as_signature(self._app, callback), self._app).set(immutable=True)
        return tasks[0].link(sig)

    def link_error(self, errback: Any) -> Signature:
        """As Celery does: ``errback`` is linked to every task of the group (so it may be called once per failed task)."""
        for t in self.tasks:
            t.link_error(errback)
        return _as_signature(self._app, errback)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def _stamp(self, visitor: StampingVisitor | None, append: bool, headers: Mapping[str, Any]) -> None:
        _stamp_members(self, "group", visitor, append, headers)

    def _freeze(self, app: App) -> None:
        Signature._freeze(self, app)
        # groups nested later, or as dicts (from the wire); one with an id already is a chunks turned into its group
        self["kwargs"]["tasks"] = _unroll(app, self.tasks, keep_frozen=True)
        members = self.tasks
        for i, t in enumerate(members):
            if isinstance(t, chunks):
                members[i] = t.group()
        for t in members:
            t._freeze(app)

    def _spec(self) -> Any:
        return {"g": self.id, "r": [t._spec() for t in self.tasks]}

    def _count(self) -> int:
        members = self.tasks
        # an empty group reports once itself, when it is reached
        return sum(t._count() for t in members) if members else 1

    def _leaf_ids(self) -> Iterator[str]:
        tasks = self.tasks
        if not tasks and self.id is not None:
            yield self.id  # an empty group keeps its own record
        for t in tasks:
            yield from t._leaf_ids()

    def _result(self, app: App, parent: Any) -> Any:
        from simq.result import GroupResult

        return GroupResult(self.id or "", [t._result(app, None) for t in self.tasks], app, parent=parent)

    def _nested(self) -> list[Any]:
        return list(self["kwargs"].get("tasks") or [])

    def _copy_nested(self) -> None:
        self["kwargs"]["tasks"] = [
            _deep_copy(from_dict(t, self._app), self._app) for t in self["kwargs"].get("tasks") or []
        ]

    def _send(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Mapping[str, Any],
        cont: list[Any],
        ctx: Mapping[str, Any] | None,
        group_id: str | None,
        group_index: int | None,
    ) -> None:
        if self.immutable:  # takes no parent result, as an immutable task
            args, kwargs = (), {}
        if cont:  # a group with something after it is a chord whose body is that
            nxt, rest = runner.pop(cont)
            as_chord = chord(self, nxt, app=runner.app)
            as_chord["options"] = {**as_chord["options"], "task_id": self.id}
            as_chord._send(runner, args, kwargs, options, rest, ctx, group_id, group_index)
            return
        gid = self.id or runner.app.new_id()
        members = self.tasks
        runner.save_group(gid, self._spec())
        if not members:
            runner.empty_group(gid, ctx)  # nothing to run: the group is done now, with the value []
            return
        for i, member in enumerate(members):
            member._send(runner, args, kwargs, options, [], ctx, gid, i)

    def _check(self, checker: Checker, path: str) -> None:
        for i, t in enumerate(self["kwargs"].get("tasks") or []):
            checker.visit(t, f"{path}group[{i}].")


def _unroll(app: App | None, tasks: Iterable[Any], keep_frozen: bool = False) -> list[Signature]:
    """Members with every nested group replaced by its own members, in order (chunks stay one member).

    With ``keep_frozen``, a nested group that has its id already stays one
    member: freezing turns a ``chunks`` member into its group, so a canvas
    frozen twice (``sig.freeze()``, then sent) must not unroll it then.
    """
    out: list[Signature] = []
    for t in tasks:
        sig = _as_signature(app, t)
        if isinstance(sig, group) and not (keep_frozen and sig.id is not None):
            out.extend(_unroll(app, sig.tasks, keep_frozen))
        else:
            out.append(sig)
    return out


class chord(Signature):  # noqa: N801 - Celery's name
    """A header group and a body called once with all header results, in header order."""

    kind = "chord"

    def __init__(self, header: Any = (), body: Any = None, app: App | None = None, **options: Any) -> None:
        hdr: Any
        if isinstance(header, Iterator) and not isinstance(header, Mapping):  # a generator: sent as it yields
            hdr = _LazyHeader(header)
        else:
            hdr = header if isinstance(header, group) else group(header, app=app)
        app = app or getattr(hdr, "_app", None) or (body._app if isinstance(body, Signature) else None)
        kwargs = {"header": hdr, "body": _as_signature(app, body) if body is not None else None}
        super().__init__("simq.chord", (), kwargs, options, subtask_type="chord", app=app)

    @property
    def header(self) -> group:
        """The header group (a lazy header, not sent yet, is read to its end now: see ``lazy_header``)."""
        hdr = self["kwargs"]["header"]
        if isinstance(hdr, _LazyHeader):
            hdr = self["kwargs"]["header"] = hdr.materialise(self._app)
        elif not isinstance(hdr, group):
            hdr = self["kwargs"]["header"] = from_dict(hdr, self._app)
        return hdr  # type: ignore[no-any-return]

    def lazy_header(self) -> Iterator[Any] | None:
        """The header's iterator if it was given one (a generator) and nobody has read it: taken, so only once."""
        hdr = self["kwargs"]["header"]
        if isinstance(hdr, _LazyHeader):
            return hdr.take()
        return None

    @property
    def body(self) -> Signature | None:
        body = self["kwargs"].get("body")
        if body is None:
            return None
        if not isinstance(body, Signature):
            body = self["kwargs"]["body"] = from_dict(body, self._app)
        return body

    @property
    def tasks(self) -> list[Signature]:
        """The header's tasks (Celery's name), themselves: ``for t in c.tasks: t.link_error(eb)`` changes the chord."""
        return self.header.tasks

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.body is None and len(args) == 1 and not kwargs and isinstance(args[0], Signature):
            # chord(header)(body); a lazy header stays lazy
            items = self.lazy_header()
            header = items if items is not None else self.header
            return chord(header, args[0], app=self._app, **self.options).apply_async()
        return self.apply_async(args, kwargs)

    def link(self, callback: Any) -> Signature:
        if self.body is None:
            raise InvalidSignature("this chord has no body yet: chord(header, body)")
        return self.body.link(callback)

    def link_error(self, errback: Any) -> Signature:
        """Link ``errback`` to the body; with ``task_allow_error_cb_on_chord_header``, to every header task too.

        By default (as Celery) it is called once, for the body, when the chord
        fails; with the setting on it is also called for each header task that
        fails, so a chord with two failed header tasks calls it three times.
        """
        if self.body is None:
            raise InvalidSignature("this chord has no body yet: chord(header, body)")
        if self.app.conf.task_allow_error_cb_on_chord_header:
            for t in self.header.tasks:
                t.link_error(errback)
        return self.body.link_error(errback)

    def __repr__(self) -> str:
        hdr = self["kwargs"]["header"]
        shown = "<lazy header>" if isinstance(hdr, _LazyHeader) and hdr.pending else repr(self.header)
        return f"chord({shown}, {self.body!r})"

    def _stamp(self, visitor: StampingVisitor | None, append: bool, headers: Mapping[str, Any]) -> None:
        """The header's tasks get ``on_chord_header_start``'s stamps; the body those and ``on_chord_body``'s."""
        stamps = gathered(visitor, "on_chord_header_start", self, append, headers)
        self._stamp_links(visitor, append, stamps)
        hdr = self["kwargs"]["header"]
        if isinstance(hdr, _LazyHeader) and hdr.pending:  # stamped as each part is yielded, still lazily
            self["kwargs"]["header"] = _LazyHeader(_stamped(hdr.take(), self._app, visitor, append, stamps))
        else:
            for t in self.header.tasks:
                t._stamp(visitor, append, stamps)
        if visitor is not None:
            visitor.on_chord_header_end(self, **stamps)
        body = self.body
        if body is not None:
            body._stamp(visitor, append, gathered(visitor, "on_chord_body", self, append, stamps))

    def _freeze(self, app: App) -> None:
        Signature._freeze(self, app)
        header = self.header
        header["options"] = {**header["options"], "task_id": self["options"]["task_id"]}
        header._freeze(app)
        body = self.body
        if body is not None:
            if isinstance(body, chunks):
                body = self["kwargs"]["body"] = body.group()
            body._freeze(app)

    def _spec(self) -> Any:
        return self.body._spec()  # type: ignore[union-attr]

    def _count(self) -> int:
        return self.body._count()  # type: ignore[union-attr]

    def _leaf_ids(self) -> Iterator[str]:
        yield from self.header._leaf_ids()
        if self.body is not None:
            yield from self.body._leaf_ids()

    def _result(self, app: App, parent: Any) -> Any:
        header = self.header._result(app, parent)
        return self.body._result(app, header)  # type: ignore[union-attr]

    def _nested(self) -> list[Any]:
        kw = self["kwargs"]
        hdr = kw.get("header")
        return ([] if isinstance(hdr, _LazyHeader) else [hdr]) + ([kw["body"]] if kw.get("body") is not None else [])

    def _copy_nested(self) -> None:
        kw = self["kwargs"]
        kw["header"] = _deep_copy(self.header, self._app)
        if kw.get("body") is not None:
            kw["body"] = _deep_copy(from_dict(kw["body"], self._app), self._app)

    def _send(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Mapping[str, Any],
        cont: list[Any],
        ctx: Mapping[str, Any] | None,
        group_id: str | None,
        group_index: int | None,
    ) -> None:
        if self.immutable:  # takes no parent result, as an immutable task
            args, kwargs = (), {}
        header = self.header
        body: Signature = self.body  # type: ignore[assignment]
        cid = header.id or runner.app.new_id()
        header_ctx = runner.save_chord(cid, header, body, cont, ctx)
        header._send(runner, args, kwargs, options, [], header_ctx, None, None)

    def _check(self, checker: Checker, path: str) -> None:
        kw = self["kwargs"]
        checker.visit(self.header, f"{path}chord.header.")
        if kw.get("body") is None:
            raise InvalidSignature(
                f"{path or 'canvas'}: a chord needs a body: chord(header, body) or chord(header)(body)"
            )
        checker.visit(kw.get("body"), f"{path}chord.body.")


class _LazyHeader:
    """A chord header given as an iterator: sent part by part as it yields (``simq.canvas.run``).

    Shared by every shallow copy of the chord, so whichever reads it first
    (sending it, or anything that needs the whole header) reads it for all.
    It is not data: encoding a chord whose lazy header was never read fails.
    """

    __slots__ = ("items", "materialised", "pending")

    def __init__(self, items: Iterator[Any]) -> None:
        self.items = items
        self.pending = True
        self.materialised: group | None = None

    def take(self) -> Iterator[Any] | None:
        if not self.pending:
            return None
        self.pending = False
        return self.items

    def materialise(self, app: App | None) -> group:
        if self.materialised is None:
            if not self.pending:
                raise InvalidSignature("this chord's lazy header was sent already: it can be read only once")
            self.pending = False
            self.materialised = group(list(self.items), app=app)
        return self.materialised


def _stamped(
    items: Iterator[Any] | None, app: App | None, visitor: StampingVisitor | None, append: bool, stamps: Any
) -> Iterator[Any]:
    for item in items or ():
        sig = _as_signature(app, item)
        sig._stamp(visitor, append, stamps)
        yield sig


class chunks(Signature):  # noqa: N801 - Celery's name
    """``task.chunks(items, n)``: split ``items`` into parts of ``n``, each a ``starmap`` task; a group of them."""

    kind = "chunks"

    def __init__(
        self, task: Any = None, it: Iterable[Any] = (), n: int = 1, app: App | None = None, **options: Any
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidSignature(f"chunks needs a chunk size of at least 1, got {n!r}")
        name = task if isinstance(task, str) else task.name
        app = app or (None if isinstance(task, str) else task.app)
        items = [_plain_item(i) for i in it]
        super().__init__(
            "simq.chunks", (), {"task": name, "it": items, "n": n}, options, subtask_type="chunks", app=app
        )

    def group(self) -> group:
        """The group of ``starmap`` tasks, one per chunk."""
        kw = self["kwargs"]
        items, n = list(kw["it"]), int(kw["n"])
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        return group(
            [xstarmap(kw["task"], part, app=self._app).set(immutable=True) for part in parts],
            app=self._app,
            **self.options,
        )

    def __repr__(self) -> str:
        kw = self["kwargs"]
        return f"{kw['task']}.chunks({len(kw['it'])} items, {kw['n']})"

    # A chunks node is replaced by its group when frozen inside a canvas; alone, it acts as that group.
    def _freeze(self, app: App) -> None:
        Signature._freeze(self, app)

    def _copy_nested(self) -> None:
        self["kwargs"]["it"] = list(self["kwargs"]["it"])

    def _send(
        self,
        runner: Runner,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: Mapping[str, Any],
        cont: list[Any],
        ctx: Mapping[str, Any] | None,
        group_id: str | None,
        group_index: int | None,
    ) -> None:
        grp = self.group()
        grp._freeze(runner.app)
        grp._send(runner, args, kwargs, options, cont, ctx, group_id, group_index)

    def _check(self, checker: Checker, path: str) -> None:
        kw = self["kwargs"]
        checker.visit(Signature(kw.get("task"), app=checker.app), path)
        checker.encodable(self, kw.get("it"), f"{path}<{kw.get('task')}.chunks>.items", None)
