"""The project's tests: each runs in a seeded simulation (sim mode), so waits and retries take no time."""

import pytest
from celery import chain
from celery.result import AsyncResult
from proj.tasks import add, count_clicks, fetch, sum_of_squares


def test_chain_adds_up(celery_app, celery_worker):
    assert chain(add.s(1, 2), add.s(3), add.s(4))().get(timeout=10) == 10


def test_chord_sums_the_squares(celery_app, celery_worker):
    assert sum_of_squares(5)().get(timeout=10) == 0 + 1 + 4 + 9 + 16


def test_batch_counts_clicks_per_url(celery_app, celery_worker):
    if getattr(celery_worker, "mode", None) == "eager":
        pytest.skip("eager mode runs each send at once: every batch holds one request")
    results = [count_clicks.delay(url=url) for url in ("/a", "/b", "/a")]
    assert [r.get(timeout=10) for r in results] == [2, 1, 2]


def test_retrying_task_succeeds_after_its_failures(celery_app, celery_worker):
    result = fetch.delay(3)
    assert result.get(timeout=600) == "fetched after 3 retries"
    assert isinstance(result, AsyncResult)
