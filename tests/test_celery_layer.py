"""simq.celery: ``import celery`` resolves to simq once installed; the Celery app's constructor and settings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator

import pytest

import simq
import simq.celery
from simq.batches import Batches
from simq.exceptions import ConfigurationError

pydantic = pytest.importorskip("pydantic")


class In(pydantic.BaseModel):
    x: int


class Out(pydantic.BaseModel):
    doubled: int


@pytest.fixture
def layer() -> Iterator[types.ModuleType]:
    saved = {n: m for n, m in sys.modules.items() if n == "celery" or n.startswith("celery.")}
    was = simq.celery.installed()
    simq.celery.install()
    import celery

    yield celery
    simq.celery.uninstall()
    sys.modules.update(saved)
    if was:
        simq.celery.install()


class TestInstall:
    def test_celery_names_are_simq_objects(self, layer: types.ModuleType) -> None:
        import celery.result
        from celery import Celery, chain, chord, group, signature
        from celery.exceptions import ImproperlyConfigured, SoftTimeLimitExceeded

        assert issubclass(Celery, simq.App)
        assert (group, chain, chord, signature) == (simq.group, simq.chain, simq.chord, simq.signature)
        assert celery.result.AsyncResult is simq.AsyncResult
        assert ImproperlyConfigured is ConfigurationError
        assert SoftTimeLimitExceeded.__module__ == "simq.exceptions"

    def test_wins_over_a_celery_already_imported(self) -> None:
        saved = {n: m for n, m in sys.modules.items() if n == "celery" or n.startswith("celery.")}
        was = simq.celery.installed()
        simq.celery.uninstall()
        sys.modules["celery"] = types.ModuleType("celery")
        try:
            simq.celery.install()
            import celery

            assert celery.Celery.__module__ == "simq.celery.app"
        finally:
            simq.celery.uninstall()
            sys.modules.update(saved)
            if was:
                simq.celery.install()

    def test_a_name_simq_lacks_fails_to_import_naming_the_layer(self, layer: types.ModuleType) -> None:
        with pytest.raises(ImportError, match=r"simq[/\\]celery[/\\]modules\.py"):
            from celery.canvas import maybe_signature  # noqa: F401

    def test_attribute_simq_lacks_names_the_layer(self, layer: types.ModuleType) -> None:
        with pytest.raises(AttributeError, match="not provided by simq's Celery layer"):
            layer.canvas.maybe_signature

    def test_a_module_simq_lacks_fails_to_import_naming_the_layer(self, layer: types.ModuleType) -> None:
        with pytest.raises(ModuleNotFoundError, match="not provided by simq's Celery layer"):
            import celery.contrib.abortable  # noqa: F401

    def test_uninstall_takes_it_out(self, layer: types.ModuleType) -> None:
        simq.celery.uninstall()
        assert not simq.celery.installed()
        assert "celery" not in sys.modules or sys.modules["celery"] is not layer


class TestCeleryApp:
    def test_unknown_constructor_argument_is_refused(self, layer: types.ModuleType) -> None:
        with pytest.raises(ConfigurationError, match="'loader'"):
            layer.Celery("proj", loader="default")

    def test_old_upper_case_names_map_onto_simq_settings(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj")
        app.conf.update(CELERY_ALWAYS_EAGER=True, CELERYD_CONCURRENCY=3)
        assert app.conf.task_always_eager is True
        assert app.conf.worker_concurrency == 3

    def test_a_setting_simq_does_not_honour_is_refused(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj")
        with pytest.raises(ConfigurationError, match="result_extended.*not supported"):
            app.conf.update(result_extended=True)
        with pytest.raises(ConfigurationError, match="worker_pool"):
            app.conf.worker_pool = "prefork"

    def test_another_backends_options_are_dropped(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj", backend="redis://127.0.0.1:6379/0")
        app.conf.update(cassandra_servers=["localhost"])
        assert "cassandra_servers" not in app.conf

    def test_options_of_a_backend_simq_lacks_are_refused_when_it_is_the_backend(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj")
        with pytest.raises(ConfigurationError, match="cassandra backend"):
            app.conf.update(result_backend="cassandra://", cassandra_servers=["localhost"])

    def test_config_from_object_takes_an_object_with_a_namespace(self, layer: types.ModuleType) -> None:
        class Settings:
            CELERY_TASK_DEFAULT_QUEUE = "video"
            CELERY_TIMEZONE = "Europe/Paris"
            OTHER = 1

        app = layer.Celery("proj")
        app.config_from_object(Settings, namespace="CELERY")
        assert (app.conf.task_default_queue, app.conf.timezone) == ("video", "Europe/Paris")
        assert "OTHER" not in app.conf

    def test_config_from_object_takes_a_module_path(
        self, layer: types.ModuleType, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "celeryconfig_a.py").write_text("task_default_queue = 'image'\nimport os\n")  # type: ignore[operator]
        monkeypatch.syspath_prepend(str(tmp_path))
        app = layer.Celery("proj", config_source="celeryconfig_a")
        assert app.conf.task_default_queue == "image"

    def test_include_and_autodiscover_import_when_the_tasks_are_first_read(
        self, layer: types.ModuleType, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pkg = tmp_path / "proj_ad"  # type: ignore[operator]
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "celery.py").write_text(
            "from celery import Celery\napp = Celery('proj_ad', include=['proj_ad.extra'])\n"
            "app.autodiscover_tasks(['proj_ad'])\n"
        )
        (pkg / "tasks.py").write_text("from proj_ad.celery import app\n@app.task\ndef double(x):\n    return 2 * x\n")
        (pkg / "extra.py").write_text(
            "from celery import shared_task\n@shared_task\ndef triple(x):\n    return 3 * x\n"
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        from proj_ad.celery import app  # type: ignore[import-not-found]

        assert "proj_ad.tasks" not in sys.modules
        assert {"proj_ad.tasks.double", "proj_ad.extra.triple"} <= set(app.tasks)
        with app.simulate():
            assert app.send_task("proj_ad.tasks.double", (4,)).get() == 8

    def test_set_as_current_false_keeps_the_current_app(self, layer: types.ModuleType) -> None:
        first = layer.Celery("first")
        layer.Celery("second", set_as_current=False)
        assert simq.current_app() is first

    def test_bound_task_with_a_base(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj")

        class Base(layer.Task):
            def on_success(self, retval, task_id, args, kwargs):  # type: ignore[no-untyped-def]
                seen.append(retval)

        seen: list[int] = []

        @app.task(bind=True, base=Base)
        def add(self, x, y):  # type: ignore[no-untyped-def]
            return x + y + self.request.retries

        with app.simulate():
            assert add.delay(2, 3).get() == 5
        assert seen == [5]

    def test_pydantic_task_validates_arguments_and_dumps_its_result(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj")

        @app.task(pydantic=True)
        def double(data: In) -> Out:
            return Out(doubled=data.x * 2)

        with app.simulate():
            assert double.delay({"x": 21}).get() == {"doubled": 42}

    def test_class_based_task_is_registered(self, layer: types.ModuleType) -> None:
        app = layer.Celery("proj")

        class Hello(layer.Task):
            name = "tests.hello"

            def run(self, who):  # type: ignore[no-untyped-def]
                return f"hello {who}"

        app.register_task(Hello)
        with app.simulate():
            assert app.send_task("tests.hello", ("you",)).get() == "hello you"


class TestManager:
    def test_wait_until_idle_runs_the_simulation_dry(self, layer: types.ModuleType) -> None:
        from celery.contrib.testing.manager import Manager

        app = layer.Celery("proj")

        @app.task
        def add(x, y):  # type: ignore[no-untyped-def]
            return x + y

        with app.simulate():
            results = [add.delay(i, i) for i in range(3)]
            Manager(app).wait_until_idle()
            assert [r.state for r in results] == ["SUCCESS"] * 3


class TestSmallDivergences:
    def test_batches_apply_gives_the_body_a_one_request_list(self) -> None:
        app = simq.App("batches-apply")
        seen: list[object] = []

        @app.task(base=Batches, flush_every=2)
        def count(requests):  # type: ignore[no-untyped-def]
            seen.extend(requests)
            return [len(requests[0].args)]

        result = count.apply(args=(1, 2, 3), kwargs={"k": 1})
        assert [(r.args, r.kwargs) for r in seen] == [((1, 2, 3), {"k": 1})]  # type: ignore[attr-defined]
        assert result.get() == 3

    def test_shared_task_attribute_before_any_app_is_an_attribute_error(self) -> None:
        code = textwrap.dedent(
            """
            from simq import shared_task
            @shared_task
            def add(x, y):
                return x + y
            assert not hasattr(add, "delay")
            assert getattr(add, "name") == "__main__.add"
            print("ok")
            """
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
        assert done.stdout.strip() == "ok", done.stderr


def test_celery_flag_loads_a_celery_project_for_the_worker_and_its_pool_children(tmp_path) -> None:
    # `simq worker --celery -A proj:app` sets SIMQ_CELERY=1: load_app switches the layer on first, and
    # the processes pool's children, which load the app again, inherit the variable.
    import subprocess
    import sys

    (tmp_path / "cproj.py").write_text('from celery import Celery\n\napp = Celery("cproj")\n')
    code = "from simq.loading import load_app; from simq import App; app = load_app('cproj:app'); "
    code += "print(isinstance(app, App), type(app).__module__)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "SIMQ_CELERY"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**env, "SIMQ_CELERY": "1"}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "simq.celery.app"]
    from simq import production

    assert production.parse_args(["--celery", "-A", "cproj:app"]).celery is True
