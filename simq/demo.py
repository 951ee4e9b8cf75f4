"""``simq demo``: the executing-tasks examples, run in the simulator, as a timeline.

Everything here is the seed document's own code, on simq: delay and
apply_async, a countdown, the quickban ``eta=tomorrow``, serializer choice,
one connection for several sends, and the video/image/lowpri topic routing,
with two workers on a virtual clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from simq import App, Exchange, Queue
from simq.memory.simulation import Simulation

__all__ = ["build_app", "run_demo"]


def build_app() -> App:
    tasks = Exchange("tasks", type="topic")
    app = App(
        "demo",
        task_default_exchange="tasks",
        task_default_exchange_type="topic",
        task_default_routing_key="misc.default",
        task_default_queue="lowpri",
        task_queues=[
            Queue("video", tasks, routing_key="video.#"),
            Queue("image", tasks, routing_key="image.#"),
            Queue("lowpri", tasks, routing_key="misc.#"),
        ],
        accept_content=["json", "yaml"],
        # one example runs tomorrow (eta); keep today's results past it, so they can still be read then
        result_expires=2 * 86_400,
    )

    @app.task(name="demo.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="demo.unban")
    def unban(username: str) -> str:
        return f"{username} unbanned at {datetime.now():%Y-%m-%d %H:%M}"

    @app.task(name="demo.compress_video")
    def compress_video(filename: str) -> str:
        return f"compressed {filename}"

    @app.task(name="demo.rotate_image")
    def rotate_image(filename: str, degrees: int) -> str:
        return f"rotated {filename} by {degrees}"

    @app.task(name="demo.crop_image")
    def crop_image(filename: str, selection: list[int]) -> str:
        return f"cropped {filename} to {selection}"

    @app.task(name="demo.update_recommendations")
    def update_recommendations() -> str:
        return "recommendations updated"

    return app


def run_demo(seed: int = 7, workers: int = 2, out: Callable[[str], Any] = print) -> Simulation:
    """Run the examples; print the timeline through ``out``; return the finished simulation."""
    app = build_app()
    t = app.tasks
    add, unban = t["demo.add"], t["demo.unban"]
    with app.simulate(seed=seed, workers=workers) as sim:
        results: list[tuple[str, Any]] = []
        results.append(("add.delay(4, 4)", add.delay(4, 4)))
        results.append(("add.apply_async(args=[10, 10], countdown=3)", add.apply_async(args=[10, 10], countdown=3)))
        tomorrow = datetime.now() + timedelta(days=1)
        results.append(
            ("UnbanTask.apply_async(args=['mallory'], eta=tomorrow)", unban.apply_async(args=["mallory"], eta=tomorrow))
        )
        results.append(
            ('add.apply_async(args=[10, 10], serializer="yaml")', add.apply_async(args=[10, 10], serializer="yaml"))
        )
        with app.connection() as connection:
            for args in [(2, 2), (4, 4), (8, 8), (16, 16)]:
                results.append(
                    (
                        f"add.apply_async(args={args}, connection=connection)",
                        add.apply_async(args=args, connection=connection),
                    )
                )
        results.append(
            (
                'CompressVideoTask routing_key="video.compress"',
                t["demo.compress_video"].apply_async(args=["movie.mkv"], routing_key="video.compress"),
            )
        )
        results.append(
            (
                'ImageRotateTask routing_key="image.rotate"',
                t["demo.rotate_image"].apply_async(args=["cat.png", 360], routing_key="image.rotate"),
            )
        )
        results.append(
            (
                'ImageCropTask routing_key="image.crop"',
                t["demo.crop_image"].apply_async(args=["cat.png", [0, 0, 64, 64]], routing_key="image.crop"),
            )
        )
        results.append(
            (
                'UpdateRecommendationsTask routing_key="misc.recommend"',
                t["demo.update_recommendations"].apply_async(routing_key="misc.recommend"),
            )
        )
        for _, result in results:
            result.get()
        out(
            "simq demo: the executing-tasks examples on the in-memory broker, virtual clock, "
            f"seed={seed}, {workers} workers\n"
        )
        out(f"{'virtual time':>14}  {'event':<10} {'worker':<9} {'queue':<7} {'task':<28} result")
        for event in sim.trace:
            if event.kind not in ("held", "succeeded", "failed", "retry", "revoked", "rejected"):
                continue
            out(
                f"{_when(event.at):>14}  {event.kind:<10} {event.worker:<9} {event.queue:<7} {event.task:<28} {event.detail}"
            )
        out("")
        for label, result in results:
            out(f"  {label:<58} -> {result.get()!r}")
        out(f"\nvirtual time elapsed: {_when(sim.elapsed)}; trace digest {sim.digest[:16]}")
    return sim


def _when(seconds: float) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{int(hours):02d}:{int(minutes):02d}:{secs:06.3f}"
    return f"+{int(days)}d {text}" if days else f"+{text}"
