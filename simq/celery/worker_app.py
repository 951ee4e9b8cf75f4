"""The app a deployed-mode ``simq worker`` loads (``-A simq.celery.worker_app:app``), rebuilt from its environment."""

from __future__ import annotations

import importlib
import os

from simq.celery import install
from simq.celery.app import Celery
from simq.celery.deployed import decode_env

__all__ = ["app"]

install()
_main, _settings, _includes, _class_tasks = decode_env(os.environ)
app = Celery(_main)
app.conf.update(_settings)
for _module in _includes:
    importlib.import_module(_module)
for _path in _class_tasks:
    _module_name, _, _attr = _path.partition(":")
    app.register_task(getattr(importlib.import_module(_module_name), _attr))
app.set_current()
