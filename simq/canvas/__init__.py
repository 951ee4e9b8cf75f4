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
  header task that finishes bumps an atomic counter (``backend.incr``); the
  one that brings it to ``size`` reads the header results in header order and
  sends the body. A failing header task bumps a separate marker once and
  fails the body with ``ChordError``. No polling anywhere.
- Nesting composes: a group followed by anything in a chain is a chord; a
  chord followed by anything hands the continuation to its body; a chain,
  group or chord inside a chord header reports through its last tasks.

Modules: ``signatures`` (the values and their constructors), ``checks``
(refusing bad canvases before sending), ``plan`` (freezing: ids, where each
value lands, result handles), ``run`` (sending, continuations, chord
counting, the worker's hooks, the map/starmap built-ins).
"""


from simq.canvas.checks import validate
from simq.canvas.composites import chain, chord, chunks, group
from simq.canvas.plan import result_from_spec
from simq.canvas.records import load_children, load_group_spec
from simq.canvas.run import (
    INLINE_CHAIN,
    on_failure,
    on_revoked,
    on_success,
    register_builtins,
    send,
    to_signature_dicts,
)
from simq.canvas.signatures import (
    MAP_TASK,
    STARMAP_TASK,
    Signature,
    from_dict,
    signature,
    xmap,
    xstarmap,
)

__all__ = [
    "INLINE_CHAIN",
    "MAP_TASK",
    "STARMAP_TASK",
    "Signature",
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
