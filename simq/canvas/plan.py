"""Freezing a canvas: normalise it, give every node its id, and say where its values will be."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from simq.canvas.signatures import Signature, chord

if TYPE_CHECKING:
    from simq.app import App
    from simq.result import AsyncResult, GroupResult

__all__ = ["count", "leaf_ids", "prepare", "result_from_spec", "result_of", "spec"]


def prepare(app: App, sig: Signature) -> None:
    """Normalise (flatten chains, group-then-X becomes a chord) and give every node its id, in place."""
    kind = sig.get("subtask_type")
    options = sig["options"]
    if not options.get("task_id"):
        options["task_id"] = app._new_id()
    if kind is None:
        return
    if kind == "chain":
        flat: list[Signature] = []
        for t in sig.tasks:  # type: ignore[attr-defined]
            if t.subtask_type == "chain":
                flat.extend(t.tasks)
            elif t.subtask_type == "chunks":
                flat.append(t.group())
            else:
                flat.append(t)
        out: list[Signature] = []
        i = 0
        while i < len(flat):
            t = flat[i]
            if t.subtask_type == "group" and i + 1 < len(flat):
                out.append(chord(t, flat[i + 1], app=app))
                i += 2
            else:
                out.append(t)
                i += 1
        sig["kwargs"]["tasks"] = out
        for t in out:
            prepare(app, t)
    elif kind == "group":
        members = sig.tasks  # type: ignore[attr-defined]
        for i, t in enumerate(members):
            if t.subtask_type == "chunks":
                members[i] = t.group()
        for t in members:
            prepare(app, t)
    elif kind == "chord":
        header = sig.header  # type: ignore[attr-defined]
        header["options"] = {**header["options"], "task_id": options["task_id"]}
        prepare(app, header)
        body = sig.body  # type: ignore[attr-defined]
        if body is not None:
            if body.subtask_type == "chunks":
                body = sig["kwargs"]["body"] = body.group()
            prepare(app, body)


def spec(sig: Signature) -> Any:
    """Where a node's value will be: a task id, or ``{"g": group_id, "r": [member specs]}``."""
    kind = sig.subtask_type
    if kind == "chain":
        return spec(sig.tasks[-1])  # type: ignore[attr-defined]
    if kind == "group":
        return {"g": sig.id, "r": [spec(t) for t in sig.tasks]}  # type: ignore[attr-defined]
    if kind == "chord":
        return spec(sig.body)  # type: ignore[attr-defined]
    return sig.id


def count(sig: Signature) -> int:
    """How many tasks report to an enclosing chord when this node is done."""
    kind = sig.subtask_type
    if kind == "chain":
        return count(sig.tasks[-1])  # type: ignore[attr-defined]
    if kind == "group":
        members = sig.tasks  # type: ignore[attr-defined]
        # an empty group reports once itself, when it is reached
        return sum(count(t) for t in members) if members else 1
    if kind == "chord":
        return count(sig.body)  # type: ignore[attr-defined]
    return 1


def leaf_ids(sig: Signature) -> Iterator[str]:
    """Every task id inside a node (to mark them failed when the node will never run)."""
    kind = sig.subtask_type
    if kind in ("chain", "group"):
        tasks = sig.tasks  # type: ignore[attr-defined]
        if kind == "group" and not tasks and sig.id is not None:
            yield sig.id  # an empty group keeps its own record
        for t in tasks:
            yield from leaf_ids(t)
    elif kind == "chord":
        yield from leaf_ids(sig.header)  # type: ignore[attr-defined]
        if sig.body is not None:  # type: ignore[attr-defined]
            yield from leaf_ids(sig.body)  # type: ignore[attr-defined]
    elif sig.id is not None:
        yield sig.id


def result_of(app: App, sig: Signature, parent: Any = None) -> Any:
    from simq.result import AsyncResult, GroupResult

    kind = sig.subtask_type
    if kind == "chain":
        result = parent
        for t in sig.tasks:  # type: ignore[attr-defined]
            result = result_of(app, t, result)
        return result
    if kind == "group":
        return GroupResult(sig.id or "", [result_of(app, t) for t in sig.tasks], app, parent=parent)  # type: ignore[attr-defined]
    if kind == "chord":
        header = result_of(app, sig.header, parent)  # type: ignore[attr-defined]
        return result_of(app, sig.body, header)  # type: ignore[attr-defined]
    return AsyncResult(sig.id or "", app, parent)


def result_from_spec(app: App, spec: Any) -> AsyncResult | GroupResult:
    from simq.result import AsyncResult, GroupResult

    if isinstance(spec, Mapping):
        return GroupResult(str(spec["g"]), [result_from_spec(app, s) for s in spec["r"]], app)
    return AsyncResult(str(spec), app)
