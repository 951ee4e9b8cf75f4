"""The canvas: signatures, callbacks, chains, groups, chords, map/starmap/chunks, as plain data.

A ``Signature`` is a dict (task, args, kwargs, options, immutable,
subtask_type), so it travels inside messages with any serializer, json
included. Composite signatures (``chain``, ``group``, ``chord``, ``chunks``)
are the same dict with their parts in ``kwargs``.

How a canvas runs (see docs/canvas.md for the user's view):

- Before anything is sent the canvas is copied, checked (registered task
  names, serialisable arguments, no cycles) and *frozen*: every task gets its
  id, so the result handles exist before the first message leaves.
- A chain sends its first task with the rest of the chain in the message's
  ``embed["chain"]`` (the *continuation*); the worker that finishes a task
  sends the next one. Long continuations are stored once in the result
  backend and referenced, so a chain of n links costs O(n), not O(n²).
- A chord stores one record (body, continuation, outer chord) in the result
  backend and sends its header with ``embed["chord"] = {id, size}``. Every
  header task that finishes, succeeded or failed, counts once on an atomic
  counter (``backend.count_part``; a failed chain link counts for every part
  it stopped); the one that brings it to ``size`` reads the header results in
  header order and sends the body, or, if one failed, fails the body, its
  errbacks and what follows with the exception of the first failed header
  task in header order (a note, ``exc.add_note``, names that task, the chord
  and the body; notes are stored with results). The same header gives the
  same exception on every backend and for every seed. ``ChordError`` is left
  for a body that can never be sent (encoding, routing) and a header result
  that is FAILURE without a stored exception. No polling anywhere.
- Nesting composes: groups nested in a group are unrolled (Celery's rule; a
  chain or chord stays one member); a group followed by anything in a chain
  is a chord; a chord followed by anything hands the continuation to its
  body; a chain or chord inside a chord header reports through its last
  tasks.
- Callbacks: ``group.link(cb)`` links an immutable copy of ``cb`` to the
  group's first task (as Celery), ``group.link_error(eb)`` links ``eb`` to
  every task; sending a group with ``link=`` is refused (use a chord).

Modules: ``signatures`` (the values and their constructors), ``checks``
(refusing bad canvases before sending), ``plan`` (freezing: ids, where each
value lands, result handles), ``run`` (sending, continuations, chord
counting, the worker's hooks, the map/starmap built-ins), ``handoff`` (what a
running task does to its canvas: ``Task.replace``, ``Task.add_to_chord``),
``eager`` (running a canvas here: ``Signature.apply``), ``records`` (what the
canvas keeps in the result backend), ``stamping`` (``Signature.stamp``: headers
on every task of a canvas).
"""

from simq.canvas.builtins import register_builtins, to_signature_dicts
from simq.canvas.checks import validate
from simq.canvas.composites import chain, chord, chunks, group
from simq.canvas.plan import result_from_spec
from simq.canvas.records import load_children, load_group_spec
from simq.canvas.run import INLINE_CHAIN, on_failure, on_revoked, on_success, send
from simq.canvas.signatures import (
    MAP_TASK,
    STARMAP_TASK,
    Signature,
    from_dict,
    signature,
    xmap,
    xstarmap,
)
from simq.canvas.stamping import StampingVisitor

__all__ = [
    "INLINE_CHAIN",
    "MAP_TASK",
    "STARMAP_TASK",
    "Signature",
    "StampingVisitor",
    "chain",
    "chord",
    "chunks",
    "from_dict",
    "group",
    "load_children",
    "load_group_spec",
    "on_failure",
    "on_revoked",
    "on_success",
    "register_builtins",
    "result_from_spec",
    "send",
    "signature",
    "to_signature_dicts",
    "validate",
    "xmap",
    "xstarmap",
]
