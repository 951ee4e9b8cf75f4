"""pytest plugin: the ``backend`` fixture, parametrised over every selected backend.

Backends: ``simulated`` and ``eager`` always; ``amqp`` and ``redis`` (the
local RabbitMQ and Redis) skip with the reason when unreachable, and fail
instead when ``SIMQ_REQUIRE_BROKERS=1``; ``--simq-transport URL`` adds a
third-party broker. Only the backend a parameter names is ever built.

Markers a conformance test may carry:

- ``simq_virtual_only(reason)``: needs virtual time (a countdown of a day);
  skipped on real brokers with the reason.
- ``simq_in_process(reason)``: needs the ``Worker`` objects in the test's
  process (their stats, crashing one); skipped on deployed-worker backends
  with the reason.
- ``simq_capability(name)``: exercises one transport capability; where the
  transport says ``"none"`` the test is skipped as unsupported, and where it
  says ``"emulated"`` the conformance matrix prints ``emulated``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conformance.deployed import split as split_deployed
from conformance.harness import Harness, selected_backends
from simq.transport import redact_url


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("simq conformance")
    group.addoption(
        "--simq-backends",
        default=None,
        help="comma-separated backends for the conformance suite "
        "(default: simulated,eager,amqp,redis; env SIMQ_BACKENDS)",
    )
    group.addoption(
        "--simq-transport",
        action="append",
        default=None,
        metavar="URL",
        help="also run the conformance suite against this broker URL (repeatable)",
    )


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "simq_virtual_only(reason): needs virtual time; skipped on real brokers")
    config.addinivalue_line("markers", "simq_capability(name): exercises one transport capability")
    config.addinivalue_line("markers", "simq_in_process(reason): needs Worker objects; skipped on deployed workers")
    config.addinivalue_line("markers", "simq_not_eager(reason): has no meaning when tasks run at once; skipped eager")


def _param_id(name: str) -> str:
    deployed = split_deployed(name)  # worker-threads:amqp://... keeps its kind, loses its password
    if deployed is not None:
        return f"{deployed[0]}:{_param_id(deployed[1])}"
    return redact_url(name) if "://" in name else name


def pytest_generate_tests(metafunc: Any) -> None:
    if "backend" in metafunc.fixturenames:
        names = selected_backends(metafunc.config)
        metafunc.parametrize("backend", names, indirect=True, ids=[_param_id(n) for n in names])


@pytest.fixture
def backend(request: Any) -> Iterator[Harness]:
    seed = request.config.getoption("--simq-seed", None) or 0
    harness = Harness(request.param, seed=int(seed), test=_test_of(request.node))
    request.node.user_properties.append(("simq_backend", _param_id(request.param)))
    request.node.user_properties.append(("simq_behaviour", _behaviour(request.node.nodeid, _param_id(request.param))))
    if not harness.virtual:
        marker = request.node.get_closest_marker("simq_virtual_only")
        if marker is not None:
            reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "needs virtual time")
            pytest.skip(f"virtual time only: {reason}")
    if harness.name == "eager":
        marker = request.node.get_closest_marker("simq_not_eager")
        if marker is not None:
            pytest.skip(f"not in eager mode: {marker.args[0] if marker.args else 'tasks run as they are sent'}")
    if harness.deployed:
        marker = request.node.get_closest_marker("simq_in_process")
        if marker is not None:
            pytest.skip(f"in-process workers only: {marker.args[0] if marker.args else 'needs Worker objects'}")
    capability = request.node.get_closest_marker("simq_capability")
    if capability is not None and not harness.virtual:
        support = getattr(_capabilities(harness), capability.args[0], "native")
        request.node.user_properties.append(("simq_capability", (capability.args[0], support)))
        if support == "none":
            pytest.skip(f"unsupported: the transport declares {capability.args[0]}='none'")
    try:
        yield harness
    finally:
        harness.close()


def _test_of(node: Any) -> dict[str, Any]:
    """What a deployed worker process calls to define the same tasks: the test function and its parameters."""
    qualname = node.originalname if node.cls is None else f"{node.cls.__name__}.{node.originalname}"
    params = (
        {k: v for k, v in getattr(node, "callspec", None).params.items() if k != "backend"}
        if hasattr(node, "callspec")
        else {}
    )
    return {"module": node.module.__name__, "qualname": qualname, "params": params}


def _behaviour(nodeid: str, backend_id: str) -> str:
    """The test's id without the backend parameter: one row of the conformance matrix."""
    name = nodeid.split("::", 1)[-1]
    if "[" not in name:
        return name
    base, _, params = name.partition("[")
    params = params[:-1]
    if params == backend_id:
        return base
    for candidate in (f"{backend_id}-", f"-{backend_id}"):
        if candidate in params:
            params = params.replace(candidate, "", 1)
            break
    return f"{base}[{params}]"


def _capabilities(harness: Harness) -> Any:
    from conformance.harness import unavailable

    if unavailable(harness.name) is not None:
        from simq.transport import Transport

        return Transport.capabilities
    return harness.transport_capabilities
