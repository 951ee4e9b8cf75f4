"""Unit tests of simq.batches internals: per-worker buffers, option validation, messages."""

from __future__ import annotations

import pytest

from simq import App
from simq.batches import Batches, SimpleRequest
from simq.exceptions import ConfigurationError


def test_each_worker_keeps_its_own_buffer():
    app = App("per-worker", worker_prefetch_multiplier=0)
    batches = []

    @app.task(base=Batches, flush_every=1000, flush_interval=5)
    def keep(requests):
        batches.append({r.hostname for r in requests})

    with app.simulate(seed=4, workers=3) as sim:
        for i in range(60):
            keep.delay(i)
        sim.run_until(lambda: sum(keep.buffered(w) for w in sim.worker_list) == 60)
        held = [keep.buffered(w) for w in sim.worker_list]
        assert sum(1 for n in held if n) >= 2, held  # the seed spreads work over workers
        sim.run_until_idle()
    assert all(len(hosts) == 1 for hosts in batches)
    assert len(batches) == sum(1 for n in held if n)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"flush_every": "10"}, "flush_every must be an integer >= 1, got '10'"),
        ({"flush_every": -3}, "got -3"),
        ({"flush_every": True}, "got True"),
        ({"flush_interval": -1}, "flush_interval must be a number of seconds > 0, got -1"),
        ({"flush_interval": "30"}, "got '30'"),
    ],
)
def test_bad_options_name_the_value(options, fragment):
    app = App("bad-options")
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(")):

        @app.task(base=Batches, **options)
        def t(requests):
            pass

    assert not any(name.endswith(".t") for name in app.tasks)


def test_prefetch_error_names_task_numbers_and_fix():
    app = App("msg", worker_prefetch_multiplier=3)

    @app.task(base=Batches, flush_every=7, name="clicks.count")
    def count(requests):
        pass

    with pytest.raises(ConfigurationError) as info, app.simulate(concurrency=2):
        pass
    text = str(info.value)
    for piece in (
        "'clicks.count'",
        "flush_every=7",
        "at most 6",
        "concurrency=2",
        "prefetch_multiplier=3",
        ">= 7",
        "0 for unlimited",
    ):
        assert piece in text, (piece, text)


def test_simple_request_from_request_copies_the_call():
    app = App("simple", worker_prefetch_multiplier=0)
    got = []

    @app.task(base=Batches, flush_every=1)
    def one(requests):
        got.extend(requests)

    with app.simulate() as sim:
        r = one.apply_async(args=[1, "a"], kwargs={"k": [2]}, priority=3)
        sim.run_until_idle()
    (req,) = got
    assert req == SimpleRequest(r.id, one.name, (1, "a"), {"k": [2]}, req.delivery_info, "worker-1")
    assert req.delivery_info["priority"] == 3 and req.delivery_info["redelivered"] is False


def test_concurrent_batches_each_keep_their_own_mark_guard():
    """Two batches running at once in a threads pool: each body marks its own ids (the guard is per thread).

    With one guard on the shared backend, the batch that started last refused the
    other's ids ("that id is not in the running batch"), as seen on `simq worker -c 4`.
    """
    import threading

    from simq.batches import BatchError, _Guard

    backend = App("guards").backend
    both_set = threading.Barrier(2)
    errors: list[BaseException] = []

    def body(own: str) -> None:
        backend.mark_guard = _Guard({own: None}, "t.batch")
        both_set.wait()  # both guards are installed before either body marks
        try:
            backend.mark_as_done(own, own.upper())
        except BatchError as exc:
            errors.append(exc)
        finally:
            both_set.wait()  # neither body ends before both marked
            backend.mark_guard = None

    threads = [threading.Thread(target=body, args=(own,)) for own in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [backend.get_meta(i).result for i in ("a", "b")] == ["A", "B"]
    with pytest.raises(BatchError, match="not in the running batch"):  # the guard still refuses a stranger
        backend.mark_guard = _Guard({"a": None}, "t.batch")
        try:
            backend.mark_as_done("z", 1)
        finally:
            backend.mark_guard = None
