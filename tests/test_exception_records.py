"""Reading a failed result rebuilds its exception from classes already imported; it never imports a module."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from pathlib import Path

import pytest

from simq import App, states
from simq.backends.base import exception_from_dict
from simq.exceptions import SimqError


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A module on sys.path that leaves a marker file when imported (as an attacker's record could name)."""
    name = f"simq_planted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n\nclass Boom(Exception):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker
    sys.modules.pop(name, None)


def test_a_record_naming_an_unimported_module_does_not_import_it(planted):
    name, marker = planted
    exc = exception_from_dict({"exc_type": "Boom", "exc_module": name, "exc_message": ["bad"]})
    assert not marker.exists()
    assert name not in sys.modules
    assert isinstance(exc, SimqError)  # the stand-in class, named as the record says
    assert type(exc).__name__ == "Boom" and type(exc).__module__ == name
    assert exc.args == ("bad",)


def test_a_class_of_a_module_already_imported_is_used(planted):
    name, marker = planted
    module = importlib.import_module(name)
    assert marker.exists()  # imported by the program itself, not by reading a record
    exc = exception_from_dict({"exc_type": "Boom", "exc_module": name, "exc_message": ["bad"]})
    assert type(exc) is module.Boom


def test_reading_a_failed_result_through_the_backend_imports_nothing(planted):
    name, marker = planted
    app = App("exc")
    with app.simulate(seed=1) as sim:
        record = {"status": states.FAILURE, "result": {"exc_type": "Boom", "exc_module": name, "exc_message": ["x"]}}
        sim.backend._set("t-1", json.dumps(record).encode())  # as written by whoever can write to the backend
        err = app.AsyncResult("t-1").get(propagate=False)
    assert not marker.exists()
    assert type(err).__name__ == "Boom" and err.args == ("x",)


def test_notes_travel_with_the_exception():
    from simq.backends.base import exception_to_dict

    exc = KeyError("k")
    exc.add_note("first note")
    exc.add_note("second note")
    data = json.loads(json.dumps(exception_to_dict(exc)))
    back = exception_from_dict(data)
    assert type(back) is KeyError and back.args == ("k",)
    assert back.__notes__ == ["first note", "second note"]


def test_an_exception_without_notes_stores_none():
    from simq.backends.base import exception_to_dict

    assert "exc_notes" not in exception_to_dict(ValueError("x"))
    assert not hasattr(exception_from_dict(exception_to_dict(ValueError("x"))), "__notes__")


def test_a_failed_tasks_notes_survive_the_result_backend():
    app = App("exc-notes")

    @app.task(name="n.fails")
    def fails():
        err = ValueError("bad")
        err.add_note("why it failed")
        raise err

    with app.simulate(seed=1):
        with pytest.raises(ValueError) as info:
            fails.delay().get()
    assert info.value.__notes__ == ["why it failed"]
