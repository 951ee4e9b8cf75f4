"""Routing: exchanges, bindings, topic rules, task_routes, mandatory/immediate, priority."""

from __future__ import annotations

import pytest

from simq import Exchange, Queue
from simq.exceptions import ConfigurationError, NotDelivered, UnknownQueue, Unroutable


def _seed_app(backend, **extra):
    """The seed's example: one topic exchange 'tasks', queues video, image, lowpri."""
    tasks = Exchange("tasks", type="topic")
    app = backend.app(
        task_default_exchange="tasks",
        task_default_exchange_type="topic",
        task_default_queue="lowpri",
        task_default_routing_key="misc.default",
        task_queues=[
            Queue("video", tasks, routing_key="video.#"),
            Queue("image", tasks, routing_key="image.#"),
            Queue("lowpri", tasks, routing_key="misc.#"),
        ],
        **extra,
    )

    @app.task(bind=True, name="where")
    def where(self, *args):
        return self.request.delivery_info["queue"]

    return app, where


@pytest.mark.parametrize(
    ("routing_key", "queue"),
    [
        ("video.compress", "video"),
        ("image.rotate", "image"),
        ("image.crop", "image"),
        ("misc.recommend", "lowpri"),
        ("video", "video"),  # '#' matches zero words
        ("image.crop.fast", "image"),
    ],
)
def test_seed_topic_routing_reaches_the_bound_queue(backend, routing_key, queue):
    _, where = _seed_app(backend)
    assert where.apply_async(args=["file"], routing_key=routing_key).get() == queue


def test_default_route_uses_the_default_routing_key(backend):
    _, where = _seed_app(backend)
    assert where.delay().get() == "lowpri"


def test_new_queue_bound_to_image_crop_takes_only_crop(backend):
    tasks = Exchange("tasks", type="topic")
    app = backend.app(
        task_default_exchange="tasks",
        task_default_exchange_type="topic",
        task_queues=[Queue("crop", tasks, routing_key="image.crop"), Queue("rest", tasks, routing_key="misc.#")],
        task_default_queue="rest",
    )

    @app.task(bind=True, name="where")
    def where(self):
        return self.request.delivery_info["queue"]

    assert where.apply_async(routing_key="image.crop").get() == "crop"
    with pytest.raises(Unroutable):
        where.apply_async(routing_key="image.rotate", mandatory=True)


def test_mandatory_raises_unroutable_when_nothing_is_bound(backend):
    _, where = _seed_app(backend)
    with pytest.raises(Unroutable, match="stock.nasdaq"):
        where.apply_async(routing_key="stock.nasdaq", mandatory=True)


def test_unroutable_without_mandatory_is_dropped_quietly(backend):
    app, where = _seed_app(backend)
    ran = backend.record()

    @app.task(name="count")
    def count():
        ran.append(1)

    count.apply_async(routing_key="nowhere.at.all")
    backend.settle(app)
    assert ran == []


def test_direct_exchange_matches_exactly_and_case_sensitively(backend):
    ex = Exchange("direct_ex", type="direct")
    app = backend.app(task_queues=[Queue("q1", ex, routing_key="Key")], task_default_queue="q1")

    @app.task(bind=True, name="where")
    def where(self):
        return self.request.delivery_info["queue"]

    assert where.apply_async(exchange="direct_ex", routing_key="Key").get() == "q1"
    with pytest.raises(Unroutable):
        where.apply_async(exchange="direct_ex", routing_key="key", mandatory=True)


def test_fanout_exchange_delivers_a_copy_to_every_bound_queue(backend):
    fan = Exchange("broadcast", type="fanout")
    app = backend.app(task_queues=[Queue("a", fan), Queue("b", fan)], task_default_queue="a")
    seen = backend.record()

    @app.task(bind=True, name="note")
    def note(self, value):
        seen.append((self.request.delivery_info["queue"], value))

    note.apply_async(args=[1], exchange="broadcast", routing_key="anything")
    backend.settle(app)
    assert sorted(seen) == [("a", 1), ("b", 1)]


def test_task_routes_by_name_and_glob_with_call_options_winning(backend):
    # the worker consumes the queues the routes create, as `simq worker -Q celery,video,media,special` does
    app = backend.app(
        queues=["celery", "video", "media", "special"],
        task_routes={"media.video": {"queue": "video"}, "media.*": {"queue": "media"}},
    )

    def make(name):
        @app.task(bind=True, name=name)
        def where(self):
            return self.request.delivery_info["queue"]

        return where

    video, image = make("media.video"), make("media.image")
    assert video.delay().get() == "video"
    assert image.delay().get() == "media"
    assert image.apply_async(queue="special").get() == "special"


def test_task_queue_attribute_routes_when_no_route_says_otherwise(backend):
    app = backend.app(queues=["celery", "reports"])  # `simq worker -Q celery,reports`

    @app.task(bind=True, queue="reports", name="report")
    def report(self):
        return self.request.delivery_info["queue"]

    assert report.delay().get() == "reports"


def test_unknown_queue_is_refused_when_missing_queues_are_not_created(backend):
    app = backend.app(task_create_missing_queues=False)

    @app.task
    def add(x, y):
        return x + y

    with pytest.raises(UnknownQueue, match="nope"):
        add.apply_async((1, 1), queue="nope")


def test_unknown_exchange_type_is_refused():
    with pytest.raises(ConfigurationError, match="headers"):
        Exchange("x", type="headers")


def test_immediate_raises_not_delivered_without_a_free_consumer(backend):
    if backend.name == "eager":
        pytest.skip("eager mode's private worker consumes every queue, so a consumer is always free")
    if not backend.virtual:
        pytest.skip("immediate is emulated on real brokers; see test_brokers")
    app = backend.app(workers=1, queues=["celery"])

    @app.task(name="side")
    def side():
        return 1

    # 'orphan' exists but nobody consumes it: nobody can take the message now.
    with pytest.raises(NotDelivered):
        side.apply_async(queue=Queue("orphan"), immediate=True)


def test_priority_zero_runs_before_nine_when_both_wait(backend):
    # one worker with one slot (`simq worker -c 1`): on four slots nothing would wait
    app = backend.app(workers=1, worker_concurrency=1, worker_prefetch_multiplier=1, queues=["celery"])
    order = backend.record()

    @app.task(name="mark")
    def mark(label):
        order.append(label)

    # acks_late: while gate runs it holds the one prefetch slot, so the others
    # queue up behind it (acked early, a real broker would push 'low' at once)
    @app.task(name="gate", acks_late=True)
    def gate():
        for label, priority in [("low", 9), ("mid", 5), ("high", 0), ("low2", 9)]:
            # mandatory: confirmed by the broker before gate returns, so all four are
            # queued before gate's ack frees the slot (AMQP orders nothing across connections)
            mark.apply_async(args=[label], priority=priority, mandatory=True)

    gate.delay().get()
    backend.settle(app)
    assert order == ["high", "mid", "low", "low2"]
