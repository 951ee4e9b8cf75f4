"""``Signature.register_type``: custom signature classes keep their class across the wire.

Only the simulator: what is tested is how a signature dict is turned back
into a class (``from_dict``, used the same way by every backend's worker),
which no broker or result backend takes part in.
"""

from __future__ import annotations

import json

import pytest

from simq import App, chain, signature
from simq.canvas.signatures import Signature, from_dict
from simq.exceptions import ConfigurationError


@pytest.fixture
def app():
    app = App("register-type")

    @app.task(name="t.add")
    def add(x, y):
        return x + y

    return app


class TestRegisterType:
    def test_a_registered_class_is_rebuilt_from_its_dict(self, app):
        @Signature.register_type(name="simq-test-doubled")
        class Doubled(Signature):
            def doubled_args(self):
                return tuple(2 * a for a in self.args)

        sig = Doubled("t.add", (1, 2), app=app)
        assert sig.subtask_type == "simq-test-doubled"
        back = signature(json.loads(json.dumps(sig)), app=app)
        assert type(back) is Doubled and back.doubled_args() == (2, 4)
        assert type(back.clone((5,))) is Doubled

    def test_the_name_defaults_to_the_class_name(self, app):
        @Signature.register_type()
        class SimqTestNamed(Signature):
            pass

        assert type(from_dict(dict(SimqTestNamed("t.add", app=app)), app)) is SimqTestNamed

    def test_a_registered_class_runs_like_a_signature(self, app):
        @Signature.register_type(name="simq-test-plain")
        class Plain(Signature):
            pass

        with app.simulate(seed=1):
            assert Plain("t.add", (1, 2), app=app).delay().get() == 3
            assert (app.tasks["t.add"].s(1, 1) | Plain("t.add", (5,), app=app))().get() == 7

    def test_built_in_kinds_cannot_be_taken(self):
        with pytest.raises(ConfigurationError, match="'chain' is simq's own chain kind"):

            @Signature.register_type(name="chain")
            class Mine(Signature):
                pass

    def test_only_signature_classes_are_registered(self):
        with pytest.raises(ConfigurationError, match="registers Signature subclasses"):
            Signature.register_type(name="simq-test-bad")(dict)  # type: ignore[arg-type]

    def test_an_unregistered_subclass_of_chain_does_not_take_the_chain_kind(self, app):
        class MyChain(chain):
            pass

        plain = dict(chain(app.tasks["t.add"].s(1, 1), app.tasks["t.add"].s(1)))
        assert type(from_dict(plain, app)) is chain
        assert MyChain.kind == "chain"  # inherited, but "chain" still names chain itself
