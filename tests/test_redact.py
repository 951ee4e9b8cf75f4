"""Passwords never reach a log line or an error, however they are spelled."""

from __future__ import annotations

import pytest

from simq.transport import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
        ("amqp://u:p#a@h:1/v", "amqp://u:***@h:1/v"),
        ("amqp://u:p/a?b@h:1/v?namespace=x", "amqp://u:***@h:1/v?namespace=x"),
        ("redis://:pa@ss@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0?namespace=a", "redis://h:6379/0?namespace=a"),
        ("redis://user@h/0", "redis://user@h/0"),
    ],
)
def test_the_password_is_masked_even_with_unencoded_url_characters(url, shown):
    assert redact_url(url) == shown


def test_the_startup_line_masks_a_password_with_a_hash(tmp_path, monkeypatch, caplog):
    import logging

    from simq import production

    (tmp_path / "hashpw.py").write_text(
        "from simq import App\napp = App('h', broker='amqp://guest:pa#ss@127.0.0.1:1//')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(production.WorkerProcess, "run", lambda self: 0)
    monkeypatch.setattr(production.WorkerProcess, "install_signal_handlers", lambda self: None)
    with caplog.at_level(logging.INFO, logger="simq.production"):
        assert production.main(["-A", "hashpw:app"]) == 0
    text = caplog.text
    assert "amqp://guest:***@127.0.0.1:1//" in text and "pa#ss" not in text and "ss@127" not in text
