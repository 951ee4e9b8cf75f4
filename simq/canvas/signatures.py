"""Signatures: a task call (or a whole canvas) as a plain dict that can travel in a message."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from simq.canvas.stamping import StampingVisitor, gathered, set_stamps
from simq.exceptions import ConfigurationError, InvalidSignature
from simq.shared import current_app

if TYPE_CHECKING:
    from simq.app import App
    from simq.canvas.checks import Checker
    from simq.canvas.run import Runner
    from simq.task import Task

__all__ = ["ACCUMULATE_TASK", "MAP_TASK", "STARMAP_TASK", "Signature", "from_dict", "signature", "xmap", "xstarmap"]

_S = TypeVar("_S", bound="Signature")
_BUILTIN_KINDS = ("chain", "chord", "chunks", "group")

MAP_TASK = "simq.map"
#: The body ``Task.replace`` adds after a replacement whose value is a group's: it returns the list it is given.
ACCUMULATE_TASK = "simq.accumulate"
STARMAP_TASK = "simq.starmap"


class Signature(dict[str, Any]):
    """A task call that has not been sent: ``add.s(2, 2)``, ``add.si(2, 2)``, ``signature("proj.add", (2, 2))``.

    Composite kinds (``simq.canvas.composites``) subclass it with a ``kind``
    name; ``from_dict`` rebuilds the right class from the ``subtask_type`` a
    dict carries.
    """

    kind: str | None = None
    _kinds: dict[str, type[Signature]] = {}  # filled as the composite classes are defined, then read only

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind") is not None:  # its own kind: a subclass of chain is not "chain"
            Signature._kinds[cls.kind] = cls  # type: ignore[index]

    @classmethod
    def register_type(cls, name: str | None = None) -> Callable[[type[_S]], type[_S]]:
        """A class decorator, as Celery's: signatures of the subclass keep their class across the wire.

        The subclass's instances carry ``subtask_type = name`` (default: the
        class name), and ``from_dict`` (a callback in a message, ``signature(d)``)
        rebuilds that class. The built-in kinds (chain, group, chord, chunks)
        cannot be taken; registering a name again replaces the class (a
        module imported again).
        """

        def register(subclass: type[_S]) -> type[_S]:
            if not (isinstance(subclass, type) and issubclass(subclass, Signature)):
                raise ConfigurationError(f"Signature.register_type() registers Signature subclasses, got {subclass!r}")
            kind = name or subclass.__name__
            taken = Signature._kinds.get(kind)
            if kind in _BUILTIN_KINDS and taken is not subclass:
                raise ConfigurationError(
                    f"Signature.register_type(): {kind!r} is simq's own {taken.__name__ if taken else kind} kind; "
                    "register the subclass under another name"
                )
            subclass.kind = kind
            Signature._kinds[kind] = subclass
            return subclass

        return register

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
            subtask_type=subtask_type if subtask_type is not None else type(self).kind,
        )
        self._app = app

    @classmethod
    def from_dict(cls, data: Any, app: App | None = None) -> Signature:
        """A signature of the right kind (chain, group, chord, a registered type) from its dict form, as Celery's."""
        return from_dict(data, app)

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

    @args.setter
    def args(self, value: Sequence[Any]) -> None:  # Celery's signatures let these be set
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            raise ConfigurationError(f"a signature's args must be a list or tuple, got {value!r}")
        self["args"] = tuple(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The signature's own dict, as Celery's: ``sig.kwargs["x"] = 1`` changes the signature."""
        return self["kwargs"]  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise ConfigurationError(f"a signature's kwargs must be a dict with string keys, got {value!r}")
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        """The signature's own dict, as Celery's: ``sig.options["queue"] = "q"`` changes the signature."""
        return self["options"]  # type: ignore[no-any-return]

    @options.setter
    def options(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"a signature's options must be a dict, got {value!r}")
        self["options"] = dict(value)

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
            return current_app()
        return self._app

    def bind(self, app: App) -> Signature:
        self._app = app
        return self

    # -- building ------------------------------------------------------------------------
    def clone(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Signature:
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

    def on_error(self, errback: Any) -> Signature:
        """``link_error(errback)`` that returns this signature, not the errback, so it chains: ``sig.on_error(eb).delay()``."""
        self.link_error(errback)
        return self

    def stamp(self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any) -> Signature:
        """Stamp every task of this canvas with ``headers`` and what ``visitor`` adds (docs/canvas.md, "Stamping").

        Workers read the stamps as ``self.request.stamps``; callbacks and
        errbacks are stamped too. Returns this signature.
        """
        self._stamp(visitor, append_stamps, headers)
        return self

    def _stamp(self, visitor: StampingVisitor | None, append: bool, headers: Mapping[str, Any]) -> None:
        """A task: its stamps (``headers`` and the visitor's ``on_signature``), then its callbacks'."""
        stamps = gathered(visitor, "on_signature", self, append, headers)
        set_stamps(self, stamps, append)
        self._stamp_links(visitor, append, stamps)

    def _stamp_links(self, visitor: StampingVisitor | None, append: bool, headers: Mapping[str, Any]) -> None:
        """Stamp the ``link`` and ``link_error`` signatures (dicts among them become signatures, in place)."""
        options = self["options"]
        for key, hook in (("link", "on_callback"), ("link_error", "on_errback")):
            links = options.get(key)
            if not links:
                continue
            items = [from_dict(cb, self._app) for cb in (links if isinstance(links, list | tuple) else [links])]
            for cb in items:
                cb._stamp(visitor, append, gathered(visitor, hook, cb, append, headers))
            self["options"] = {**self["options"], key: items}

    def freeze(self, _id: str | None = None) -> Any:
        """Fix the task id(s) now, so the result is known before sending; returns the result handle."""
        if _id is not None:
            self["options"] = {**self["options"], "task_id": _id}
        self._freeze(self.app)
        return self._result(self.app, None)

    @property
    def id(self) -> str | None:
        value = self["options"].get("task_id")
        return None if value is None else str(value)

    # -- composing -----------------------------------------------------------------------
    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, Signature):
            chain: Any = self._kinds["chain"]
            return chain(self, other, app=self._app)  # type: ignore[no-any-return]
        return NotImplemented

    # -- sending -------------------------------------------------------------------------
    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any
    ) -> Any:
        """Send the canvas; returns an ``AsyncResult`` (or a ``GroupResult`` for a group)."""
        return self.app.send_signature(self, args, kwargs, **options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def apply(self, args: Sequence[Any] | None = None, kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Run the canvas here and now, without a broker; an ``EagerResult`` (a ``GroupResult`` for a group).

        See docs/canvas.md: the canvas runs in order in this process, by the
        same rules as when it is sent; only ``task_id`` is taken as an option.
        """
        return self.app.apply_signature(self, args, kwargs, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        args = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self["kwargs"].items()])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    def __reduce__(self) -> Any:
        return (_rebuild, (dict(self),))

    # -- the canvas protocol: what each kind does, one method per step ----------------------
    # A plain task here; chain, group, chord and chunks override what differs.
    def _freeze(self, app: App) -> None:
        """Normalise this node in place and give it (and everything inside) an id."""
        options = self["options"]
        if not options.get("task_id"):
            options["task_id"] = app.new_id()

    def _spec(self) -> Any:
        """Where this node's value will be: a task id, or ``{"g": group_id, "r": [member specs]}``."""
        return self.id

    def _count(self) -> int:
        """How many tasks report to an enclosing chord when this node is done."""
        return 1

    def _leaf_ids(self) -> Iterator[str]:
        """Every task id inside this node (to mark them failed when it will never run)."""
        if self.id is not None:
            yield self.id

    def _result(self, app: App, parent: Any) -> Any:
        """The result handle of this frozen node."""
        from simq.result import AsyncResult

        return AsyncResult(self.id or "", app, parent)

    def _nested(self) -> list[Any]:
        """The signatures inside this node's kwargs (members, header, body), as stored."""
        return []

    def _copy_nested(self) -> None:
        """Replace what ``_nested`` holds with deep copies (``_deep_copy`` calls this on the copy)."""

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
        """Send this frozen node with a parent's ``args``, what follows it (``cont``) and the chord it reports to."""
        own_args = tuple(self["args"])
        if self["immutable"]:
            call_args, call_kwargs = own_args, self["kwargs"]
        else:
            call_args = tuple(args) + own_args if args else own_args
            call_kwargs = {**self["kwargs"], **kwargs} if kwargs else self["kwargs"]
        opts = self["options"]
        if options:
            opts = {**opts, **{k: v for k, v in options.items() if k != "task_id"}}
        runner.send_task(self.task, call_args, call_kwargs, opts, cont, ctx, group_id, group_index)

    def _check(self, checker: Checker, path: str) -> None:
        """Refuse what can never run, naming where it is (``checker`` walks the nodes and holds the app)."""
        checker.task(self, path)


def _rebuild(data: Mapping[str, Any]) -> Signature:
    return from_dict(data, None)


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


def from_dict(data: Any, app: App | None) -> Signature:
    """A signature of the right kind from its dict form (as it arrives in a message)."""
    if isinstance(data, Signature):
        if data._app is None and app is not None:
            data._app = app
        return data
    if not isinstance(data, Mapping):
        raise InvalidSignature(f"expected a signature (task.s(...)), got {data!r}")
    cls = Signature._kinds.get(str(data.get("subtask_type")), Signature)
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
    new = Signature._kinds.get(str(sig.get("subtask_type")), Signature)._from_dict(
        sig, app if app is not None else sig._app
    )
    options = new["options"]  # already a fresh dict
    if "link" in options or "link_error" in options:
        for key in ("link", "link_error"):
            links = options.get(key)
            if links is not None:
                options[key] = [_deep_copy(from_dict(x, new._app), new._app) for x in _listify(links)]
    new._copy_nested()
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
    out.extend(from_dict(node, None)._nested())  # the copy keeps the members themselves (identity matters here)
    return out
