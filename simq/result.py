"""Handles to results that may not exist yet."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from simq import states
from simq.backends.base import ResultMeta
from simq.canvas import records
from simq.exceptions import TaskRevokedError
from simq.shared import current_app

if TYPE_CHECKING:
    from simq.app import App

__all__ = ["AsyncResult", "EagerResult", "GroupResult", "ResultSet", "result_from_tuple"]


class AsyncResult:
    """The result of one task call, by id.

    ``get()`` waits for it: in a simulation by driving the simulation (in
    virtual time, without sleeping), against a real backend on the wall clock.
    """

    __slots__ = ("_meta", "app", "id", "parent")

    def __init__(self, id: str, app: App | None = None, parent: Any = None) -> None:  # noqa: A002 - Celery's name
        if app is None:
            app = current_app()
        self.id = id
        self.app = app
        self.parent = parent
        self._meta: ResultMeta | None = None

    @property
    def task_id(self) -> str:
        return self.id

    def _fetch(self) -> ResultMeta:
        if self._meta is not None:
            return self._meta
        meta = self.app.backend.get_meta(self.id)
        if meta.ready:
            self._meta = meta
        return meta

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> Any:
        """The task's return value; raises its exception if it failed and ``propagate``."""
        meta = self._meta
        if meta is None:
            meta = self.app.backend.get_meta(self.id)
            if not meta.ready:
                meta = self.app.wait_for(self.id, timeout)
        self._meta = meta
        if meta.state in states.PROPAGATE_STATES and propagate:
            exc = meta.result
            if isinstance(exc, BaseException):
                raise exc
            raise TaskRevokedError(f"task {self.id} ended {meta.state}")
        return meta.result

    wait = get

    @property
    def state(self) -> str:
        return self._fetch().state

    status = state

    @property
    def result(self) -> Any:
        return self._fetch().result

    info = result

    @property
    def traceback(self) -> str | None:
        return self._fetch().traceback

    @property
    def date_done(self) -> float | None:
        return self._fetch().date_done

    @property
    def retries(self) -> int:
        return self._fetch().retries

    def ready(self) -> bool:
        return self._fetch().ready

    def successful(self) -> bool:
        return self._fetch().state == states.SUCCESS

    def failed(self) -> bool:
        return self._fetch().state == states.FAILURE

    @property
    def children(self) -> list[Any]:
        """The results of what this task sent when it finished (callbacks, the next chain link)."""
        return [result_from_spec(self.app, spec) for spec in records.load_children(self.app, self.id)]

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
        """``(result, value)`` for this result, then for what it led to (its children, theirs, ...), as Celery's.

        Breadth first, each one waited for with ``get(**kwargs)`` before its
        children are read (a task's children are stored before they are sent).
        ``intermediate`` is Celery's flag; waiting on every node, simq never
        meets an incomplete stream, so it changes nothing here.
        """
        del intermediate
        pending: list[Any] = [self]
        while pending:
            node = pending.pop(0)
            yield node, node.get(**kwargs)
            pending.extend(node.children or ())

    def as_tuple(self) -> Any:
        """``((id, parent's tuple or None), None)``, Celery's plain form (how a task returning this handle stores it)."""
        parent = self.parent
        return (self.id, parent.as_tuple() if parent is not None else None), None

    def forget(self) -> None:
        self._meta = None
        self.app.backend.forget(self.id)

    def revoke(
        self, connection: Any = None, terminate: bool = False, signal: str | int = "SIGTERM", **kwargs: Any
    ) -> None:
        """Revoke this task on every worker: if it has not started it never runs (see :mod:`simq.revoke`)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal, **kwargs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class EagerResult(AsyncResult):
    """The result of a call run here and now (``Task.apply``, ``Signature.apply``): it holds its outcome itself.

    Like Celery's ``EagerResult``: ``get()``, ``state``, ``result`` and
    ``traceback`` read what the call returned or raised, without the result
    backend (the call is stored there too, so ``AsyncResult(id)`` sees it).
    """

    __slots__ = ()

    def __init__(
        self,
        id: str,  # noqa: A002 - Celery's name
        value: Any,
        state: str,
        traceback: str | None = None,
        app: App | None = None,
        parent: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__(id, app, parent)
        self._meta = ResultMeta(id, state, value, traceback, name=name)

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"


class ResultSet:
    """A set of results worked on together (Celery's name): ``get()`` gives their values in order.

    ``add``, ``discard``, ``update`` and ``clear`` change the members;
    ``ready``, ``successful``, ``failed``, ``completed_count`` and ``revoke``
    ask or act on all of them.
    """

    __slots__ = ("app", "results")

    def __init__(self, results: Sequence[Any] = (), app: App | None = None) -> None:
        if app is None:
            app = results[0].app if results else current_app()
        self.results = list(results)
        self.app = app

    def add(self, result: Any) -> None:
        if result not in self.results:
            self.results.append(result)

    def discard(self, result: Any) -> None:
        if result in self.results:
            self.results.remove(result)

    remove = discard

    def update(self, results: Iterable[Any]) -> None:
        for result in results:
            self.add(result)

    def clear(self) -> None:
        self.results.clear()

    def revoke(
        self, connection: Any = None, terminate: bool = False, signal: str | int = "SIGTERM", **kwargs: Any
    ) -> None:
        """Revoke every member, in one revocation."""
        self.app.control.revoke([r.id for r in self._members()], terminate=terminate, signal=signal, **kwargs)

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> list[Any]:
        """Every member's value, in order; raises the first failed member's exception (in order) if ``propagate``."""
        values = [r.get(timeout=timeout, propagate=False) for r in self.results]
        if propagate:
            for r in self.results:
                if r.failed() or r.state == states.REVOKED:
                    r.get(propagate=True)
        return values

    def join(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> list[Any]:
        return self.get(timeout=timeout, propagate=propagate, interval=interval)

    wait = join

    def completed_count(self) -> int:
        """How many members finished successfully."""
        return sum(1 for r in self.results if r.successful())

    def _members(self) -> list[Any]:
        return self.results

    def ready(self) -> bool:
        return all(r.ready() for r in self._members())

    def successful(self) -> bool:
        return all(r.successful() for r in self._members())

    def failed(self) -> bool:
        return any(r.failed() for r in self._members())

    def waiting(self) -> bool:
        return not self.ready()

    @property
    def state(self) -> str:
        if not self.ready():
            return states.PENDING
        return states.FAILURE if self.failed() else states.SUCCESS

    def __iter__(self) -> Iterator[Any]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> Any:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if type(other) is ResultSet:
            return other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return id(self)  # its members change: hashed by identity

    def __repr__(self) -> str:
        return f"<ResultSet: [{', '.join(r.id for r in self.results)}]>"


class GroupResult(ResultSet):
    """The results of a group, in the group's order; ``get()`` returns their values in that order.

    ``GroupResult.restore(id)`` rebuilds one from the result backend (groups
    and chord headers are saved there when sent).
    """

    __slots__ = ("id", "parent")

    def __init__(self, id: str, results: Sequence[Any] = (), app: App | None = None, parent: Any = None) -> None:  # noqa: A002
        super().__init__(results, app if app is not None else current_app())
        self.id = id
        self.parent = parent

    @classmethod
    def restore(cls, id: str, app: App | None = None) -> GroupResult | None:  # noqa: A002
        """The group saved under ``id``, or None if the backend has no such group."""
        if app is None:
            app = current_app()
        spec = records.load_group_spec(app, id)
        if spec is None:
            return None
        result = result_from_spec(app, spec)
        assert isinstance(result, GroupResult)
        return result

    def as_tuple(self) -> Any:
        """``((id, parent's tuple or None), [member tuples])``, Celery's plain form (see ``result_from_tuple``)."""
        parent = self.parent
        return (self.id, parent.as_tuple() if parent is not None else None), [r.as_tuple() for r in self.results]

    def save(self) -> GroupResult:
        records.save_group(self.app, self.id, _spec_of(self))
        return self

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> list[Any]:
        if not self.results:
            # an empty group has a record of its own: [] once reached, or the failure that stopped it
            return AsyncResult(self.id, self.app).get(timeout=timeout, propagate=propagate)  # type: ignore[no-any-return]
        return super().get(timeout=timeout, propagate=propagate, interval=interval)

    @property
    def children(self) -> list[Any]:
        return self.results

    def _members(self) -> list[Any]:
        return self.results or [AsyncResult(self.id, self.app)]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def _spec_of(result: Any) -> Any:
    if isinstance(result, GroupResult):
        return {"g": result.id, "r": [_spec_of(r) for r in result.results]}
    return result.id


def result_from_spec(app: App, spec: Any) -> AsyncResult | GroupResult:
    """The result handle for a spec (a task id, or ``{"g": group_id, "r": [...]}``) as the canvas stores them."""
    if isinstance(spec, Mapping):
        return GroupResult(str(spec["g"]), [result_from_spec(app, s) for s in spec["r"]], app)
    return AsyncResult(str(spec), app)


def result_from_tuple(value: Any, app: App | None = None) -> AsyncResult | GroupResult:
    """The result handle ``as_tuple()`` describes (a list from json works too), with its parents."""
    if isinstance(value, AsyncResult | GroupResult):
        return value
    app = app if app is not None else current_app()
    try:
        (task_id, parent), members = value
    except (TypeError, ValueError):
        raise ValueError(f"not a result tuple (as AsyncResult.as_tuple() gives): {value!r}") from None
    parent_result = result_from_tuple(parent, app) if parent else None
    if members is not None:
        return GroupResult(str(task_id), [result_from_tuple(m, app) for m in members], app, parent=parent_result)
    return AsyncResult(str(task_id), app, parent_result)
