"""Random nested canvases, run in the simulator, against an independent plain-Python oracle.

The strategy builds canvases of depth >= 4 mixing chain, group, chord, map,
starmap and chunks over pure arithmetic tasks, some of which fail (``fail``
always, ``div`` on a zero divisor). The oracle evaluates the same tree with
ordinary function calls and the rules of docs/canvas.md; the simulator must
agree for every seed and 1-4 workers. A failing example prints the
``app.simulate(seed=..., workers=...)`` call and the canvas to replay it.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from simq import App, chain, chord, group

# -- the tasks, as plain functions (the oracle calls these directly) -------------------------------


def total(x: Any) -> int:
    if isinstance(x, list | tuple):
        return sum(total(i) for i in x)
    return int(x)


def add_fn(*xs: Any) -> int:
    return sum(total(x) for x in xs)


def div_fn(*xs: Any) -> int:
    nums = [total(x) for x in xs]
    return nums[0] // nums[-1] if nums else 0


def fail_fn(*xs: Any) -> int:
    raise ValueError(f"fail{xs!r}")


FUNCS = {"add": add_fn, "div": div_fn, "fail": fail_fn}

app = App("canvas-property")
TASKS = {name: app.task(name=f"prop.{name}")(fn) for name, fn in FUNCS.items()}
eager_app = App("canvas-property-eager", task_always_eager=True)
EAGER_TASKS = {name: eager_app.task(name=f"prop.{name}")(fn) for name, fn in FUNCS.items()}


# -- the tree ------------------------------------------------------------------------------------------


@attrs.frozen
class Node:
    kind: str  # task | map | starmap | chunks | chain | group | chord
    name: str = ""
    args: tuple[Any, ...] = ()
    immutable: bool = False
    items: tuple[Any, ...] = ()
    n: int = 1
    children: tuple[Node, ...] = ()
    body: Node | None = None


small = st.integers(min_value=-3, max_value=6)
task_names = st.sampled_from(["add"] * 14 + ["div", "fail"])


@st.composite
def leaves(draw: Any) -> Node:
    kind = draw(st.sampled_from(["task", "task", "task", "task", "map", "starmap", "chunks"]))
    name = draw(task_names)
    if kind == "task":
        return Node("task", name, tuple(draw(st.lists(small, max_size=2))), draw(st.booleans()))
    if kind == "map":
        return Node("map", name, items=tuple(draw(st.lists(small, max_size=3))), immutable=True)
    pairs = tuple(draw(st.lists(st.tuples(small, small), max_size=4)))
    if kind == "starmap":
        return Node("starmap", name, items=pairs, immutable=True)
    return Node("chunks", name, items=pairs, n=draw(st.integers(min_value=1, max_value=3)))


def nodes(depth: int, forced: bool) -> st.SearchStrategy[Node]:
    """A node; ``forced`` ones are composite all the way down to ``depth`` (so the tree is that deep)."""
    if depth <= 0:
        return leaves()

    @st.composite
    def build(draw: Any) -> Node:
        kinds = ["chain", "group", "chord"] if forced else ["leaf", "leaf", "chain", "group", "chord"]
        kind = draw(st.sampled_from(kinds))
        if kind == "leaf":
            return draw(leaves())
        child = nodes(depth - 1, False) if depth > 1 else leaves()
        low = {"chain": 2, "group": 1, "chord": 0}[kind]
        members = draw(st.lists(child, min_size=low, max_size=3))
        if forced:
            spine = draw(nodes(depth - 1, True))
            members.insert(draw(st.integers(min_value=0, max_value=len(members))), spine)
        if kind == "chord":
            body = draw(st.one_of(leaves(), nodes(1, False)))
            return Node("chord", children=tuple(members), body=body)
        return Node(kind, children=tuple(members))

    return build()


# -- the oracle ----------------------------------------------------------------------------------------


@attrs.frozen
class Ok:
    value: Any


@attrs.frozen
class Err:
    exc_type: type[BaseException]


Outcome = Ok | Err


def call(fn: Any, args: tuple[Any, ...]) -> Outcome:
    try:
        return Ok(fn(*args))
    except Exception as exc:
        return Err(type(exc))


def as_chunks_group(node: Node) -> Node:
    parts = [node.items[i : i + node.n] for i in range(0, len(node.items), node.n)]
    return Node("group", children=tuple(Node("starmap", node.name, items=tuple(p), immutable=True) for p in parts))


def unrolled(children: tuple[Node, ...]) -> list[Node]:
    """A group's (or chord header's) members with nested groups spliced in, as Celery unrolls them."""
    out: list[Node] = []
    for child in children:
        out.extend(unrolled(child.children) if child.kind == "group" else [child])
    return out


def chain_members(node: Node) -> list[Node]:
    """A chain's tasks, nested chains spliced in; a group of one task is that task here (Celery's rule)."""
    flat: list[Node] = []
    for child in node.children:
        while child.kind == "group" and len(unrolled(child.children)) == 1:
            child = unrolled(child.children)[0]
        flat.extend(chain_members(child) if child.kind == "chain" else [child])
    return flat


def evaluate(node: Node, parent: tuple[Any, ...] = ()) -> Outcome:
    """The canvas rules in plain Python.

    ``parent`` is the previous result (prepended unless immutable). Nested
    groups are unrolled; in a chain, a group of one task is that task (Celery's rule). A failing group or chord header raises its first
    failed member's exception, in member order (a chord's body never runs).
    """
    fn = FUNCS.get(node.name)
    if node.kind == "task":
        args = node.args if node.immutable else parent + node.args
        return call(fn, args)
    if node.kind in ("map", "starmap"):
        items: Any = parent[0] if (parent and not node.immutable) else list(node.items)

        def run() -> list[Any]:
            if node.kind == "map":
                return [fn(item) for item in items]  # type: ignore[misc]
            return [fn(*item) for item in items]  # type: ignore[misc]

        return call(run, ())
    if node.kind == "chunks":
        return evaluate(as_chunks_group(node), parent)
    if node.kind == "chain":
        flat = chain_members(node)
        current = parent
        outcome: Outcome = Ok(None)
        for child in flat:
            outcome = evaluate(child, current)
            if isinstance(outcome, Err):
                return outcome
            current = (outcome.value,)
        return outcome
    if node.kind in ("group", "chord"):
        outcomes = [evaluate(child, parent) for child in unrolled(node.children)]
        failed = [o for o in outcomes if isinstance(o, Err)]
        if failed:
            return failed[0]
        values = [o.value for o in outcomes]  # type: ignore[union-attr]
        if node.kind == "group":
            return Ok(values)
        assert node.body is not None
        return evaluate(node.body, (values,))
    raise AssertionError(node.kind)


# -- the same tree as a simq canvas ----------------------------------------------------------------


def to_canvas(node: Node, tasks: dict[str, Any] = TASKS) -> Any:
    task = tasks.get(node.name)
    if node.kind == "task":
        return task.si(*node.args) if node.immutable else task.s(*node.args)  # type: ignore[union-attr]
    if node.kind == "map":
        return task.map([*node.items]).set(immutable=node.immutable)  # type: ignore[union-attr]
    if node.kind == "starmap":
        return task.starmap([list(p) for p in node.items]).set(immutable=node.immutable)  # type: ignore[union-attr]
    if node.kind == "chunks":
        return task.chunks([list(p) for p in node.items], node.n)  # type: ignore[union-attr]
    children = [to_canvas(c, tasks) for c in node.children]
    if node.kind == "chain":
        return chain(*children)
    if node.kind == "group":
        return group(children)
    assert node.body is not None
    return chord(children, to_canvas(node.body, tasks))


def depth_of(node: Node) -> int:
    below = [depth_of(c) for c in node.children] + ([depth_of(node.body)] if node.body else [])
    return 1 + max(below, default=0)


def run_in_simulator(node: Node, seed: int, workers: int) -> Outcome:
    canvas = to_canvas(node)
    with app.simulate(seed=seed, workers=workers):
        result = canvas.apply_async()
        try:
            return Ok(result.get())
        except Exception as exc:
            return Err(type(exc))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    tree=nodes(4, True),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    workers=st.integers(min_value=1, max_value=4),
)
def test_simulator_agrees_with_the_oracle(tree: Node, seed: int, workers: int) -> None:
    assert depth_of(tree) >= 5  # four composite levels above the leaves
    expected = evaluate(tree)
    replay = f"app.simulate(seed={seed}, workers={workers}) canvas={to_canvas(tree)!r}"
    note(replay)
    got = run_in_simulator(tree, seed, workers)
    assert got == expected, f"{replay}: simulator {got}, oracle {expected}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(tree=nodes(4, True))
def test_eager_mode_agrees_with_the_oracle(tree: Node) -> None:
    expected = evaluate(tree)
    canvas = to_canvas(tree, EAGER_TASKS)
    note(f"eager canvas={canvas!r}")
    try:
        got: Outcome = Ok(canvas.apply_async().get())
    except Exception as exc:
        got = Err(type(exc))
    assert got == expected, f"eager canvas={canvas!r}: eager {got}, oracle {expected}"


def test_oracle_sees_failures_and_unrolls_groups() -> None:
    """The oracle itself is not vacuous: it produces values, failures of the first failed member, flat groups."""
    fail = Node("task", "fail")
    add = Node("task", "add", (1, 2))
    div0 = Node("task", "div", (1, 0), True)
    assert evaluate(Node("chain", children=(add, Node("task", "add", (3,))))) == Ok(6)
    assert evaluate(Node("chain", children=(add, fail, add))) == Err(ValueError)
    assert evaluate(Node("chord", children=(add, fail, div0), body=add)) == Err(ValueError)
    assert evaluate(Node("chord", children=(add, div0, fail), body=add)) == Err(ZeroDivisionError)
    assert evaluate(Node("group", children=(add, div0))) == Err(ZeroDivisionError)
    assert evaluate(Node("chain", children=(Node("group", children=(fail,)), add))) == Err(ValueError)
    assert evaluate(Node("group", children=(add, Node("group", children=(add, add))))) == Ok([3, 3, 3])
