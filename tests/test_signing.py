"""HMAC signing: signed messages run; unsigned, tampered or wrongly keyed ones are dead-lettered as bad-signature."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simq import App
from simq.exceptions import ConfigurationError, MessageRejected
from simq.message import Envelope
from simq.signing import SIGNATURE_HEADER, Signer

KEY = "correct horse battery staple, 32b"


def make_app(key=KEY, **conf):
    app = App("signed", security_key=key, **conf)
    ran = []

    @app.task(name="signed.add")
    def add(x, y):
        ran.append((x, y))
        return x + y

    return app, add, ran


def capture(sim):
    """Record envelopes the producer publishes (so a test can tamper with one) instead of sending them."""
    sent = []
    sim.producer.publish = lambda envelope, exchange, key, **kw: sent.append((envelope, exchange, key))
    return sent


class TestSignedRuns:
    def test_signed_task_runs(self):
        app, add, ran = make_app()
        with app.simulate(seed=1) as sim:
            assert add.delay(2, 3).get() == 5
            assert ran == [(2, 3)]
            assert sim.dead_letters == []

    def test_every_sent_message_carries_a_signature(self):
        app, add, _ = make_app()
        with app.simulate(seed=1) as sim:
            sent = capture(sim)
            add.delay(1, 1)
            ((envelope, _, _),) = sent
            assert len(envelope.headers[SIGNATURE_HEADER]) == 64  # sha256 hex

    def test_retries_are_signed_too(self):
        app, _, _ = make_app()
        attempts = []

        @app.task(name="signed.flaky", bind=True, max_retries=3)
        def flaky(self):
            attempts.append(self.request.retries)
            if self.request.retries < 2:
                raise self.retry(countdown=5)
            return "done"

        with app.simulate(seed=2) as sim:
            assert flaky.delay().get() == "done"
            assert attempts == [0, 1, 2]
            assert sim.dead_letters == []

    def test_str_and_bytes_keys_sign_alike(self):
        env = Envelope(b"[]", "application/json", "utf-8", {"task": "t", "id": "1"})
        assert Signer(KEY.encode()).sign(env) == App("a", security_key=KEY).signer.sign(env)


class TestRefused:
    def publish_and_run(self, app, envelope):
        with app.simulate(seed=3) as sim:
            sim.producer.publish(envelope, "", "celery")
            sim.run_until_idle()
            return sim, sim.worker_list[0]

    def signed_envelope(self, app, add, *args):
        with app.simulate(seed=4) as sim:
            sent = capture(sim)
            add.delay(*args)
        return sent[0][0]

    def test_unsigned_message_is_refused(self):
        app, _, ran = make_app()
        body = json.dumps([[1, 2], {}, {}]).encode()
        unsigned = Envelope(
            body, "application/json", "utf-8", {"simq": 1, "task": "signed.add", "id": "u1", "retries": 0}
        )
        sim, worker = self.publish_and_run(app, unsigned)
        assert ran == []
        assert worker.stats.rejected == {"bad-signature": 1}
        assert "not signed" in sim.dead_letters[0].reason

    @pytest.mark.parametrize(
        "tamper",
        [
            lambda e: attrs.evolve(e, body=e.body.replace(b"[2,3]", b"[2,4]")),
            lambda e: attrs.evolve(e, headers={**e.headers, "task": "signed.other"}),
            lambda e: attrs.evolve(e, headers={**e.headers, "retries": 7}),
            lambda e: attrs.evolve(e, headers={**e.headers, "eta": 1.0}),
            lambda e: attrs.evolve(e, content_type="application/x-yaml"),
            lambda e: attrs.evolve(e, headers={**e.headers, SIGNATURE_HEADER: "0" * 64}),
            lambda e: attrs.evolve(e, headers={**e.headers, SIGNATURE_HEADER: 12}),
        ],
        ids=["body", "task", "retries", "eta", "content-type", "forged-signature", "signature-not-a-string"],
    )
    def test_tampered_message_is_refused(self, tamper):
        app, add, ran = make_app(accept_content=["json", "yaml"])

        @app.task(name="signed.other")
        def other(x, y):
            ran.append(("other", x, y))

        envelope = self.signed_envelope(app, add, 2, 3)
        assert b"[2,3]" in envelope.body
        sim, worker = self.publish_and_run(app, tamper(envelope))
        assert ran == []
        assert worker.stats.rejected == {"bad-signature": 1}
        assert sim.dead_letters[0].reason.startswith("bad-signature:")

    def test_untampered_copy_runs(self):
        app, add, ran = make_app()
        envelope = self.signed_envelope(app, add, 2, 3)
        self.publish_and_run(app, envelope)
        assert ran == [(2, 3)]

    def test_message_signed_with_another_key_is_refused(self):
        app, _, ran = make_app()
        other_app, other_add, _ = make_app(key="another key of enough length!!")
        envelope = self.signed_envelope(other_app, other_add, 1, 1)
        sim, worker = self.publish_and_run(app, envelope)
        assert ran == []
        assert worker.stats.rejected == {"bad-signature": 1}
        assert "does not match" in sim.dead_letters[0].reason

    def test_user_headers_are_not_covered(self):
        """Transports may add headers of their own (x-death...); only simq's protocol headers are signed."""
        app, add, ran = make_app()
        envelope = self.signed_envelope(app, add, 2, 3)
        _, worker = self.publish_and_run(app, attrs.evolve(envelope, headers={**envelope.headers, "x-death": [1]}))
        assert ran == [(2, 3)]
        assert worker.stats.rejected == {}


class TestVerify:
    def test_verify_raises_message_rejected(self):
        signer = Signer(b"k" * 32)
        env = Envelope(b"[]", "application/json", "utf-8", {"task": "t", "id": "1"})
        signer.verify(signer.sign(env))
        with pytest.raises(MessageRejected) as info:
            signer.verify(env)
        assert info.value.reason == "bad-signature"

    def test_repr_hides_the_key(self):
        assert "kkkk" not in repr(Signer(b"k" * 32))


class TestConfiguration:
    def test_short_key_refused(self):
        with pytest.raises(ConfigurationError, match="at least 16 bytes"):
            App("a", security_key="short").signer

    def test_unknown_digest_refused(self):
        with pytest.raises(ConfigurationError, match="security_digest 'md4x'"):
            App("a", security_key=KEY, security_digest="md4x").signer

    def test_other_digest_works(self):
        app, add, _ = make_app(security_digest="sha512")
        with app.simulate(seed=1):
            assert add.delay(1, 2).get() == 3

    def test_misspelt_setting_refused(self):
        with pytest.raises(ConfigurationError, match="did you mean 'security_key'"):
            App("a", security_kee=KEY)

    def test_signing_off_by_default(self):
        assert App("a").signer is None

    def test_changing_the_key_changes_the_signer(self):
        app = App("a", security_key=KEY)
        first = app.signer
        app.conf.security_key = "a different key, long enough"
        assert app.signer is not first and app.signer.key == b"a different key, long enough"


class TestFuzz:
    """With signing on, nothing an attacker without the key publishes is ever decoded or run."""

    @settings(max_examples=60, deadline=None)
    @given(
        body=st.binary(max_size=100),
        headers=st.dictionaries(
            st.sampled_from(["task", "id", "retries", "eta", SIGNATURE_HEADER]) | st.text(max_size=5),
            st.none() | st.integers() | st.text(max_size=70) | st.sampled_from(["signed.add"]),
            max_size=6,
        ),
    )
    def test_forged_messages_are_refused(self, body, headers):
        app, _, ran = make_app()
        with app.simulate(seed=0, patch_time=False) as sim:
            sim.producer.publish(Envelope(body, "application/json", "utf-8", headers), "", "celery")
            sim.run_until_idle()
            assert ran == []
            assert sim.worker_list[0].stats.rejected == {"bad-signature": 1}

    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def test_any_flipped_bit_in_the_body_is_refused(self, data):
        signer = Signer(KEY.encode())
        body = json.dumps([[1, 2], {}, {}]).encode()
        env = signer.sign(Envelope(body, "application/json", "utf-8", {"simq": 1, "task": "signed.add", "id": "x"}))
        index = data.draw(st.integers(0, len(body) - 1))
        bit = data.draw(st.integers(0, 7))
        flipped = bytearray(body)
        flipped[index] ^= 1 << bit
        with pytest.raises(MessageRejected):
            signer.verify(attrs.evolve(env, body=bytes(flipped)))
