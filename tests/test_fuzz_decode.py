"""Fuzzing the worker's decode path: arbitrary bodies, content types and headers never crash it or run anything."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simq import App
from simq.message import Envelope

REGISTERED = ("fuzz.a", "fuzz.b")
CONTENT_TYPES = [
    "application/json",
    "application/x-python-serialize",
    "application/x-yaml",
    "application/x-msgpack",
    "text/plain",
    "",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
header_keys = st.sampled_from(
    ["task", "id", "eta", "expires", "retries", "root_id", "parent_id", "group", "group_index", "simq"]
) | st.text(max_size=10)
header_dicts = st.dictionaries(header_keys, values, max_size=8)
# Header dicts that name a task the worker knows, to reach the body and header checks.
known_task_headers = st.fixed_dictionaries(
    {"task": st.sampled_from(REGISTERED), "id": st.text(min_size=1, max_size=10)},
    optional={k: values for k in ("eta", "expires", "retries", "root_id", "parent_id", "group", "group_index")},
)


def body_is_a_call(body: object, content_type: object) -> bool:
    """The reference oracle: could this body be a task call at all under accept_content=['json']?"""
    if content_type != "application/json" or not isinstance(body, bytes):
        return False
    try:
        data = json.loads(body)
    except Exception:
        return False
    return (
        isinstance(data, list)
        and len(data) == 3
        and isinstance(data[0], list)
        and isinstance(data[1], dict)
        and isinstance(data[2], dict)
    )


def run_deliveries(envelopes, dead_letter_exchange=False):
    app = App("fuzz")
    if dead_letter_exchange:
        from simq import Exchange, Queue

        app.conf.task_queues = [
            Queue("celery", arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead"}),
            Queue("dead", Exchange("dlx", "direct"), routing_key="dead"),
        ]
    executed = []

    @app.task(name="fuzz.a")
    def a(*args, **kwargs):
        executed.append(("fuzz.a", args, kwargs))

    @app.task(name="fuzz.b")
    def b(*args, **kwargs):
        executed.append(("fuzz.b", args, kwargs))

    with app.simulate(seed=0, patch_time=False, queues=["celery"]) as sim:
        for env in envelopes:
            sim.producer.publish(env, "", "celery")
        sim.run_until_idle()
        worker = sim.worker_list[0]
        settled = worker.stats.rejected_total + worker.stats.acked
        return executed, worker, sim, settled


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.binary(max_size=200),
            st.sampled_from(CONTENT_TYPES) | st.text(max_size=20),
            header_dicts | known_task_headers,
        ),
        min_size=1,
        max_size=5,
    ),
    st.booleans(),
)
def test_arbitrary_bytes_never_run_and_never_crash(items, dead_letter_exchange):
    envelopes = [
        Envelope(body, ctype, "utf-8", headers) for body, ctype, headers in items if not body_is_a_call(body, ctype)
    ]
    executed, worker, sim, _ = run_deliveries(envelopes, dead_letter_exchange)
    assert executed == []
    assert worker.stats.rejected_total == len(envelopes)
    dead = sim.depth("dead") if dead_letter_exchange else len(sim.dead_letters)
    assert dead == len(envelopes)
    assert sim.depth("celery") == 0


@FUZZ
@given(
    st.lists(
        st.tuples(values, values, st.sampled_from(CONTENT_TYPES) | st.text(max_size=20), header_dicts),
        min_size=1,
        max_size=5,
    )
)
def test_unknown_task_names_never_run(items):
    """Any JSON-ish body with headers that name no registered task: rejected, never run."""
    envelopes = []
    for body_value, _, ctype, headers in items:
        if headers.get("task") in REGISTERED:
            continue
        try:
            body = json.dumps(body_value).encode()
        except (TypeError, ValueError):
            body = repr(body_value).encode()
        envelopes.append(Envelope(body, ctype, "utf-8", headers))
    executed, worker, _sim, _ = run_deliveries(envelopes)
    assert executed == []
    assert worker.stats.rejected_total == len(envelopes)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.lists(values, max_size=3), st.dictionaries(st.text(max_size=5), values, max_size=3), known_task_headers
        ),
        min_size=1,
        max_size=5,
    )
)
def test_well_formed_bodies_with_fuzzed_headers_run_at_most_once_or_are_rejected(items):
    """A real call with garbage in its other headers: either it runs once with exactly its arguments, or is dead-lettered."""
    envelopes = []
    for args, kwargs, headers in items:
        try:
            body = json.dumps([args, kwargs, {}]).encode()
        except (TypeError, ValueError):
            continue
        envelopes.append(Envelope(body, "application/json", "utf-8", headers))
    executed, worker, _sim, settled = run_deliveries(envelopes)
    assert settled == len(envelopes)
    assert len(executed) + worker.stats.rejected_total + worker.stats.revoked == len(envelopes)
    for name, args, kwargs in executed:
        assert name in REGISTERED
        assert (list(args), kwargs) in [(json.loads(e.body)[0], json.loads(e.body)[1]) for e in envelopes]
