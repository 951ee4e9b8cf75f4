"""The verdict: what the ledger, the result backend and the process records say, judged per guarantee.

Everything here is a pure function of plain data (``Observed``), so it is
unit-tested on synthetic ledgers. Words as Jepsen uses them:

- **lost**: sent and confirmed, never finished (its body never ran to the
  end), or finished but its result never reached a final state in the backend;
- **duplicated**: a body finished more than once for the same attempt;
- **wrong**: finished with another value or outcome than the oracle's (a chord
  body that got ``None`` among its header values, a result that differs);
- **recovered**: finished, but only after a redelivery or a restart (a start
  with no end before it, or a start flagged redelivered);
- **unexpected**: ran though nothing sent it (poison), though it follows a
  failure in its chain, or though it was revoked.

Guarantees: ``acks_late`` loses nothing; ``early acks`` loses only what the
trace explains (the call was in flight, or named in the log, of a worker
process the nemesis killed: SIGKILL, a second SIGINT, a SIGTERM that had to be
forced; or it follows such a loss in its canvas); a ``canvas`` reaches its
end (a chord body with every header value, a chain its last link) unless a
member failed on purpose; ``retries`` reach their last attempt; ``poison``
never runs; ``workers`` never exit unless signalled and leave no orphans.

``revoke``: a task sent with a countdown and revoked at once never runs and
ends REVOKED. A revoke is one entry in the revocation log in the result
backend; a worker reads the whole log when it starts (so a killed and
restarted worker, or one that gets the message redelivered, knows it too) and
what is new every ``worker_revoke_poll_interval`` (1 s). So a run is allowed
only when the log could not have reached the worker in time: the revoke raised
(the backend unreachable: then the task may run, once or as an unrevoked task
would), it returned less than a poll interval before the eta, or the worker
that ran it logged that it could not read the log between the revoke and the
start. A discard stores REVOKED and then acknowledges the message without
waiting for the write to be confirmed, in either ack mode, so a REVOKED state
that never arrived is explained (for both modes) only by a kill of the worker
whose log names the call, just after it did.

``time-limit``: a call whose body would sleep far past its ``time_limit``
ends FAILURE with TimeLimitExceeded, never SUCCESS, its body never reaching its
end; killed workers lose or redeliver it as any other call (the ``lost`` rules
above), and the jobs sent after it must still finish (those rules again).

Duplicates and recoveries are counted, never forbidden.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from simq.chaos.ledger import Event
from simq.chaos.poison import Poison
from simq.chaos.procs import WorkerRun
from simq.chaos.workload import KINDS, Job, Node, RevokeRecord
from simq.exceptions import TimeLimitExceeded

__all__ = ["GUARANTEES", "Anomaly", "Observed", "Row", "Verdict", "check"]

GUARANTEES = ("acks_late", "early acks", "canvas", "retries", "revoke", "time-limit", "producer", "poison", "workers")
_UNITS = ("calls", "calls", "jobs", "jobs", "jobs", "jobs", "sends", "messages", "slots")
FINAL = ("SUCCESS", "FAILURE", "REVOKED")
REVOKE_POLL = 1.0  # seconds: the workers' worker_revoke_poll_interval (the campaign keeps the default)
_WINDOW = 10.0  # seconds: a kill explains a call it interrupted, so it comes soon after the call's last event
_SLACK = 0.5  # seconds: the ledger's and the supervisor's clocks are the same wall clock, read a moment apart


@attrs.frozen
class Anomaly:
    guarantee: str
    kind: str  # lost | duplicated | wrong | recovered | unexpected | crash | orphan
    subject: str
    detail: str
    forbidden: bool
    explained: str = ""

    def line(self) -> str:
        mark = "FORBIDDEN" if self.forbidden else "allowed  "
        why = f" [explained: {self.explained}]" if self.explained else ""
        return f"{mark} {self.guarantee:<11} {self.kind:<10} {self.subject}: {self.detail}{why}"


@attrs.frozen
class Observed:
    """What a run produced: the plan, what was sent, the ledger, the backend's final states, the processes."""

    run: str
    jobs: tuple[Job, ...]
    sent: Mapping[int, str]  # job index -> "sent" or "refused: <why>"; jobs never sent are absent
    events: tuple[Event, ...]
    results: Mapping[str, tuple[str, Any]]  # task id -> (state, result) for each job's handle nodes
    workers: tuple[WorkerRun, ...] = ()
    killed: Mapping[int, float] = attrs.field(factory=dict)  # pid -> when it was killed (orphans at cleanup too)
    log_ids: Mapping[int, Mapping[str, float]] = attrs.field(factory=dict)  # pid -> task ids its log names, and when
    child_exits: tuple[str, ...] = ()
    orphans: tuple[int, ...] = ()
    poison: tuple[Poison, ...] = ()
    dead_letters: int | None = None
    refused_while_up: tuple[str, ...] = ()  # sends the broker refused outside any outage the nemesis made
    revokes: Mapping[int, RevokeRecord] = attrs.field(factory=dict)  # revoke job index -> what its revoke did
    unread_revocations: Mapping[int, tuple[float, ...]] = attrs.field(factory=dict)  # pid -> failed log reads


@attrs.define
class Row:
    guarantee: str
    unit: str
    sent: int = 0
    refused: int = 0
    final: int = 0
    lost: int = 0
    explained: int = 0
    duplicated: int = 0
    wrong: int = 0
    recovered: int = 0
    unexpected: int = 0
    forbidden: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.forbidden == 0


@attrs.frozen
class Verdict:
    rows: tuple[Row, ...]
    anomalies: tuple[Anomaly, ...]
    per_kind: tuple[tuple[str, int, int, int], ...] = ()  # (kind, jobs sent, refused, with a forbidden anomaly)

    def kinds_line(self) -> str:
        """Jobs per kind: sent (refused, broken), every kind of the workload, drawn or not."""
        parts = [f"{k} {sent}" + (f" ({ref} refused)" if ref else "") + (f" ({bad} BROKEN)" if bad else "")
                 for k, sent, ref, bad in self.per_kind]  # fmt: skip
        return "jobs per kind: " + ", ".join(parts)

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def row(self, guarantee: str) -> Row:
        return next(r for r in self.rows if r.guarantee == guarantee)

    def of(self, kind: str, *, forbidden: bool | None = None) -> list[Anomaly]:
        return [a for a in self.anomalies if a.kind == kind and (forbidden is None or a.forbidden == forbidden)]

    def table(self) -> str:
        head = f"{'guarantee':<12} {'unit':<9} {'sent':>6} {'refused':>7} {'final':>6} {'lost':>10} {'dup':>5} {'wrong':>5} {'recov':>5} {'unexp':>5}  verdict"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lost = f"{r.lost}" + (f" ({r.explained} expl)" if r.explained else "")
            lines.append(
                f"{r.guarantee:<12} {r.unit:<9} {r.sent:>6} {r.refused:>7} {r.final:>6} {lost:>10} {r.duplicated:>5} "
                f"{r.wrong:>5} {r.recovered:>5} {r.unexpected:>5}  {'ok' if r.ok else 'FAIL'}{'  ' + r.note if r.note else ''}"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """The table as Markdown, for docs/reliability.md."""
        lines = [
            "| guarantee | unit | sent | refused | final | lost (explained) | duplicated | wrong | recovered | unexpected | verdict |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in self.rows:
            verdict = "ok" if r.ok else "**FAIL**"
            note = f" ({r.note})" if r.note else ""
            lines.append(
                f"| {r.guarantee} | {r.unit} | {r.sent} | {r.refused} | {r.final} | {r.lost} ({r.explained}) | "
                f"{r.duplicated} | {r.wrong} | {r.recovered} | {r.unexpected} | {verdict}{note} |"
            )
        return "\n".join([*lines, "", self.kinds_line()])


@attrs.define
class _Calls:
    """The ledger, grouped by task id."""

    starts: dict[str, list[Event]] = attrs.field(factory=lambda: defaultdict(list))
    ends: dict[str, list[Event]] = attrs.field(factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, events: Iterable[Event]) -> _Calls:
        calls = cls()
        for e in events:
            (calls.starts if e.kind == "start" else calls.ends)[e.task_id].append(e)
        return calls


def _final_end(node: Node, ends: list[Event]) -> Event | None:
    last_attempt = dict(node.options).get("fails", 0) if node.task == "flaky" else 0
    finals = [e for e in ends if e.outcome in ("ok", "fail") and e.retries == last_attempt]
    return finals[-1] if finals else None


def _killed_during(obs: Observed, e: Event) -> str:
    """Why ``e``'s process may have died with the call unfinished: a kill of its pid (or its parent) after ``e``."""
    for pid in (e.pid, e.ppid):
        when = obs.killed.get(pid)
        # a body runs for at most a second and a result is stored just after it: a process that lived on for
        # longer than the window and still never finished the call did not lose it by being killed
        if when is not None and e.at - _SLACK <= when <= e.at + _WINDOW:
            return f"pid {pid} killed {when - e.at:+.2f} s after {e.kind}"
    return ""


def _in_killed_log(obs: Observed, task_id: str) -> str:
    for pid, ids in obs.log_ids.items():
        when, named = obs.killed.get(pid), ids.get(task_id)
        if when is not None and named is not None and named - _SLACK - 1.0 <= when <= named + _WINDOW:
            return f"received by pid {pid} (its log), killed {when - named:+.2f} s later"
    return ""


def check(obs: Observed) -> Verdict:
    """Judge one run; see the module docstring for the rules."""
    calls = _Calls.of(obs.events)
    rows = {g: Row(g, unit) for g, unit in zip(GUARANTEES, _UNITS, strict=True)}
    anomalies: list[Anomaly] = []
    known: set[str] = set()
    per_kind = {k: [0, 0, 0] for k in KINDS}  # sent, refused, broken
    held: list[tuple[float, str, bool]] = []  # (at, kind, no forbidden anomaly) of each confirmed job

    def flag(guarantee: str, kind: str, subject: str, detail: str, forbidden: bool, explained: str = "") -> None:
        anomalies.append(Anomaly(guarantee, kind, subject, detail, forbidden, explained))
        row = rows[guarantee]
        if kind == "lost":
            row.lost += 1
            row.explained += bool(explained)
        elif kind in ("duplicated", "wrong", "recovered", "unexpected"):
            setattr(row, kind, getattr(row, kind) + 1)
        row.forbidden += forbidden

    for job in obs.jobs:
        ids = [n.task_id(obs.run) for n in job.nodes]
        status = obs.sent.get(job.index)
        known.update(ids if status is not None else ())
        if status is None:
            for tid in ids:
                if calls.starts.get(tid):
                    guarantee = "acks_late" if job.acks_late else "early acks"
                    flag(guarantee, "unexpected", tid, "ran, but its job was never sent", True)
            continue
        mode_row = rows["acks_late" if job.acks_late else "early acks"]
        job_rows = [rows["canvas"]] if len(job.nodes) > 1 else []
        if job.kind in ("retry", "revoke", "time-limit"):
            job_rows.append(rows["retries" if job.kind == "retry" else job.kind])
        refused = status != "sent"
        counts = per_kind[job.kind]
        counts[0] += 1
        counts[1] += refused
        mode_row.sent += len(job.nodes)
        for r in job_rows:
            r.sent += 1
        if refused:
            mode_row.refused += len(job.nodes)
            for r in job_rows:
                r.refused += 1
            continue  # not confirmed: its calls may or may not run, and neither is an anomaly
        before = len(anomalies)
        _check_job(obs, job, ids, calls, mode_row, job_rows, flag, anomalies)
        broken = any(a.forbidden for a in anomalies[before:])
        counts[2] += broken
        held.append((job.at, job.kind, not broken))
    _notes(rows, obs, held)

    # the producer: a confirmed send or a refusal, and refusals only while the broker was down
    producer = rows["producer"]
    producer.sent = len(obs.sent)
    producer.refused = sum(1 for status in obs.sent.values() if status != "sent")
    producer.final = producer.sent - producer.refused
    for what in obs.refused_while_up:
        flag("producer", "refused", "send", f"refused while the broker was up: {what}", True)

    # calls nobody sent: poison that ran, or anything else
    poison = {p.task_id: p for p in obs.poison if p.task_id}
    rows["poison"].sent = len(obs.poison)
    ran_allowed = 0
    for tid in sorted(set(calls.starts) | set(calls.ends)):
        if tid in known:
            continue
        p = poison.get(tid)
        if p is not None and not p.must_not_run:
            ran_allowed += 1
            continue
        what = f"poison ({p.variant}) ran" if p is not None else "ran, but the campaign never sent it"
        flag("poison", "unexpected", tid, what, True)
    rows["poison"].final = rows["poison"].sent - rows["poison"].unexpected
    notes = [f"{ran_allowed} tolerated canaries ran"] if ran_allowed else []
    if obs.dead_letters is not None:
        notes.append(f"{obs.dead_letters} dead-lettered")
    rows["poison"].note = ", ".join(notes)

    workers = rows["workers"]
    workers.sent = len({w.slot for w in obs.workers})
    for w in obs.workers:
        if not w.expected_exit and w.ended is not None:
            flag("workers", "crash", w.name, f"exited with {w.exit_code} though nobody signalled it", True)
    for line in obs.child_exits:
        flag("workers", "crash", "pool child", line, True)
    for pid in obs.orphans:
        flag("workers", "orphan", f"pid {pid}", "a worker child still running after its parent was gone", True)
    workers.final = workers.sent if not workers.forbidden else 0
    workers.note = f"{len(obs.workers)} worker processes started, {len(obs.killed)} killed"
    kinds = tuple((k, sent, refused, broken) for k, (sent, refused, broken) in per_kind.items())
    return Verdict(tuple(rows.values()), tuple(anomalies), kinds)


def _notes(rows: Mapping[str, Row], obs: Observed, held: list[tuple[float, str, bool]]) -> None:
    """What the revoke and time-limit rows rest on: revokes that raised or came late; the jobs after a limit."""
    records = [obs.revokes[j.index] for j in obs.jobs if j.kind == "revoke" and j.index in obs.revokes]
    raised = sum(1 for r in records if r.error)
    if records:
        rows["revoke"].note = f"{len(records)} revokes, {raised} raised"
    limits = [at for at, kind, _ in held if kind == "time-limit"]
    if limits:
        after = [ok for at, kind, ok in held if at > limits[0] and kind != "time-limit"]
        rows["time-limit"].note = f"{sum(after)} of {len(after)} jobs sent after the first limited one held"


Flag = Callable[..., None]


def _check_job(
    obs: Observed,
    job: Job,
    ids: list[str],
    calls: _Calls,
    mode_row: Row,
    job_rows: list[Row],
    flag: Flag,
    anomalies: list[Anomaly],
) -> None:
    """One sent job: each call against the ledger, each handle against the backend, then the job's own line."""
    lost_reason: dict[str, str] = {}  # task id -> why its loss is explained ("" unexplained)
    status_of: dict[str, str] = {}  # task id -> final | lost | wrong
    job_bad = {"lost": "", "wrong": "", "duplicated": "", "recovered": "", "unexpected": "", "lenient": ""}
    job_losses: list[str] = []  # the explanation of each loss in this job ("" when none)
    relaxed = _revoke_relaxed(obs, job) if job.kind == "revoke" else ""  # why a revoke may not hold ("" it must)

    def lose(tid: str, detail: str, why: str, *, either_mode: bool = False) -> None:
        lost_reason[tid] = why
        status_of[tid] = "lost"
        job_losses.append(why)
        flag(mode_row.guarantee, "lost", tid, detail, not (why and (either_mode or not job.acks_late)), why)
        job_bad["lost"] = job_bad["lost"] or tid
        job_bad["lenient"] = job_bad["lenient"] or ("1" if either_mode else "")

    def wrong(tid: str, detail: str, subject: str | None = None) -> None:
        status_of[tid] = "wrong"
        flag(mode_row.guarantee, "wrong" if subject is None else "unexpected", tid, detail, True)
        job_bad["wrong"] = job_bad["wrong"] or tid

    for node, tid in zip(job.nodes, ids, strict=True):
        starts, ends = calls.starts.get(tid, []), calls.ends.get(tid, [])
        status_of[tid] = "final"
        expect = node.expect
        if expect == "never":
            if starts:
                wrong(tid, "ran though it follows a failure in its canvas", "unexpected")
            continue
        if expect == "limit":  # done means FAILURE with TimeLimitExceeded in the backend: judged with the handles
            if any(e.outcome == "ok" for e in ends):
                wrong(tid, f"its body ran to its end: its time_limit of {job.time_limit:g} s did not hold")
            elif len(starts) > 1 or any(e.redelivered for e in starts):
                flag(mode_row.guarantee, "recovered", tid, f"{len(starts)} starts, cut off each time", False)
                job_bad["recovered"] = tid
            continue
        if expect == "revoked":
            if not starts:
                continue  # never ran: its REVOKED state is judged with the handles
            why = relaxed or _missed_revocation(obs, obs.revokes[job.index], starts)
            detail = f"ran though revoked ({len(starts)} starts, first by pid {starts[0].pid})"
            if not why:
                status_of[tid] = "wrong"
                flag(mode_row.guarantee, "unexpected", tid, detail, True)
                job_bad["unexpected"] = tid
                continue
            flag(mode_row.guarantee, "unexpected", tid, detail, False, why)
            expect = "ok"  # from here on it is judged as the unrevoked task it became
        final = _final_end(node, ends)
        if final is None:
            lose(tid, _lost_detail(starts, ends), _explain_lost(obs, job, node, tid, starts, ends, lost_reason))
            continue
        if final.outcome != expect or final.value != node.value:
            wrong(tid, f"ended {final.outcome} with {final.value!r}, oracle: {expect} with {node.value!r}")
        per_attempt: dict[int, int] = defaultdict(int)
        for e in ends:
            per_attempt[e.retries] += 1
        if any(count > 1 for count in per_attempt.values()):
            flag(mode_row.guarantee, "duplicated", tid, f"ends per attempt {dict(sorted(per_attempt.items()))}", False)
            job_bad["duplicated"] = job_bad["duplicated"] or tid
        starts_per: dict[int, int] = defaultdict(int)
        for e in starts:
            starts_per[e.retries] += 1
        redelivered = any(e.redelivered for e in starts)
        if redelivered or any(starts_per[a] > per_attempt.get(a, 0) for a in starts_per):
            detail = f"{len(starts)} starts, {len(ends)} ends" + (", redelivered" if redelivered else "")
            flag(mode_row.guarantee, "recovered", tid, detail, False)
            job_bad["recovered"] = job_bad["recovered"] or tid
    # the backend: every handle (a group's members, else the last call) in its final state, with the oracle's value
    for node in job.handles:
        tid = node.task_id(obs.run)
        if status_of[tid] != "final":
            continue  # already counted
        state, result = obs.results.get(tid, ("PENDING", None))
        want = job.expected_state(node)
        starts, ends = calls.starts.get(tid, []), calls.ends.get(tid, [])
        if node.expect == "revoked":
            if state == "REVOKED":
                continue  # a run, if any, was judged above
            if not relaxed and not starts:
                if state in FINAL:
                    wrong(tid, f"never ran, yet the result backend says {state} {result!r}, oracle: REVOKED")
                else:  # the discard's REVOKED write, sent unconfirmed before its ack, in either ack mode
                    lose(tid, f"never ran; result backend says {state}, oracle: REVOKED", _in_killed_log(obs, tid),
                         either_mode=True)  # fmt: skip
                continue
            want = "SUCCESS"  # it ran, or may have: REVOKED, or what the unrevoked task would end in
        if node.expect == "limit":
            if state == "FAILURE" and isinstance(result, TimeLimitExceeded):
                continue
            if state not in FINAL:
                why = _explain_lost(obs, job, node, tid, starts, ends, lost_reason)
                lose(tid, f"{_lost_detail(starts, ends)}; result backend says {state}, oracle: FAILURE", why)
            else:
                wrong(tid, f"result backend says {state} {result!r}, oracle: FAILURE with TimeLimitExceeded")
            continue
        if state not in FINAL:
            if node.expect == "revoked" and not starts:
                why = _explain_lost(obs, job, node, tid, starts, ends, lost_reason)
            else:
                why = _explain_unstored(obs, job, node, tid, calls, lost_reason)
            lose(tid, f"result backend says {state}, oracle: {want}", why)
        elif state != want or (want == "SUCCESS" and result != node.result):
            wrong(tid, f"result backend says {state} {result!r}, oracle: {want} {node.result!r}")
    mode_row.final += sum(1 for v in status_of.values() if v == "final")
    for r in job_rows:
        _judge_job(r, job, job_bad, job_losses, anomalies)


def _revoke_relaxed(obs: Observed, job: Job) -> str:
    """Why a revoke job's guarantee does not hold whole ("" when it must): the revoke raised, or came too late."""
    record = obs.revokes.get(job.index)
    if record is None:
        return "no revoke was recorded for it"
    if record.returned is None:
        return f"its revoke raised {record.error}: the log may not hold it, so it may run as an unrevoked task"
    lead = record.sent + (job.countdown or 0.0) - record.returned
    if lead < REVOKE_POLL + _SLACK:
        return f"its revoke returned {lead:.2f} s before its eta, less than a poll interval ({REVOKE_POLL:g} s)"
    return ""


def _missed_revocation(obs: Observed, record: RevokeRecord, starts: list[Event]) -> str:
    """A worker that ran it could not read the revocation log after the revoke: it went on with what it knew.

    A read that failed is all the worker logs (a read that succeeded is not), so
    this is what must be true for a run to be allowed, not proof that it was.
    """
    since = record.returned if record.returned is not None else record.sent
    for e in starts:
        for pid in (e.pid, e.ppid):
            for when in obs.unread_revocations.get(pid, ()):
                if since - _SLACK <= when <= e.at + _SLACK:
                    return f"pid {pid} could not read the revocation log {when - since:+.2f} s after the revoke"
    return ""


def _lost_detail(starts: list[Event], ends: list[Event]) -> str:
    if not starts:
        return "never started"
    return f"{len(starts)} starts, {len(ends)} ends, never finished (last start pid {starts[-1].pid})"


def _upstream(job: Job, node: Node) -> list[Node]:
    """The calls whose loss means ``node`` never gets sent: earlier links of a chain, a chord's header."""
    index = job.nodes.index(node)
    if job.kind == "chain":
        return list(job.nodes[:index])
    if job.kind == "chord":
        return list(job.nodes[:-1]) if node.key.endswith(".body") else []
    if job.kind == "chain-chord":
        if index == 0:
            return []
        return [job.nodes[0]] if not node.key.endswith(".body") else list(job.nodes[:-1])
    return []


def _explain_lost(
    obs: Observed, job: Job, node: Node, tid: str, starts: list[Event], ends: list[Event], lost: Mapping[str, str]
) -> str:
    for e in (*starts, *ends):
        why = _killed_during(obs, e)
        if why:
            return why
    why = _in_killed_log(obs, tid)
    if why:
        return why
    for up in _upstream(job, node):
        reason = lost.get(up.task_id(obs.run))
        if reason:
            return f"follows {up.key}, lost: {reason}"
    return ""


def _explain_unstored(obs: Observed, job: Job, node: Node, tid: str, calls: _Calls, lost: Mapping[str, str]) -> str:
    for e in calls.ends.get(tid, []):
        why = _killed_during(obs, e)
        if why:
            return why
    if node.expect == "never":  # the chain's / chord's failure never reached this id: was the failing call lost?
        for up in _upstream(job, node):
            reason = lost.get(up.task_id(obs.run))
            if reason:
                return f"follows {up.key}, lost: {reason}"
            for e in calls.ends.get(up.task_id(obs.run), []):
                why = _killed_during(obs, e)
                if why:
                    return f"{up.key}: {why}"
    return _in_killed_log(obs, tid)


def _judge_job(row: Row, job: Job, bad: Mapping[str, str], losses: list[str], out: list[Anomaly]) -> None:
    """One job's line in its kind's row (its calls' anomalies are already in the ack-mode rows)."""
    subject = f"job {job.index} ({job.kind}, acks {job.mode})"
    if bad["lost"]:
        explained = all(losses) and (not job.acks_late or bool(bad["lenient"]))
        row.lost += 1
        row.explained += explained
        row.forbidden += not explained
        what = {"retry": "never reached its last attempt", "revoke": "never reached REVOKED"}.get(
            job.kind, "never reached its end"
        )
        out.append(
            Anomaly(
                row.guarantee,
                "lost",
                subject,
                f"{what}: {bad['lost']}",
                not explained,
                "its lost calls are explained" if explained else "",
            )
        )
    elif bad["unexpected"]:
        row.unexpected += 1
        row.forbidden += 1
        out.append(Anomaly(row.guarantee, "unexpected", subject, f"ran though revoked: {bad['unexpected']}", True))
    elif bad["wrong"]:
        row.wrong += 1
        row.forbidden += 1
        out.append(Anomaly(row.guarantee, "wrong", subject, f"differs from the oracle at {bad['wrong']}", True))
    else:
        row.final += 1
    row.duplicated += bool(bad["duplicated"])
    row.recovered += bool(bad["recovered"])
