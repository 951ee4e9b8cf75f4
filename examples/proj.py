"""The issue's example project: ``simq worker -A examples.proj:app -Q video,image -c 4 --prefetch-multiplier 4``.

The broker and result backend come from ``SIMQ_BROKER_URL`` and
``SIMQ_RESULT_BACKEND`` (default: the local RabbitMQ and Redis).
"""

from __future__ import annotations

import os

from simq import App, Exchange, Queue

tasks = Exchange("tasks", type="topic")

app = App(
    "proj",
    broker=os.environ.get("SIMQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("SIMQ_RESULT_BACKEND", "redis://127.0.0.1:6379/0"),
    task_default_exchange="tasks",
    task_default_exchange_type="topic",
    task_default_queue="video",
    task_default_routing_key="video.default",
    task_queues=[
        Queue("video", tasks, routing_key="video.#"),
        Queue("image", tasks, routing_key="image.#"),
        Queue("lowpri", tasks, routing_key="misc.#"),
    ],
)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(routing_key="image.crop")
def crop(name: str) -> str:
    return f"cropped {name}"
