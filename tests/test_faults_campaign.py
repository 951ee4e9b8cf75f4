"""The campaign and replay commands (simq.campaign.main), and bad input at campaign scale."""

from __future__ import annotations

import io

import pytest

from simq.campaign import case_for_seed, fuzz_bad_inputs, main, run_case
from simq.memory.faults import FaultPlan


class TTY(io.StringIO):
    def isatty(self):
        return True


def run(argv, err=None):
    out = io.StringIO()
    err = err if err is not None else io.StringIO()
    status = main(argv, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


class TestCampaign:
    def test_summary_and_progress(self):
        status, out, err = run(["campaign", "--seeds", "20"])
        assert status == 0
        assert "seeds run:           20" in out
        assert "lost, unexplained:   0" in out
        for label in ("tasks run:", "faults injected:", "duplicated:", "lost, late acks:", "lost, early acks:"):
            assert label in out
        lines = err.splitlines()
        assert lines[0].startswith("1/20 seeds") and lines[-1].startswith("20/20 seeds")

    def test_progress_on_a_terminal_rewrites_one_line(self):
        err = TTY()
        status, _, _ = run(["campaign", "--seeds", "3"], err=err)
        assert status == 0
        text = err.getvalue()
        assert text.count("\r") == 3 and text.endswith("\n") and "3/3 seeds" in text

    def test_quiet(self):
        _, _, err = run(["campaign", "--seeds", "2", "--quiet"])
        assert err == ""

    def test_bad_inputs(self):
        status, out, _ = run(["campaign", "--seeds", "1", "--bad-inputs", "50", "--quiet"])
        assert status == 0
        assert "bad inputs tried:    50" in out
        assert "worker crashes:      0 (must be 0)" in out

    def test_late_acks_only_with_fixed_rate(self):
        status, out, _ = run(
            ["campaign", "--seeds", "5", "--acks", "late", "--rate", "0.2", "--workloads", "add,retry", "--quiet"]
        )
        assert status == 0
        assert "lost, early acks:    0" in out

    def test_unknown_workload_is_named(self):
        with pytest.raises(SystemExit, match="unknown workload 'nope'"):
            run(["campaign", "--workloads", "nope"])

    def test_unknown_kind_is_named(self):
        with pytest.raises(SystemExit, match="unknown fault kind 'lightning'"):
            run(["campaign", "--kinds", "lightning"])


class TestReplay:
    def test_replay_from_the_seed_alone_matches_the_campaign_case(self):
        plan, workload, acks_late = case_for_seed(11)
        expected = run_case(11, plan, workload, acks_late=acks_late)
        status, out, _ = run(["replay", "11"])
        assert status == 0
        assert f"digest={expected.digest[:16]}" in out
        assert f"seed=11 workload={workload}" in out

    def test_replay_command_printed_reproduces_the_run(self):
        outcome = run_case(3, FaultPlan(rate=0.2), "link", acks_late=False)
        argv = outcome.replay_command().split()[1:]
        _, out, _ = run(argv)
        assert f"digest={outcome.digest[:16]}" in out

    def test_replay_prints_the_trace(self):
        _, out, _ = run(["replay", "4", "--workload", "add", "--rate", "0.3", "--acks", "late", "--trace"])
        assert " sent " in out and "succeeded" in out


def test_fuzz_bad_inputs_counts():
    tried, rejected, crashes = fuzz_bad_inputs(seed=1, count=200)
    assert tried == 200
    assert crashes == 0
    assert 150 < rejected <= 200  # a few mutations leave a runnable call


@pytest.mark.parametrize("workload", ["revoke", "time_limit"])
def test_the_revoke_and_time_limit_workloads_hold_under_faults(workload):
    plan = FaultPlan(rate=0.2)
    outcomes = [run_case(seed, plan, workload) for seed in range(20)]
    assert all(o.ok for o in outcomes), [o.report() for o in outcomes if not o.ok][:1]
    assert sum(o.faults_injected for o in outcomes) > 0


def test_the_checker_catches_a_revoked_task_that_runs(monkeypatch):
    from simq.revoke import Revocations

    monkeypatch.setattr(Revocations, "_learn", lambda self, entry: None)  # revocations ignored
    outcome = run_case(0, FaultPlan(), "revoke")
    assert not outcome.ok
    assert len(outcome.ran_revoked) == 4


def test_the_checker_catches_a_time_limit_that_does_not_hold(monkeypatch):
    from simq import limits

    monkeypatch.setattr(limits, "limits_for", lambda request, conf: None)  # limits ignored
    outcome = run_case(0, FaultPlan(), "time_limit")
    assert not outcome.ok
    assert len(outcome.unexplained) == 2  # the two that must end FAILURE succeeded
