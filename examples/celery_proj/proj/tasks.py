"""The project's tasks: a canvas, a batch task and a retrying task, with Celery's names.

Shared tasks, so they belong to whichever app is current: the project's in
production, the test's own app (``celery_app``) in the tests.
"""

from celery import chord, current_app, group, shared_task
from celery.utils.log import get_task_logger
from celery_batches import Batches

logger = get_task_logger(__name__)


@shared_task
def add(x, y):
    return x + y


@shared_task
def tsum(values):
    return sum(values)


def sum_of_squares(n):
    """A chord: square 0..n-1 in parallel, then add them up."""
    return chord(group(mul.s(i, i) for i in range(n)), tsum.s())


@shared_task
def mul(x, y):
    return x * y


@shared_task(base=Batches, flush_every=3, flush_interval=10)
def count_clicks(requests):
    """Count clicks per URL over a batch; each request's result is its URL's count."""
    counts = {}
    for request in requests:
        counts[request.kwargs["url"]] = counts.get(request.kwargs["url"], 0) + 1
    for request in requests:
        current_app.backend.mark_as_done(request.id, counts[request.kwargs["url"]])


class FlakyServiceError(Exception):
    pass


@shared_task(bind=True, autoretry_for=(FlakyServiceError,), retry_backoff=2, retry_jitter=False, max_retries=5)
def fetch(self, fail_times):
    """Fails ``fail_times`` times before it succeeds (retried with backoff)."""
    if self.request.retries < fail_times:
        logger.info("attempt %d failed", self.request.retries)
        raise FlakyServiceError("try again")
    return f"fetched after {self.request.retries} retries"
