"""The upstream canvas tests expected to fail on simq, each with its reason (``simq.celery.upstream``'s gate).

Keys are pytest node ids under ``t/integration/test_canvas.py``. Kinds:
``layer``: the Celery layer refuses a setting the test needs;
``divergence``: simq behaves differently on purpose or not yet;
``internals``: the test pins a Celery internal or bug (docs/celery.md lists them).
"""

from __future__ import annotations

__all__ = ["SIM", "expected_failures"]

_P = "t/integration/test_canvas.py::"

#: sim mode's expected failures: node id -> reason.
SIM: dict[str, str] = {
    "test_chain::test_chain_of_chain_with_a_single_task": "divergence: simq refuses to send a chain whose task name is registered nowhere in the sending process (NotRegistered); Celery sends it",
    "test_chain::test_chord_header_id_duplicated_on_rabbitmq_msg_duplication[redis-group-ids]": "internals: republishes through celery_session_app.producer_pool (kombu's producer API)",
    "test_chain::test_eager_chain_inside_task": "divergence: apply_async(throw=) is refused (in Celery it only means something in eager mode; simq would have one call behave differently per backend)",
    "test_chain::test_group_results_in_chain": "divergence: Celery unrolls group(chain(a, group(b, c))) into the inner group's results ([4, 5]); simq keeps the nesting ([[4, 5]])",
    "test_chain::test_nested_chain_group_lone": "internals: strict xfail for a Celery timeout ('Task is timeout'); simq returns the result, so it XPASSes",
    "test_chord::test_chain_in_chain_with_args": "internals: strict xfail for Celery issue #6200; simq gives the right result, so it XPASSes",
    "test_chord::test_chord_in_chain_with_args": "internals: strict xfail for Celery issue #6176; simq gives the right result, so it XPASSes",
    "test_chord::test_chord_on_error": "divergence: the errback sent for a failed chord is not recorded as a child of the chord's result (the test walks res.children[0].children[0])",
    "test_chord::test_disabling_flag_allow_error_cb_on_chord_header": "layer: refuses task_allow_error_cb_on_chord_header (simq has the setting; these tests wait on real Redis for errbacks and did not pass when it was let through; docs/celery.md)",
    "test_chord::test_eager_chord_inside_task": "divergence: apply_async(throw=) is refused (in Celery it only means something in eager mode; simq would have one call behave differently per backend)",
    "test_chord::test_enabling_flag_allow_error_cb_on_chord_header": "layer: refuses task_allow_error_cb_on_chord_header (simq has the setting; these tests wait on real Redis for errbacks and did not pass when it was let through; docs/celery.md)",
    "test_chord::test_error_propagates_from_chord": "internals: strict xfail for Celery issue #6437 on a Redis backend; simq propagates the error, so it XPASSes",
    "test_chord::test_flag_allow_error_cb_on_chord_header_on_upgraded_chord": "layer: refuses task_allow_error_cb_on_chord_header (simq has the setting; these tests wait on real Redis for errbacks and did not pass when it was let through; docs/celery.md)",
    "test_chord::test_nested_chord_header_link_error": "layer: refuses task_allow_error_cb_on_chord_header (simq has the setting; these tests wait on real Redis for errbacks and did not pass when it was let through; docs/celery.md)",
    "test_chord::test_simple_chord_with_a_delay_in_group_save": "internals: monkeypatches BaseKeyValueStoreBackend._apply_chord_incr, a Celery backend internal",
    "test_chord::test_upgraded_chord_link_error_with_header_errback_enabled": "layer: refuses task_allow_error_cb_on_chord_header (simq has the setting; these tests wait on real Redis for errbacks and did not pass when it was let through; docs/celery.md)",
    "test_group::test_nested_group_chord_body_chain": "internals: expects Celery bug #6734 (the group's result times out); simq returns [[42]]",
    "test_group::test_ready_with_exception": "divergence: `while not result.ready(): pass` never sleeps, so the simulation never moves (time passes only by sleeping or waiting on a result)",
    "test_stamping_mechanism::test_linking_stamped_sig": "internals: its task_received handler reads request._Request__payload, the name-mangled private payload of Celery's worker Request; simq's request (a Context) has callbacks, errbacks and stamps, not that",
}


def expected_failures(mode: str) -> dict[str, str]:
    """The list for ``mode``: sim mode is the gate; other modes are measured and reported, not gated."""
    if mode != "sim":
        raise ValueError(f"no expected-failure list for mode {mode!r}; only sim mode is gated")
    return {f"{_P}{k}": v for k, v in SIM.items()}
