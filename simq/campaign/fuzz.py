"""Bad input for a worker: envelopes of every wrong shape, drawn from a seed, and the check that none stops it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from simq.message import Envelope

if TYPE_CHECKING:
    pass

__all__ = ["bad_envelope", "fuzz_bad_inputs", "random_value"]


_CONTENT_TYPES = (
    "application/json",
    "application/x-python-serialize",
    "application/x-yaml",
    "application/x-msgpack",
    "text/plain",
    "",
)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 5)
    if choice == 0:
        return None
    if choice == 1:
        return rng.randrange(-(2**40), 2**40)
    if choice == 2:
        return rng.choice([0.5, -1.0, float("nan"), float("inf"), 1e308])
    if choice == 3:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(8)))
    if choice == 4:
        return rng.choice([True, False, b"\x00\xff"])
    if choice == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {str(random_value(rng, depth + 1)): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def bad_envelope(rng: random.Random, task_names: Sequence[str]) -> Envelope:
    import json

    headers: Any = {
        "simq": 1,
        "task": rng.choice(list(task_names)),
        "id": f"bad-{rng.getrandbits(32):08x}",
        "retries": 0,
    }
    body = json.dumps([[1, 2], {}, {}]).encode()
    content_type = "application/json"
    for _ in range(1 + rng.randrange(3)):
        mutation = rng.randrange(7)
        if mutation == 0:
            body = rng.randbytes(rng.randrange(64))
        elif mutation == 1:
            content_type = rng.choice(_CONTENT_TYPES)
        elif mutation == 2:
            headers[rng.choice(["task", "id", "eta", "expires", "retries", "group_index", "root_id"])] = random_value(
                rng
            )
        elif mutation == 3:
            headers = {str(random_value(rng)): random_value(rng) for _ in range(rng.randrange(4))}
        elif mutation == 4:
            try:
                body = json.dumps(random_value(rng), default=repr).encode()
            except ValueError:
                body = b"["
        elif mutation == 5:
            embed = {"callbacks": [{"task": rng.choice(["no.such.task", *task_names]), "args": []}]}
            body = json.dumps([[1, 2], {}, embed]).encode()
        else:
            body = bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.1 else b for b in body)
    return Envelope(body, content_type, "utf-8", headers)


def fuzz_bad_inputs(seed: int, count: int) -> tuple[int, int, int]:
    """Feed ``count`` mutated messages to a simulated worker; return (tried, rejected, worker crashes)."""
    from simq.app import App

    app = App("campaign-bad-input")

    @app.task(name="campaign.target")
    def target(x: Any = None, y: Any = None) -> None:
        return None

    rng = random.Random(f"simq-bad-input:{seed}")
    crashes = 0
    with app.simulate(seed=seed, patch_time=False) as sim:
        for _ in range(count):
            sim.producer.publish(bad_envelope(rng, ["campaign.target"]), "", "celery")
            try:
                sim.run_until_idle()
            except Exception:  # noqa: BLE001 - counting exactly this
                crashes += 1
        rejected = sum(w.stats.rejected_total for w in sim.worker_list)
    return count, rejected, crashes


# -- command line -------------------------------------------------------------------------------------
