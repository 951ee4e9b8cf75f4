"""The upstream canvas tests expected to fail on simq, each with its reason (``simq.celery.upstream``'s gate).

Keys are pytest node ids under ``t/integration/test_canvas.py``. Kinds:
``canvas``: needs a canvas feature simq lacks (being built on branch canvas-features);
``divergence``: simq behaves differently on purpose or not yet;
``internals``: the test pins a Celery internal or bug (docs/celery.md lists them).
"""

from __future__ import annotations

__all__ = ["SIM", "expected_failures"]

_P = "t/integration/test_canvas.py::"

#: sim mode's expected failures: node id -> reason.
SIM: dict[str, str] = {
    "test_chain::test_chain_child_replaced_with_chain_first": "canvas: Task.replace",
    "test_chain::test_chain_child_replaced_with_chain_last": "canvas: Task.replace",
    "test_chain::test_chain_child_replaced_with_chain_middle": "canvas: Task.replace",
    "test_chain::test_chain_child_with_callback_replaced": "canvas: Task.replace",
    "test_chain::test_chain_child_with_errback_replaced": "canvas: Task.replace",
    "test_chain::test_chain_error_handler_with_eta": "canvas: chain.on_error",
    "test_chain::test_chain_of_chain_with_a_single_task": "divergence: simq refuses to send a chain whose task name is registered nowhere in the sending process (NotRegistered); Celery sends it",
    "test_chain::test_chain_replaced_with_a_chain_and_a_callback": "canvas: Task.replace",
    "test_chain::test_chain_replaced_with_a_chain_and_an_error_callback": "canvas: Task.replace",
    "test_chain::test_chain_with_callback_child_replaced": "canvas: Task.replace",
    "test_chain::test_chain_with_cb_replaced_with_chain_with_cb": "canvas: Task.replace",
    "test_chain::test_chain_with_eb_replaced_with_chain_with_eb": "canvas: Task.replace",
    "test_chain::test_chain_with_errback_child_replaced": "canvas: Task.replace",
    "test_chain::test_chord_header_id_duplicated_on_rabbitmq_msg_duplication[redis-group-ids]": "internals: republishes through celery_session_app.producer_pool (kombu's producer API)",
    "test_chain::test_complex_chain": "canvas: Task.replace",
    "test_chain::test_eager_chain_inside_task": "canvas: apply_async(throw=...)",
    "test_chain::test_group_results_in_chain": "divergence: Celery unrolls group(chain(a, group(b, c))) into the inner group's results ([4, 5]); simq keeps the nesting ([[4, 5]])",
    "test_chain::test_groupresult_serialization": "canvas: a task returning an AsyncResult/GroupResult (simq's json refuses it)",
    "test_chain::test_nested_chain_group_lone": "internals: strict xfail for a Celery timeout ('Task is timeout'); simq returns the result, so it XPASSes",
    "test_chain::test_replace_chain_with_empty_chain": "canvas: Task.replace",
    "test_chain::test_second_order_replace": "canvas: Task.replace",
    "test_chain::test_task_replaced_with_chain": "canvas: Task.replace",
    "test_chord::test_add_chord_to_chord": "canvas: Task.add_to_chord",
    "test_chord::test_add_to_chord": "canvas: Task.add_to_chord",
    "test_chord::test_chord_body_chain_child_replaced_with_chain_first": "canvas: Task.replace",
    "test_chord::test_chord_body_chain_child_replaced_with_chain_last": "canvas: Task.replace",
    "test_chord::test_chord_body_chain_child_replaced_with_chain_middle": "canvas: Task.replace",
    "test_chord::test_chord_body_task_replaced_with_chain": "canvas: Task.replace",
    "test_chord::test_chord_header_child_replaced_with_chain_first": "canvas: Task.replace",
    "test_chord::test_chord_header_child_replaced_with_chain_last": "canvas: Task.replace",
    "test_chord::test_chord_header_child_replaced_with_chain_middle": "canvas: Task.replace",
    "test_chord::test_chord_header_task_replaced_with_chain": "canvas: Task.replace",
    "test_chord::test_chord_on_error": "canvas: Signature.on_error",
    "test_chord::test_disabling_flag_allow_error_cb_on_chord_header": "canvas: task_allow_error_cb_on_chord_header",
    "test_chord::test_eager_chord_inside_task": "canvas: apply_async(throw=...)",
    "test_chord::test_empty_header_chord": "canvas: Task.replace",
    "test_chord::test_enabling_flag_allow_error_cb_on_chord_header": "canvas: task_allow_error_cb_on_chord_header",
    "test_chord::test_error_propagates_from_chord": "internals: strict xfail for Celery issue #6437 on a Redis backend; simq propagates the error, so it XPASSes",
    "test_chord::test_flag_allow_error_cb_on_chord_header_on_upgraded_chord": "canvas: task_allow_error_cb_on_chord_header",
    "test_chord::test_generator[3]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_generator[4]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_generator[5]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_generator[6]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_generator[7]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_generator[8]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_generator[9]": "canvas: lazy chord headers (a generator header is consumed at send)",
    "test_chord::test_group_args_and_kwargs": "canvas: Task.replace",
    "test_chord::test_group_chain": "canvas: Task.replace",
    "test_chord::test_group_kwargs": "canvas: Task.replace",
    "test_chord::test_nested_chord": "canvas: Task.replace",
    "test_chord::test_nested_chord_header_link_error": "canvas: task_allow_error_cb_on_chord_header",
    "test_chord::test_replaced_nested_chord": "canvas: Task.replace",
    "test_chord::test_simple_chord_with_a_delay_in_group_save": "internals: monkeypatches BaseKeyValueStoreBackend._apply_chord_incr, a Celery backend internal",
    "test_chord::test_single_task_header": "canvas: Task.replace",
    "test_chord::test_upgraded_chord_link_error_with_header_errback_enabled": "canvas: task_allow_error_cb_on_chord_header",
    "test_group::test_group_child_replaced_with_chain_first": "canvas: Task.replace",
    "test_group::test_group_child_replaced_with_chain_last": "canvas: Task.replace",
    "test_group::test_group_child_replaced_with_chain_middle": "canvas: Task.replace",
    "test_group::test_group_child_with_callback_replaced": "canvas: Task.replace",
    "test_group::test_group_child_with_errback_replaced": "canvas: Task.replace",
    "test_group::test_group_with_callback_child_replaced": "canvas: Task.replace",
    "test_group::test_group_with_errback_child_replaced": "canvas: Task.replace",
    "test_group::test_nested_group_chord_body_chain": "internals: expects Celery bug #6734 (the group's result times out); simq returns [[42]]",
    "test_group::test_ready_with_exception": "divergence: `while not result.ready(): pass` never sleeps, so the simulation never moves (time passes only by sleeping or waiting on a result)",
    "test_group::test_task_replace_with_group_preserves_group_order": "canvas: Task.replace",
    "test_link_error::test_link_error_using_signature_eager": "canvas: Signature.apply",
    "test_signature_serialization::test_rebuild_nested_chain_chain": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_chain_chord": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_chain_group": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_chord_chain": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_chord_chord": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_chord_group": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_group_chain": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_group_chord": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_signature_serialization::test_rebuild_nested_group_group": "canvas: Signature.from_dict / register_type (signatures rebuilt inside a task)",
    "test_stamping_mechanism::test_all_tasks_of_canvas_are_stamped": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_err_linking_stamped_sig": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_linking_stamped_sig": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_properties_not_affected_from_stamping": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_replace_merge_stamps": "canvas: Task.replace",
    "test_stamping_mechanism::test_stamp_canvas_with_dictionary_link": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_stamp_canvas_with_dictionary_link_error": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_stamp_value_type_defined_by_visitor": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_stamping_workflow": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_stamps_remain_on_task_retry": "canvas: stamping (StampingVisitor, Signature.stamp)",
    "test_stamping_mechanism::test_task_received_has_access_to_stamps": "canvas: stamping (StampingVisitor, Signature.stamp)",
}


def expected_failures(mode: str) -> dict[str, str]:
    """The list for ``mode``: sim mode is the gate; other modes are measured and reported, not gated."""
    if mode != "sim":
        raise ValueError(f"no expected-failure list for mode {mode!r}; only sim mode is gated")
    return {f"{_P}{k}": v for k, v in SIM.items()}
