"""The real-broker campaign (simq.chaos): the checker's verdicts on synthetic ledgers, the plan's determinism,
and a tiny campaign on each broker with one fault of each cheap kind.

The checker tests build a ledger by hand for each rule and would fail if it
called a loss a duplicate, an explained loss unexplained (or the reverse), a
wrong value right, or a poison run expected. The broker tests run real
``simq worker`` processes; they skip when a broker is down and fail instead
when SIMQ_REQUIRE_BROKERS=1.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import attrs
import pytest

from conformance.harness import broker_url, require, result_url
from simq.chaos import nemesis, workload
from simq.chaos.checker import Observed, check
from simq.chaos.command import parse_args
from simq.chaos.ledger import Event
from simq.chaos.poison import Poison
from simq.chaos.procs import WorkerRun
from simq.chaos.runner import Config, plan, run_campaign
from simq.chaos.workload import Job, Node, RevokeRecord
from simq.exceptions import BrokerUnavailable, TimeLimitExceeded

RUN = "r1"


def node(key, task="add", args=(1, 2), expect="ok", value=3, result=3, **options):
    return Node(key, task, tuple(args), tuple(sorted(options.items())), expect, value, result)


def task_job(index=0, acks_late=True, **kw):
    return Job(index, "task", acks_late, 0.0, (node(f"j{index}.n0", **kw),))


def start(key, pid=100, at=10.0, retries=0, redelivered=False, ppid=1):
    return Event("start", f"{RUN}.{key}", retries, pid, ppid, at, redelivered)


def end(key, value=3, outcome="ok", pid=100, at=10.5, retries=0, ppid=1):
    return Event("end", f"{RUN}.{key}", retries, pid, ppid, at, False, outcome, value)


def observe(jobs, events, results=None, **kw):
    if results is None:  # every handle stored as the oracle says, unless a test says otherwise
        results = {}
        for job in jobs:
            for n in job.handles:
                results[n.task_id(RUN)] = (job.expected_state(n), n.result)
    sent = kw.pop("sent", {job.index: "sent" for job in jobs})
    return Observed(run=RUN, jobs=tuple(jobs), sent=sent, events=tuple(events), results=results, **kw)


class TestLost:
    def test_acks_late_call_that_never_finished_is_a_forbidden_loss_even_in_a_killed_worker(self):
        v = check(observe([task_job()], [start("j0.n0")], killed={100: 11.0}))
        (lost,) = v.of("lost")
        assert lost.forbidden and lost.guarantee == "acks_late"
        assert v.row("acks_late").lost == 1 and not v.ok

    def test_early_ack_call_in_flight_in_a_killed_worker_is_an_explained_loss(self):
        v = check(observe([task_job(acks_late=False)], [start("j0.n0", pid=100, at=10.0)], killed={100: 10.2}))
        (lost,) = v.of("lost")
        assert not lost.forbidden and "pid 100 killed" in lost.explained
        assert v.row("early acks").explained == 1 and v.ok

    def test_early_ack_call_in_a_pool_child_explained_by_its_parents_kill(self):
        v = check(observe([task_job(acks_late=False)], [start("j0.n0", pid=555, ppid=100)], killed={100: 10.3}))
        assert v.ok and v.of("lost")[0].explained

    def test_early_ack_loss_with_no_kill_is_forbidden(self):
        v = check(observe([task_job(acks_late=False)], [start("j0.n0")]))
        assert v.of("lost", forbidden=True) and not v.ok

    def test_a_kill_long_before_the_call_started_explains_nothing(self):
        v = check(observe([task_job(acks_late=False)], [start("j0.n0", at=50.0)], killed={100: 10.0}))
        assert v.of("lost", forbidden=True)

    def test_a_kill_long_after_the_call_started_explains_nothing(self):
        v = check(observe([task_job(acks_late=False)], [start("j0.n0", at=10.0)], killed={100: 60.0}))
        assert v.of("lost", forbidden=True)

    def test_early_ack_call_named_in_a_killed_workers_log_is_explained(self):
        obs = observe([task_job(acks_late=False)], [], killed={7: 10.2}, log_ids={7: {f"{RUN}.j0.n0": 10.0}})
        v = check(obs)
        assert v.ok and "log" in v.of("lost")[0].explained

    def test_a_worker_that_received_the_call_long_before_it_was_killed_explains_nothing(self):
        obs = observe([task_job(acks_late=False)], [], killed={7: 80.0}, log_ids={7: {f"{RUN}.j0.n0": 10.0}})
        assert check(obs).of("lost", forbidden=True)

    def test_finished_body_whose_result_never_reached_the_backend_is_lost(self):
        job = task_job()
        v = check(observe([job], [start("j0.n0"), end("j0.n0")], results={f"{RUN}.j0.n0": ("PENDING", None)}))
        (lost,) = v.of("lost")
        assert lost.forbidden and "PENDING" in lost.detail

    def test_a_refused_send_is_neither_lost_nor_unexpected(self):
        obs = observe(
            [task_job(), task_job(1)], [start("j1.n0"), end("j1.n0")], sent={0: "refused: X", 1: "refused: X"}
        )
        v = check(obs)
        assert v.ok and v.anomalies == () and v.row("acks_late").refused == 2

    def test_early_chain_links_after_an_explained_loss_are_explained_too(self):
        nodes = (
            node("j0.n0"),
            node("j0.n1", "mul", (2,), value=6, result=6),
            node("j0.n2", "add", (1,), value=7, result=7),
        )
        job = Job(0, "chain", False, 0.0, nodes)
        obs = observe([job], [start("j0.n0", at=10.0)], killed={100: 10.1}, results={})
        v = check(obs)
        assert v.row("early acks").lost == 3 and v.row("early acks").explained == 3
        assert v.row("canvas").lost == 1 and v.ok


class TestDuplicatedAndRecovered:
    def test_two_ends_of_one_attempt_are_a_duplicate_and_allowed(self):
        v = check(observe([task_job()], [start("j0.n0"), end("j0.n0"), start("j0.n0", redelivered=True), end("j0.n0")]))
        assert len(v.of("duplicated")) == 1 and v.ok
        assert v.row("acks_late").duplicated == 1 and v.row("acks_late").lost == 0

    def test_a_start_without_end_then_a_redelivery_that_finished_is_recovered_not_duplicated(self):
        v = check(
            observe([task_job()], [start("j0.n0"), start("j0.n0", pid=200, redelivered=True), end("j0.n0", pid=200)])
        )
        assert v.of("recovered") and not v.of("duplicated") and v.ok

    def test_retry_attempts_are_not_duplicates(self):
        job = Job(0, "retry", True, 0.0, (node("j0.n0", "flaky", (5,), value=5, result=5, fails=2, countdown=1.0),))
        events = [start("j0.n0", retries=r) for r in range(3)]
        events += [end("j0.n0", 5, "retry", retries=0), end("j0.n0", 5, "retry", retries=1), end("j0.n0", 5, retries=2)]
        v = check(observe([job], events))
        assert v.anomalies == () and v.row("retries").final == 1

    def test_retry_that_never_reached_its_last_attempt_is_lost(self):
        job = Job(0, "retry", True, 0.0, (node("j0.n0", "flaky", (5,), value=5, result=5, fails=2, countdown=1.0),))
        events = [start("j0.n0"), end("j0.n0", 5, "retry")]
        v = check(observe([job], events, results={}))
        assert v.row("retries").lost == 1 and not v.ok


class TestWrong:
    def chord(self, acks_late=True):
        header = (node("j0.h0", args=(1, 2), value=3, result=3), node("j0.h1", args=(3, 4), value=7, result=7))
        return Job(0, "chord", acks_late, 0.0, (*header, node("j0.body", "total", (), value=[3, 7], result=10)))

    def ledger(self, body_values, outcome="ok"):
        return [
            start("j0.h0"),
            end("j0.h0", 3),
            start("j0.h1"),
            end("j0.h1", 7),
            start("j0.body"),
            end("j0.body", body_values, outcome),
        ]

    def test_a_chord_body_that_got_none_among_its_header_values_is_wrong(self):
        v = check(
            observe([self.chord()], self.ledger([3, None], "fail"), results={f"{RUN}.j0.body": ("FAILURE", None)})
        )
        assert v.of("wrong", forbidden=True) and v.row("canvas").wrong == 1 and not v.ok

    def test_a_chord_body_with_every_header_value_is_right(self):
        v = check(observe([self.chord()], self.ledger([3, 7])))
        assert v.ok and v.row("canvas").final == 1

    def test_a_result_in_the_backend_that_differs_from_the_oracle_is_wrong(self):
        v = check(observe([self.chord()], self.ledger([3, 7]), results={f"{RUN}.j0.body": ("SUCCESS", 11)}))
        (wrong,) = [a for a in v.of("wrong") if a.guarantee == "acks_late"]
        assert "11" in wrong.detail and not v.ok

    def test_a_chain_link_after_a_deliberate_failure_must_not_run(self):
        nodes = (
            node("j0.n0", "fail", (4,), expect="fail", value=4, result=None),
            node("j0.n1", "add", (1,), expect="never", value=None, result=None),
        )
        job = Job(0, "chain", True, 0.0, nodes)
        ok = check(observe([job], [start("j0.n0"), end("j0.n0", 4, "fail")]))
        assert ok.ok and ok.row("canvas").final == 1
        ran = check(observe([job], [start("j0.n0"), end("j0.n0", 4, "fail"), start("j0.n1"), end("j0.n1", 5)]))
        assert ran.of("unexpected", forbidden=True) and not ran.ok


class TestUnexpected:
    def test_a_call_nobody_sent_is_unexpected(self):
        v = check(observe([], [start("stranger"), end("stranger")]))
        assert v.of("unexpected", forbidden=True) and v.row("poison").unexpected == 1

    def test_a_far_future_eta_canary_that_ran_is_unexpected(self):
        poison = (Poison("canary with eta 9999", f"{RUN}.poison.1", True),)
        v = check(observe([], [start("poison.1"), end("poison.1", None)], poison=poison))
        assert v.of("unexpected", forbidden=True) and not v.ok

    def test_a_tolerated_canary_may_run(self):
        poison = (Poison("canary with priority 200", f"{RUN}.poison.1", False),)
        v = check(observe([], [start("poison.1"), end("poison.1", None)], poison=poison))
        assert v.ok and "1 tolerated" in v.row("poison").note

    def test_a_call_of_a_job_that_was_never_sent_is_unexpected(self):
        v = check(observe([task_job()], [start("j0.n0"), end("j0.n0")], sent={}))
        assert v.of("unexpected", forbidden=True)


def revoke_job(index=0, acks_late=True, countdown=4.0):
    return Job(index, "revoke", acks_late, 0.0, (node(f"j{index}.n0", expect="revoked"),), countdown=countdown)


def revoked(index=0, sent=10.0, returned=10.01, error=""):
    """The sender's record: the send at ``sent``, the revoke back at ``returned`` (None: it raised)."""
    return {index: RevokeRecord(sent, returned, error)}


class TestRevoke:
    def test_a_revoked_job_that_never_ran_and_ends_revoked_holds(self):
        v = check(observe([revoke_job()], [], revokes=revoked()))
        assert v.ok and v.anomalies == () and v.row("revoke").final == 1

    def test_a_revoked_job_that_started_is_forbidden(self):
        v = check(observe([revoke_job()], [start("j0.n0", at=14.0), end("j0.n0", at=14.1)], revokes=revoked()))
        assert v.of("unexpected", forbidden=True) and v.row("revoke").unexpected == 1 and not v.ok

    def test_a_kill_and_restart_of_the_worker_does_not_excuse_a_run_it_rereads_the_whole_log(self):
        events = [start("j0.n0", pid=100, at=14.0), start("j0.n0", pid=200, at=16.0, redelivered=True)]
        v = check(observe([revoke_job(acks_late=False)], events, revokes=revoked(), killed={100: 14.2}))
        assert not v.row("revoke").ok and v.of("unexpected", forbidden=True)

    def test_a_revoked_job_whose_state_is_not_revoked_is_a_forbidden_loss(self):
        v = check(observe([revoke_job(acks_late=False)], [], {f"{RUN}.j0.n0": ("PENDING", None)}, revokes=revoked()))
        assert v.of("lost", forbidden=True) and v.row("revoke").lost == 1 and not v.ok

    def test_a_missing_revoked_state_is_explained_in_either_mode_by_a_kill_just_after_the_discard(self):
        obs = observe(
            [revoke_job(acks_late=True)],
            [],
            {f"{RUN}.j0.n0": ("PENDING", None)},
            revokes=revoked(),
            killed={7: 14.3},
            log_ids={7: {f"{RUN}.j0.n0": 14.0}},
        )
        v = check(obs)
        assert v.ok and "killed" in v.of("lost")[0].explained and v.row("revoke").explained == 1

    def test_a_revoked_job_that_never_ran_yet_succeeded_is_wrong(self):
        v = check(observe([revoke_job()], [], {f"{RUN}.j0.n0": ("SUCCESS", 3)}, revokes=revoked()))
        assert v.of("wrong", forbidden=True) and not v.ok

    def test_when_the_revoke_raised_the_task_may_run_as_an_unrevoked_task(self):
        records = revoked(returned=None, error="BrokerUnavailable: lost the Redis result backend")
        ran = [start("j0.n0", at=14.0), end("j0.n0", at=14.1)]
        v = check(observe([revoke_job()], ran, {f"{RUN}.j0.n0": ("SUCCESS", 3)}, revokes=records))
        (run,) = v.of("unexpected")
        assert v.ok and not run.forbidden and "raised" in run.explained
        assert "1 raised" in v.row("revoke").note

    def test_when_the_revoke_raised_a_run_must_still_be_right(self):
        records = revoked(returned=None, error="BrokerUnavailable: x")
        ran = [start("j0.n0", at=14.0), end("j0.n0", 4, at=14.1)]
        v = check(observe([revoke_job()], ran, {f"{RUN}.j0.n0": ("SUCCESS", 4)}, revokes=records))
        assert v.of("wrong", forbidden=True) and not v.ok

    def test_when_the_revoke_raised_a_lost_late_ack_task_is_still_forbidden(self):
        records = revoked(returned=None, error="BrokerUnavailable: x")
        v = check(observe([revoke_job()], [start("j0.n0")], {}, revokes=records, killed={100: 10.5}))
        assert v.of("lost", forbidden=True)

    def test_a_revoke_that_returned_within_a_poll_interval_of_the_eta_may_lose_the_race(self):
        records = revoked(sent=10.0, returned=13.2)  # countdown 4: eta 14.0, 0.8 s after the revoke
        ran = [start("j0.n0", at=14.0), end("j0.n0", at=14.1)]
        v = check(observe([revoke_job()], ran, {f"{RUN}.j0.n0": ("REVOKED", None)}, revokes=records))
        assert v.ok and "poll interval" in v.of("unexpected")[0].explained

    def test_a_worker_that_could_not_read_the_log_after_the_revoke_may_run_it(self):
        events = [start("j0.n0", pid=555, ppid=100, at=14.0), end("j0.n0", pid=555, ppid=100, at=14.1)]
        results = {f"{RUN}.j0.n0": ("SUCCESS", 3)}
        obs = observe([revoke_job()], events, results, revokes=revoked(), unread_revocations={100: (12.5,)})
        v = check(obs)
        assert v.ok and "could not read the revocation log" in v.of("unexpected")[0].explained

    def test_a_failed_read_before_the_revoke_excuses_nothing(self):
        events = [start("j0.n0", at=14.0), end("j0.n0", at=14.1)]
        obs = observe([revoke_job()], events, {}, revokes=revoked(), unread_revocations={100: (8.0,)})
        assert check(obs).of("unexpected", forbidden=True)


def limit_job(index=0, acks_late=True):
    nodes = (node(f"j{index}.n0", expect="limit", value=None, result=None, sleep=20.0),)
    return Job(index, "time-limit", acks_late, 0.0, nodes, time_limit=2.0)


class TestTimeLimit:
    cut = {f"{RUN}.j0.n0": ("FAILURE", TimeLimitExceeded(2.0))}

    def test_a_call_cut_off_at_its_limit_holds(self):
        v = check(observe([limit_job()], [start("j0.n0")], self.cut))
        assert v.ok and v.anomalies == () and v.row("time-limit").final == 1

    def test_a_limited_call_that_succeeded_is_wrong(self):
        v = check(observe([limit_job()], [start("j0.n0")], {f"{RUN}.j0.n0": ("SUCCESS", 3)}))
        assert v.of("wrong", forbidden=True) and v.row("time-limit").wrong == 1 and not v.ok

    def test_a_limited_call_that_failed_with_another_exception_is_wrong(self):
        v = check(observe([limit_job()], [start("j0.n0")], {f"{RUN}.j0.n0": ("FAILURE", ValueError("x"))}))
        assert v.of("wrong", forbidden=True)

    def test_a_body_that_ran_to_its_end_broke_its_limit(self):
        v = check(observe([limit_job()], [start("j0.n0"), end("j0.n0", None, at=30.0)], self.cut))
        assert v.of("wrong", forbidden=True) and "did not hold" in v.of("wrong")[0].detail

    def test_a_late_ack_limited_call_redelivered_after_a_kill_is_recovered(self):
        events = [start("j0.n0", pid=100), start("j0.n0", pid=200, at=13.0, redelivered=True)]
        v = check(observe([limit_job()], events, self.cut, killed={100: 10.5}))
        assert v.ok and v.of("recovered") and v.row("time-limit").recovered == 1

    def test_an_early_ack_limited_call_lost_with_a_killed_worker_is_explained(self):
        v = check(observe([limit_job(acks_late=False)], [start("j0.n0")], {}, killed={100: 11.0}))
        assert v.ok and v.of("lost")[0].explained and v.row("time-limit").explained == 1

    def test_a_late_ack_limited_call_lost_with_a_killed_worker_is_forbidden(self):
        v = check(observe([limit_job()], [start("j0.n0")], {}, killed={100: 11.0}))
        assert v.of("lost", forbidden=True) and not v.ok

    def test_the_row_counts_the_jobs_that_held_after_a_limit(self):
        later = attrs.evolve(task_job(1), at=5.0)
        v = check(
            observe(
                [limit_job(), later],
                [start("j0.n0"), start("j1.n0"), end("j1.n0")],
                {**self.cut, f"{RUN}.j1.n0": ("SUCCESS", 3)},
            )
        )
        assert "1 of 1 jobs sent after the first limited one held" in v.row("time-limit").note


class TestReport:
    def test_the_per_kind_counts_list_every_kind_the_new_ones_included(self):
        v = check(observe([revoke_job(), limit_job(1)], [], {}, revokes=revoked()))
        line = v.kinds_line()
        assert "revoke 1" in line and "time-limit 1 (1 BROKEN)" in line and "chain-chord 0" in line
        assert line in v.markdown()


class TestRevokeSend:
    class App:
        def __init__(self, fails):
            self.fails, self.revoked = fails, []

        def AsyncResult(self, task_id):
            app = self

            class Result:
                def revoke(self):
                    if app.fails:
                        raise BrokerUnavailable("lost the Redis result backend")
                    app.revoked.append(task_id)

            return Result()

    def test_the_revoke_names_the_jobs_task_and_records_when_it_returned(self):
        from simq.chaos.workload import revoke_job as send_revoke
        from simq.clock import WallClock

        app = self.App(fails=False)
        record = send_revoke(app, revoke_job(3), RUN, 5.0, WallClock())
        assert app.revoked == [f"{RUN}.j3.n0"] and record.returned is not None and record.error == ""

    def test_a_revoke_that_raises_is_recorded_not_raised(self):
        from simq.chaos.workload import revoke_job as send_revoke
        from simq.clock import WallClock

        record = send_revoke(self.App(fails=True), revoke_job(3), RUN, 5.0, WallClock())
        assert record.returned is None and record.error.startswith("BrokerUnavailable")


class TestWorkersAndProducer:
    def test_a_worker_that_exited_without_a_signal_is_a_crash(self):
        run = WorkerRun(0, 1, 100, 1.0, "/dev/null", ended=5.0, exit_code=1)
        v = check(observe([], [], workers=(run,)))
        assert v.of("crash", forbidden=True) and not v.ok

    def test_a_signalled_worker_is_not_a_crash(self):
        run = WorkerRun(
            0,
            1,
            100,
            1.0,
            "/dev/null",
            ended=5.0,
            exit_code=-9,
            signals=[(4.0, "SIGKILL")],
            killed_at=4.0,
            expected_exit=True,
        )
        assert check(observe([], [], workers=(run,))).ok

    def test_orphaned_pool_children_are_forbidden(self):
        assert check(observe([], [], orphans=(4242,))).of("orphan", forbidden=True)

    def test_a_send_refused_while_the_broker_was_up_is_forbidden(self):
        v = check(observe([task_job()], [], sent={0: "refused: BrokerUnavailable"}, refused_while_up=("job 0",)))
        assert not v.row("producer").ok and v.row("acks_late").ok


class TestPlan:
    def config(self, seed, **kw):
        return Config("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379/2", seed, **kw)

    def test_the_same_seed_gives_the_same_plan(self):
        assert plan(self.config(7)) == plan(self.config(7))

    def test_another_seed_gives_another_plan(self):
        assert plan(self.config(7))[2] != plan(self.config(8))[2]

    def test_the_workload_holds_at_least_the_tasks_asked_for_inside_the_window(self):
        jobs = workload.draw_workload(random.Random(3), tasks=100, window=30.0)
        assert sum(len(j.nodes) for j in jobs) >= 100 and all(0 <= j.at <= 30 for j in jobs)
        assert {j.kind for j in jobs} >= {"task", "chain", "chord"}

    def test_the_seed_draws_revoke_and_time_limit_jobs_shaped_as_their_guarantees_need(self):
        jobs = workload.draw_workload(random.Random(3), tasks=600, window=60.0)
        revokes = [j for j in jobs if j.kind == "revoke"]
        limits = [j for j in jobs if j.kind == "time-limit"]
        assert revokes and limits
        for j in revokes:
            (n,) = j.nodes
            assert n.expect == "revoked" and j.expected_state(n) == "REVOKED"
            assert j.countdown is not None and j.countdown >= 3.0 and "countdown=" in j.line()
        for j in limits:
            (n,) = j.nodes
            assert n.expect == "limit" and j.expected_state(n) == "FAILURE" and j.time_limit == 2.0
            assert dict(n.options)["sleep"] >= 5 * j.time_limit and "time_limit=2" in j.line()
        assert "revoke" in workload.summary(jobs) and "time-limit" in workload.summary(jobs)

    def test_the_older_kinds_keep_their_weights_among_themselves(self):
        weights = dict(zip(workload.KINDS, workload._WEIGHTS, strict=True))
        old = ("task", "retry", "fail", "chain", "group", "chord", "chain-chord")
        assert [weights[k] for k in old] == [26, 10, 5, 17, 12, 20, 10]
        assert weights["revoke"] + weights["time-limit"] <= 12  # a small share: the run time stays about the same

    def test_each_gives_one_fault_of_every_kind(self):
        faults = nemesis.draw_schedule(
            random.Random(1), seconds=20, kinds=nemesis.DEFAULT_KINDS, slots=2, every=4, each=True
        )
        assert sorted(f.kind for f in faults) == sorted(nemesis.DEFAULT_KINDS)
        assert all(1.0 <= f.at < 19.0 for f in faults)

    def test_the_replay_command_parses_back_to_the_same_plan(self):
        config = self.config(11, seconds=30, tasks=50, kinds=("sigkill", "poison"), each=True)
        args = parse_args(config.replay_command().split()[2:])
        from simq.chaos.command import configs

        (again,) = configs(args, args.seed)
        assert plan(again) == plan(config)


def _next_db(url: str, by: int) -> str:
    parts = urlsplit(url)
    path = parts.path.strip("/")
    return urlunsplit(parts._replace(path=f"/{(int(path) if path.isdigit() else 0) + by}", query=""))


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_a_tiny_campaign_with_one_fault_of_each_cheap_kind_holds_every_guarantee(kind, reliability_report):
    require(kind)
    require("redis")  # results and the ledger live in Redis
    redis_url = result_url("redis")
    config = Config(
        transport=broker_url(kind),
        backend=_next_db(redis_url, 1),
        ledger=_next_db(redis_url, 2),
        seed=20261202,
        seconds=12.0,
        tasks=40,
        settle=40.0,
        workers=(("threads", 2), ("processes", 2)),
        kinds=nemesis.DEFAULT_KINDS,  # signals, connection kills, poison: nothing that stops the shared broker
        each=True,
        progress=60.0,
    )
    out, err = io.StringIO(), io.StringIO()
    verdict = run_campaign(config, out, err)
    text = out.getvalue()
    assert "replay: simq chaos" in text and f"--seed {config.seed}" in text
    assert verdict.row("producer").sent > 0
    reliability_report.append(f"simq chaos tiny campaign on {kind}: {'ok' if verdict.ok else 'FAIL'}")
    assert verdict.ok, text


def test_a_worker_log_says_when_it_could_not_read_the_revocation_log(tmp_path):
    from simq.chaos.procs import scan_log

    log = tmp_path / "w.log"
    log.write_text(
        "[2026-12-03 10:00:00,250: INFO/MainProcess] Task chaos.late.add[r1.j0.n0] received\n"
        "[2026-12-03 10:00:01,500: WARNING/MainProcess] cannot read the revocation log (tried again in 1 s): lost\n"
    )
    facts = scan_log(str(log), RUN)
    (when,) = facts.revocation_read_failures
    assert when - facts.task_ids[f"{RUN}.j0.n0"] == pytest.approx(1.25)


class _Recorder:
    """Stands in for a redis client: keeps what RPUSH was given."""

    def __init__(self):
        self.pushed = []

    def rpush(self, key, payload):
        self.pushed.append((key, payload))


class TestPoison:
    def test_redis_poison_goes_onto_the_namespaced_queue_lists_and_says_what_must_not_run(self):
        from simq.chaos.poison import RedisPoison

        writer = RedisPoison(RUN, client=_Recorder(), prefix="simq:ns:")
        written = writer.write(random.Random(5), 60)
        assert all(key.startswith("simq:ns:q:celery:") for key, _ in writer.client.pushed)
        kinds = {p.variant for p in written}
        assert {"redis: canary with eta 9999-12-31", "redis: random bytes", "redis: mangled task message"} <= kinds
        for p in written:
            assert p.must_not_run == ("priority 200" not in p.variant and "NaN" not in p.variant)
            assert (p.task_id is None) == ("canary" not in p.variant)

    def test_the_same_seed_writes_the_same_poison(self):
        from simq.chaos.poison import RedisPoison

        a, b = (RedisPoison(RUN, client=_Recorder(), prefix="simq:ns:") for _ in range(2))
        a.write(random.Random(9), 20)
        b.write(random.Random(9), 20)
        assert a.client.pushed == b.client.pushed


def test_the_ci_command_line_parses():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    line = ci[ci.index("simq chaos --transport") :].split("\n\n")[0].replace("\\\n", " ")
    args = parse_args(line.split()[2:])
    assert len(args.transport) == 2 and set(args.kinds) == set(nemesis.FAULT_KINDS)


def test_simq_campaign_with_a_transport_is_the_chaos_campaign(capsys):
    from simq.campaign import main

    with pytest.raises(SystemExit) as exit_:
        main(["campaign", "--transport", "ftp://127.0.0.1/", "--seconds", "5"])
    assert exit_.value.code == 2 and "amqp:// and redis://" in capsys.readouterr().err
