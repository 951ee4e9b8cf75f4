"""simq: a task queue with Celery's calling, canvas and batching API,
built around a deterministic in-memory broker on a virtual clock."""

from simq.app import App
from simq.canvas import Signature, chain, chord, chunks, group, signature
from simq.clock import Clock, VirtualClock, WallClock
from simq.exceptions import (
    ChordError,
    NotDelivered,
    SimqError,
    Unroutable,
)
from simq.hooks import WorkerHook
from simq.memory.simulation import Simulation
from simq.result import AsyncResult, GroupResult, ResultSet
from simq.routing import Binding, Exchange, Queue
from simq.shared import current_app, shared_task
from simq.task import Task
from simq.transport import Capabilities, Transport
from simq.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "App",
    "AsyncResult",
    "Binding",
    "Capabilities",
    "ChordError",
    "Clock",
    "Exchange",
    "GroupResult",
    "NotDelivered",
    "Queue",
    "ResultSet",
    "Signature",
    "SimqError",
    "Simulation",
    "Task",
    "Transport",
    "Unroutable",
    "VirtualClock",
    "WallClock",
    "Worker",
    "WorkerHook",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "group",
    "shared_task",
    "signature",
]
