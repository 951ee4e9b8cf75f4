"""``simq conformance --transport URL``: runs the suite against a broker and prints the matrix."""

from __future__ import annotations

import os

import pytest

from conformance.harness import unavailable
from simq.conformance_cli import Matrix, main
from simq.exceptions import TransportNotFound


class _Report:
    def __init__(self, backend, behaviour, outcome, when="call", capability=None, longrepr=None):
        self.user_properties = [("simq_backend", backend), ("simq_behaviour", behaviour)]
        if capability:
            self.user_properties.append(("simq_capability", capability))
        self.failed = outcome == "failed"
        self.skipped = outcome == "skipped"
        self.when = when
        self.longrepr = longrepr
        self.longreprtext = "E   AssertionError: boom" if self.failed else ""
        self.nodeid = behaviour


def test_matrix_cells_say_pass_fail_emulated_unsupported():
    m = Matrix()
    m.pytest_runtest_logreport(_Report("simulated", "t_a", "passed"))
    m.pytest_runtest_logreport(_Report("redis", "t_a", "passed", capability=("immediate", "emulated")))
    m.pytest_runtest_logreport(_Report("amqp", "t_a", "failed"))
    m.pytest_runtest_logreport(
        _Report("x", "t_a", "skipped", when="setup", longrepr=("f", 1, "Skipped: unsupported: no"))
    )
    assert m.cells["t_a"] == {"simulated": "pass", "redis": "emulated", "amqp": "fail", "x": "unsupported"}
    assert m.failed
    table = m.markdown()
    assert "| `t_a` | pass | emulated | fail | unsupported |" in table
    assert m.failures() == ["t_a [amqp]: AssertionError: boom"]


def test_unknown_transport_scheme_is_refused_before_running():
    with pytest.raises(TransportNotFound, match="installed"):
        main(["--transport", "nats://127.0.0.1:4222"])


def test_runs_the_suite_against_redis_and_prints_the_matrix(capsys):
    why = unavailable("redis")
    if why is not None:
        if os.environ.get("SIMQ_REQUIRE_BROKERS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    # two behaviours (one native, one emulated on Redis): .ci/run's conformance step runs them all
    code = main(
        ["--transport", "redis://127.0.0.1:6379/0", "-k", "publish_consume_ack_round_trip or each_matching_queue_once"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    # simulated, eager, redis in process, then the deployed worker: -c 4 threads, -P processes -c 4, two workers
    columns = "| simulated | eager | redis://127.0.0.1:6379/0 | worker-threads: redis://127.0.0.1:6379/0 |"
    assert columns in out
    assert "| `test_publish_consume_ack_round_trip` | pass | pass | pass | pass | pass | pass |" in out
    row = "| `test_one_message_reaches_each_matching_queue_once` | pass | pass | emulated | emulated | emulated | emulated |"
    assert row in out
