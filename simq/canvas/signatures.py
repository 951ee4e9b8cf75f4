"""Signatures: a task call (or a whole canvas) as a plain dict that can travel in a message."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from simq.exceptions import InvalidSignature

if TYPE_CHECKING:
    from simq.app import App
    from simq.task import Task

__all__ = ["MAP_TASK", "STARMAP_TASK", "Signature", "chain", "chord", "chunks", "from_dict", "group", "signature", "xmap", "xstarmap"]

MAP_TASK = "simq.map"
STARMAP_TASK = "simq.starmap"


class Signature(dict[str, Any]):
    """A task call that has not been sent: ``add.s(2, 2)``, ``add.si(2, 2)``, ``signature("proj.add", (2, 2))``."""

    def __init__(
        self,
        task: str | Task | Mapping[str, Any] | None = None,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        immutable: bool = False,
        subtask_type: str | None = None,
        app: App | None = None,
        **ex: Any,
    ) -> None:
        if isinstance(task, Mapping):
            data = dict(task)
            super().__init__(
                task=data.get("task"),
                args=tuple(data.get("args") or ()),
                kwargs=dict(data.get("kwargs") or {}),
                options=dict(data.get("options") or {}),
                immutable=bool(data.get("immutable", False)),
                subtask_type=data.get("subtask_type"),
            )
            self._app = app
            return
        name = task if isinstance(task, str) or task is None else task.name
        if app is None and task is not None and not isinstance(task, str):
            app = task.app
        super().__init__(
            task=name,
            args=tuple(args or ()),
            kwargs=dict(kwargs or {}),
            options={**dict(options or {}), **ex},
            immutable=immutable,
            subtask_type=subtask_type,
        )
        self._app = app

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        sig = cls.__new__(cls)
        dict.__init__(
            sig,
            task=data.get("task"),
            args=tuple(data.get("args") or ()),
            kwargs=dict(data.get("kwargs") or {}),
            options=dict(data.get("options") or {}),
            immutable=bool(data.get("immutable", False)),
            subtask_type=data.get("subtask_type"),
        )
        sig._app = app
        return sig

    # -- fields ---------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return str(self["task"])

    name = task

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @property
    def subtask_type(self) -> str | None:
        value = self.get("subtask_type")
        return None if value is None else str(value)

    @property
    def app(self) -> App:
        if self._app is None:
            from simq.app import current_app

            return current_app()
        return self._app

    def bind(self, app: App) -> Signature:
        self._app = app
        return self

    # -- building ------------------------------------------------------------------------
    def clone(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Signature:
        """A copy with call-time ``args`` prepended (unless immutable) and ``kwargs`` merged, call-time winning."""
        sig = _deep_copy(self, self._app)
        if not self.immutable:
            if args:
                sig["args"] = tuple(args) + sig.args
            if kwargs:
                sig["kwargs"] = {**sig["kwargs"], **kwargs}
        if options:
            sig["options"] = {**sig["options"], **options}
        return sig

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set options in place (queue, countdown, priority, ...); returns self for chaining."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"] = {**self["options"], **options}
        return self

    def _add_link(self, key: str, sig: Any) -> Signature:
        sig = _as_signature(self._app, sig)
        _refuse_cycle(self, sig)
        links = self["options"].get(key)
        if links is None:
            links = []
        elif not isinstance(links, list):
            links = [links]
        self["options"] = {**self["options"], key: [*links, sig]}
        return sig  # type: ignore[no-any-return]

    def link(self, callback: Any) -> Signature:
        """Send ``callback`` with this task's result when it succeeds."""
        return self._add_link("link", callback)

    def link_error(self, errback: Any) -> Signature:
        """Call ``errback`` when this task fails (see docs/canvas.md for the two errback forms)."""
        return self._add_link("link_error", errback)

    def freeze(self, _id: str | None = None) -> Any:
        """Fix the task id(s) now, so the result is known before sending; returns the result handle."""
        if _id is not None:
            self["options"] = {**self["options"], "task_id": _id}
        from simq.canvas.plan import prepare, result_of

        prepare(self.app, self)
        return result_of(self.app, self)

    @property
    def id(self) -> str | None:
        value = self["options"].get("task_id")
        return None if value is None else str(value)

    # -- composing -----------------------------------------------------------------------
    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature):
            return chain(self, other, app=self._app)
        return NotImplemented

    # -- sending -------------------------------------------------------------------------
    def apply_async(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Send the canvas; returns an ``AsyncResult`` (or a ``GroupResult`` for a group)."""
        from simq.canvas.run import send

        return send(self.app, self, args, kwargs, options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        args = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self["kwargs"].items()])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __reduce__(self) -> Any:
        return (_rebuild, (dict(self),))


def _rebuild(data: Mapping[str, Any]) -> Signature:
    return from_dict(data, None)


class chain(Signature):  # noqa: N801 - Celery's name
    """Run tasks one after another, each receiving the previous result: ``chain(a.s(), b.s())`` or ``a.s() | b.s()``."""

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for t in tasks:
            sig = _as_signature(app, t)
            if sig.subtask_type == "chain":
                flat.extend(sig.tasks)  # type: ignore[attr-defined]
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


class group(Signature):  # noqa: N801 - Celery's name
    """Run tasks in parallel; ``group(...)()`` returns a ``GroupResult`` whose ``get()`` keeps this order."""

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping) and isinstance(tasks[0], Iterable):
            tasks = tuple(tasks[0])
        members = [_as_signature(app, t) for t in tasks]
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
        raise InvalidSignature(
            f"a group cannot take a link ({callback!r}); to run something after every member, use "
            "chord(group, callback) or group | callback"
        )

    def link_error(self, errback: Any) -> Signature:
        for t in self.tasks:
            t.link_error(errback)
        return _as_signature(self._app, errback)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"


class chord(Signature):  # noqa: N801 - Celery's name
    """A header group and a body called once with all header results, in header order."""

    def __init__(self, header: Any = (), body: Any = None, app: App | None = None, **options: Any) -> None:
        hdr = header if isinstance(header, group) else group(header, app=app)
        app = app or hdr._app or (body._app if isinstance(body, Signature) else None)
        kwargs = {"header": hdr, "body": _as_signature(app, body) if body is not None else None}
        super().__init__("simq.chord", (), kwargs, options, subtask_type="chord", app=app)

    @property
    def header(self) -> group:
        hdr = self["kwargs"]["header"]
        if not isinstance(hdr, group):
            hdr = self["kwargs"]["header"] = from_dict(hdr, self._app)
        return hdr  # type: ignore[no-any-return]

    @property
    def body(self) -> Signature | None:
        body = self["kwargs"].get("body")
        if body is None:
            return None
        if not isinstance(body, Signature):
            body = self["kwargs"]["body"] = from_dict(body, self._app)
        return body

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.body is None and len(args) == 1 and not kwargs and isinstance(args[0], Signature):
            # chord(header)(body)
            return chord(self.header, args[0], app=self._app, **self.options).apply_async()
        return self.apply_async(args, kwargs)

    def link(self, callback: Any) -> Signature:
        if self.body is None:
            raise InvalidSignature("this chord has no body yet: chord(header, body)")
        return self.body.link(callback)

    def link_error(self, errback: Any) -> Signature:
        if self.body is None:
            raise InvalidSignature("this chord has no body yet: chord(header, body)")
        return self.body.link_error(errback)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def xmap(task: Any, it: Iterable[Any], app: App | None = None) -> Signature:
    """``task.map(it)``: one message; the worker calls ``task(item)`` for each item, in order."""
    name = task if isinstance(task, str) else task.name
    app = app or (None if isinstance(task, str) else task.app)
    return Signature(MAP_TASK, (), {"task": name, "it": [_plain_item(i) for i in it]}, app=app)


def xstarmap(task: Any, it: Iterable[Any], app: App | None = None) -> Signature:
    """``task.starmap(it)``: one message; the worker calls ``task(*item)`` for each item, in order."""
    name = task if isinstance(task, str) else task.name
    app = app or (None if isinstance(task, str) else task.app)
    return Signature(STARMAP_TASK, (), {"task": name, "it": [_plain_item(i) for i in it]}, app=app)


def _plain_item(item: Any) -> Any:
    """Iterators (``range``, ``zip`` tuples) become lists so they can travel as data."""
    if isinstance(item, range | tuple | Iterator):
        return list(item)
    return item


class chunks(Signature):  # noqa: N801 - Celery's name
    """``task.chunks(items, n)``: split ``items`` into parts of ``n``, each a ``starmap`` task; a group of them."""

    def __init__(self, task: Any = None, it: Iterable[Any] = (), n: int = 1, app: App | None = None, **options: Any) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidSignature(f"chunks needs a chunk size of at least 1, got {n!r}")
        name = task if isinstance(task, str) else task.name
        app = app or (None if isinstance(task, str) else task.app)
        items = [_plain_item(i) for i in it]
        super().__init__("simq.chunks", (), {"task": name, "it": items, "n": n}, options, subtask_type="chunks", app=app)

    def group(self) -> group:
        """The group of ``starmap`` tasks, one per chunk."""
        kw = self["kwargs"]
        items, n = list(kw["it"]), int(kw["n"])
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        return group(
            [xstarmap(kw["task"], part, app=self._app).set(immutable=True) for part in parts], app=self._app, **self.options
        )

    def __repr__(self) -> str:
        kw = self["kwargs"]
        return f"{kw['task']}.chunks({len(kw['it'])} items, {kw['n']})"


def _members(sig: Signature) -> list[Signature]:
    """The member signatures of a chain or group, converted from dicts once."""
    items = sig["kwargs"].get("tasks")
    if items is None:
        items = sig["kwargs"]["tasks"] = []
    if sig.__dict__.get("_members") is items:
        return items  # type: ignore[return-value]
    for i, t in enumerate(items):
        if not isinstance(t, Signature) or t._app is None:
            items[i] = from_dict(t, sig._app)
    sig.__dict__["_members"] = items
    return items  # type: ignore[no-any-return]


_KINDS: dict[str, type[Signature]] = {"chain": chain, "group": group, "chord": chord, "chunks": chunks}


def from_dict(data: Any, app: App | None) -> Signature:
    """A signature of the right kind from its dict form (as it arrives in a message)."""
    if isinstance(data, Signature):
        if data._app is None and app is not None:
            data._app = app
        return data
    if not isinstance(data, Mapping):
        raise InvalidSignature(f"expected a signature (task.s(...)), got {data!r}")
    cls = _KINDS.get(str(data.get("subtask_type")), Signature)
    return cls._from_dict(data, app)


def signature(
    varies: str | Task | Mapping[str, Any],
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    app: App | None = None,
    **ex: Any,
) -> Signature:
    """Make a signature from a task name, a task, or its dict form."""
    if isinstance(varies, Signature) and args is None and kwargs is None and not options and not ex:
        return varies
    if isinstance(varies, Mapping):
        return from_dict(varies, app)
    return Signature(varies, args, kwargs, options, app=app, **ex)


def _as_signature(app: App | None, value: Any) -> Signature:
    if isinstance(value, Signature):
        if value._app is None and app is not None:
            value._app = app
        return value
    if isinstance(value, Mapping):
        return from_dict(value, app)
    if hasattr(value, "s") and hasattr(value, "name"):
        return Signature(value.name, app=app or getattr(value, "app", None))
    raise InvalidSignature(f"expected a signature (task.s(...)), got {value!r}")


def _deep_copy(sig: Signature, app: App | None) -> Signature:
    """A copy whose nested signatures and option dicts are copies too (args are shared, never mutated)."""
    kind = sig.get("subtask_type")
    new = _KINDS.get(str(kind), Signature)._from_dict(sig, app if app is not None else sig._app)
    options = new["options"]  # already a fresh dict
    if "link" in options or "link_error" in options:
        for key in ("link", "link_error"):
            links = options.get(key)
            if links is not None:
                options[key] = [_deep_copy(from_dict(x, new._app), new._app) for x in _listify(links)]
    if kind is None:
        return new
    if kind in ("chain", "group"):
        new["kwargs"]["tasks"] = [_deep_copy(from_dict(t, new._app), new._app) for t in new["kwargs"].get("tasks") or []]
    elif kind == "chord":
        new["kwargs"]["header"] = _deep_copy(from_dict(new["kwargs"]["header"], new._app), new._app)
        body = new["kwargs"].get("body")
        if body is not None:
            new["kwargs"]["body"] = _deep_copy(from_dict(body, new._app), new._app)
    elif kind == "chunks":
        new["kwargs"]["it"] = list(new["kwargs"]["it"])
    return new


def _listify(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple) and not isinstance(value, Mapping):
        return list(value)
    return [value]


def _refuse_cycle(parent: Signature, child: Signature) -> None:
    """``sig.link(sig)`` (or any path from ``child`` back to ``parent``) can never finish: refuse it."""
    seen: list[int] = []

    def walk(node: Any) -> bool:
        if node is parent:
            return True
        if not isinstance(node, Mapping) or id(node) in seen:
            return False
        seen.append(id(node))
        return any(walk(n) for n in _children_of(node))

    if walk(child):
        raise InvalidSignature(f"refusing a cycle: {child!r} leads back to {parent!r}, so the canvas would never end")


def _children_of(node: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    options = node.get("options") or {}
    for key in ("link", "link_error"):
        out.extend(_listify(options.get(key)))
    kind = node.get("subtask_type")
    kw = node.get("kwargs") or {}
    if kind in ("chain", "group"):
        out.extend(kw.get("tasks") or [])
    elif kind == "chord":
        out.append(kw.get("header"))
        if kw.get("body") is not None:
            out.append(kw.get("body"))
    return out
