"""Batches: buffered tasks whose body gets a list of requests (seeds/celery-contrib-batches.txt)."""

from __future__ import annotations

import pickle
import time

import pytest

from simq import states
from simq.batches import BatchError, Batches, SimpleRequest
from simq.exceptions import ConfigurationError


def batch_app(backend, **config):
    return backend.app(prefetch_multiplier=0, **config)


def test_defaults_are_the_seeds():
    assert Batches.flush_every == 10
    assert Batches.flush_interval == 30


def test_body_receives_simple_requests_and_mark_as_done_sets_results(backend):
    app = batch_app(backend)
    seen = backend.record()

    @app.task(base=Batches, flush_every=3, flush_interval=10)
    def lengths(requests):
        seen.append(list(requests))
        for request in requests:
            app.backend.mark_as_done(request.id, len(request.args[0]))

    results = [lengths.delay(word) for word in ("a", "bb", "ccc")]
    assert [r.get() for r in results] == [1, 2, 3]
    batch = [r for group in seen for r in group]
    assert all(isinstance(r, SimpleRequest) for r in batch)
    assert sorted(r.id for r in batch) == sorted(r.id for r in results)
    first = batch[0]
    assert first.name == lengths.name and first.kwargs == {} and first.hostname
    assert first.delivery_info["routing_key"] == "celery"
    assert pickle.loads(pickle.dumps(first)) == first


def test_flush_on_count_then_interval(backend):
    if backend.name == "eager":
        pytest.skip("eager runs each call at once as a one-request batch (see test_eager_runs_at_once)")
    app = batch_app(backend)
    interval = 10 if backend.virtual else 1  # a real broker waits on the wall clock
    flushes = backend.record()

    @app.task(base=Batches, flush_every=4, flush_interval=interval)
    def collect(requests):
        flushes.append((len(requests), time.time()))

    start = time.time()
    sent = []
    for i in range(10):
        sent.append(time.time())
        collect.delay(i)
    backend.settle()
    assert [n for n, _ in flushes] == [4, 4, 2]
    if backend.virtual:
        assert flushes[0][1] == start and flushes[1][1] == start
        assert flushes[2][1] == start + interval
    else:
        # the last two wait out the interval, counted from when the first of them was buffered
        # (which is after it was sent; a processes pool may start the earlier bodies late)
        assert flushes[2][1] - sent[8] >= interval * 0.9


def test_unmarked_requests_succeed_with_none_or_returned_list(backend):
    app = batch_app(backend)

    @app.task(base=Batches, flush_every=2, flush_interval=5)
    def quiet(requests):
        return None

    @app.task(base=Batches, flush_every=2, flush_interval=5)
    def doubled(requests):
        return [r.args[0] * 2 for r in requests]

    a, b = quiet.delay(1), quiet.delay(2)
    assert a.get() is None and b.get() is None and a.state == states.SUCCESS
    c, d = doubled.delay(3), doubled.delay(4)
    assert c.get() == 6 and d.get() == 8


def test_raising_body_fails_unmarked_requests(backend):
    app = batch_app(backend)

    @app.task(base=Batches, flush_every=2, flush_interval=5)
    def half(requests):
        app.backend.mark_as_done(requests[0].id, "first ok")
        raise RuntimeError("batch broke")

    a, b = half.delay(1), half.delay(2)
    if backend.name == "eager":
        # one-request batches: each marks itself, then raises: marked wins
        assert a.get() == "first ok" and b.get() == "first ok"
        return
    assert a.get() == "first ok"
    with pytest.raises(RuntimeError, match="batch broke"):
        b.get()
    assert b.state == states.FAILURE


def test_mark_as_done_outside_the_batch_is_refused(backend):
    app = batch_app(backend)

    @app.task
    def plain():
        return "plain"

    @app.task(base=Batches, flush_every=1, flush_interval=5)
    def rogue(requests):
        app.backend.mark_as_done(requests[0].args[0], "hijacked")

    other = plain.delay()
    assert other.get() == "plain"
    r = rogue.delay(other.id)
    with pytest.raises(BatchError, match="not in the running batch"):
        r.get()
    assert other.get() == "plain"
    # outside a batch, mark_as_done works as usual
    app.backend.mark_as_done(other.id, "direct")
    assert app.backend.get_meta(other.id).result == "direct"


def test_bad_options_refused_at_decoration(backend):
    app = batch_app(backend)
    with pytest.raises(ConfigurationError, match="flush_every must be an integer >= 1, got 0"):

        @app.task(base=Batches, flush_every=0)
        def a(requests):
            pass

    with pytest.raises(ConfigurationError, match="flush_interval must be a number of seconds > 0, got 0"):

        @app.task(base=Batches, flush_interval=0)
        def b(requests):
            pass


@pytest.mark.simq_in_process(
    "a -c 4 worker prefetches 16 here; tests/test_deployed_worker.py::TestBatchesPerWorker checks the whole worker's prefetch"
)
def test_prefetch_too_small_fails_loudly(backend):
    if backend.name == "eager":
        pytest.skip("eager mode does not buffer, so prefetch cannot starve a batch")
    app = backend.app(prefetch_multiplier=4)

    @app.task(base=Batches, flush_every=10, flush_interval=5)
    def counted(requests):
        pass

    with pytest.raises(ConfigurationError, match=r"flush_every=10.*prefetches at most 4.*worker_prefetch_multiplier"):
        counted.delay().get()


def test_prefetch_checked_at_worker_start():
    from simq import App

    app = App("prefetch-start", worker_prefetch_multiplier=2)

    @app.task(base=Batches, flush_every=5)
    def counted(requests):
        pass

    with pytest.raises(ConfigurationError, match="counted"), app.simulate(concurrency=2):
        pass
    with app.simulate(concurrency=3) as sim:  # 3 x 2 = 6 >= 5 works
        assert counted.delay().get() is None
        assert sim.clock.now >= sim.start + 30


def test_eta_is_held_then_buffered(backend):
    app = batch_app(backend)
    countdown = 100 if backend.virtual else 1
    stamps = backend.record()

    @app.task(base=Batches, flush_every=2, flush_interval=10)
    def later(requests):
        stamps.append((len(requests), time.time()))

    start = time.time()
    r1 = later.apply_async(args=[1], countdown=countdown)
    r2 = later.apply_async(args=[2], countdown=countdown)
    wait = None if backend.virtual else 30  # seconds on the backend's clock
    r1.get(timeout=wait)
    r2.get(timeout=wait)
    if backend.name == "eager":
        assert [n for n, _ in stamps] == [1, 1]
    elif backend.virtual:
        assert stamps == [(2, start + countdown)]
    else:
        # both held until due, then buffered together: one batch of two, not before the countdown
        assert [n for n, _ in stamps] == [2]
        assert stamps[0][1] >= start + countdown


def test_eager_runs_at_once():
    from simq import App

    app = App("eager-batches", task_always_eager=True)
    sizes = []

    @app.task(base=Batches, flush_every=100, flush_interval=10)
    def count_click(requests):
        sizes.append(len(requests))
        return [r.kwargs["url"] for r in requests]

    assert count_click.delay(url="http://example.com").get() == "http://example.com"
    assert sizes == [1]


@pytest.mark.simq_in_process(
    "reads the buffer and ack counts of Worker objects; tests/test_deployed_worker.py and the chaos campaign cover batches on worker processes"
)
def test_acks_only_after_batch_ran_and_crash_loses_nothing(backend):
    if backend.name == "eager":
        pytest.skip("eager has no broker to redeliver")
    app = batch_app(backend)
    batches = backend.record()

    @app.task(base=Batches, flush_every=5, flush_interval=1000)
    def keep(requests):
        batches.append(sorted(r.args[0] for r in requests))

    results = [keep.delay(i) for i in range(3)]
    first = backend.workers(app)[0]
    backend.wait_until(lambda: keep.buffered(first) == 3)
    assert first.stats.acked == 0
    backend.crash_worker(first)
    second = backend.add_worker(prefetch_multiplier=0)
    # the second worker gets all three back (redelivered) and buffers them; two more fill the batch
    results += [keep.delay(i) for i in (3, 4)]
    assert [r.get(timeout=30) for r in results] == [None] * 5
    assert batches == [[0, 1, 2, 3, 4]]
    backend.wait_until(lambda: second.stats.acked == 5)  # results are stored just before the acks


@pytest.mark.simq_in_process(
    "reads the buffer and ack counts of Worker objects; tests/test_deployed_worker.py and the chaos campaign cover batches on worker processes"
)
def test_shutdown_flushes(backend):
    if backend.name == "eager":
        pytest.skip("eager runs at once; nothing is buffered at shutdown")
    app = batch_app(backend)
    flushed = backend.record()

    @app.task(base=Batches, flush_every=50, flush_interval=1000)
    def slow(requests):
        flushed.append(len(requests))

    results = [slow.delay(i) for i in range(7)]
    worker = backend.workers(app)[0]
    backend.wait_until(lambda: slow.buffered(worker) == 7)
    assert flushed == []
    backend.stop_workers(app)
    assert flushed == [7]
    assert all(app.backend.get_meta(r.id).state == states.SUCCESS for r in results)
    assert worker.stats.acked == 7


def test_batch_results_go_through_the_normal_path_links_fire(backend):
    app = batch_app(backend)

    @app.task(base=Batches, flush_every=2, flush_interval=5)
    def pair(requests):
        app.backend.mark_as_done(requests[0].id, "marked")

    @app.task(base=Batches, flush_every=1, flush_interval=5)
    def broken(requests):
        raise ValueError("nope")

    @app.task
    def shout(value):
        return f"{value}!"

    @app.task
    def note_error(task_id):
        return f"failed:{task_id}"

    a = pair.apply_async(args=[1], link=shout.s())
    b = pair.apply_async(args=[2], link=shout.s())
    errback = note_error.s().set(task_id="errback-of-broken")
    c = broken.apply_async(args=[3], link_error=errback)
    backend.settle()
    values = [a.get(timeout=30), b.get(timeout=30)]
    assert "marked" in values
    # each link ran with its own parent's value, through the normal result path
    assert [[child.get(timeout=30) for child in r.children] for r in (a, b)] == [[f"{v}!"] for v in values]
    with pytest.raises(ValueError, match="nope"):
        c.get(timeout=30)
    assert app.AsyncResult("errback-of-broken").get(timeout=30) == f"failed:{c.id}"


def test_a_batch_task_in_a_chord_header_reports_each_request_to_the_chord(backend):
    from simq import chord

    app = batch_app(backend)
    interval = 10 if backend.virtual else 1

    @app.task(base=Batches, flush_every=3, flush_interval=interval)
    def square(requests):
        return [request.args[0] ** 2 for request in requests]  # the returned-list convenience

    @app.task(base=Batches, flush_every=2, flush_interval=interval)
    def cube(requests):
        for request in requests:
            app.backend.mark_as_done(request.id, request.args[0] ** 3)

    @app.task
    def total(values):
        return values

    # 7 requests: two full batches of 3 and one flushed by the interval
    assert chord([square.s(i) for i in range(7)])(total.s()).get(timeout=30) == [i**2 for i in range(7)]
    assert chord([cube.s(i) for i in range(5)])(total.s()).get(timeout=30) == [i**3 for i in range(5)]
