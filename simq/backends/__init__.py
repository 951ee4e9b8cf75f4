"""Result backends: where task states and return values are kept."""

from simq.backends.base import Backend, ResultMeta
from simq.backends.memory import MemoryBackend

__all__ = ["Backend", "MemoryBackend", "ResultMeta"]
