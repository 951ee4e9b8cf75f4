"""The project's pytest setup, as a Celery project writes it (plus simq's layer switched on)."""

import sys
from pathlib import Path

import pytest

import simq.celery

simq.celery.install()  # `pytest -p simq.celery` does this too; here so simq's own test run can collect it
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celery.contrib.pytest import *  # noqa: E402, F403 - the fixtures, as Celery projects import them


@pytest.fixture
def celery_config():
    return {"task_default_queue": "proj", "worker_prefetch_multiplier": 10}


@pytest.fixture
def celery_includes():
    return ["proj.tasks"]
