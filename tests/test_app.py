"""App configuration, task registration and the errors users see first."""

from __future__ import annotations

import pytest

from simq import App, shared_task
from simq.exceptions import ConfigurationError, NotRegistered, SimulationIdle, TransportNotFound


def test_unknown_setting_is_refused_with_a_suggestion():
    with pytest.raises(ConfigurationError, match="did you mean 'task_serializer'"):
        App("x", task_serializr="json")


def test_unknown_task_option_is_refused_with_a_suggestion():
    app = App("x")
    with pytest.raises(ConfigurationError, match="did you mean 'max_retries'"):

        @app.task(max_retry=3)
        def f():
            pass


def test_task_priority_is_validated_at_decoration():
    app = App("x")
    with pytest.raises(ConfigurationError, match="priority"):

        @app.task(priority=12)
        def f():
            pass


def test_task_names_default_to_module_and_qualname():
    app = App("x")

    @app.task
    def f():
        pass

    assert f.name == f"{__name__}.test_task_names_default_to_module_and_qualname.<locals>.f"
    assert app.tasks[f.name] is f


def test_shared_task_registers_on_every_app_and_uses_the_current_one():
    @shared_task(name="shared.double")
    def double(x):
        return 2 * x

    one = App("one")
    with one.simulate():
        assert double.delay(21).get() == 42
    assert "shared.double" in one.tasks


def test_memory_broker_connection_outside_a_simulation_says_what_to_do():
    with pytest.raises(ConfigurationError, match="simulate"):
        App("x").connection()


def test_waiting_on_memory_broker_without_a_simulation_raises_clearly():
    app = App("x")
    with pytest.raises(SimulationIdle, match="app.simulate"):
        app.AsyncResult("nope").get()


def test_unknown_url_scheme_names_installed_transports():
    app = App("x", broker="carrier-pigeon://host")
    with pytest.raises(TransportNotFound, match="installed: .*memory"):
        app.connection()


def test_signature_for_unregistered_task_fails_at_send_time():
    app = App("x")

    @app.task
    def f():
        return 1

    from simq import signature

    with app.simulate():
        with pytest.raises(NotRegistered, match="nope.task"):
            signature("nope.task", app=app).delay()
        with pytest.raises(NotRegistered, match="nope.task"):
            f.apply_async(link=signature("nope.task", app=app))


def test_get_inside_a_task_is_refused():
    app = App("x")

    @app.task
    def inner():
        return 1

    @app.task
    def outer():
        return inner.delay().get()

    with app.simulate():
        r = outer.delay()
        with pytest.raises(Exception, match="never call result.get"):
            r.get()


def test_public_api_is_sorted_and_complete():
    import simq

    assert simq.__all__ == sorted(simq.__all__)
    for name in simq.__all__:
        assert hasattr(simq, name), name
