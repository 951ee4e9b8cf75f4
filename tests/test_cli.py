"""The simq command: demo output, help, unknown commands."""

from __future__ import annotations

from simq.cli import main
from simq.demo import run_demo


def test_demo_runs_every_seed_example_with_the_results_the_seed_states():
    lines = []
    sim = run_demo(seed=7, workers=2, out=lines.append)
    text = "\n".join(lines)
    assert "add.apply_async(args=[10, 10], countdown=3)                -> 20" in text
    assert "mallory unbanned at 2026-01-02 00:00" in text
    assert "'compressed movie.mkv'" in text
    assert sim.elapsed == 86400
    # the countdown=3 task ran at +3 s in virtual time, on the lowpri queue
    assert any("+00:00:03.000  succeeded" in line and "lowpri" in line for line in lines)


def test_demo_is_deterministic_per_seed():
    assert run_demo(seed=3, out=lambda _: None).digest == run_demo(seed=3, out=lambda _: None).digest


def test_cli_demo_exits_zero_and_prints_real_time(capsys):
    assert main(["demo", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "real time for the whole run" in out


def test_cli_unknown_command_is_named(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_cli_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "worker", "conformance", "campaign", "replay"):
        assert command in out


def test_cli_control_revoke_refuses_when_no_worker_could_hear_it(tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "cliapp_memory.py").write_text("from simq import App\napp = App('cli')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["control", "revoke", "id-1", "-A", "cliapp_memory:app"]) == 2
        assert "cannot reach any worker" in capsys.readouterr().err
    finally:
        sys.modules.pop("cliapp_memory", None)


def test_cli_control_revoke_writes_the_revocation_log(tmp_path, monkeypatch, capsys):
    import sys
    import uuid

    from conformance.harness import delete_app_data, require, result_url, with_namespace
    from simq.revoke import Revocation, entry_key

    require("redis")
    url = with_namespace(result_url("redis"), f"cli{uuid.uuid4().hex[:10]}")
    (tmp_path / "cliapp_revoke.py").write_text(f"from simq import App\napp = App('cli', backend={url!r})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["control", "revoke", "id-1", "id-2", "-A", "cliapp_revoke:app", "--terminate"]) == 0
        app = sys.modules["cliapp_revoke"].app
        assert Revocation.decode(app.backend.get_record(entry_key(1))) == Revocation(("id-1", "id-2"), True, "SIGTERM")
        assert "revoked 2 task id(s) (terminate)" in capsys.readouterr().out
        assert main(["control", "revoke", "id-3", "-A", "cliapp_revoke:app", "--signal", "NOPE"]) == 2
        assert "must name a signal" in capsys.readouterr().err
        app.backend.delete_namespace()  # the revocation log too
        delete_app_data(app)
    finally:
        sys.modules.pop("cliapp_revoke", None)
