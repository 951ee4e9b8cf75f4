"""With ``security_key`` set, nothing read back from the result backend runs unless the key holder wrote it.

Chord bodies, long chains' links and group layouts are records in the result
backend; so are results, which a chord body receives as arguments. Each is
signed (an HMAC over its key and bytes) and verified before it is decoded. An
attacker who can write to the backend (its Redis) but has no key can make a
canvas step fail, loudly, but not run a task of their choice, nor make a
worker unpickle anything.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.harness import Harness
from simq import App, chain, chord, group, states
from simq.canvas.run import INLINE_CHAIN
from simq.exceptions import RecordSignatureError
from simq.signing import RECORD_PREFIX, Signer

KEY = "a long random secret for these tests"


def _raw_keys(backend: Any) -> list[str]:
    """The backend keys (without namespace prefix) as an attacker listing the store would see them."""
    if hasattr(backend, "_data"):
        return sorted(backend._data)
    backend.sync()
    prefix = backend.prefix
    return sorted(k.decode()[len(prefix) :] for k in backend.client.scan_iter(match=f"{prefix}*"))


def _raw_get(backend: Any, key: str) -> bytes:
    if hasattr(backend, "_data"):
        return backend._data[key]
    backend.sync()
    return bytes(backend.client.get(backend._key(key)))


def forge(backend: Any, key: str, raw: bytes) -> None:
    """Write ``raw`` under ``key`` straight into the backend's storage, as someone without the key could."""
    if hasattr(backend, "_data"):
        backend._data[key] = raw
    else:
        backend.sync()
        backend.client.set(backend._key(key), raw)


@pytest.fixture(params=["simulated", "redis"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param, seed=3)
    yield h
    h.close()


def _app(h: Harness, gate: threading.Event, **conf: Any) -> tuple[App, list[Any]]:
    """An app whose ``hold`` task waits for ``gate`` on a real broker (so a record can be forged meanwhile)."""
    app = h.app(security_key=KEY, **conf)
    ran: list[Any] = []

    @app.task(name="rs.hold")
    def hold(x: int) -> int:
        if not h.virtual:
            gate.wait(30)
        return x

    @app.task(name="rs.total")
    def total(values: list[int]) -> int:
        ran.append(("total", values))
        return sum(values)

    @app.task(name="rs.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rs.pwned")
    def pwned(*args: Any) -> str:
        ran.append(("pwned", args))
        return "pwned"

    return app, ran


def _settle(h: Harness, app: App, result: Any) -> Any:
    """Let the canvas finish and return its stored meta (raises nothing: failures are data here)."""
    result.get(timeout=30, propagate=False)
    return app.backend.get_meta(result.id)


class TestUntampered:
    def test_a_chord_runs_with_security_key_set(self, harness):
        gate = threading.Event()
        gate.set()
        app, ran = _app(harness, gate)
        r = chord([app.tasks["rs.hold"].s(i) for i in range(4)], app.tasks["rs.total"].s())()
        assert r.get(timeout=30) == 6
        assert ran == [("total", [0, 1, 2, 3])]

    def test_records_are_stored_signed(self, harness):
        gate = threading.Event()
        gate.set()
        app, _ = _app(harness, gate)
        r = chord([app.tasks["rs.hold"].s(i) for i in range(2)], app.tasks["rs.total"].s())()
        assert r.get(timeout=30) == 1
        key = f"simq-chord-{r.parent.id}"
        raw = _raw_get(app.backend, key)
        assert raw.startswith(RECORD_PREFIX)
        assert _raw_get(app.backend, r.id).startswith(RECORD_PREFIX)  # results too

    def test_a_long_chain_and_a_saved_group_read_back_with_security_key_set(self, harness):
        gate = threading.Event()
        gate.set()
        app, _ = _app(harness, gate)
        add = app.tasks["rs.add"]
        links = [add.s(1, 1)] + [add.s(1) for _ in range(INLINE_CHAIN + 3)]
        assert chain(*links)().get(timeout=30) == 2 + INLINE_CHAIN + 3
        g = group(add.s(i, i) for i in range(3))()
        g.save()
        from simq.result import GroupResult

        restored = GroupResult.restore(g.id, app=app)
        assert restored is not None and restored.get(timeout=30) == [0, 2, 4]


class TestTamperedChordRecord:
    def _chord_with_forged_record(self, h: Harness, make_raw: Any, **conf: Any) -> tuple[App, Any, list[Any], str]:
        gate = threading.Event()
        app, ran = _app(h, gate, **conf)
        return (app, *self._forged_chord(h, app, gate, make_raw), ran)  # type: ignore[return-value]

    def _forged_chord(self, h: Harness, app: App, gate: threading.Event, make_raw: Any) -> tuple[Any, str]:
        gate.clear()
        r = chord([app.tasks["rs.hold"].s(i) for i in range(3)], app.tasks["rs.total"].s())()
        key = f"simq-chord-{r.parent.id}"
        genuine = _raw_get(app.backend, key)
        forge(app.backend, key, make_raw(app, key, genuine))
        gate.set()
        return r, key

    @staticmethod
    def _evil_body(app: App, key: str, genuine: bytes) -> dict[str, Any]:
        record = json.loads(Signer(KEY.encode()).verify_record(key, genuine))
        record["body"] = dict(app.tasks["rs.pwned"].s())
        return record

    def test_an_unsigned_body_never_runs_and_the_chord_fails_naming_the_record(self, harness, caplog):
        def unsigned(app: App, key: str, genuine: bytes) -> bytes:
            return json.dumps(self._evil_body(app, key, genuine)).encode()

        with caplog.at_level(logging.ERROR, logger="simq.canvas"):
            app, r, key, ran = self._chord_with_forged_record(harness, unsigned)
            meta = _settle(harness, app, r)
        assert ran == []  # neither the forged body nor the genuine one ran
        assert meta.state == states.FAILURE
        assert isinstance(meta.result, RecordSignatureError)
        assert key in str(meta.result) and "not signed" in str(meta.result)
        with pytest.raises(RecordSignatureError, match=key):
            r.get(timeout=5)
        assert any(key in rec.getMessage() for rec in caplog.records)  # logged, by the worker that refused it

    def test_a_body_signed_with_another_key_never_runs(self, harness):
        def other_key(app: App, key: str, genuine: bytes) -> bytes:
            body = json.dumps(self._evil_body(app, key, genuine)).encode()
            return Signer(b"not the key, but long enough").sign_record(key, body)

        app, r, key, ran = self._chord_with_forged_record(harness, other_key)
        meta = _settle(harness, app, r)
        assert ran == []
        assert isinstance(meta.result, RecordSignatureError)
        assert "does not match" in str(meta.result)

    def test_a_genuine_record_moved_from_another_key_never_runs(self, harness):
        gate = threading.Event()
        gate.set()
        app, ran = _app(harness, gate)
        donor = chord([app.tasks["rs.hold"].s(5)], app.tasks["rs.pwned"].s())()
        assert donor.get(timeout=30) == "pwned"
        moved = _raw_get(app.backend, f"simq-chord-{donor.parent.id}")  # signed with the key, for another chord
        ran.clear()
        r, key = self._forged_chord(harness, app, gate, lambda *_: moved)
        meta = _settle(harness, app, r)
        assert ran == []
        assert isinstance(meta.result, RecordSignatureError)
        assert "does not match" in str(meta.result)

    def test_a_pickled_record_is_never_unpickled(self, harness):
        unpickled: list[bool] = []

        class Boom:
            def __reduce__(self) -> Any:
                return (unpickled.append, (True,))

        def evil_pickle(app: App, key: str, genuine: bytes) -> bytes:
            return pickle.dumps({"body": Boom()})

        app, r, key, ran = self._chord_with_forged_record(
            harness, evil_pickle, task_serializer="pickle", accept_content=["json", "pickle"]
        )
        meta = _settle(harness, app, r)
        assert unpickled == [] and ran == []
        assert isinstance(meta.result, RecordSignatureError)


class TestTamperedChainAndResults:
    def test_a_forged_link_of_a_long_chain_never_runs_and_the_chain_fails(self, harness):
        gate = threading.Event()
        app, ran = _app(harness, gate)
        add = app.tasks["rs.add"]
        links = [app.tasks["rs.hold"].s(1)] + [add.s(1) for _ in range(INLINE_CHAIN + 2)]
        r = chain(*links)()
        stored = [k for k in _raw_keys(app.backend) if k.startswith("simq-chain-")]
        assert stored  # long enough to be stored, not inline
        forge(app.backend, sorted(stored)[0], json.dumps(dict(app.tasks["rs.pwned"].s())).encode())
        gate.set()
        meta = _settle(harness, app, r)
        assert ran == []
        assert meta.state == states.FAILURE
        assert isinstance(meta.result, RecordSignatureError)

    def test_a_forged_header_result_never_reaches_the_body(self, harness):
        gate = threading.Event()
        app, ran = _app(harness, gate, result_serializer="pickle")
        r = chord([app.tasks["rs.hold"].s(i) for i in range(2)], app.tasks["rs.total"].s())()
        unpickled: list[bool] = []

        class Boom:
            def __reduce__(self) -> Any:
                return (unpickled.append, (True,))

        # the first header task's result, replaced as soon as it is stored
        first = r.parent.results[0]
        gate.set()
        first.get(timeout=30)
        forge(app.backend, first.id, pickle.dumps({"status": "SUCCESS", "result": Boom()}))
        if harness.virtual:
            meta = _settle(harness, app, r)
            assert isinstance(meta.result, RecordSignatureError)
            assert ran == []
        assert unpickled == []
        with pytest.raises(RecordSignatureError, match=first.id):
            app.AsyncResult(first.id).state

    def test_without_security_key_records_are_plain(self, harness):
        app = harness.app()

        @app.task(name="rs.plain")
        def plain(x: int) -> int:
            return x

        @app.task(name="rs.sum")
        def total(values: list[int]) -> int:
            return sum(values)

        r = chord([plain.s(1), plain.s(2)], total.s())()
        assert r.get(timeout=30) == 3
        assert not _raw_get(app.backend, f"simq-chord-{r.parent.id}").startswith(RECORD_PREFIX)


class TestSigner:
    def test_a_record_verifies_only_under_the_key_it_was_signed_for(self):
        signer = Signer(KEY.encode())
        raw = signer.sign_record("simq-chord-a", b"body")
        assert signer.verify_record("simq-chord-a", raw) == b"body"
        with pytest.raises(RecordSignatureError, match="simq-chord-b"):
            signer.verify_record("simq-chord-b", raw)
        with pytest.raises(RecordSignatureError, match="not signed"):
            signer.verify_record("simq-chord-a", b"body")
        with pytest.raises(RecordSignatureError):
            signer.verify_record("simq-chord-a", raw[:-1] + b"B")
        with pytest.raises(RecordSignatureError):
            signer.verify_record("simq-chord-a", raw[: len(RECORD_PREFIX) + 10])

    def test_the_error_survives_the_result_backend(self):
        from simq.backends.base import exception_from_dict, exception_to_dict

        err = exception_from_dict(exception_to_dict(RecordSignatureError("simq-chord-a", "is not signed")))
        assert isinstance(err, RecordSignatureError)
        assert err.key == "simq-chord-a"
        assert "simq-chord-a" in str(err)
