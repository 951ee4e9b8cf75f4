"""The project's Celery app, as a Celery project writes it."""

from celery import Celery

app = Celery("proj", include=["proj.tasks"])
app.conf.update(task_default_queue="proj", worker_prefetch_multiplier=10)
